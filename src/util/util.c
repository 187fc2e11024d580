/* util: ids, addresses, small files and strict number parsing. */
#include <ctype.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdio.h>
#include <strings.h>
#include <sys/random.h>
#include <time.h>
#include <unistd.h>

#include "util.h"

uint64_t mono_usec(void) {
        struct timespec ts;

        clock_gettime(CLOCK_MONOTONIC, &ts);
        return (uint64_t) ts.tv_sec * 1000000u + (uint64_t) ts.tv_nsec / 1000u;
}

uint64_t random_u64(void) {
        uint64_t x = 0;

        if (getrandom(&x, sizeof x, GRND_NONBLOCK) != (ssize_t) sizeof x)
                /* Early boot without entropy: jitter only needs to differ between hosts a bit. */
                x = mono_usec() * 6364136223846793005ULL + 1442695040888963407ULL;
        return x;
}

uint64_t backoff_usec(unsigned failures, uint64_t min_usec, uint64_t max_usec, uint64_t random) {
        uint64_t d = min_usec, j;

        for (unsigned i = 0; i < failures && d < max_usec; i++)
                d *= 2;
        if (d > max_usec)
                d = max_usec;
        j = d / 5;
        d = d - j + (j ? random % (2 * j + 1) : 0);
        return d < min_usec ? min_usec : d;
}

int uuid_generate_str(char buf[static UUID_STR_MAX]) {
        uint8_t b[16];
        ssize_t n;

        do
                n = getrandom(b, sizeof b, 0);
        while (n < 0 && errno == EINTR);
        if (n != (ssize_t) sizeof b)
                return n < 0 ? -errno : -EIO;
        b[6] = (b[6] & 0x0f) | 0x40; /* version 4 */
        b[8] = (b[8] & 0x3f) | 0x80; /* RFC 4122 variant */
        snprintf(buf, UUID_STR_MAX,
                 "%02x%02x%02x%02x-%02x%02x-%02x%02x-%02x%02x-%02x%02x%02x%02x%02x%02x",
                 b[0], b[1], b[2], b[3], b[4], b[5], b[6], b[7],
                 b[8], b[9], b[10], b[11], b[12], b[13], b[14], b[15]);
        return 0;
}

int bdaddr_normalize(const char *in, char buf[static BDADDR_STR_MAX]) {
        if (!in || strlen(in) != 17)
                return -EINVAL;
        for (size_t i = 0; i < 17; i++) {
                if (i % 3 == 2) {
                        if (in[i] != ':' && in[i] != '-' && in[i] != '_')
                                return -EINVAL;
                        buf[i] = ':';
                } else {
                        if (!isxdigit((unsigned char) in[i]))
                                return -EINVAL;
                        buf[i] = (char) toupper((unsigned char) in[i]);
                }
        }
        buf[17] = '\0';
        return 0;
}

int wrap_id_from_address(const char *address, char buf[static WRAP_ID_MAX]) {
        char a[BDADDR_STR_MAX];
        char *p;
        int r = bdaddr_normalize(address, a);

        if (r < 0)
                return r;
        p = buf + sprintf(buf, "wrap_");
        for (size_t i = 0; i < 17; i++)
                if (a[i] != ':')
                        *p++ = (char) tolower((unsigned char) a[i]);
        *p = '\0';
        return 0;
}

int read_small_file(const char *path, size_t max, char **ret) {
        _cleanup_free_ char *b = NULL;
        size_t n = 0;
        int fd, r = 0;

        fd = open(path, O_RDONLY | O_CLOEXEC | O_NOCTTY);
        if (fd < 0)
                return -errno;
        b = malloc(max + 1);
        if (!b) {
                close(fd);
                return -ENOMEM;
        }
        for (;;) {
                ssize_t k = read(fd, b + n, max + 1 - n);
                if (k < 0) {
                        if (errno == EINTR)
                                continue;
                        r = -errno;
                        break;
                }
                if (k == 0)
                        break;
                n += (size_t) k;
                if (n > max) {
                        r = -EFBIG;
                        break;
                }
        }
        close(fd);
        if (r < 0)
                return r;
        if (n > 0 && b[n - 1] == '\n')
                n--;
        if (n > 0 && b[n - 1] == '\r')
                n--;
        b[n] = '\0';
        *ret = b;
        b = NULL;
        return 0;
}

int parse_int64(const char *s, int64_t *ret) {
        char *end;
        long long v;

        if (!s || !*s || isspace((unsigned char) *s))
                return -EINVAL;
        errno = 0;
        v = strtoll(s, &end, 10);
        if (errno == ERANGE)
                return -ERANGE;
        if (*end != '\0' || end == s)
                return -EINVAL;
        *ret = (int64_t) v;
        return 0;
}

int parse_bool(const char *s, bool *ret) {
        static const char *const yes[] = { "1", "yes", "y", "true", "on" };
        static const char *const no[] = { "0", "no", "n", "false", "off" };

        for (size_t i = 0; i < ELEMENTSOF(yes); i++)
                if (strcasecmp(s, yes[i]) == 0) {
                        *ret = true;
                        return 0;
                }
        for (size_t i = 0; i < ELEMENTSOF(no); i++)
                if (strcasecmp(s, no[i]) == 0) {
                        *ret = false;
                        return 0;
                }
        return -EINVAL;
}

int parse_decimal_centi(const char *s, int32_t *ret) {
        const char *p = s;
        bool neg = false;
        int64_t whole = 0, frac = 0;
        int digits = 0, fdigits = 0;

        if (!s)
                return -EINVAL;
        if (*p == '-' || *p == '+')
                neg = *p++ == '-';
        for (; isdigit((unsigned char) *p); p++, digits++) {
                whole = whole * 10 + (*p - '0');
                if (whole > INT32_MAX / 100)
                        return -ERANGE;
        }
        if (*p == '.') {
                p++;
                for (; isdigit((unsigned char) *p); p++, fdigits++) {
                        if (fdigits >= 2)
                                return -EINVAL; /* finer than 0.01 would be rounded silently */
                        frac = frac * 10 + (*p - '0');
                }
                if (fdigits == 0)
                        return -EINVAL;
                if (fdigits == 1)
                        frac *= 10;
        }
        if (*p != '\0' || digits == 0)
                return -EINVAL;
        *ret = (int32_t) ((neg ? -1 : 1) * (whole * 100 + frac));
        return 0;
}
