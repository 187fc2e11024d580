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
/* A 409 is contention on the server, retried; this many in a row for one Bundle and it is
 * taken as a refusal of its content, so it cannot hold the queue for good. */
#define CONFLICT_TRIES 3

typedef struct Uplink {
        UplinkConfig config;
        sd_event *event;
        sd_event_source *timer;       /* the next attempt */
        sd_event_source *inotify;     /* the store's directory: a commit wakes us */
        Store *store;                 /* kneewrapd's, read-only; opened when it can be */
        UplinkState *state;
        Fhir *fhir;
        unsigned failures;            /* in a row; 0: the last attempt worked */
        unsigned conflicts;           /* 409s in a row */
        bool once;                    /* --once: exit when caught up, or at the first failure */
        int exit_code;
        char last_error[256];         /* logged once, until it changes or clears */
        char store_base[256], wal_base[264];
        uint64_t delivered;           /* since start */
        uint64_t rejected;            /* records the server refused for good, not delivered since */
        int64_t isolate_until;        /* a refused Bundle's last seq: one record per Bundle up to it */
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
        if (u->rejected > 0)
                (void) sd_notifyf(false, "STATUS=%s; %llu refused by the server (kneewrap-uplink --rejected)", line,
                                  (unsigned long long) u->rejected);
        else
                (void) sd_notifyf(false, "STATUS=%s", line);
}

/* A failure: recorded for `kneewrapctl uplink`, logged when it is news, retried later.
 * `error`, a positive or negative errno or 0, is the format's %m. */
static void vfailed(Uplink *u, int error, uint64_t retry_after_s, const char *fmt, va_list ap)
        __attribute__((format(printf, 4, 0)));
static void vfailed(Uplink *u, int error, uint64_t retry_after_s, const char *fmt, va_list ap) {
        const uint64_t max = (uint64_t) u->config.retry_max_s * USEC_PER_SEC;
        char why[256];
        uint64_t delay;

        if (error)
                errno = error < 0 ? -error : error;
        vsnprintf(why, sizeof why, fmt, ap);

        if (u->state)
                (void) uplink_state_error(u->state, why, clock_real_sec());
        if (!streq(why, u->last_error)) {
                log_full_errno(LOG_WARNING, error, "Clinic uplink: %s; retrying", why);
                snprintf(u->last_error, sizeof u->last_error, "%s", why);
        } else
                log_full_errno(LOG_DEBUG, error, "Clinic uplink: %s; retrying", why);

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

static void failed(Uplink *u, uint64_t retry_after_s, const char *fmt, ...) __attribute__((format(printf, 3, 4)));
static void failed(Uplink *u, uint64_t retry_after_s, const char *fmt, ...) {
        va_list ap;

        va_start(ap, fmt);
        vfailed(u, 0, retry_after_s, fmt, ap);
        va_end(ap);
}

static void failed_errno(Uplink *u, int error, const char *fmt, ...) __attribute__((format(printf, 3, 4)));
static void failed_errno(Uplink *u, int error, const char *fmt, ...) {
        va_list ap;

        va_start(ap, fmt);
        vfailed(u, error, 0, fmt, ap);
        va_end(ap);
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
        u->rejected = st.rejected;
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

/* "session 5c1f…", "diary entry 12": a record as the log and --rejected name it. */
static const char *change_name(ChangeKind k) {
        switch (k) {
        case CHANGE_WRAP: return "wrap (its Patient and Device)";
        case CHANGE_DIARY: return "diary entry";
        default: return change_kind_to_string(k) ?: "record";
        }
}

/* The Bundle's entries that were sent for changes[k]: what is kept of a refused record. */
static char *entries_of(const json_t *bundle, const size_t *entry_change, size_t entries, size_t k) {
        json_t *list = json_array();
        char *text;

        for (size_t i = 0; list && i < entries; i++)
                if (entry_change[i] == k)
                        (void) json_array_append(list, json_array_get(json_object_get(bundle, "entry"), i));
        text = list ? json_dumps(list, JSON_COMPACT) : NULL;
        json_decref(list);
        return text;
}

/*
 * The server refused change `c` for good: kept with what was sent and what the server said,
 * logged once, shown in STATUS=, and the queue moves on (the change is left out from now
 * on: uplink_state_is_rejected). Returns < 0 when it could not be kept: then it is retried,
 * as nothing may be lost.
 */
static int reject(Uplink *u, int64_t created, const StoreChange *c, const char *payload, const FhirOutcome *o) {
        UplinkStatus st;
        int r;

        r = uplink_state_reject(u->state, created, c, o->http_status, o->error, o->operation_outcome, payload,
                                clock_real_sec());
        if (r < 0) {
                failed_errno(u, r, "cannot keep the record the server refused (%s): %m", o->error);
                return r;
        }
        log_warning("Clinic uplink: the server refused %s %s (change %lld) for good: %s. It is kept with the "
                    "server's answer (kneewrap-uplink --rejected) and the others go on; after the server is "
                    "fixed, kneewrap-uplink --retry-rejected sends it again",
                    change_name(c->kind), c->key, (long long) c->seq, o->error);
        if (uplink_state_get(u->state, &st) >= 0)
                u->rejected = st.rejected;
        return 0;
}

/* Sends `n` changes (one Bundle). On return *ret_used of them are covered and o holds the answer. */
static int send_changes(Uplink *u, const StoreChange *changes, size_t n, FhirOutcome *o, size_t *ret_used,
                        size_t *ret_skipped, size_t *entry_change, size_t *ret_entries, json_t **ret_bundle) {
        _cleanup_free_ char *body = NULL;
        json_t *bundle = NULL;
        size_t used = 0, entries = 0, skipped = 0;
        int r;

        *o = (FhirOutcome) { .result = FHIR_OK, .entry = -1 };
        r = uplink_bundle_build(u->store, changes, n, u->config.batch, clock_real_sec(), &bundle, &used, &entries,
                                &skipped, entry_change);
        if (r >= 0 && used == 0) {
                json_decref(bundle);
                r = -E2BIG;
        }
        if (r < 0) {
                failed_errno(u, r, "cannot build the Bundle: %m (%s)", store_errmsg(u->store));
                return r;
        }
        if (entries > 0) {
                body = json_dumps(bundle, JSON_COMPACT);
                if (!body) {
                        json_decref(bundle);
                        failed(u, 0, "out of memory");
                        return -ENOMEM;
                }
                (void) uplink_state_attempt(u->state, clock_real_sec());
                fhir_client_transaction(u->fhir, body, entries, o);
                log_debug("Clinic uplink: %zu records, %zu entries, %zu bytes: %s", used - skipped, entries,
                          strlen(body), o->result == FHIR_OK ? "confirmed" : o->error);
        }
        *ret_used = used;
        *ret_skipped = skipped;
        *ret_entries = entries;
        *ret_bundle = bundle;
        return 0;
}

/* A 409 that keeps coming is a refusal (CONFLICT_TRIES in a row). */
static bool refused_for_good(Uplink *u, const FhirOutcome *o) {
        u->conflicts = o->result == FHIR_RETRY && o->http_status == 409 ? u->conflicts + 1 : 0;
        if (u->conflicts >= CONFLICT_TRIES) {
                u->conflicts = 0;
                return true;
        }
        return o->result == FHIR_REJECTED;
}

/*
 * One record that --retry-rejected marked, sent alone. Returns 1 when one was tried (the next
 * step is scheduled), 0 when none is marked, < 0 on a failure (handled).
 */
static int retry_one(Uplink *u, int64_t created) {
        size_t used = 0, skipped = 0, entries = 0, entry_change[3];
        UplinkRejected rj;
        FhirOutcome o = { .entry = -1 };
        json_t *bundle = NULL;
        UplinkStatus st;
        int r;

        r = uplink_state_next_retry(u->state, &rj);
        if (r == -ENOENT)
                return 0;
        if (r < 0) {
                failed_errno(u, r, "cannot read the refused records: %m");
                return r;
        }
        if (rj.store_created_at == created) {
                /* The record as the store holds it now, sent alone, as it was when refused. */
                r = send_changes(u, &rj.change, 1, &o, &used, &skipped, entry_change, &entries, &bundle);
                json_decref(bundle);
                if (r < 0)
                        goto done;
        }
        if (rj.store_created_at != created || skipped == 1) {
                /* Not in this store (another store file, or gone): nothing can be sent. */
                o = (FhirOutcome) { .result = FHIR_REJECTED, .entry = -1 };
                snprintf(o.error, sizeof o.error, "not in the store any more: nothing to send");
        }
        if (o.result == FHIR_OK) {
                r = uplink_state_delivered(u->state, created, rj.change.kind, rj.change.key, clock_real_sec());
                if (r < 0) {
                        failed_errno(u, r, "cannot save the state: %m");
                        goto done;
                }
                log_notice("Clinic uplink: %s %s, refused before, was delivered on retry", change_name(rj.change.kind),
                           rj.change.key);
                u->delivered++;
        } else if (refused_for_good(u, &o)) {
                r = uplink_state_retry_refused(u->state, rj.id, o.http_status, o.error, o.operation_outcome,
                                               clock_real_sec());
                if (r < 0) {
                        failed_errno(u, r, "cannot save the state: %m");
                        goto done;
                }
                log_warning("Clinic uplink: the server refused %s %s again: %s", change_name(rj.change.kind),
                            rj.change.key, o.error);
        } else {
                failed(u, o.retry_after_s, "%s", o.error);
                r = -EAGAIN;
                goto done;
        }
        u->failures = 0;
        if (uplink_state_get(u->state, &st) >= 0)
                u->rejected = st.rejected;
        schedule(u, 0);
        r = 1;
done:
        fhir_outcome_done(&o);
        free(rj.outcome);
        free(rj.payload);
        return r;
}

/* Leaves out the changes the server refused before: they wait for --retry-rejected. */
static int drop_rejected(Uplink *u, int64_t created, StoreChange *changes, size_t *n) {
        size_t k = 0;

        for (size_t i = 0; i < *n; i++) {
                int r = u->rejected > 0 || u->isolate_until ? uplink_state_is_rejected(u->state, created, changes[i].seq) : 0;
                if (r < 0)
                        return r;
                if (r == 0)
                        changes[k++] = changes[i];
        }
        *n = k;
        return 0;
}

/* One attempt: the next batch past the cursor, as one transaction. */
static int on_timer(sd_event_source *s, uint64_t usec, void *userdata) {
        Uplink *u = userdata;
        _cleanup_free_ StoreChange *changes = NULL;
        _cleanup_free_ size_t *entry_change = NULL;
        size_t n = 0, used = 0, entries = 0, skipped = 0, send_n;
        int64_t cursor, created, last_read;
        uint64_t pending = 0;
        FhirOutcome o = { .entry = -1 };
        json_t *bundle = NULL;
        int r;

        if (store_ready(u) < 0)
                return 0;
        r = cursor_get(u, &cursor, &created);
        if (r >= 0 && u->rejected > 0 && retry_one(u, created) != 0)
                return 0;
        if (r >= 0)
                r = store_changes_after(u->store, cursor, u->config.batch, &changes, &n);
        if (r < 0) {
                failed(u, 0, "cannot read the store: %s", store_errmsg(u->store));
                /* Reopen next time: the file may have been replaced. */
                u->store = store_close(u->store);
                return 0;
        }
        last_read = n > 0 ? changes[n - 1].seq : 0;
        r = drop_rejected(u, created, changes, &n);
        if (r < 0) {
                failed_errno(u, r, "cannot read the refused records: %m");
                return 0;
        }
        if (n == 0 && last_read > 0) {
                /* Only refused records were left in this stretch: the cursor moves past them. */
                r = uplink_state_confirm(u->state, created, last_read, 0, clock_real_sec());
                if (r < 0)
                        failed_errno(u, r, "cannot save the cursor: %m");
                else
                        schedule(u, 0);
                return 0;
        }
        if (n == 0) {
                u->failures = 0;
                u->isolate_until = 0;
                status(u, "Up to date: %llu records delivered since start", (unsigned long long) u->delivered);
                if (u->once) {
                        (void) sd_event_exit(u->event, 0);
                        return 0;
                }
                schedule(u, (uint64_t) u->config.poll_s * USEC_PER_SEC);
                return 0;
        }
        if (u->isolate_until && changes[0].seq > u->isolate_until) {
                log_notice("Clinic uplink: every record of the refused Bundle was sent alone; back to Bundles of up to %u entries",
                           u->config.batch);
                u->isolate_until = 0;
        }
        /* Finding which record of a refused Bundle the server refuses: one record per Bundle. */
        send_n = u->isolate_until ? 1 : n;
        entry_change = calloc(u->config.batch, sizeof(*entry_change));
        if (!entry_change) {
                failed(u, 0, "out of memory");
                return 0;
        }
        r = send_changes(u, changes, send_n, &o, &used, &skipped, entry_change, &entries, &bundle);
        if (r < 0)
                return 0;

        if (refused_for_good(u, &o)) {
                bool one = entries > 0;
                size_t k;

                for (size_t i = 1; i < entries; i++)
                        one = one && entry_change[i] == entry_change[0];
                if (o.entry >= 0 && (size_t) o.entry < entries)
                        k = entry_change[o.entry];        /* the server said which */
                else if (one)
                        k = entry_change[0];              /* a Bundle of one record */
                else {
                        /* The server did not say which record: each is sent alone, up to this
                         * Bundle's last, to find it; the others go through meanwhile. */
                        log_notice("Clinic uplink: the server refused a Bundle of %zu records (%s) without saying "
                                   "which; sending them one by one", used - skipped, o.error);
                        u->isolate_until = changes[used - 1].seq;
                        goto next;
                }
                _cleanup_free_ char *payload = entries_of(bundle, entry_change, entries, k);
                if (reject(u, created, &changes[k], payload, &o) < 0)
                        goto out;
                goto next;
        }
        if (o.result != FHIR_OK) {
                failed(u, o.retry_after_s, "%s", o.error);
                goto out;
        }

        /* Confirmed: the cursor moves, durably, before anything else is sent. */
        r = uplink_state_confirm(u->state, created, changes[used - 1].seq, used - skipped, clock_real_sec());
        if (r < 0) {
                failed_errno(u, r, "cannot save the cursor: %m");
                goto out;
        }
        /* A record refused before and corrected since went through: its refusal is over. */
        for (size_t i = 0; u->rejected > 0 && i < used; i++)
                (void) uplink_state_delivered(u->state, created, changes[i].kind, changes[i].key, clock_real_sec());
        u->delivered += used - skipped;
        if (u->last_error[0]) {
                log_notice("Clinic uplink: delivering again (%zu records in this Bundle)", used - skipped);
                u->last_error[0] = '\0';
        }
        log_debug("Clinic uplink: confirmed up to seq %lld", (long long) changes[used - 1].seq);
        (void) store_changes_pending(u->store, changes[used - 1].seq, &pending, NULL);
        status(u, "Delivering: %llu records pending", (unsigned long long) pending);
next:
        u->failures = 0;
        schedule(u, 0);   /* the next batch at once */
out:
        json_decref(bundle);
        fhir_outcome_done(&o);
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

/* SIGHUP (systemctl reload): look now, e.g. for the records --retry-rejected marked. */
static int on_sighup(sd_event_source *s, const struct signalfd_siginfo *si, void *userdata) {
        Uplink *u = userdata;

        log_info("Clinic uplink: asked to look again now");
        u->failures = 0;
        schedule(u, 0);
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
        sigaddset(&mask, SIGHUP);
        if (sigprocmask(SIG_BLOCK, &mask, NULL) < 0)
                return log_error_errno(errno, "Failed to block signals: %m");
        r = sd_event_default(&u->event);
        if (r < 0)
                return log_error_errno(r, "Failed to create the event loop: %m");
        (void) sd_event_add_signal(u->event, NULL, SIGTERM, on_signal, u);
        (void) sd_event_add_signal(u->event, NULL, SIGINT, on_signal, u);
        (void) sd_event_add_signal(u->event, NULL, SIGHUP, on_sighup, u);
        (void) sd_event_set_watchdog(u->event, true);

        r = uplink_state_open(u->config.state_path, false, &u->state, &why);
        if (r < 0)
                return log_error_errno(r, "Failed to open the uplink's state: %s", why ? why : strerror(-r));
        r = fhir_client_new(&u->config, &u->fhir);
        if (r < 0)
                return log_error_errno(r, "Failed to set up libcurl: %m");

        r = sd_event_add_time(u->event, &u->timer, CLOCK_MONOTONIC, 0, 0, on_timer, u);
        if (r < 0)
                return log_error_errno(r, "Failed to add a timer: %m");
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
                        log_warning_errno(r, "Cannot watch %s (%m): looking every %u s instead", dir, u->config.poll_s);
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

/* --rejected: the records the server refused for good, with its answer. */
static int list_rejected(const UplinkConfig *c, bool json) {
        _cleanup_free_ char *why = NULL;
        UplinkState *state = NULL;
        UplinkRejected *list = NULL;
        size_t n = 0, open = 0;
        char iso[CLOCK_ISO_MAX], iso2[CLOCK_ISO_MAX];
        int r;

        r = uplink_state_open(c->state_path, true, &state, &why);
        if (r == -ENOENT) {
                printf(json ? "[]\n" : "No record was refused: the uplink has not run here (no %s)\n", c->state_path);
                return EXIT_SUCCESS;
        }
        if (r >= 0)
                r = uplink_state_rejected_list(state, false, &list, &n);
        uplink_state_close(state);
        if (r < 0) {
                fprintf(stderr, "%s: cannot read the refused records in %s: %s%s\n", program_invocation_short_name,
                        c->state_path, why ? why : strerror(-r),
                        r == -EACCES ? " (they are health data: root or the uplink's user only)" : "");
                return EXIT_FAILURE;
        }
        if (json) {
                json_t *a = json_array();

                for (size_t i = 0; a && i < n; i++) {
                        const UplinkRejected *x = &list[i];
                        json_t *oo = x->outcome ? json_loads(x->outcome, 0, NULL) : NULL;

                        (void) json_array_append_new(a, json_pack(
                                "{s:s, s:s, s:I, s:I, s:s, s:s, s:I, s:I, s:s, s:o, s:o, s:b, s:o}",
                                "kind", change_kind_to_string(x->change.kind) ?: "unknown",
                                "key", x->change.key,
                                "seq", (json_int_t) x->change.seq,
                                "rev", (json_int_t) x->change.rev,
                                "refused_at", clock_format_iso(x->at, iso),
                                "last_refused_at", clock_format_iso(x->last_at, iso2),
                                "attempts", (json_int_t) x->attempts,
                                "http_status", (json_int_t) x->http_status,
                                "diagnostics", x->diagnostics,
                                "operation_outcome", oo ? oo : json_null(),
                                "payload", json_loads(x->payload, 0, NULL) ?: json_null(),
                                "retry", x->retry,
                                "delivered_at", x->delivered_at ? json_string(clock_format_iso(x->delivered_at, iso))
                                                                : json_null()));
                }
                char *text = a ? json_dumps(a, JSON_INDENT(2)) : NULL;
                json_decref(a);
                uplink_rejected_free(list, n);
                if (!text)
                        return EXIT_FAILURE;
                printf("%s\n", text);
                free(text);
                return EXIT_SUCCESS;
        }
        for (size_t i = 0; i < n; i++)
                open += list[i].delivered_at == 0;
        printf("%zu records refused by the clinic's server and not delivered since", open);
        if (n > open)
                printf(" (%zu more refused before, delivered since)", n - open);
        printf("\n");
        for (size_t i = 0; i < n; i++) {
                const UplinkRejected *x = &list[i];

                printf("%s %s %s: change %lld, refused %s", x->delivered_at ? "delivered" : "REFUSED  ",
                       change_kind_to_string(x->change.kind) ?: "unknown", x->change.key, (long long) x->change.seq,
                       clock_format_iso(x->at, iso));
                if (x->attempts > 1)
                        printf(", %u times, last %s", x->attempts, clock_format_iso(x->last_at, iso2));
                printf("%s\n    %s\n", x->retry ? ", to be sent again" : "", x->diagnostics);
        }
        if (open > 0)
                printf("Once the server is fixed: kneewrap-uplink --retry-rejected\n");
        uplink_rejected_free(list, n);
        return EXIT_SUCCESS;
}

/* --retry-rejected: marks them; the running uplink sends them (at once after a reload). */
static int mark_rejected(const UplinkConfig *c) {
        _cleanup_free_ char *why = NULL;
        UplinkState *state = NULL;
        unsigned n = 0;
        int r;

        r = uplink_state_open(c->state_path, false, &state, &why);
        if (r >= 0)
                r = uplink_state_retry_rejected(state, &n);
        uplink_state_close(state);
        if (r < 0) {
                fprintf(stderr, "%s: cannot mark the refused records in %s: %s\n", program_invocation_short_name,
                        c->state_path, why ? why : strerror(-r));
                return r;
        }
        printf("%u refused records will be sent again, each alone\n", n);
        return 0;
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
               "     --rejected        List the records the server refused for good, and why\n"
               "     --json            With --rejected: as JSON, with the server's OperationOutcome\n"
               "     --retry-rejected  Send the refused records again (the running uplink does, at\n"
               "                       once after systemctl reload kneewrap-uplink; or with --once)\n"
               "  -v --verbose         Log more\n"
               "\n"
               "See kneewrap-uplink(8).\n",
               program_invocation_short_name, UPLINK_DEFAULT_CONFIG);
}

int main(int argc, char *argv[]) {
        enum { ARG_VERSION = 0x100, ARG_CHECK_CONFIG, ARG_ONCE, ARG_REJECTED, ARG_RETRY_REJECTED, ARG_JSON };
        static const struct option options[] = {
                { "help",         no_argument,       NULL, 'h' },
                { "version",      no_argument,       NULL, ARG_VERSION },
                { "config",       required_argument, NULL, 'c' },
                { "check-config", no_argument,       NULL, ARG_CHECK_CONFIG },
                { "once",         no_argument,       NULL, ARG_ONCE },
                { "rejected",     no_argument,       NULL, ARG_REJECTED },
                { "retry-rejected", no_argument,     NULL, ARG_RETRY_REJECTED },
                { "json",         no_argument,       NULL, ARG_JSON },
                { "verbose",      no_argument,       NULL, 'v' },
                { 0 }
        };
        const char *config_path = UPLINK_DEFAULT_CONFIG;
        Uplink u = { .exit_code = EXIT_SUCCESS };
        bool check = false, rejected = false, retry_rejected = false, json = false;
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
                case ARG_REJECTED:
                        rejected = true;
                        break;
                case ARG_RETRY_REJECTED:
                        retry_rejected = true;
                        break;
                case ARG_JSON:
                        json = true;
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
        if (rejected) {
                r = list_rejected(&u.config, json);
                uplink_config_done(&u.config);
                return r;
        }
        if (retry_rejected) {
                r = mark_rejected(&u.config);
                if (r < 0 || !u.once) {
                        uplink_config_done(&u.config);
                        return r < 0 ? EXIT_FAILURE : EXIT_SUCCESS;
                }
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
                        log_error_errno(r, "The event loop failed: %m");
        }
        if (r < 0)
                u.exit_code = EXIT_FAILURE;
        uplink_done(&u);
        curl_global_cleanup();
        return u.exit_code;
}
