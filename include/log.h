/* log: one line per event, to the journal under systemd and to stderr otherwise. */
#pragma once

#include <stdarg.h>
#include <syslog.h>

/* Picks the journal when stderr is connected to it (JOURNAL_STREAM), stderr otherwise. */
void log_setup(int max_level);
void log_set_max_level(int level);
int log_get_max_level(void);

/* Parses "debug", "info", "notice", "warning", "err"/"error", "crit". Returns level or -EINVAL. */
int log_level_from_string(const char *s);

/*
 * Logs one message. `error` (a positive or negative errno, or 0) is available to the format
 * as %m. wrap and session, when not NULL, become the journal fields WRAP= and SESSION=.
 * Returns -abs(error), so that "return log_error_errno(r, ...)" passes the error up.
 */
int log_internal(int level, int error, const char *wrap, const char *session,
                 const char *fmt, ...) __attribute__((format(printf, 5, 6)));

#define log_full_errno(level, error, ...) log_internal(level, error, NULL, NULL, __VA_ARGS__)
#define log_debug(...)   log_internal(LOG_DEBUG, 0, NULL, NULL, __VA_ARGS__)
#define log_info(...)    log_internal(LOG_INFO, 0, NULL, NULL, __VA_ARGS__)
#define log_notice(...)  log_internal(LOG_NOTICE, 0, NULL, NULL, __VA_ARGS__)
#define log_warning(...) log_internal(LOG_WARNING, 0, NULL, NULL, __VA_ARGS__)
#define log_error(...)   log_internal(LOG_ERR, 0, NULL, NULL, __VA_ARGS__)
#define log_debug_errno(e, ...)   log_internal(LOG_DEBUG, e, NULL, NULL, __VA_ARGS__)
#define log_warning_errno(e, ...) log_internal(LOG_WARNING, e, NULL, NULL, __VA_ARGS__)
#define log_error_errno(e, ...)   log_internal(LOG_ERR, e, NULL, NULL, __VA_ARGS__)

/* With a wrap's id (its address) attached, and optionally a session id. */
#define log_wrap(level, wrap, ...) log_internal(level, 0, wrap, NULL, __VA_ARGS__)
#define log_wrap_errno(level, e, wrap, ...) log_internal(level, e, wrap, NULL, __VA_ARGS__)
#define log_session(level, wrap, session, ...) log_internal(level, 0, wrap, session, __VA_ARGS__)
#define log_session_errno(level, e, wrap, session, ...) log_internal(level, e, wrap, session, __VA_ARGS__)
