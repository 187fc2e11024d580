/* clock: the daemon's one source of time, and the time formats of its records. */
#pragma once

#include <stdbool.h>
#include <stdint.h>

#define USEC_PER_SEC  ((uint64_t) 1000000)
#define USEC_PER_MSEC ((uint64_t) 1000)

/*
 * KNEEWRAP_TIME_SCALE=N makes the daemon's time run N times faster than the wall clock,
 * from the moment clock_setup() runs: a 15-minute session lasts 9 s at N=100, and is
 * still recorded as 900 s. For simulations and tests only; no rule's bound changes.
 * Returns the scale (1 when unset), or -EINVAL for a value that is not 1..100000.
 */
int clock_setup(void);
unsigned clock_scale(void);
/* KNEEWRAP_TIME_SCALE was set, and this build (meson -Dtime_scale=disabled) ignores it. */
bool clock_scale_ignored(void);
/* Whether this build honours KNEEWRAP_TIME_SCALE and KNEEWRAP_CLOCK (meson option time_scale). */
bool clock_seams_built(void);

/* Scaled clocks. Monotonic for timers; real (Unix epoch) for records. */
uint64_t clock_mono_usec(void);
int64_t clock_real_usec(void);
static inline int64_t clock_real_sec(void) { return clock_real_usec() / (int64_t) USEC_PER_SEC; }

/* CLOCK_BOOTTIME (counts suspend, never steps), scaled like the others. R10's clock for waits. */
int64_t clock_boot_usec(void);

/*
 * R10. This boot's id (/proc/sys/kernel/random/boot_id, 36 characters), as the journal
 * stamps its entries. Returns 0 or a negative errno.
 */
#define CLOCK_BOOT_ID_MAX 37
int clock_boot_id(char buf[static CLOCK_BOOT_ID_MAX]);

/*
 * Whether the kernel says the system clock is synchronised: adjtimex() without privilege,
 * STA_UNSYNC clear and no TIME_ERROR (what timedatectl shows as NTPSynchronized).
 * Returns 1, 0, or a negative errno.
 *
 * A test seam, in builds with the time_scale option only: KNEEWRAP_CLOCK=<file> names a
 * file of "key=value" lines read at every call: wall_offset (s added to the wall clock),
 * synced (0 or 1), boot_id, boot_offset (s added to the boot clock), or wall and boot
 * (s: the clocks frozen at that reading, for table-driven tests).
 */
int clock_synchronized(void);

/* A duration on the scaled clock, as a wall-clock wait (rounded up, at least 1 µs). */
uint64_t clock_wait_usec(uint64_t scaled_usec);

/* Converts a scaled monotonic deadline to the real CLOCK_MONOTONIC value sd-event wants. */
uint64_t clock_mono_to_real_usec(uint64_t scaled_mono_usec);

/*
 * ISO 8601 with the local UTC offset, seconds resolution: "2026-11-21T15:04:05+01:00".
 * buf must hold CLOCK_ISO_MAX bytes. Returns buf.
 */
#define CLOCK_ISO_MAX 32
char *clock_format_iso(int64_t unix_sec, char buf[static CLOCK_ISO_MAX]);

/*
 * Parses "YYYY-MM-DD" (date_only set) or "YYYY-MM-DDTHH:MM[:SS]" with an optional "Z" or
 * "+HH:MM"/"-HH:MM" offset (local time when absent). A date alone resolves to the end of
 * that local day, the cautious reading of therapy rule R2. Returns 0 or -EINVAL.
 */
int clock_parse_iso(const char *s, int64_t *ret_unix_sec, bool *ret_date_only);
/* An HTTP-date (RFC 9110 5.6.7: IMF-fixdate, or the obsolete RFC 850 and asctime forms) as Unix
 * seconds; -EINVAL for anything else. Through libc's 64-bit time_t: libcurl's curl_getdate()
 * returns a 32-bit time_t on Debian 12's armhf, which a _TIME_BITS=64 caller reads as garbage. */
int clock_parse_http_date(const char *s, int64_t *ret_unix_sec);

/*
 * The end of a local calendar day, i.e. the start of the next one, honouring DST (a day is
 * 23, 24 or 25 hours long). Reads the process time zone (TZ). Returns 0 or -EINVAL.
 */
int clock_local_day_end(int year, int month, int day, int64_t *ret_unix_sec);

/*
 * The start of the local calendar day `back` days before the one `at` falls in (back 0:
 * that day's own start; back -1: the next day's start). With it a period of N whole local
 * days ending today is [clock_local_day_start(now, N - 1), clock_local_day_start(now, -1)):
 * the compliance period of every interface (store.h). Returns 0 or -EINVAL.
 */
int clock_local_day_start(int64_t at, int back, int64_t *ret_unix_sec);

/*
 * A period of whole local days, as every interface names one: since_date and until_date are
 * "YYYY-MM-DD" (both days included) or NULL/"" for the default: until today, and
 * default_days days long. *ret_since is the start of the first day, *ret_until the start of
 * the day after the last. Returns 0, or -EINVAL (not a date, or until before since).
 */
int clock_local_period(const char *since_date, const char *until_date, int64_t now, unsigned default_days,
                       int64_t *ret_since, int64_t *ret_until);

/* The local calendar date of an instant, as "YYYY-MM-DD" (11 bytes). */
char *clock_format_date(int64_t unix_sec, char buf[static 11]);
