/* log: the journal with structured fields under systemd, plain lines on stderr otherwise. */
#include <errno.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/uio.h>
#include <unistd.h>
#include <systemd/sd-journal.h>

#include "log.h"
#include "util.h"

static int max_level = LOG_INFO;
static bool to_journal;

/* JOURNAL_STREAM names the device and inode of the journal's stream on our stderr. */
static bool stderr_is_journal(void) {
        const char *e = getenv("JOURNAL_STREAM");
        unsigned long long dev, ino;
        struct stat st;

        if (!e || sscanf(e, "%llu:%llu", &dev, &ino) != 2)
                return false;
        if (fstat(STDERR_FILENO, &st) < 0)
                return false;
        return (unsigned long long) st.st_dev == dev && (unsigned long long) st.st_ino == ino;
}

void log_setup(int level) {
        max_level = level;
        to_journal = stderr_is_journal();
}

void log_set_max_level(int level) {
        max_level = level;
}

int log_get_max_level(void) {
        return max_level;
}

int log_level_from_string(const char *s) {
        static const struct { const char *name; int level; } map[] = {
                { "debug", LOG_DEBUG }, { "info", LOG_INFO }, { "notice", LOG_NOTICE },
                { "warning", LOG_WARNING }, { "err", LOG_ERR }, { "error", LOG_ERR },
                { "crit", LOG_CRIT },
        };
        for (size_t i = 0; i < ELEMENTSOF(map); i++)
                if (streq(s, map[i].name))
                        return map[i].level;
        return -EINVAL;
}

int log_internal(int level, int error, const char *wrap, const char *session, const char *fmt, ...) {
        static const char *const prefix[] = { "<0>", "<1>", "<2>", "<3>", "<4>", "<5>", "<6>", "<7>" };
        int saved = errno;
        int e = error < 0 ? -error : error;
        char msg[1024];
        va_list ap;

        if (level > max_level)
                return -e;

        errno = e; /* for %m */
        va_start(ap, fmt);
        vsnprintf(msg, sizeof msg, fmt, ap);
        va_end(ap);

        if (to_journal) {
                char f_msg[1100], f_prio[16], f_wrap[64], f_sess[64], f_errno[24], f_id[80];
                struct iovec iov[6];
                size_t n = 0;

#define ADD(buf, ...) do { snprintf(buf, sizeof buf, __VA_ARGS__); \
                           iov[n++] = (struct iovec) { buf, strlen(buf) }; } while (0)
                ADD(f_msg, "MESSAGE=%s%s%s", wrap ? wrap : "", wrap ? ": " : "", msg);
                ADD(f_prio, "PRIORITY=%d", level);
                ADD(f_id, "SYSLOG_IDENTIFIER=%s", program_invocation_short_name);
                if (wrap)
                        ADD(f_wrap, "WRAP=%s", wrap);
                if (session)
                        ADD(f_sess, "SESSION=%s", session);
                if (e)
                        ADD(f_errno, "ERRNO=%d", e);
#undef ADD
                sd_journal_sendv(iov, (int) n);
        } else {
                /* Under systemd without the journal stream, "<N>" still sets the priority. */
                fprintf(stderr, "%s%s%s%s\n", getenv("INVOCATION_ID") ? prefix[level & 7] : "",
                        wrap ? wrap : "", wrap ? ": " : "", msg);
        }
        errno = saved;
        return -e;
}
