/* timekeep: R10 in the daemon: the boot clock, the kernel's sync state, and records corrected once it syncs. */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/timerfd.h>
#include <unistd.h>
#include <systemd/sd-event.h>

#include "clock.h"
#include "log.h"
#include "manager.h"
#include "mqtt.h"
#include "payload.h"
#include "record.h"
#include "rules.h"
#include "store.h"
#include "util.h"
#include "wrap.h"

/*
 * The kernel marks the clock synchronised without stepping it (timesyncd or chrony slewing
 * a small offset), and no event says so: while it is not, look every minute, coalesced.
 * A step is announced at once (sd_event_add_time_change). Once synchronised nothing polls.
 * The test seam (KNEEWRAP_CLOCK) changes no kernel state, so with it the poll is every second.
 */
#define SYNC_POLL_USEC      (60 * USEC_PER_SEC)
#define SYNC_POLL_SEAM_USEC (1 * USEC_PER_SEC)
/* An NTP client steps the clock (which sets STA_UNSYNC) and clears STA_UNSYNC a moment
 * later: after a step, look every 2 s for a minute. */
#define SYNC_POLL_STEP_USEC (2 * USEC_PER_SEC)
#define SYNC_STEP_WINDOW_USEC (60 * USEC_PER_SEC)

static int on_sync_poll(sd_event_source *s, uint64_t usec, void *userdata);

static bool seam_active(void) {
        const char *e = getenv("KNEEWRAP_CLOCK");

        return clock_seams_built() && e && *e;
}

static int64_t boot_sec(void) {
        return clock_boot_usec() / (int64_t) USEC_PER_SEC;
}

bool manager_clock_trusted(Manager *m) {
        if (!m->config.clock_trusted && m->clock_sync <= 0)
                return false;
        /* A clock behind what we already stored has been set back: not to be trusted. */
        return manager_now(m) >= m->newest_wall;
}

void manager_clock(Manager *m, RulesClock *ret) {
        *ret = (RulesClock) {
                .wall = manager_now(m),
                .wall_ok = manager_clock_trusted(m),
                .boot_s = boot_sec(),
        };
        snprintf(ret->boot_id, sizeof ret->boot_id, "%s", m->boot_id);
}

void manager_stamp(Manager *m, int64_t *ret_wall, int64_t *ret_boot) {
        if (ret_wall)
                *ret_wall = manager_now(m);
        if (ret_boot)
                *ret_boot = m->boot_id[0] ? boot_sec() : -1;
}

void manager_time_stored(Manager *m, int64_t wall, bool synced) {
        if (synced && wall > m->newest_wall)
                m->newest_wall = wall;
}

const char *manager_clock_status(Manager *m) {
        if (m->clock_sync > 0 && manager_clock_trusted(m))
                return "clock synchronised";
        if (m->config.clock_trusted && manager_clock_trusted(m))
                return "clock trusted by configuration (not synchronised)";
        if (m->clock_sync > 0 || m->config.clock_trusted)
                return "clock behind the newest stored time: not trusted";
        return "clock not synchronised: waits run on the boot clock";
}

/* Fixes the wall times taken in this boot before the clock could be trusted. */
static int correct_records(Manager *m) {
        _cleanup_free_ SessionRecord *list = NULL;
        RulesClock c;
        int64_t wall0;
        unsigned n_injuries = 0;
        size_t n = 0;
        int r;

        if (!m->store || !m->boot_id[0])
                return 0;
        manager_clock(m, &c);
        /* What the wall clock said when this boot began, now that it can be trusted. */
        wall0 = c.wall - c.boot_s;

        r = store_injuries_date(m->store, m->boot_id, wall0, &n_injuries);
        if (r < 0)
                return r;
        /* What MQTT shows of the store (the injury's date, the last record) is read again. */
        wraps_stored_invalidate(m, NULL);
        if (n_injuries > 0)
                log_notice("R10: %u injur%s entered while the clock was not synchronised now dated.",
                           n_injuries, n_injuries == 1 ? "y is" : "ies are");

        wraps_clock_trusted(m, wall0);

        r = store_sessions_unsynced(m->store, m->boot_id, &list, &n);
        if (r < 0)
                return r;
        for (size_t i = 0; i < n; i++) {
                SessionRecord *rec = list + i;

                /* An open one belongs to its wrap, which corrected it in memory. */
                if (rec->outcome == OUTCOME_OPEN)
                        continue;
                if (!record_correct_times(rec, wall0))
                        continue;
                r = wrap_record_put(m, rec);
                if (r < 0)
                        return r;
        }
        if (n > 0)
                log_notice("R10: the clock is trusted now; records taken before are corrected and published again.");
        return 0;
}

static void sync_poll_arm(Manager *m) {
        uint64_t now_real = 0;
        uint64_t every = seam_active() ? SYNC_POLL_SEAM_USEC : SYNC_POLL_USEC;

        if (mono_usec() < m->clock_step_until)
                every = SYNC_POLL_STEP_USEC;
        int r;

        (void) sd_event_now(m->event, CLOCK_MONOTONIC, &now_real);
        if (m->sync_timer) {
                r = sd_event_source_set_time(m->sync_timer, now_real + every);
                if (r >= 0)
                        r = sd_event_source_set_enabled(m->sync_timer, SD_EVENT_ONESHOT);
        } else
                r = sd_event_add_time(m->event, &m->sync_timer, CLOCK_MONOTONIC, now_real + every,
                                      every / 4, on_sync_poll, m);
        if (r < 0)
                log_warning_errno(r, "Cannot watch the clock's sync state: %m");
}

/* The wall clock moved against the boot clock since the last look: it was set. Within 2 s is
 * the two clocks read a moment apart and rounded to seconds; both slew alike. */
static bool clock_stepped(Manager *m) {
        RulesClock c;
        int64_t offset, was = m->clock_offset;
        bool had = m->has_clock_offset;

        manager_clock(m, &c);
        offset = c.wall - c.boot_s;
        m->clock_offset = offset;
        m->has_clock_offset = true;
        return had && (offset > was + 2 || offset < was - 2);
}

/* Reads the sync state; acts on a change. */
void manager_clock_check(Manager *m) {
        bool was = m->clock_was_trusted, now, stepped;
        int s = clock_synchronized();

        if (s < 0) {
                if (m->clock_sync >= 0 || m->event)
                        log_warning_errno(s, "Cannot read the clock's sync state (adjtimex): %m; "
                                          "taking it as not synchronised");
                s = 0;
        }
        if (s != m->clock_sync && m->event)
                log_notice("The system clock is %s.", s ? "synchronised" : "not synchronised");
        m->clock_sync = s;
        /* A new second: manager_now() read once per iteration is fine, the step came before. */
        m->now_iteration = 0;
        now = manager_clock_trusted(m);
        m->clock_was_trusted = now;
        stepped = clock_stepped(m);
        /* Only the daemon corrects records; kneewrapctl's loop-less Manager only reads the state. */
        if (now && !was && m->event) {
                int r = correct_records(m);
                if (r < 0 && m->store)
                        log_error_errno(r, "R10: cannot correct the records taken before the clock was trusted: %s",
                                        store_errmsg(m->store));
        }
        if (now != was && m->event)
                log_notice("R10: %s.", manager_clock_status(m));
        /* What MQTT shows of the rules ("heat allowed") is placed on the clock anew. */
        if ((now != was || stepped) && m->event)
                wraps_clock_changed(m);
        if (m->ready)
                manager_update_status(m);
        mqtt_bridge_changed(m->mqtt, m->adoption_until);

        /* Poll only while something can still change without a step. */
        if (!m->event)
                return;
        if (seam_active() || (!now && !m->config.clock_trusted) || m->clock_sync <= 0 ||
            mono_usec() < m->clock_step_until)
                sync_poll_arm(m);
        else if (m->sync_timer)
                (void) sd_event_source_set_enabled(m->sync_timer, SD_EVENT_OFF);
}

static int on_sync_poll(sd_event_source *s, uint64_t usec, void *userdata) {
        manager_clock_check(userdata);
        return 0;
}

/*
 * A timer on CLOCK_REALTIME far in the future with TFD_TIMER_CANCEL_ON_SET: the kernel
 * cancels it, and wakes us, whenever the clock is set. What sd_event_add_time_change() does
 * in libsystemd 255; Debian 12's 252 does not export it.
 */
static int time_change_arm(int fd) {
        struct itimerspec its = { .it_value.tv_sec = INT32_MAX };

        return timerfd_settime(fd, TFD_TIMER_ABSTIME | TFD_TIMER_CANCEL_ON_SET, &its, NULL) < 0 ? -errno : 0;
}

static int on_time_change(sd_event_source *s, int fd, uint32_t revents, void *userdata) {
        Manager *m = userdata;
        uint64_t n;

        /* A set clock makes read() fail with ECANCELED; it is armed again either way. */
        (void) !read(fd, &n, sizeof n);
        (void) time_change_arm(fd);
        m->now_iteration = 0;
        m->clock_step_until = mono_usec() + SYNC_STEP_WINDOW_USEC;
        log_info("The system clock was set.");
        manager_clock_check(m);
        return 0;
}

static int time_change_watch(Manager *m) {
        int fd, r;

        fd = timerfd_create(CLOCK_REALTIME, TFD_NONBLOCK | TFD_CLOEXEC);
        if (fd < 0)
                return -errno;
        r = time_change_arm(fd);
        if (r >= 0)
                r = sd_event_add_io(m->event, &m->time_change, fd, EPOLLIN, on_time_change, m);
        if (r >= 0)
                r = sd_event_source_set_io_fd_own(m->time_change, true);
        if (r < 0) {
                m->time_change = sd_event_source_disable_unref(m->time_change);
                close(fd);
        }
        return r;
}

int manager_time_setup(Manager *m) {
        int r;

        r = clock_boot_id(m->boot_id);
        if (r < 0) {
                m->boot_id[0] = '\0';
                log_warning_errno(r, "Cannot read this boot's id: %m; every wait rests on the wall clock "
                                  "or this boot's uptime (R10)");
        }
        if (m->store) {
                r = store_newest_time(m->store, &m->newest_wall);
                if (r < 0)
                        log_warning_errno(r, "Cannot read the newest stored time: %s", store_errmsg(m->store));
        }
        m->clock_sync = -1;

        r = m->event ? time_change_watch(m) : 0;
        if (r < 0)
                log_warning_errno(r, "Cannot watch for clock changes: %m; polling instead");

        m->clock_was_trusted = false;
        manager_clock_check(m);
        if (!m->event)
                return 0;
        log_info("R10: %s%s (boot %s).", manager_clock_status(m),
                 m->config.clock_trusted ? "; [daemon] clock_trusted = yes declares it trusted" : "",
                 m->boot_id[0] ? m->boot_id : "unknown");
        return 0;
}

void manager_time_free(Manager *m) {
        m->time_change = sd_event_source_disable_unref(m->time_change);
        m->sync_timer = sd_event_source_disable_unref(m->sync_timer);
}
