/* kneewrap-uplink: delivers the store's records to a clinic's FHIR server, each exactly once. */
#include <curl/curl.h>
#include <errno.h>
#include <getopt.h>
#include <libgen.h>
#include <signal.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/inotify.h>
#include <time.h>
#include <unistd.h>
#include <systemd/sd-daemon.h>
#include <systemd/sd-event.h>

#include "clock.h"
#include "kw-build.h"
#include "log.h"
#include "store.h"
#include "uplink-state.h"
#include "uplink.h"
#include "util.h"

#define UPLINK_DEFAULT_CONFIG KW_SYSCONFDIR "/kneewrap/uplink.conf"
#define RETRY_MIN_USEC (1 * USEC_PER_SEC)
/* New records arrive in bursts (a session's record, its alert): gather them for one Bundle. */
#define SETTLE_USEC (200 * USEC_PER_MSEC)

typedef struct Uplink {
        UplinkConfig config;
        sd_event *event;
        sd_event_source *timer;       /* the next attempt */
        sd_event_source *inotify;     /* the store's directory: a commit wakes us */
        Store *store;                 /* kneewrapd's, read-only; opened when it can be */
        UplinkState *state;
        Fhir *fhir;
        unsigned failures;            /* in a row; 0: the last attempt worked */
        bool once;                    /* --once: exit when caught up, or at the first failure */
        int exit_code;
        char last_error[256];         /* logged once, until it changes or clears */
        char store_base[256], wal_base[264];
        uint64_t delivered;           /* since start */
} Uplink;

/* The real now, not the loop's cached one: a request may have blocked for seconds since. */
static uint64_t now_mono_usec(void) {
        struct timespec ts;

        clock_gettime(CLOCK_MONOTONIC, &ts);
        return (uint64_t) ts.tv_sec * USEC_PER_SEC + (uint64_t) ts.tv_nsec / 1000;
}

static void schedule(Uplink *u, uint64_t delay_usec) {
        uint64_t now = now_mono_usec();

        /* sd-event's default slack is 250 ms: right for a poll or a backoff, not between the
         * Bundles of a backlog (it capped delivery at 4 Bundles a second). */
        (void) sd_event_source_set_time_accuracy(u->timer, delay_usec <= SETTLE_USEC ? USEC_PER_MSEC : 0);
        (void) sd_event_source_set_time(u->timer, now + delay_usec);
        (void) sd_event_source_set_enabled(u->timer, SD_EVENT_ONESHOT);
}

static void status(Uplink *u, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void status(Uplink *u, const char *fmt, ...) {
        char line[400];
        va_list ap;

        va_start(ap, fmt);
        vsnprintf(line, sizeof line, fmt, ap);
        va_end(ap);
        (void) sd_notifyf(false, "STATUS=%s", line);
}

/* A failure: recorded for `kneewrapctl uplink`, logged when it is news, retried later. */
static void failed(Uplink *u, uint64_t retry_after_s, const char *fmt, ...) __attribute__((format(printf, 3, 4)));
static void failed(Uplink *u, uint64_t retry_after_s, const char *fmt, ...) {
        const uint64_t max = (uint64_t) u->config.retry_max_s * USEC_PER_SEC;
        char why[256];
        uint64_t delay;
        va_list ap;

        va_start(ap, fmt);
        vsnprintf(why, sizeof why, fmt, ap);
        va_end(ap);

        if (u->state)
                (void) uplink_state_error(u->state, why, clock_real_sec());
        if (!streq(why, u->last_error)) {
                log_warning("Clinic uplink: %s; retrying", why);
                snprintf(u->last_error, sizeof u->last_error, "%s", why);
        } else
                log_debug("Clinic uplink: %s; retrying", why);

        /* The project's one backoff: 1 s doubling to retry_max, with jitter, so a thousand
         * gateways that lost the server together do not come back together. */
        u->failures++;
        delay = backoff_usec(u->failures - 1, RETRY_MIN_USEC, max, random_u64());
        /* The server said when: never sooner (capped, so a bogus date cannot stop us for good). */
        if (retry_after_s > 0) {
                uint64_t ra = retry_after_s > 86400 ? 86400 * USEC_PER_SEC : retry_after_s * USEC_PER_SEC;
                if (ra > delay)
                        delay = ra;
        }
        status(u, "Retrying in %llu s: %s", (unsigned long long) (delay / USEC_PER_SEC), why);
        if (u->once) {
                u->exit_code = EXIT_FAILURE;
                (void) sd_event_exit(u->event, 0);
                return;
        }
        schedule(u, delay);
}

static int store_ready(Uplink *u) {
        _cleanup_free_ char *why = NULL;
        int r;

        if (u->store)
                return 0;
        r = store_open_readonly(u->config.store_path, &u->store, &why);
        if (r < 0) {
                failed(u, 0, "cannot read the store: %s", why ? why : strerror(-r));
                return r;
        }
        return 0;
}

/* The cursor belongs to one store file: a new or restored store starts it over. */
static int cursor_get(Uplink *u, int64_t *ret_cursor, int64_t *ret_created) {
        UplinkStatus st;
        int64_t created, latest;
        int r;

        r = store_identity(u->store, &created);
        /* Past INT64_MAX nothing is pending: only the highest seq is read, not counted. */
        if (r >= 0)
                r = store_changes_pending(u->store, INT64_MAX, NULL, &latest);
        if (r < 0)
                return r;
        r = uplink_state_get(u->state, &st);
        if (r < 0)
                return r;
        if (st.store_created_at != created || st.cursor > latest) {
                if (st.store_created_at != 0)
                        log_notice("Clinic uplink: the store is not the one the cursor was kept for: "
                                   "sending everything again (the server keeps one copy of each)");
                r = uplink_state_reset(u->state, created);
                if (r < 0)
                        return r;
                st.cursor = 0;
        }
        *ret_cursor = st.cursor;
        *ret_created = created;
        return 0;
}

/* One attempt: the next batch past the cursor, as one transaction. */
static int on_timer(sd_event_source *s, uint64_t usec, void *userdata) {
        Uplink *u = userdata;
        _cleanup_free_ StoreChange *changes = NULL;
        _cleanup_free_ char *body = NULL;
        size_t n = 0, used = 0, entries = 0, skipped = 0;
        int64_t cursor, created;
        uint64_t pending = 0;
        FhirOutcome o;
        json_t *bundle = NULL;
        int r;

        if (store_ready(u) < 0)
                return 0;
        r = cursor_get(u, &cursor, &created);
        if (r >= 0)
                r = store_changes_after(u->store, cursor, u->config.batch, &changes, &n);
        if (r < 0) {
                failed(u, 0, "cannot read the store: %s", store_errmsg(u->store));
                /* Reopen next time: the file may have been replaced. */
                u->store = store_close(u->store);
                return 0;
        }
        if (n == 0) {
                u->failures = 0;
                status(u, "Up to date: %llu records delivered since start", (unsigned long long) u->delivered);
                if (u->once) {
                        (void) sd_event_exit(u->event, 0);
                        return 0;
                }
                schedule(u, (uint64_t) u->config.poll_s * USEC_PER_SEC);
                return 0;
        }

        r = uplink_bundle_build(u->store, changes, n, u->config.batch, clock_real_sec(), &bundle, &used, &entries,
                                &skipped);
        if (r >= 0 && used == 0)
                r = -E2BIG;
        if (r < 0) {
                failed(u, 0, "cannot build the Bundle: %s (%s)", strerror(-r), store_errmsg(u->store));
                return 0;
        }
        if (entries > 0) {
                body = json_dumps(bundle, JSON_COMPACT);
                json_decref(bundle);
                if (!body) {
                        failed(u, 0, "out of memory");
                        return 0;
                }
                (void) uplink_state_attempt(u->state, clock_real_sec());
                fhir_client_transaction(u->fhir, body, entries, &o);
                if (o.result != FHIR_OK) {
                        failed(u, o.retry_after_s, "%s", o.error);
                        return 0;
                }
        } else
                json_decref(bundle);

        /* Confirmed: the cursor moves, durably, before anything else is sent. */
        r = uplink_state_confirm(u->state, created, changes[used - 1].seq, used - skipped, clock_real_sec());
        if (r < 0) {
                failed(u, 0, "cannot save the cursor: %s", strerror(-r));
                return 0;
        }
        u->delivered += used - skipped;
        if (u->last_error[0]) {
                log_notice("Clinic uplink: delivering again (%zu records in this Bundle)", used - skipped);
                u->last_error[0] = '\0';
        }
        u->failures = 0;
        log_debug("Clinic uplink: %zu records (%zu entries, %zu bytes) confirmed up to seq %lld",
                  used - skipped, entries, body ? strlen(body) : 0, (long long) changes[used - 1].seq);
        (void) store_changes_pending(u->store, changes[used - 1].seq, &pending, NULL);
        status(u, "Delivering: %llu records pending", (unsigned long long) pending);
        schedule(u, 0);   /* the next batch at once */
        return 0;
}

/* A commit to the store: look soon, unless a retry is already waiting out its backoff. */
static int on_inotify(sd_event_source *s, const struct inotify_event *ev, void *userdata) {
        Uplink *u = userdata;
        uint64_t next = 0, now = 0;

        if (ev->len == 0 || (!streq(ev->name, u->store_base) && !streq(ev->name, u->wal_base)))
                return 0;
        if (u->failures)
                return 0;
        (void) sd_event_source_get_time(u->timer, &next);
        now = now_mono_usec();
        if (next > now + SETTLE_USEC)
                schedule(u, SETTLE_USEC);
        return 0;
}

static int on_signal(sd_event_source *s, const struct signalfd_siginfo *si, void *userdata) {
        Uplink *u = userdata;

        (void) sd_notify(false, "STOPPING=1");
        return sd_event_exit(u->event, 0);
}

static int setup(Uplink *u) {
        _cleanup_free_ char *why = NULL, *dir = NULL, *base = NULL;
        sigset_t mask;
        int r;

        sigemptyset(&mask);
        sigaddset(&mask, SIGTERM);
        sigaddset(&mask, SIGINT);
        if (sigprocmask(SIG_BLOCK, &mask, NULL) < 0)
                return log_error_errno(errno, "Failed to block signals: %s", strerror(errno));
        r = sd_event_default(&u->event);
        if (r < 0)
                return log_error_errno(r, "Failed to create the event loop: %s", strerror(-r));
        (void) sd_event_add_signal(u->event, NULL, SIGTERM, on_signal, u);
        (void) sd_event_add_signal(u->event, NULL, SIGINT, on_signal, u);
        (void) sd_event_set_watchdog(u->event, true);

        r = uplink_state_open(u->config.state_path, false, &u->state, &why);
        if (r < 0)
                return log_error_errno(r, "Failed to open the uplink's state: %s", why ? why : strerror(-r));
        r = fhir_client_new(&u->config, &u->fhir);
        if (r < 0)
                return log_error_errno(r, "Failed to set up libcurl: %s", strerror(-r));

        r = sd_event_add_time(u->event, &u->timer, CLOCK_MONOTONIC, 0, 0, on_timer, u);
        if (r < 0)
                return log_error_errno(r, "Failed to add a timer: %s", strerror(-r));
        (void) sd_event_source_set_enabled(u->timer, SD_EVENT_ONESHOT);

        /* A new record is a commit to the store's -wal (or the file itself): follow it at once
         * with no polling; poll_s is only the fallback. */
        dir = strdup(u->config.store_path);
        base = strdup(u->config.store_path);
        if (!dir || !base)
                return log_error_errno(ENOMEM, "Out of memory");
        snprintf(u->store_base, sizeof u->store_base, "%s", basename(base));
        snprintf(u->wal_base, sizeof u->wal_base, "%s-wal", u->store_base);
        if (!u->once) {
                r = sd_event_add_inotify(u->event, &u->inotify, dirname(dir),
                                         IN_MODIFY | IN_CLOSE_WRITE | IN_MOVED_TO | IN_CREATE, on_inotify, u);
                if (r < 0)
                        log_warning_errno(r, "Cannot watch %s (%s): looking every %u s instead", dir, strerror(-r), u->config.poll_s);
        }
        return 0;
}

static void uplink_done(Uplink *u) {
        u->timer = sd_event_source_unref(u->timer);
        u->inotify = sd_event_source_unref(u->inotify);
        u->fhir = fhir_client_free(u->fhir);
        u->state = uplink_state_close(u->state);
        u->store = store_close(u->store);
        u->event = sd_event_unref(u->event);
        uplink_config_done(&u->config);
}

static void help(void) {
        printf("Usage: %s [OPTIONS]\n"
               "\n"
               "Delivers kneewrapd's records (sessions, pain diary, alerts, patient and wrap) to a\n"
               "clinic's FHIR R4 server as transaction Bundles, each record exactly once.\n"
               "\n"
               "  -h --help            Show this help and exit\n"
               "     --version         Show the version and exit\n"
               "  -c --config FILE     Read FILE instead of %s\n"
               "     --check-config    Check the configuration, print every error, and exit\n"
               "     --once            Send what is pending, then exit (1 at the first failure)\n"
               "  -v --verbose         Log more\n"
               "\n"
               "See kneewrap-uplink(8).\n",
               program_invocation_short_name, UPLINK_DEFAULT_CONFIG);
}

int main(int argc, char *argv[]) {
        enum { ARG_VERSION = 0x100, ARG_CHECK_CONFIG, ARG_ONCE };
        static const struct option options[] = {
                { "help",         no_argument,       NULL, 'h' },
                { "version",      no_argument,       NULL, ARG_VERSION },
                { "config",       required_argument, NULL, 'c' },
                { "check-config", no_argument,       NULL, ARG_CHECK_CONFIG },
                { "once",         no_argument,       NULL, ARG_ONCE },
                { "verbose",      no_argument,       NULL, 'v' },
                { 0 }
        };
        const char *config_path = UPLINK_DEFAULT_CONFIG;
        Uplink u = { .exit_code = EXIT_SUCCESS };
        bool check = false;
        int c, r, verbose = 0;

        while ((c = getopt_long(argc, argv, "hc:v", options, NULL)) >= 0)
                switch (c) {
                case 'h':
                        help();
                        return EXIT_SUCCESS;
                case ARG_VERSION:
                        printf("kneewrap-uplink %s\n", KW_VERSION);
                        return EXIT_SUCCESS;
                case 'c':
                        config_path = optarg;
                        break;
                case ARG_CHECK_CONFIG:
                        check = true;
                        break;
                case ARG_ONCE:
                        u.once = true;
                        break;
                case 'v':
                        verbose++;
                        break;
                default:
                        return EXIT_FAILURE;
                }
        if (optind < argc) {
                fprintf(stderr, "%s: unexpected argument \"%s\"; see --help\n", program_invocation_short_name, argv[optind]);
                return EXIT_FAILURE;
        }

        uplink_config_init(&u.config);
        r = uplink_config_load(&u.config, config_path, stderr);
        if (check || r < 0) {
                if (r >= 0)
                        printf("%s: valid\n", config_path);
                else if (r == -EINVAL)
                        fprintf(stderr, "%s: invalid\n", config_path);
                uplink_config_done(&u.config);
                return r < 0 ? EXIT_FAILURE : EXIT_SUCCESS;
        }
        log_setup(LOG_INFO + verbose > LOG_DEBUG ? LOG_DEBUG : LOG_INFO + verbose);
        if (curl_global_init(CURL_GLOBAL_DEFAULT) != CURLE_OK) {
                log_error("Failed to initialise libcurl");
                return EXIT_FAILURE;
        }

        r = setup(&u);
        if (r >= 0) {
                log_info("Clinic uplink to %s: batches of %u records, store %s", u.config.url, u.config.batch,
                         u.config.store_path);
                (void) sd_notify(false, "READY=1\nSTATUS=Starting");
                r = sd_event_loop(u.event);
                if (r < 0)
                        log_error_errno(r, "The event loop failed: %s", strerror(-r));
        }
        if (r < 0)
                u.exit_code = EXIT_FAILURE;
        uplink_done(&u);
        curl_global_cleanup();
        return u.exit_code;
}
