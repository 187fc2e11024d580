/* clock: scaled monotonic and real clocks, and the ISO 8601 forms used in records. */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <sys/timex.h>

#include "clock.h"
#include "kw-build.h"
#include "util.h"

/* Process-wide by nature: the scale is fixed once at start, before any timer exists. */
static unsigned scale = 1;
static bool scale_ignored;
static uint64_t mono0, mono0_real;   /* real CLOCK_MONOTONIC at setup */
static uint64_t boot0;               /* real CLOCK_BOOTTIME at setup */

static int64_t realtime_usec(void) {
        struct timespec ts;
        clock_gettime(CLOCK_REALTIME, &ts);
        return (int64_t) ts.tv_sec * (int64_t) USEC_PER_SEC + ts.tv_nsec / 1000;
}

static uint64_t boottime_usec(void) {
        struct timespec ts;
        clock_gettime(CLOCK_BOOTTIME, &ts);
        return (uint64_t) ts.tv_sec * USEC_PER_SEC + (uint64_t) ts.tv_nsec / 1000;
}

int clock_setup(void) {
        const char *e = getenv("KNEEWRAP_TIME_SCALE");
        int64_t v = 1;

        if (e && *e) {
                if (!KW_TIME_SCALE)
                        /* A release build runs on real time, whatever its environment says. */
                        scale_ignored = true;
                else if (parse_int64(e, &v) < 0 || v < 1 || v > 100000)
                        return -EINVAL;
        }
        scale = (unsigned) v;
        mono0 = mono0_real = mono_usec();
        boot0 = boottime_usec();
        return (int) scale;
}

unsigned clock_scale(void) {
        return scale;
}

bool clock_scale_ignored(void) {
        return scale_ignored;
}

bool clock_seams_built(void) {
        return KW_TIME_SCALE;
}

/* ---- the test seam (KNEEWRAP_CLOCK), development builds only ---- */

typedef struct Seam {
        int64_t wall_offset, boot_offset;
        int64_t wall, boot;                  /* frozen clocks (s), -1: running */
        int synced;                          /* -1: not set */
        char boot_id[CLOCK_BOOT_ID_MAX];
} Seam;

static bool seam_read(Seam *ret) {
        const char *path = KW_TIME_SCALE ? getenv("KNEEWRAP_CLOCK") : NULL;
        char line[128];
        FILE *f;

        *ret = (Seam) { .synced = -1, .wall = -1, .boot = -1 };
        if (!path || !*path || !(f = fopen(path, "re")))
                return false;
        while (fgets(line, sizeof line, f)) {
                char *v = strchr(line, '=');
                int64_t n;

                if (!v)
                        continue;
                *v++ = '\0';
                v[strcspn(v, "\r\n")] = '\0';
                if (streq(line, "boot_id"))
                        snprintf(ret->boot_id, sizeof ret->boot_id, "%s", v);
                else if (parse_int64(v, &n) < 0)
                        continue;
                else if (streq(line, "wall_offset"))
                        ret->wall_offset = n;
                else if (streq(line, "boot_offset"))
                        ret->boot_offset = n;
                else if (streq(line, "wall"))
                        ret->wall = n;
                else if (streq(line, "boot"))
                        ret->boot = n;
                else if (streq(line, "synced"))
                        ret->synced = n != 0;
        }
        fclose(f);
        return true;
}

int64_t clock_boot_usec(void) {
        uint64_t n = boottime_usec();
        int64_t b = (int64_t) n;
        Seam seam;

        if (scale != 1 && mono0_real != 0)
                b = (int64_t) (boot0 + (n - boot0) * scale);
        if (seam_read(&seam))
                b = seam.boot >= 0 ? seam.boot * (int64_t) USEC_PER_SEC : b + seam.boot_offset * (int64_t) USEC_PER_SEC;
        return b < 0 ? 0 : b;
}

int clock_boot_id(char buf[static CLOCK_BOOT_ID_MAX]) {
        char id[64] = "";
        Seam seam;
        FILE *f;

        if (seam_read(&seam) && seam.boot_id[0]) {
                snprintf(buf, CLOCK_BOOT_ID_MAX, "%s", seam.boot_id);
                return 0;
        }
        f = fopen("/proc/sys/kernel/random/boot_id", "re");
        if (!f)
                return -errno;
        if (!fgets(id, sizeof id, f)) {
                fclose(f);
                return -EIO;
        }
        fclose(f);
        id[strcspn(id, "\n")] = '\0';
        if (strlen(id) != CLOCK_BOOT_ID_MAX - 1)
                return -EBADMSG;
        memcpy(buf, id, CLOCK_BOOT_ID_MAX);
        return 0;
}

int clock_synchronized(void) {
        struct timex tx = { .modes = 0 };
        Seam seam;
        int r;

        if (seam_read(&seam) && seam.synced >= 0)
                return seam.synced;
        r = adjtimex(&tx);
        if (r < 0)
                return -errno;
        return r != TIME_ERROR && !(tx.status & STA_UNSYNC);
}

uint64_t clock_mono_usec(void) {
        uint64_t n = mono_usec();
        if (scale == 1 || mono0_real == 0)
                return n;
        return mono0 + (n - mono0_real) * scale;
}

int64_t clock_real_usec(void) {
        int64_t n = realtime_usec();
        Seam seam;

        if (scale != 1 && mono0_real != 0)
                /* The real clock, plus what the scale adds on the monotonic clock: a step of the
                 * wall clock (NTP, date -s) shows as the same step, and never stretches the scale. */
                n += (int64_t) ((mono_usec() - mono0_real) * (scale - 1));
        if (seam_read(&seam))
                n = seam.wall >= 0 ? seam.wall * (int64_t) USEC_PER_SEC : n + seam.wall_offset * (int64_t) USEC_PER_SEC;
        return n;
}

uint64_t clock_wait_usec(uint64_t scaled_usec) {
        uint64_t w = (scaled_usec + scale - 1) / scale;
        return w ? w : 1;
}

uint64_t clock_mono_to_real_usec(uint64_t scaled_mono_usec) {
        if (scale == 1 || mono0_real == 0)
                return scaled_mono_usec;
        if (scaled_mono_usec <= mono0)
                return mono0_real;
        return mono0_real + clock_wait_usec(scaled_mono_usec - mono0);
}

char *clock_format_iso(int64_t unix_sec, char buf[static CLOCK_ISO_MAX]) {
        time_t t = (time_t) unix_sec;
        struct tm tm;
        size_t n;
        long off;

        if ((int64_t) t != unix_sec || !localtime_r(&t, &tm) ||
            (n = strftime(buf, CLOCK_ISO_MAX - 7, "%Y-%m-%dT%H:%M:%S", &tm)) == 0) {
                snprintf(buf, CLOCK_ISO_MAX, "invalid");
                return buf;
        }
        off = labs(tm.tm_gmtoff) / 60;
        snprintf(buf + n, CLOCK_ISO_MAX - n, "%c%02d:%02d",
                 tm.tm_gmtoff < 0 ? '-' : '+', (int) (off / 60 % 100), (int) (off % 60));
        return buf;
}

int clock_local_day_start(int64_t at, int back, int64_t *ret_unix_sec) {
        char date[11];
        struct tm tm = { 0 };
        time_t t;
        int y, mo, d;

        clock_format_date(at, date);
        if (sscanf(date, "%d-%d-%d", &y, &mo, &d) != 3)
                return -EINVAL;
        /* Calendar arithmetic in UTC at noon, where no day is short; then the day before's end. */
        tm.tm_year = y - 1900;
        tm.tm_mon = mo - 1;
        tm.tm_mday = d - back - 1;
        tm.tm_hour = 12;
        t = timegm(&tm);
        if (!gmtime_r(&t, &tm))
                return -EINVAL;
        return clock_local_day_end(tm.tm_year + 1900, tm.tm_mon + 1, tm.tm_mday, ret_unix_sec);
}

static int date_arg(const char *date, int64_t *ret_day_end) {
        bool date_only = false;

        if (clock_parse_iso(date, ret_day_end, &date_only) < 0 || !date_only)
                return -EINVAL;
        return 0;
}

int clock_local_period(const char *since_date, const char *until_date, int64_t now, unsigned default_days,
                       int64_t *ret_since, int64_t *ret_until) {
        int64_t since, until;
        int r;

        if (default_days < 1)
                return -EINVAL;
        if (until_date && *until_date)
                r = date_arg(until_date, &until);       /* that day's end: the next day's start */
        else
                r = clock_local_day_start(now, -1, &until);
        if (r < 0)
                return r;
        if (since_date && *since_date) {
                r = date_arg(since_date, &since);
                if (r >= 0)
                        r = clock_local_day_start(since - 1, 0, &since);
        } else
                r = clock_local_day_start(until - 1, (int) default_days - 1, &since);
        if (r < 0)
                return r;
        if (since >= until)
                return -EINVAL;
        *ret_since = since;
        *ret_until = until;
        return 0;
}

char *clock_format_date(int64_t unix_sec, char buf[static 11]) {
        time_t t = (time_t) unix_sec;
        struct tm tm;

        if (!localtime_r(&t, &tm) || strftime(buf, 11, "%Y-%m-%d", &tm) == 0)
                snprintf(buf, 11, "invalid");
        return buf;
}

static bool valid_date(int y, int m, int d) {
        static const int mdays[] = { 31, 28, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31 };
        bool leap = (y % 4 == 0 && y % 100 != 0) || y % 400 == 0;

        if (y < 1970 || y > 9999 || m < 1 || m > 12 || d < 1)
                return false;
        return d <= mdays[m - 1] + (m == 2 && leap);
}

/* Days since 1970-01-01 of a proleptic Gregorian date (Howard Hinnant's algorithm). */
static int64_t days_from_civil(int64_t y, unsigned m, unsigned d) {
        y -= m <= 2;
        int64_t era = (y >= 0 ? y : y - 399) / 400;
        unsigned yoe = (unsigned) (y - era * 400);
        unsigned doy = (153 * (m + (m > 2 ? -3 : 9)) + 2) / 5 + d - 1;
        unsigned doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
        return era * 146097 + (int64_t) doe - 719468;
}

static int local_to_unix(int y, int mo, int d, int h, int mi, int s, int64_t *ret) {
        struct tm tm = {
                .tm_year = y - 1900, .tm_mon = mo - 1, .tm_mday = d,
                .tm_hour = h, .tm_min = mi, .tm_sec = s, .tm_isdst = -1,
        };
        time_t t = mktime(&tm);
        if (t == (time_t) -1)
                return -EINVAL;
        *ret = (int64_t) t;
        return 0;
}

int clock_local_day_end(int year, int month, int day, int64_t *ret_unix_sec) {
        int64_t next;

        if (!valid_date(year, month, day))
                return -EINVAL;
        /* The next calendar day, found in UTC arithmetic so no DST can skip it. */
        next = days_from_civil(year, (unsigned) month, (unsigned) day) + 1;
        time_t t = (time_t) (next * 86400);
        struct tm tm;
        if (!gmtime_r(&t, &tm))
                return -EINVAL;
        return local_to_unix(tm.tm_year + 1900, tm.tm_mon + 1, tm.tm_mday, 0, 0, 0, ret_unix_sec);
}

/* Exactly n ASCII digits: sscanf's %d would take a sign or a space ("2026-+9-01"). */
static bool digits(const char *p, int n, int *ret) {
        int v = 0;

        for (int i = 0; i < n; i++) {
                if (p[i] < '0' || p[i] > '9')
                        return false;
                v = v * 10 + (p[i] - '0');
        }
        *ret = v;
        return true;
}

int clock_parse_iso(const char *s, int64_t *ret_unix_sec, bool *ret_date_only) {
        int y, mo, d, h = 0, mi = 0, sec = 0;
        const char *p;

        if (!s || !digits(s, 4, &y) || s[4] != '-' || !digits(s + 5, 2, &mo) || s[7] != '-' ||
            !digits(s + 8, 2, &d) || !valid_date(y, mo, d))
                return -EINVAL;
        p = s + 10;
        if (*p == '\0') {
                if (ret_date_only)
                        *ret_date_only = true;
                return clock_local_day_end(y, mo, d, ret_unix_sec);
        }
        if (*p != 'T' && *p != ' ')
                return -EINVAL;
        p++;
        if (!digits(p, 2, &h) || p[2] != ':' || !digits(p + 3, 2, &mi))
                return -EINVAL;
        p += 5;
        if (*p == ':') {
                if (!digits(p + 1, 2, &sec))
                        return -EINVAL;
                p += 3;
        }
        if (h > 23 || mi > 59 || sec > 60)
                return -EINVAL;
        if (ret_date_only)
                *ret_date_only = false;
        if (*p == '\0')
                return local_to_unix(y, mo, d, h, mi, sec, ret_unix_sec);

        int64_t base = days_from_civil(y, (unsigned) mo, (unsigned) d) * 86400 + h * 3600 + mi * 60 + sec;
        if (streq(p, "Z")) {
                *ret_unix_sec = base;
                return 0;
        }
        int oh, om;
        if ((*p != '+' && *p != '-') || !digits(p + 1, 2, &oh) || p[3] != ':' || !digits(p + 4, 2, &om) ||
            p[6] != '\0' || oh > 23 || om > 59)
                return -EINVAL;
        int64_t off = oh * 3600 + om * 60;
        *ret_unix_sec = *p == '+' ? base - off : base + off;
        return 0;
}

int clock_parse_http_date(const char *s, int64_t *ret_unix_sec) {
        /* The process never calls setlocale(), so %a and %b are the English names HTTP uses. */
        static const char *const formats[] = {
                "%a, %d %b %Y %H:%M:%S GMT",    /* IMF-fixdate: Sun, 06 Nov 1994 08:49:37 GMT */
                "%A, %d-%b-%y %H:%M:%S GMT",    /* RFC 850: Sunday, 06-Nov-94 08:49:37 GMT */
                "%a %b %e %H:%M:%S %Y",         /* asctime: Sun Nov  6 08:49:37 1994 */
        };

        for (size_t i = 0; s && i < ELEMENTSOF(formats); i++) {
                struct tm tm = { 0 };
                const char *end = strptime(s, formats[i], &tm);
                time_t t;

                if (!end || *end != '\0')
                        continue;
                t = timegm(&tm);
                if (t == (time_t) -1)
                        return -EINVAL;
                *ret_unix_sec = (int64_t) t;
                return 0;
        }
        return -EINVAL;
}
