/* manager: the daemon's one object; it owns the event loop and wires every module to it. */
#include <errno.h>
#include <inttypes.h>
#include <limits.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <libgen.h>
#include <string.h>
#include <sys/inotify.h>
#include <systemd/sd-daemon.h>

#include "bluez.h"
#include "alert.h"
#include "bus-api.h"
#include "clock.h"
#include "config.h"
#include "log.h"
#include "manager.h"
#include "mqtt.h"
#include "payload.h"
#include "rules.h"
#include "store.h"
#include "util.h"
#include "wrap.h"

#define BUS_NAME "org.kneewrap1"
#define STORE_RETRY_MIN_USEC (1 * USEC_PER_SEC)
#define STORE_RETRY_MAX_USEC (60 * USEC_PER_SEC)
/* R8 runs a little after local midnight, once the day's diary is complete. */
#define R8_AFTER_MIDNIGHT_S 300

static void store_retry_schedule(Manager *m);
static int r8_schedule(Manager *m);
static void r8_check_all(Manager *m);

int64_t manager_now(Manager *m) {
        uint64_t it = 0;

        /* One reading per loop iteration: every decision in it sees the same instant. */
        if (m->event && sd_event_get_iteration(m->event, &it) >= 0 && it != 0 && it == m->now_iteration)
                return m->now_sec;
        m->now_iteration = it;
        m->now_sec = clock_real_sec();
        return m->now_sec;
}

/* ---- STATUS= ---- */

/* What is wrong with the store, and what the administrator can do about it. */
const char *manager_store_problem(Manager *m, int error) {
        /* One thread: the text is used before the next call. */
        static char full[PATH_MAX + 160];
        _cleanup_free_ char *dir = NULL;

        switch (-abs(error)) {
        case -ENOSPC:
                dir = m && m->config.store_path ? strdup(m->config.store_path) : NULL;
                snprintf(full, sizeof full, "the disk is full: free space on the file system of %s "
                         "(or raise the service's file-size limit, LimitFSIZE=, if one is set)",
                         dir ? dirname(dir) : "the store");
                return full;
        case -EUCLEAN: return "file corrupt or truncated: stop kneewrapd, move the file aside "
                              "and restore a backup (or let kneewrapd start a new one)";
        case -EBADMSG: return "not a kneewrap store: move the file aside, or set [store] path to another file";
        case -EIO: return "I/O error (a failing disk or SD card, often): check the kernel's log (journalctl -k) "
                          "and the disk";
        case -EACCES:
        case -EPERM: return "permission denied: the file and its directory must be writable by the service's user";
        case -EROFS: return "read-only file system (a failing disk or SD card, often): check it (fsck) and mount it read-write again";
        case -ENOENT: return "directory missing: create it (StateDirectory= does)";
        case -EPROTO: return "written by a newer kneewrap: install that version again, or restore a backup";
        default: return strerror(abs(error));
        }
}

void manager_update_status(Manager *m) {
        char ble[160], mqtt[160], line[512];

        bluez_status(m->bluez, ble, sizeof ble);

        if (!m->config.mqtt_host)
                snprintf(mqtt, sizeof mqtt, "MQTT off");
        else if (mqtt_connected(m->mqtt))
                snprintf(mqtt, sizeof mqtt, "MQTT connected");
        else
                snprintf(mqtt, sizeof mqtt, "MQTT connecting to %s:%u", m->config.mqtt_host, m->config.mqtt_port);

        if (!m->store)
                snprintf(line, sizeof line, "Store unavailable (%s): %s; refusing sessions, retrying; %s, %s, %s",
                         m->config.store_path, manager_store_problem(m, m->store_error), ble, mqtt,
                         manager_clock_status(m));
        else
                snprintf(line, sizeof line, "%s, %s, store OK, %s", ble, mqtt, manager_clock_status(m));
        if (m->uplink.configured && m->uplink.has_pending) {
                size_t k = strlen(line);
                if (m->uplink.status.last_error[0])
                        snprintf(line + k, sizeof line - k, "; clinic uplink failing (%.80s), %" PRIu64 " pending",
                                 m->uplink.status.last_error, m->uplink.pending);
                else
                        snprintf(line + k, sizeof line - k, "; clinic uplink: %" PRIu64 " pending", m->uplink.pending);
        }
        /* Refused for good by the clinic's server: the clinic must look (kneewrap-uplink --rejected). */
        if (m->uplink.configured && m->uplink.status.rejected > 0) {
                size_t k = strlen(line);
                snprintf(line + k, sizeof line - k, "; %" PRIu64 " record%s refused by the clinic's server",
                         m->uplink.status.rejected, m->uplink.status.rejected == 1 ? "" : "s");
        }

        if (!m->status || !streq(m->status, line)) {
                free(m->status);
                m->status = strdup(line);
                (void) sd_notifyf(false, "STATUS=%s", line);
        }
        /* Whatever changed may show in the D-Bus API's properties; it sends changes only. */
        bus_api_changed(m->api);
}

/* ---- the clinic uplink's figures ---- */

void manager_uplink_refresh(Manager *m) {
        UplinkReport u;

        if (uplink_report(m->store, m->config.uplink_state_path, &u) >= 0)
                m->uplink = u;
}

/* The uplink wrote its state (a Bundle confirmed, or a failure): the figures changed. */
static int on_uplink_state(sd_event_source *s, const struct inotify_event *ev, void *userdata) {
        Manager *m = userdata;
        _cleanup_free_ char *copy = strdup(m->config.uplink_state_path);

        if (!copy || ev->len == 0 || !streq(ev->name, basename(copy)))
                return 0;
        manager_uplink_refresh(m);
        if (m->ready)
                manager_update_status(m);
        return 0;
}

static void uplink_watch(Manager *m) {
        _cleanup_free_ char *dir = strdup(m->config.uplink_state_path);

        m->uplink_watch = sd_event_source_disable_unref(m->uplink_watch);
        /* No uplink on this gateway (no state directory): nothing to watch, nothing to say. */
        if (!dir || sd_event_add_inotify(m->event, &m->uplink_watch, dirname(dir),
                                         IN_CLOSE_WRITE | IN_MODIFY | IN_MOVED_TO, on_uplink_state, m) < 0)
                return;
        manager_uplink_refresh(m);
}

/* ---- the store: open at start, and while it fails, retry with backoff ---- */

static int store_try_open(Manager *m) {
        _cleanup_free_ char *why = NULL;
        Store *s = NULL;
        int r;

        r = store_open_err(m->config.store_path, &s, &why);
        if (r >= 0) {
                r = store_check(s);
                if (r < 0 && store_errmsg(s))
                        why = strdup(store_errmsg(s));
        }
        if (r < 0) {
                store_close(s);
                /* Once per kind of failure, not once per retry. */
                log_internal(m->store_error != r ? LOG_ERR : LOG_DEBUG, r, NULL, NULL,
                             "Store %s unavailable (%s%s%s): refusing sessions until it works again",
                             m->config.store_path, manager_store_problem(m, r), why ? ": " : "", why ? why : "");
                m->store_error = r;
                return r;
        }

        if (m->store_error)
                log_notice("Store %s works again.", m->config.store_path);
        m->store = s;
        m->store_error = 0;
        m->store_retries = 0;
        m->store_retry = sd_event_source_disable_unref(m->store_retry);
        return 0;
}

static void store_now_available(Manager *m) {
        /* Facts written while MQTT was waiting, and R8 checks missed while the store was down. */
        int64_t newest;

        if (store_newest_time(m->store, &newest) >= 0 && newest > m->newest_wall)
                m->newest_wall = newest;
        wraps_stored_invalidate(m, NULL);
        (void) manager_wraps_load(m);
        mqtt_kick(m->mqtt);
        r8_check_all(m);
        m->clock_was_trusted = false;   /* records taken while the store was away may need correcting */
        manager_clock_check(m);
}

static int on_store_retry(sd_event_source *s, uint64_t usec, void *userdata) {
        Manager *m = userdata;

        m->store_retry = sd_event_source_disable_unref(m->store_retry);
        if (store_try_open(m) < 0)
                store_retry_schedule(m);
        else
                store_now_available(m);
        manager_update_status(m);
        return 0;
}

static void store_retry_schedule(Manager *m) {
        int r;

        uint64_t delay = backoff_usec(m->store_retries++, STORE_RETRY_MIN_USEC, STORE_RETRY_MAX_USEC, random_u64());

        m->store_retry = sd_event_source_disable_unref(m->store_retry);
        /* Real time: a disk does not get fixed faster under KNEEWRAP_TIME_SCALE. */
        r = sd_event_add_time_relative(m->event, &m->store_retry, CLOCK_MONOTONIC, delay,
                                       USEC_PER_SEC / 10, on_store_retry, m);
        if (r < 0)
                log_error_errno(r, "Cannot schedule the store retry: %m");
        else
                log_debug("Retrying the store in %.1f s.", (double) delay / USEC_PER_SEC);
}

void manager_store_failed(Manager *m, int error) {
        if (!m->store && m->store_retry)
                return; /* already known */
        log_error_errno(error, "Store %s failed (%s: %s): refusing sessions until it works again",
                        m->config.store_path, manager_store_problem(m, error), m->store ? store_errmsg(m->store) : "closed");
        m->store = store_close(m->store);
        m->store_error = error < 0 ? error : -error;
        m->store_retries = 0;
        /* kneewrapctl borrows the one door without a loop: it just reports the error. */
        if (!m->event)
                return;
        store_retry_schedule(m);
        manager_update_status(m);
}

/* ---- R8, persisting pain: after a diary entry, and daily ---- */

int manager_r8_check(Manager *m, const char *wrap, int64_t now) {
        _cleanup_free_ DiaryEntry *entries = NULL;
        RulesState st;
        unsigned raised = 0;
        size_t n = 0;
        AlertKind a;
        int r;

        r = store_rules_state(m->store, wrap, &m->config.therapy, &st);
        if (r < 0)
                return r;
        if (!st.has_injury)
                return 0;
        r = store_diary_list(m->store, wrap, st.injury_from, &entries, &n);
        if (r < 0)
                return r;
        r = store_alerts_raised(m->store, wrap, st.injury_from, &raised);
        if (r < 0)
                return r;

        a = rules_persisting_pain(&st, entries, n, raised, now);
        if (a == ALERT_NONE)
                return 0;

        r = alert_raise(m, wrap, a, now, a == ALERT_SEE_PHYSIO_OVERDUE
                        ? "Six weeks after the injury the pain diary shows no improvement: seeing a physiotherapist is overdue (R8)."
                        : "Four weeks after the injury the pain diary shows no improvement: see a physiotherapist (R8).",
                        NULL);
        return r < 0 ? r : 1;
}

static void r8_check_all(Manager *m) {
        _cleanup_free_ StoredWrap *wraps = NULL;
        int64_t now = manager_now(m);
        size_t n = 0;
        int r;

        if (!m->store)
                return;
        r = store_wrap_list(m->store, &wraps, &n);
        if (r < 0) {
                if (store_is_broken(r))
                        manager_store_failed(m, r);
                else
                        log_error_errno(r, "R8 check: cannot list the wraps: %m");
                return;
        }
        for (size_t i = 0; i < n; i++) {
                r = manager_r8_check(m, wraps[i].wrap, now);
                if (store_is_broken(r)) {
                        manager_store_failed(m, r);
                        return;
                }
                if (r < 0)
                        log_wrap_errno(LOG_ERR, r, wraps[i].wrap, "R8 check failed: %m");
        }
}

static int on_r8_timer(sd_event_source *s, uint64_t usec, void *userdata) {
        Manager *m = userdata;

        log_debug("Daily R8 check.");
        r8_check_all(m);
        (void) r8_schedule(m);
        return 0;
}

static int r8_schedule(Manager *m) {
        int64_t now = manager_now(m), end;
        char date[11];
        int y, mo, d, r;

        clock_format_date(now, date);
        if (sscanf(date, "%d-%d-%d", &y, &mo, &d) != 3 || clock_local_day_end(y, mo, d, &end) < 0)
                end = now + RULES_DAY_S; /* cannot happen; a day later is still safe */
        end += R8_AFTER_MIDNIGHT_S;

        /* The scaled clock decides when midnight is; sd-event waits in real time. */
        uint64_t deadline = clock_mono_to_real_usec(clock_mono_usec() + (uint64_t) (end - now) * USEC_PER_SEC);
        uint64_t accuracy = clock_wait_usec(60 * USEC_PER_SEC);

        if (m->r8_timer) {
                r = sd_event_source_set_time(m->r8_timer, deadline);
                if (r >= 0)
                        r = sd_event_source_set_enabled(m->r8_timer, SD_EVENT_ONESHOT);
        } else
                r = sd_event_add_time(m->event, &m->r8_timer, CLOCK_MONOTONIC, deadline, accuracy, on_r8_timer, m);
        if (r < 0)
                return log_error_errno(r, "Cannot schedule the daily R8 check: %m");
        return 0;
}

/* ---- signals and reload ---- */

static int on_exit_signal(sd_event_source *s, const struct signalfd_siginfo *si, void *userdata) {
        Manager *m = userdata;

        log_info("Received %s, shutting down.", strsignal((int) si->ssi_signo));
        (void) sd_notify(false, "STOPPING=1\nSTATUS=Shutting down");
        return sd_event_exit(m->event, 0);
}

static void log_lines(int level, const char *text) {
        const char *p = text, *nl;

        for (; p && *p; p = nl ? nl + 1 : NULL) {
                nl = strchr(p, '\n');
                log_internal(level, 0, NULL, NULL, "%.*s", nl ? (int) (nl - p) : (int) strlen(p), p);
        }
}

static void apply_log_level(Manager *m) {
        int l = m->config.log_level + m->log_verbose;
        log_set_max_level(l > LOG_DEBUG ? LOG_DEBUG : l);
}

int manager_reload(Manager *m) {
        _cleanup_free_ char *errors = NULL;
        size_t errors_size = 0;
        Config new, old;
        FILE *f;
        int r;

        if (!m->config_path) {
                log_notice("Reload: no configuration file; nothing to load.");
                return 0;
        }
        (void) sd_notify(false, "RELOADING=1\nSTATUS=Reloading the configuration");

        f = open_memstream(&errors, &errors_size);
        config_init(&new);
        r = config_load(&new, m->config_path, f);
        if (f)
                fclose(f);
        if (r < 0) {
                if (errors && *errors)
                        log_lines(LOG_ERR, errors);
                if (r == -EINVAL)
                        log_error("Reload: %s has the errors above; keeping the running configuration.",
                                  m->config_path);
                else
                        log_error_errno(r, "Reload: cannot read %s (%m); keeping the running configuration.",
                                        m->config_path);
                config_done(&new);
                (void) sd_notify(false, "READY=1");
                free(m->status);
                m->status = NULL;
                manager_update_status(m);
                return r;
        }

        old = m->config;
        m->config = new;

        if (m->config.mqtt_host && !old.mqtt_host)
                r = manager_mqtt_new(m);
        else if (!m->config.mqtt_host && old.mqtt_host) {
                m->mqtt = mqtt_free(m->mqtt);
                r = 0;
        } else
                r = mqtt_reload(m->mqtt);
        if (r < 0) {
                log_error("Reload: the new MQTT settings cannot work; keeping the running configuration.");
                m->config = old;
                old = new;
                if (m->config.mqtt_host && !m->mqtt)
                        (void) manager_mqtt_new(m);
                else if (!m->config.mqtt_host)
                        m->mqtt = mqtt_free(m->mqtt);
                else
                        (void) mqtt_reload(m->mqtt);
        }

        if (!streq_ptr(old.store_path, m->config.store_path) && r >= 0) {
                log_notice("Reload: the store moves from %s to %s.", old.store_path, m->config.store_path);
                m->store = store_close(m->store);
                m->store_error = 0;
                if (store_try_open(m) < 0)
                        store_retry_schedule(m);
                else
                        store_now_available(m);
        }
        /* The therapy defaults may differ: what MQTT shows is read again. */
        wraps_stored_invalidate(m, NULL);
        /* [bluetooth] changes (adapter, allow list) apply as the BLE client next looks at them. */
        bluez_set_adoption(m->bluez, m->adoption_until);

        config_done(&old);
        apply_log_level(m);
        if (r >= 0)
                log_info("Reloaded %s.", m->config_path);
        (void) sd_notify(false, "READY=1");
        free(m->status);
        m->status = NULL;
        manager_update_status(m);
        return r;
}

static int on_sighup(sd_event_source *s, const struct signalfd_siginfo *si, void *userdata) {
        (void) manager_reload(userdata);
        return 0;
}

/* ---- the bus ---- */

static int on_name_acquired(sd_bus_message *reply, void *userdata, sd_bus_error *ret_error) {
        const sd_bus_error *e = sd_bus_message_get_error(reply);

        if (e)
                log_warning("Cannot own %s on the system bus (%s): the D-Bus API is off. Is the policy file installed?",
                            BUS_NAME, e->message ? e->message : e->name);
        else
                log_debug("Own %s.", BUS_NAME);
        return 0;
}


static int bus_setup(Manager *m) {
        int r;

        r = sd_bus_open_system_with_description(&m->bus, "kneewrapd");
        if (r < 0)
                return log_error_errno(r, "Cannot connect to the system bus: %m");
        /* Without the bus we can do nothing useful: exit, and let systemd restart us. */
        r = sd_bus_set_exit_on_disconnect(m->bus, true);
        if (r < 0)
                return log_error_errno(r, "Cannot set up the system bus: %m");
        r = sd_bus_attach_event(m->bus, m->event, SD_EVENT_PRIORITY_NORMAL);
        if (r < 0)
                return log_error_errno(r, "Cannot attach the system bus to the event loop: %m");

        /* The API's object first: whoever sees the name appear finds it there. */
        r = bus_api_new(m, &m->api);
        if (r < 0)
                return log_error_errno(r, "Cannot register the D-Bus API: %m");
        r = sd_bus_request_name_async(m->bus, NULL, BUS_NAME, 0, on_name_acquired, m);
        if (r < 0)
                log_warning_errno(r, "Cannot ask for %s: %m", BUS_NAME);

        return 0;
}

/* ---- lifetime ---- */

Manager *manager_free(Manager *m) {
        if (!m)
                return NULL;
        /* Sessions stop while the link can still carry STOP; then the leaf goes, then the wraps. */
        wraps_shutdown(m);
        m->bluez = bluez_free(m->bluez);
        wraps_free(m);
        m->exit_source = sd_event_source_disable_unref(m->exit_source);
        m->mqtt = mqtt_free(m->mqtt);
        m->r8_timer = sd_event_source_disable_unref(m->r8_timer);
        m->uplink_watch = sd_event_source_disable_unref(m->uplink_watch);
        manager_time_free(m);
        m->store_retry = sd_event_source_disable_unref(m->store_retry);
        m->api = bus_api_free(m->api);
        m->bus = sd_bus_flush_close_unref(m->bus);
        m->store = store_close(m->store);
        m->event = sd_event_unref(m->event);
        config_done(&m->config);
        free(m->config_path);
        free(m->rates);
        free(m->status);
        free(m);
        return NULL;
}

static void manager_freep(Manager **m) {
        manager_free(*m);
}

static int on_loop_exit(sd_event_source *s, void *userdata) {
        wraps_shutdown(userdata);
        return 0;
}

int manager_new(const char *config_path, Manager **ret) {
        _cleanup_(manager_freep) Manager *m = NULL;
        BluezHooks hooks;
        _cleanup_free_ char *errors = NULL;
        size_t errors_size = 0;
        sigset_t ss;
        FILE *f;
        int r;

        m = calloc(1, sizeof *m);
        if (!m)
                return log_error_errno(ENOMEM, "Out of memory.");
        m->started_usec = clock_mono_usec();
        m->request_interval_usec = USEC_PER_SEC;
        config_init(&m->config);
        /* main's -v raised the level above info: keep that many steps over the config's level. */
        m->log_verbose = log_get_max_level() > LOG_INFO ? log_get_max_level() - LOG_INFO : 0;

        if (config_path) {
                m->config_path = strdup(config_path);
                if (!m->config_path)
                        return log_error_errno(ENOMEM, "Out of memory.");
                f = open_memstream(&errors, &errors_size);
                r = config_load(&m->config, config_path, f);
                if (f)
                        fclose(f);
                if (errors && *errors)
                        log_lines(LOG_ERR, errors);
                if (r == -EINVAL)
                        return log_error_errno(r, "%s has the errors above; not starting.", config_path);
                if (r < 0)
                        return log_error_errno(r, "Cannot read %s: %m", config_path);
        }
        apply_log_level(m);

        r = sd_event_default(&m->event);
        if (r < 0)
                return log_error_errno(r, "Cannot create the event loop: %m");

        /* A file-size limit (LimitFSIZE=) must make the store's write fail with EFBIG, which
         * it handles like a full disk, not kill the daemon. */
        (void) signal(SIGXFSZ, SIG_IGN);

        /* Blocked first, so a signal that arrives now waits for the loop instead of killing us. */
        sigemptyset(&ss);
        sigaddset(&ss, SIGTERM);
        sigaddset(&ss, SIGINT);
        sigaddset(&ss, SIGHUP);
        if (sigprocmask(SIG_BLOCK, &ss, NULL) < 0)
                return log_error_errno(errno, "Cannot block signals: %m");
        r = sd_event_add_signal(m->event, NULL, SIGTERM, on_exit_signal, m);
        if (r >= 0)
                r = sd_event_add_signal(m->event, NULL, SIGINT, on_exit_signal, m);
        if (r >= 0)
                r = sd_event_add_signal(m->event, NULL, SIGHUP, on_sighup, m);
        if (r < 0)
                return log_error_errno(r, "Cannot watch signals: %m");

        /* WATCHDOG=1 at half of WatchdogSec, from the loop itself: a stuck loop stops pinging. */
        r = sd_event_set_watchdog(m->event, true);
        if (r < 0)
                log_warning_errno(r, "Cannot set up the watchdog: %m");

        r = bus_setup(m);
        if (r < 0)
                return r;

        /* A store that fails is not fatal: STATUS= says so, sessions are refused, we retry. */
        if (store_try_open(m) < 0)
                store_retry_schedule(m);

        /* R10: before any wrap or request, the clocks and what they may be trusted for. */
        r = manager_time_setup(m);
        if (r < 0)
                return r;

        /* MQTT */
        if (m->config.mqtt_host) {
                r = manager_mqtt_new(m);
                if (r < 0)
                        return r; /* it logged which file; a setup that can never work */
        }

        /* BLE: the leaf, then the wraps (from the store), each with its link. */
        manager_ble_hooks(m, &hooks);
        r = bluez_new(m->event, m->bus, &m->config, &hooks, &m->bluez);
        if (r < 0)
                return r; /* it logged which step failed */
        m->link_ops = &manager_link_ops;
        m->link_userdata = m;
        r = manager_wraps_load(m);
        if (r < 0 && r != -ENXIO)
                log_warning_errno(r, "Cannot load the adopted wraps: %m");
        /* The loop is exiting: stop the sessions before sd-bus's own exit handler closes the bus. */
        r = sd_event_add_exit(m->event, &m->exit_source, on_loop_exit, m);
        if (r >= 0)
                r = sd_event_source_set_priority(m->exit_source, SD_EVENT_PRIORITY_IMPORTANT);
        if (r < 0)
                return log_error_errno(r, "Cannot watch the loop's exit: %m");

        r = r8_schedule(m);
        if (r < 0)
                return r;
        if (m->store)
                r8_check_all(m);
        uplink_watch(m);

        *ret = m;
        m = NULL;
        return 0;
}

int manager_run(Manager *m) {
        int r;

        m->ready = true;
        manager_update_status(m);
        (void) sd_notify(false, "READY=1");
        log_info("kneewrapd started (store %s, MQTT %s).", m->store ? "OK" : "unavailable",
                 m->config.mqtt_host ? m->config.mqtt_host : "off");

        r = sd_event_loop(m->event);
        if (r < 0)
                return log_error_errno(r, "Event loop failed: %m");
        return r;
}
