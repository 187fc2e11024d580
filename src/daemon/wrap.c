/* wrap: one adopted wrap's live state and session: button -> rules -> record -> START/DENY -> STOP. */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <systemd/sd-bus.h>
#include <systemd/sd-event.h>

#include "alert.h"
#include "clock.h"
#include "door.h"
#include "log.h"
#include "manager.h"
#include "mqtt.h"
#include "payload.h"
#include "record.h"
#include "rules.h"
#include "store.h"
#include "util.h"
#include "wire.h"
#include "wrap.h"

/*
 * Times: a session's deadline is on the scaled clock (KNEEWRAP_TIME_SCALE is for therapy
 * durations); the waits for the wrap's answers are real time, like the BLE link itself.
 */
#define GRACE_S                 60                      /* after the prescribed end, for a wrap that is away */
#define GRACE_MIN_REAL_USEC     (5 * USEC_PER_SEC)      /* a reconnect needs real seconds at any scale */
#define ANSWER_TIMEOUT_USEC     (10 * USEC_PER_SEC)     /* START's answer indication */
#define STOP_BUTTON_WAIT_USEC   (2 * USEC_PER_SEC)      /* idle early: is a stop press on its way? */
/* R5: the wrap indicates every 5 s in a session; 15 s of real time without a valid reading
 * means the gateway no longer sees the skin. Real time: a sensor is not faster at any scale. */
#define SKIN_SILENCE_USEC       ((uint64_t) RULES_SKIN_SILENCE_S * USEC_PER_SEC)
/*
 * A session the gateway ended that the wrap still reports running, counted in its Statuses
 * (one every 5 s while it runs) from its answer to the STOP (those before it may have crossed
 * the STOP), or from STOP_BUTTON_WAIT_USEC of real time if it does not answer; in that count
 * the first may still have crossed the answer; STOP goes again at the
 * 2nd, 4th, 8th and 16th, then every 16th (80 s); at the 3rd, two STOPs went unheeded: a
 * safety alert. Counted, not timed, so that a busy host neither hurries nor delays it.
 */
#define STOP_AGAIN_MAX          16
#define STOP_UNHEEDED_ALERT     3

typedef enum SessionPhase {
        PHASE_NONE,
        PHASE_STARTING,               /* the open record is written, START sent, no answer yet */
        PHASE_RUNNING,                /* the wrap accepted START */
        PHASE_AWAY,                   /* link lost, or the daemon restarted: the next Status decides */
} SessionPhase;

struct Wrap {
        Wrap *next;
        Manager *m;
        char id[WRAP_ID_MAX];
        char address[BDADDR_STR_MAX];
        char name[64];
        WrapLive live;
        WrapInfo info;
        WrapLatency latency;
        uint64_t malformed;
        unsigned malformed_logged;    /* a bit per WrapValueKind */
        bool have_press;
        uint8_t press_seq;

        /* The session. */
        SessionPhase phase;
        SessionRecord rec;            /* the open record */
        RulesState rules;             /* as decided at START, with the active fields set */
        uint64_t start_mono;          /* scaled; 0 when the daemon restarted since */
        uint64_t deadline_mono;       /* scaled */
        int64_t lost_at;              /* Unix s when the link went during the session, 0 */
        int64_t lost_boot;            /* the boot clock (s) then, -1 */
        uint32_t lost_elapsed_s;      /* how long the session had run then */
        bool have_seq;                /* the wrap's session sequence number of this session */
        uint8_t seq;
        /* START went out and no answer came before the link went: it may run (R6 counts it)
         * until the wrap's sequence number, read back, shows whether it took. */
        bool start_unconfirmed;
        bool have_seq_before;         /* the wrap's sequence number before START */
        uint8_t seq_before;
        bool have_live_seq;           /* the last Status's sequence number, any phase */
        uint8_t live_seq;
        sd_event_source *skin_timer;  /* R5: no valid skin reading for 15 s of real time */
        sd_event_source *timer;       /* the prescribed end, then the grace period */
        sd_event_source *answer_timer;
        sd_event_source *idle_timer;  /* the wrap went idle early: wait for its stop press */

        /* What the store says of the wrap, kept in memory for MQTT (see wrap_stored()). */
        WrapStored stored;

        /* A closed record the store could not take (full disk, ...): kept until it can. */
        bool has_unsaved;
        SessionRecord unsaved;

        /* The last closed session, to tell its late Status from a session we do not know. */
        bool have_closed_seq;
        uint8_t closed_seq;
        uint64_t closed_real_usec;
        char closed_session[UUID_STR_MAX];
        unsigned closed_running;      /* its Statuses since, showing it still running */
        bool stop_answered;           /* the wrap has answered a STOP since */
};

/* ---- Lookup and getters ---- */

Wrap *wrap_find_address(Manager *m, const char *address) {
        char a[BDADDR_STR_MAX];

        if (!address || bdaddr_normalize(address, a) < 0)
                return NULL;
        for (Wrap *w = m->wraps; w; w = w->next)
                if (streq(w->address, a))
                        return w;
        return NULL;
}

Wrap *wrap_find(Manager *m, const char *wrap_or_address) {
        if (!wrap_or_address)
                return NULL;
        for (Wrap *w = m->wraps; w; w = w->next)
                if (streq(w->id, wrap_or_address))
                        return w;
        return wrap_find_address(m, wrap_or_address);
}

Wrap *wrap_next(const Wrap *w) { return w ? w->next : NULL; }
const char *wrap_get_id(const Wrap *w) { return w->id; }
const char *wrap_get_address(const Wrap *w) { return w->address; }
const char *wrap_get_name(const Wrap *w) { return w->name; }
const WrapLive *wrap_get_live(const Wrap *w) { return &w->live; }
const WrapInfo *wrap_get_info(const Wrap *w) { return &w->info; }
uint64_t wrap_get_malformed(const Wrap *w) { return w->malformed; }
const WrapLatency *wrap_get_latency(const Wrap *w) { return &w->latency; }

const SessionRecord *wrap_get_session(const Wrap *w) {
        return w->phase == PHASE_NONE ? NULL : &w->rec;
}

/* ---- Telling the rest ---- */

static void wrap_changed(Wrap *w) {
        mqtt_wrap_changed(w->m->mqtt, w->id);
}

const WrapStored *wrap_stored(Wrap *w) {
        Manager *m = w->m;
        SessionRecord last;
        RulesClock clk;
        int r;

        if (!m->store)
                return &w->stored;
        /* Once, then again only after the daemon wrote what it depends on. */
        if (!w->stored.valid) {
                w->stored.has_placed = false;
                r = store_rules_state(m->store, w->id, &m->config.therapy, &w->stored.rules);
                if (r < 0) {
                        w->stored.has_rules = false;
                        return &w->stored;
                }
                w->stored.has_rules = true;
                r = store_last_session(m->store, w->id, &last);
                w->stored.has_last = r >= 0 && last.outcome != OUTCOME_OPEN;
                if (w->stored.has_last)
                        w->stored.last = last;
                w->stored.valid = true;
        }
        manager_clock(m, &clk);
        if (!w->stored.has_placed || (!clk.wall_ok && clk.wall != w->stored.placed_wall)) {
                w->stored.has_placed = store_rules_state_at(m->store, w->id, &m->config.therapy, &clk,
                                                             &w->stored.placed) >= 0;
                w->stored.placed_wall = clk.wall;
        }
        return &w->stored;
}

void wraps_stored_invalidate(Manager *m, const char *wrap) {
        for (Wrap *w = m->wraps; w; w = w->next)
                if (!wrap || streq(w->id, wrap))
                        w->stored.valid = false;
}

void wraps_clock_changed(Manager *m) {
        for (Wrap *w = m->wraps; w; w = w->next) {
                w->stored.has_placed = false;
                wrap_changed(w);
        }
}

bool wrap_heat_allowed(Wrap *w, int64_t *ret_from) {
        const WrapStored *st = wrap_stored(w);
        RulesDecision d;

        *ret_from = 0;
        if (!st->has_placed)
                return false;
        d = rules_decide(&st->placed, &(RulesEvent) { .type = RULES_EVENT_START, .mode = THERAPY_HEAT },
                         manager_now(w->m));
        if (d.action == RULES_START)
                return true;
        *ret_from = d.allowed_at;
        return false;
}

static void outbox_kick(Manager *m) {
        mqtt_kick(m->mqtt);
}

/* The store failed under us: the manager closes it, says so and retries; we log the session. */
static int store_failed(Manager *m, int r, const char *wrap, const char *session_id, const char *what) {
        log_internal(LOG_ERR, r, wrap, session_id, "cannot %s: %s", what,
                     m->store ? store_errmsg(m->store) : "store unavailable");
        /* A broken store is closed and retried by the manager; a busy one is only refused now. */
        if (store_is_broken(r))
                manager_store_failed(m, r);
        return r;
}

/* Writes the record; a finished one goes into the outbox in the same transaction. */
int wrap_record_put(Manager *m, const SessionRecord *rec) {
        OutboxMsg msg = { 0 };
        /* Without MQTT nothing would ever take messages out of the outbox. */
        bool publish = rec->outcome != OUTCOME_OPEN && m->config.mqtt_host;
        int r;

        if (!m->store)
                return -ENXIO;
        if (publish) {
                r = payload_session_msg(&m->config, rec, &msg);
                if (r < 0)
                        return store_failed(m, r, rec->wrap, rec->session_id, "build the session message");
        }
        r = store_session_put(m->store, rec, publish ? &msg : NULL);
        if (publish)
                outbox_msg_done(&msg);
        if (r < 0)
                return store_failed(m, r, rec->wrap, rec->session_id, "record the session");
        manager_time_stored(m, rec->ended_at > rec->requested_at ? rec->ended_at : rec->requested_at,
                            rec->clock_synced);
        if (publish)
                outbox_kick(m);
        /* The last record is known now; the rules' view (the rest after cold) is read again. */
        for (Wrap *w = m->wraps; w; w = w->next)
                if (streq(w->id, rec->wrap)) {
                        if (rec->outcome != OUTCOME_OPEN && w->stored.valid) {
                                w->stored.has_last = true;
                                w->stored.last = *rec;
                        }
                        w->stored.valid = false;
                }
        return 0;
}

static int record_put(Wrap *w, const SessionRecord *rec) {
        return wrap_record_put(w->m, rec);
}

static int send_request(Wrap *w, const WireRequest *req) {
        const WrapLinkOps *ops = w->m->link_ops;
        return ops && ops->write_request ? ops->write_request(w->m->link_userdata, w->address, req) : -ENOTCONN;
}

static void send_deny(Wrap *w, DenyReason reason, uint16_t minutes) {
        WireRequest req = { .opcode = WIRE_OP_DENY, .reason = deny_reason_wire(reason), .minutes = minutes };
        int r = send_request(w, &req);

        if (r < 0)
                log_wrap_errno(LOG_WARNING, r, w->address, "cannot send DENY: %m");
}

static void send_stop(Wrap *w, StopReason reason) {
        WireRequest req = { .opcode = WIRE_OP_STOP, .reason = (uint8_t) reason };
        int r = send_request(w, &req);

        if (r < 0)
                log_wrap_errno(LOG_WARNING, r, w->address, "cannot send STOP (reason %d): %m; the wrap's own "
                               "fail-safe ends the session at its duration", (int) reason);
}

/* ---- Session timing ---- */

static int on_session_timer(sd_event_source *s, uint64_t usec, void *userdata);

static void arm(Wrap *w, sd_event_source **src, uint64_t real_mono_deadline, sd_event_time_handler_t cb) {
        int r;

        if (*src) {
                r = sd_event_source_set_time(*src, real_mono_deadline);
                if (r >= 0)
                        r = sd_event_source_set_enabled(*src, SD_EVENT_ONESHOT);
        } else
                r = sd_event_add_time(w->m->event, src, CLOCK_MONOTONIC, real_mono_deadline, USEC_PER_MSEC, cb, w);
        if (r < 0)
                log_wrap_errno(LOG_ERR, r, w->address, "cannot arm a session timer: %m");
}

static void disarm(sd_event_source *s) {
        if (s)
                sd_event_source_set_enabled(s, SD_EVENT_OFF);
}

/* The timer for a scaled monotonic instant. */
static void arm_session_timer(Wrap *w, uint64_t scaled_deadline) {
        arm(w, &w->timer, clock_mono_to_real_usec(scaled_deadline), on_session_timer);
}

/*
 * A session's time runs on the monotonic clock from its START (or, taken over after a
 * restart, from where the boot clock puts it): a wall clock that steps neither ends it early
 * nor stretches it (R10). The rules see it on that axis: active_started is 0.
 */
static uint32_t elapsed_s(Wrap *w, int64_t now) {
        uint64_t n = clock_mono_usec();
        int64_t d = n > w->start_mono ? (int64_t) ((n - w->start_mono + USEC_PER_SEC / 2) / USEC_PER_SEC) : 0;

        if (d > (int64_t) w->rec.prescribed_s)
                d = w->rec.prescribed_s;   /* the wrap never runs past its duration */
        return (uint32_t) d;
}

static int64_t session_now(Wrap *w) {
        uint64_t n = clock_mono_usec();

        return n > w->start_mono ? (int64_t) ((n - w->start_mono) / USEC_PER_SEC) : 0;
}

/* R10: the stamp of an instant on this boot's clock, for the record. */
static int64_t boot_of(Wrap *w, int64_t wall) {
        int64_t now_wall, now_boot;

        if (!wall)
                return -1;
        manager_stamp(w->m, &now_wall, &now_boot);
        if (now_boot < 0 || !streq(w->rec.boot_id, w->m->boot_id))
                return -1;
        if (wall == w->lost_at && w->lost_boot >= 0)
                return w->lost_boot;
        if (w->rec.started_at && w->rec.started_boot >= 0 && wall == w->rec.started_at + (int64_t) w->rec.prescribed_s)
                return w->rec.started_boot + w->rec.prescribed_s;
        return now_boot - (now_wall - wall) < 0 ? 0 : now_boot - (now_wall - wall);
}

static void update_remaining(Wrap *w) {
        uint64_t now = clock_mono_usec();

        if (w->phase == PHASE_NONE) {
                w->live.mode = THERAPY_NONE;
                w->live.remaining_s = 0;
                return;
        }
        w->live.mode = w->rec.mode;
        w->live.remaining_s = w->deadline_mono > now
                ? (uint32_t) ((w->deadline_mono - now + USEC_PER_SEC - 1) / USEC_PER_SEC) : 0;
}

static void session_clear(Wrap *w) {
        w->phase = PHASE_NONE;
        w->start_unconfirmed = false;
        disarm(w->skin_timer);
        w->start_mono = w->deadline_mono = 0;
        w->lost_at = 0;
        w->have_seq = false;
        disarm(w->timer);
        disarm(w->answer_timer);
        disarm(w->idle_timer);
        memset(&w->rules, 0, sizeof w->rules);
        update_remaining(w);
}

static void raise_safety_alert(Wrap *w, const char *why) {
        Manager *m = w->m;
        char detail[ALERT_TEXT_MAX];
        int r;

        if (!m->store)
                return;
        snprintf(detail, sizeof detail, "Session stopped for safety: %s", why);
        r = alert_raise(m, w->id, ALERT_SAFETY_STOP, manager_now(m), detail, w->rec.session_id);
        if (r < 0)
                store_failed(m, r, w->id, w->rec.session_id, "record the safety alert");
}

/*
 * Stores the closed record kept back when the store failed. Until it is stored nothing new
 * starts on the wrap: R6 reads the last cold session's end from the store.
 */
static int unsaved_flush(Wrap *w) {
        int r;

        if (!w->has_unsaved)
                return 0;
        r = record_put(w, &w->unsaved);
        if (r < 0)
                return r;
        w->has_unsaved = false;
        log_session(LOG_NOTICE, w->address, w->unsaved.session_id, "the %s session's record, kept since the store "
                    "failed, is stored now", therapy_mode_to_string(w->unsaved.mode));
        return 0;
}

/* The session just ended (`seq`: the wrap's number for it, when known): its late Statuses are its own. */
static void closed_set(Wrap *w, bool have_seq, uint8_t seq, const char *session_id) {
        w->have_closed_seq = have_seq;
        w->closed_seq = seq;
        w->closed_real_usec = mono_usec();
        snprintf(w->closed_session, sizeof w->closed_session, "%s", session_id);
        w->closed_running = 0;
        w->stop_answered = false;
}

/* Ends the open session with `outcome`, records it and publishes it. */
static void session_close(Wrap *w, SessionOutcome outcome, int64_t ended_at, uint32_t duration_s, const char *why) {
        SessionRecord *rec = &w->rec;

        rec->outcome = outcome;
        /* However the wall clock stepped, a session never ends before it began. */
        if (ended_at && rec->started_at && ended_at < rec->started_at)
                ended_at = rec->started_at;
        rec->ended_at = ended_at;
        rec->ended_boot = boot_of(w, ended_at);
        /* Times from a clock nobody vouches for: corrected if it syncs in this boot (R10). */
        if (ended_at && !manager_clock_trusted(w->m))
                rec->clock_synced = false;
        rec->duration_s = duration_s > rec->prescribed_s ? rec->prescribed_s : duration_s;
        rec->compliant = rules_compliant(rec->mode, rec->duration_s);
        log_session(LOG_NOTICE, w->address, rec->session_id, "%s session %s after %u s: %s",
                    therapy_mode_to_string(rec->mode), session_outcome_to_string(outcome),
                    (unsigned) rec->duration_s, why);
        if (record_put(w, rec) < 0) {
                /* The store keeps the record open; ours is the truth: keep it for the retry. */
                w->unsaved = *rec;
                w->has_unsaved = true;
                log_session(LOG_WARNING, w->address, rec->session_id, "the record is kept in memory and stored "
                            "when the store works again; the wrap takes no new session until then");
        }
        if (outcome == OUTCOME_STOPPED_FOR_SAFETY)
                raise_safety_alert(w, why);
        w->live.has_last = true;
        snprintf(w->live.last_session, sizeof w->live.last_session, "%s", rec->session_id);
        w->live.last_outcome = outcome;
        /* A session the wrap never took has no sequence number: one that runs is not this one. */
        closed_set(w, w->have_seq && outcome != OUTCOME_NOT_STARTED, w->seq, rec->session_id);
        session_clear(w);
        wrap_changed(w);
}

/* The gateway stops a running session: STOP first (stopping is always safe and must not
 * wait for the disk), then the record. */
static void session_stop(Wrap *w, StopReason reason, SessionOutcome outcome, const char *why) {
        int64_t now = manager_now(w->m);

        send_stop(w, reason);
        session_close(w, outcome, now, elapsed_s(w, now), why);
}

static void session_interrupted(Wrap *w, const char *why) {
        int64_t end = w->lost_at ? w->lost_at : manager_now(w->m);

        session_close(w, OUTCOME_INTERRUPTED, end, w->lost_at ? w->lost_elapsed_s : elapsed_s(w, 0), why);
}

static int on_session_timer(sd_event_source *s, uint64_t usec, void *userdata) {
        Wrap *w = userdata;
        uint64_t mono = clock_mono_usec();
        RulesDecision d;

        switch (w->phase) {
        case PHASE_NONE:
                break;
        case PHASE_STARTING:
        case PHASE_RUNNING:
                d = rules_decide(&w->rules, &(RulesEvent) { .type = RULES_EVENT_TICK }, session_now(w));
                if (d.action == RULES_STOP || mono >= w->deadline_mono + USEC_PER_SEC) {
                        session_stop(w, STOP_COMPLETED, OUTCOME_COMPLETED,
                                     d.why ? d.why : "the prescribed time is over");
                        break;
                }
                /* The record's clock is whole seconds: wait for the next one. */
                arm_session_timer(w, mono + USEC_PER_SEC / 4);
                break;
        case PHASE_AWAY: {
                uint64_t grace = w->deadline_mono + (uint64_t) GRACE_S * USEC_PER_SEC;
                uint64_t real_grace = clock_mono_to_real_usec(grace);
                uint64_t real_min = clock_mono_to_real_usec(w->deadline_mono) + GRACE_MIN_REAL_USEC;

                if (real_grace < real_min)
                        real_grace = real_min;
                if (mono_usec() + USEC_PER_MSEC < real_grace) {
                        arm(w, &w->timer, real_grace, on_session_timer);
                        break;
                }
                session_interrupted(w, "the wrap stayed away past the prescribed end and the grace period");
                break;
        }
        }
        update_remaining(w);
        return 0;
}

static void safety_check(Wrap *w, const RulesEvent *ev);
static void reported_check(Wrap *w, const WireStatus *s);

static int on_skin_timer(sd_event_source *s, uint64_t usec, void *userdata) {
        Wrap *w = userdata;

        safety_check(w, &(RulesEvent) { .type = RULES_EVENT_SILENCE, .silent_s = RULES_SKIN_SILENCE_S });
        return 0;
}

/* R5: from now, a valid skin reading must come within 15 s of real time. */
static void skin_watch(Wrap *w) {
        uint64_t silence = w->m->skin_silence_usec ? w->m->skin_silence_usec : SKIN_SILENCE_USEC;

        arm(w, &w->skin_timer, mono_usec() + silence, on_skin_timer);
}

static int on_answer_timer(sd_event_source *s, uint64_t usec, void *userdata) {
        Wrap *w = userdata;

        if (w->phase != PHASE_STARTING)
                return 0;
        if (w->live.has_status && (w->live.state == WIRE_STATE_COOLING || w->live.state == WIRE_STATE_HEATING)) {
                log_session(LOG_WARNING, w->address, w->rec.session_id, "no answer to START, but the wrap is running");
                w->phase = PHASE_RUNNING;
                return 0;
        }
        w->rec.start_result = 0;
        w->rec.started_at = 0;
        session_close(w, OUTCOME_NOT_STARTED, 0, 0, "the wrap did not answer START");
        return 0;
}

static int on_idle_timer(sd_event_source *s, uint64_t usec, void *userdata) {
        Wrap *w = userdata;

        if (w->phase == PHASE_RUNNING)
                session_close(w, OUTCOME_INTERRUPTED, manager_now(w->m), elapsed_s(w, manager_now(w->m)),
                              "the wrap stopped before the prescribed end, without a stop press");
        return 0;
}

/* ---- Requests: the one door (manager.h) ---- */

static void fill_days_since_injury(SessionRecord *rec, const RulesState *st, int64_t now) {
        int32_t tenths;

        rec->has_days_since_injury = rules_days_since_injury(st, now, &tenths);
        rec->days_since_injury = rec->has_days_since_injury ? tenths : 0;
}

/* Refuses without a record: the store cannot take one. Never runs an unrecorded session. */
static int refuse_unrecorded(Wrap *w, SessionRecord *rec, int error, SessionRecord *ret_record, const char **ret_error) {
        rec->outcome = OUTCOME_REFUSED;
        rec->refusal = REFUSAL_STORE_UNAVAILABLE;
        rec->minutes_left = 0;
        rec->started_at = rec->ended_at = 0;
        log_internal(LOG_ERR, error, w->address, rec->session_id,
                     "%s %s request refused: the store is unavailable, and nothing runs unrecorded "
                     "(this refusal is not recorded either)",
                     request_source_to_string(rec->source), therapy_mode_to_string(rec->mode));
        if (rec->source == SOURCE_BUTTON)
                send_deny(w, DENY_OTHER, 0);
        if (ret_record)
                *ret_record = *rec;
        if (ret_error)
                *ret_error = "the session store is unavailable: nothing starts unrecorded";
        return 0;
}

static void latency_add(Wrap *w, uint64_t since_usec) {
        uint64_t d;
        unsigned i = 0;

        if (!since_usec)
                return;
        d = mono_usec() - since_usec;
        w->latency.n++;
        w->latency.sum_usec += d;
        if (d > w->latency.max_usec)
                w->latency.max_usec = d;
        while (i + 1 < ELEMENTSOF(w->latency.hist) && d >= ((uint64_t) 2 << i))
                i++;
        w->latency.hist[i]++;
        log_wrap(LOG_INFO, w->address, "button answered in %llu µs", (unsigned long long) d);
}

static bool wrap_link_ready(Wrap *w) {
        const WrapLinkOps *ops = w->m->link_ops;
        return ops && ops->ready && ops->ready(w->m->link_userdata, w->address);
}

int wrap_request_start(Wrap *w, TherapyMode mode, RequestSource source, uint64_t press_usec,
                       SessionRecord *ret_record, const char **ret_error) {
        Manager *m = w->m;
        RulesClock clk;
        int64_t now;
        SessionRecord rec = {
                .mode = mode,
                .source = source,
                .outcome = OUTCOME_REFUSED,
        };
        RulesState st = { 0 };
        RulesDecision d;
        int r;

        /* R10: stamped as the journal stamps: wall clock, boot id, boot clock. */
        manager_clock(m, &clk);
        now = clk.wall;
        rec.requested_at = now;
        rec.clock_synced = clk.wall_ok;
        if (m->boot_id[0]) {
                snprintf(rec.boot_id, sizeof rec.boot_id, "%s", m->boot_id);
                rec.requested_boot = rec.started_boot = clk.boot_s;
        } else
                rec.requested_boot = rec.started_boot = -1;
        rec.ended_boot = -1;

        r = uuid_generate_str(rec.session_id);
        if (r < 0)
                return r;
        snprintf(rec.wrap, sizeof rec.wrap, "%s", w->id);

        if (!m->store)
                return refuse_unrecorded(w, &rec, -ENXIO, ret_record, ret_error);
        r = unsaved_flush(w);
        if (r < 0)
                return refuse_unrecorded(w, &rec, r, ret_record, ret_error);
        r = store_rules_state_at(m->store, w->id, &m->config.therapy, &clk, &st);
        if (r < 0) {
                store_failed(m, r, w->id, rec.session_id, "read the wrap's therapy state");
                return refuse_unrecorded(w, &rec, r, ret_record, ret_error);
        }
        if (w->phase != PHASE_NONE) {
                st.active = true;
                st.active_mode = w->rec.mode;
                st.active_started = w->rec.started_at ? w->rec.started_at : w->rec.requested_at;
                st.active_duration_s = w->rec.prescribed_s;
        }
        fill_days_since_injury(&rec, &st, now);

        d = rules_decide(&st, &(RulesEvent) { .type = RULES_EVENT_START, .mode = mode }, now);

        if (d.action == RULES_START && !wrap_link_ready(w)) {
                /* Not a rule: the wrap cannot be reached, so nothing can start. */
                d = (RulesDecision) { .action = RULES_DENY, .deny = DENY_OTHER, .why = "the wrap is not connected" };
        }

        if (d.action != RULES_START) {
                rec.refusal = refusal_from_deny(d.deny);
                rec.minutes_left = d.minutes_left;
                /* What was asked for: a clinic reads the heat requested in the first week. */
                rec.prescribed_s = mode == THERAPY_HEAT ? st.rx.heat_s : st.rx.cold_s;
                rec.setpoint = mode == THERAPY_HEAT ? st.rx.heat_setpoint : st.rx.cold_setpoint;
                r = record_put(w, &rec);
                if (r < 0)
                        return refuse_unrecorded(w, &rec, r, ret_record, ret_error);
                /* DENY answers a press; other askers get their answer from their interface. */
                if (source == SOURCE_BUTTON) {
                        send_deny(w, d.deny, d.minutes_left);
                        latency_add(w, press_usec);
                }
                log_session(LOG_NOTICE, w->address, rec.session_id, "%s %s request refused (%s, %u min left): %s",
                            request_source_to_string(source), therapy_mode_to_string(mode),
                            refusal_reason_to_string(rec.refusal), (unsigned) rec.minutes_left, d.why);
                w->live.has_last = true;
                snprintf(w->live.last_session, sizeof w->live.last_session, "%s", rec.session_id);
                w->live.last_outcome = OUTCOME_REFUSED;
                wrap_changed(w);
                if (ret_record)
                        *ret_record = rec;
                if (ret_error)
                        *ret_error = d.why;
                return 0;
        }

        /* The open record goes to disk before START goes to the wrap. */
        rec.outcome = OUTCOME_OPEN;
        rec.refusal = REFUSAL_NONE;
        rec.prescribed_s = d.duration_s;
        rec.setpoint = d.setpoint;
        rec.started_at = now;
        r = record_put(w, &rec);
        if (r < 0)
                return refuse_unrecorded(w, &rec, r, ret_record, ret_error);

        w->rec = rec;
        w->rules = st;
        w->rules.active = true;
        w->rules.active_mode = d.mode;
        w->rules.active_started = 0;      /* the session's own axis: session_now() */
        w->rules.active_duration_s = d.duration_s;
        w->rules.active_setpoint = d.setpoint;
        w->phase = PHASE_STARTING;
        w->have_seq = false;
        w->lost_at = 0;
        w->lost_boot = -1;
        w->start_unconfirmed = false;
        w->have_seq_before = w->have_live_seq;
        w->seq_before = w->live_seq;
        w->start_mono = clock_mono_usec();
        w->deadline_mono = w->start_mono + (uint64_t) d.duration_s * USEC_PER_SEC;

        r = send_request(w, &(WireRequest) {
                .opcode = WIRE_OP_START,
                .mode = (uint8_t) d.mode,
                .setpoint = (int16_t) d.setpoint,
                .duration_s = (uint16_t) d.duration_s,
        });
        if (source == SOURCE_BUTTON)
                latency_add(w, press_usec);
        if (r < 0) {
                log_session_errno(LOG_ERR, r, w->address, rec.session_id, "cannot send START: %m");
                w->rec.started_at = 0;
                session_close(w, OUTCOME_NOT_STARTED, 0, 0, "START could not be sent");
                if (ret_record)
                        *ret_record = w->rec;
                if (ret_error)
                        *ret_error = "START could not be sent to the wrap";
                return 0;
        }
        arm_session_timer(w, w->deadline_mono);
        arm(w, &w->answer_timer, mono_usec() + ANSWER_TIMEOUT_USEC, on_answer_timer);
        skin_watch(w);
        update_remaining(w);
        log_session(LOG_NOTICE, w->address, rec.session_id, "%s %s session: START %d.%02d °C for %u s (%s)",
                    request_source_to_string(source), therapy_mode_to_string(d.mode),
                    (int) (d.setpoint / 100), (int) (abs(d.setpoint) % 100), (unsigned) d.duration_s, d.why);
        wrap_changed(w);
        if (ret_record)
                *ret_record = w->rec;
        return 0;
}

int wrap_request_stop(Wrap *w, RequestSource source, const char **ret_error) {
        RulesDecision d;

        if (w->phase == PHASE_NONE) {
                if (ret_error)
                        *ret_error = "no session is running on this wrap";
                return -ESRCH;
        }
        if (w->phase == PHASE_AWAY) {
                if (ret_error)
                        *ret_error = "the wrap is not connected; its session ends by itself at its duration";
                return -ENOTCONN;
        }
        d = rules_decide(&w->rules, &(RulesEvent) { .type = RULES_EVENT_STOP }, session_now(w));
        log_session(LOG_INFO, w->address, w->rec.session_id, "stop asked for (%s)", request_source_to_string(source));
        session_stop(w, d.action == RULES_STOP ? d.stop : STOP_USER, OUTCOME_STOPPED_BY_USER,
                     source == SOURCE_BUTTON ? "the stop button was pressed" : "stop asked for");
        return 0;
}

/* ---- Events from the wrap ---- */

void wrap_on_button(Wrap *w, const WireButton *b, uint64_t received_usec) {
        const char *err = NULL;

        /* The same sequence number is the same press, sent again. */
        if (w->have_press && b->seq == w->press_seq)
                return;
        w->have_press = true;
        w->press_seq = b->seq;

        switch (b->event) {
        case WIRE_BUTTON_COLD:
        case WIRE_BUTTON_HEAT: {
                TherapyMode mode = b->event == WIRE_BUTTON_COLD ? THERAPY_COLD : THERAPY_HEAT;
                int r = door_start(w->m, w->id, mode, SOURCE_BUTTON, received_usec, NULL, &err);
                if (r < 0 && r != -ENOBUFS)      /* a flood: the door counts and logs it */
                        log_wrap_errno(LOG_ERR, r, w->address, "%s press failed: %m%s%s", therapy_mode_to_string(mode),
                                       err ? ": " : "", err ? err : "");
                break;
        }
        case WIRE_BUTTON_STOP:
                /*
                 * The wrap has stopped its element already. We still send STOP (reason 0):
                 * it is idempotent, states the gateway's decision on the link, and stops a
                 * wrap whose own stop did not take.
                 */
                if (w->phase == PHASE_STARTING || w->phase == PHASE_RUNNING)
                        (void) door_stop(w->m, w->id, SOURCE_BUTTON, &err);
                else
                        log_wrap(LOG_DEBUG, w->address, "stop pressed with no session running");
                break;
        default:
                wrap_on_malformed(w, WRAP_VALUE_BUTTON, "unknown button event");
        }
}

static void safety_check(Wrap *w, const RulesEvent *ev) {
        RulesDecision d;

        if (w->phase != PHASE_STARTING && w->phase != PHASE_RUNNING)
                return;
        d = rules_decide(&w->rules, ev, session_now(w));
        if (d.action == RULES_STOP && d.stop == STOP_SAFETY)
                session_stop(w, STOP_SAFETY, OUTCOME_STOPPED_FOR_SAFETY, d.why);
}

/*
 * The wrap runs a session with no open record here: it began while the daemon was down and
 * its record is gone, or the gateway never decided it. Nothing supervises it (R1, R5), so it
 * is stopped at once, for safety, and recorded as the wrap reports it.
 */
static void stray_session(Wrap *w, const WireStatus *s) {
        Manager *m = w->m;
        int64_t now = manager_now(m);
        RulesState st = { 0 };
        int64_t boot;
        SessionRecord rec = {
                .mode = s->state == WIRE_STATE_HEATING ? THERAPY_HEAT : THERAPY_COLD,
                /* It began on the wrap itself, not through any of the gateway's interfaces. */
                .source = SOURCE_BUTTON,
                .requested_at = now - s->elapsed_s,
                .started_at = now - s->elapsed_s,
                .clock_synced = manager_clock_trusted(m),
                .prescribed_s = (uint32_t) s->elapsed_s + s->remaining_s,
                .outcome = OUTCOME_OPEN,
                .setpoint = s->setpoint,
                .start_result = WIRE_RESULT_SUCCESS,
        };

        send_stop(w, STOP_SAFETY);
        log_wrap(LOG_WARNING, w->address, "the wrap runs a %s session the gateway has no record of "
                 "(%u s in, sequence %u): stopped for safety", therapy_mode_to_string(rec.mode),
                 (unsigned) s->elapsed_s, (unsigned) s->seq);
        closed_set(w, true, s->seq, "");

        /* One kept record at a time: a second one is logged, not stored. */
        if (unsaved_flush(w) < 0 || !m->store || uuid_generate_str(rec.session_id) < 0)
                return;
        snprintf(rec.wrap, sizeof rec.wrap, "%s", w->id);
        manager_stamp(m, NULL, &boot);
        if (boot >= s->elapsed_s) {
                snprintf(rec.boot_id, sizeof rec.boot_id, "%s", m->boot_id);
                rec.requested_boot = rec.started_boot = boot - s->elapsed_s;
        } else
                rec.requested_boot = rec.started_boot = -1;
        if (store_rules_state(m->store, w->id, &m->config.therapy, &st) >= 0)
                fill_days_since_injury(&rec, &st, now);
        w->rec = rec;
        w->have_seq = true;
        w->seq = s->seq;
        session_close(w, OUTCOME_STOPPED_FOR_SAFETY, now, s->elapsed_s,
                      "the wrap ran a session the gateway had no record of");
}

/* The wrap still runs the session the gateway ended: STOP again, less and less often, and
 * say so when it does not heed it (the gateway watches what it supervises). */
static void stop_unheeded(Wrap *w, const WireStatus *s) {
        char text[ALERT_TEXT_MAX];
        unsigned n;
        int r;

        /* Until the wrap answers the STOP, a running Status may have been sent before the STOP
         * reached it (the answer comes in order with the Statuses): only one that follows the
         * answer counts, or any once a wrap that does not answer has had the real time to. */
        if (!w->stop_answered && mono_usec() < w->closed_real_usec + STOP_BUTTON_WAIT_USEC)
                return;
        n = ++w->closed_running;
        if (n >= 2 && (n < STOP_AGAIN_MAX ? (n & (n - 1)) == 0 : n % STOP_AGAIN_MAX == 0)) {
                log_session(LOG_WARNING, w->address, w->closed_session, "the wrap still runs the session the gateway "
                            "ended (sequence %u, %u Statuses since): STOP again", (unsigned) s->seq, n);
                send_stop(w, STOP_SAFETY);
        }
        if (n != STOP_UNHEEDED_ALERT || !w->m->store)
                return;
        snprintf(text, sizeof text, "The wrap does not stop: it still %s in the session the gateway ended, after "
                 "two STOPs. Take it off the knee and check it.", s->state == WIRE_STATE_HEATING ? "heats" : "cools");
        r = alert_raise(w->m, w->id, ALERT_SAFETY_STOP, manager_now(w->m), text,
                        w->closed_session[0] ? w->closed_session : NULL);
        if (r < 0)
                store_failed(w->m, r, w->id, w->closed_session, "record the safety alert");
}

/* A Status says the wrap runs a session while the gateway has none open. */
static void unknown_running(Wrap *w, const WireStatus *s) {
        bool recent = w->closed_real_usec && mono_usec() < w->closed_real_usec + STOP_BUTTON_WAIT_USEC;

        if (w->have_closed_seq ? s->seq != w->closed_seq : !recent) {
                stray_session(w, s);
                return;
        }
        /* Without the ended session's sequence number, a running Status this soon was sent
         * before our STOP reached the wrap. */
        if (!w->have_closed_seq)
                return;
        stop_unheeded(w, s);
}

/* After a link loss or a restart: what happened to the session while we were away. */
static void reconcile(Wrap *w, const WireStatus *s) {
        bool same, running = s->state == WIRE_STATE_COOLING || s->state == WIRE_STATE_HEATING;
        int64_t now = manager_now(w->m);

        /* START went out and its answer never came: the sequence number tells whether it took. */
        if (w->start_unconfirmed && !w->have_seq && w->have_seq_before) {
                if (s->seq == w->seq_before) {
                        w->rec.started_at = 0;
                        w->rec.start_result = 0;
                        session_close(w, OUTCOME_NOT_STARTED, 0, 0, "the wrap's sequence number shows it never "
                                      "took the START whose answer was lost");
                        if (running)
                                stray_session(w, s);
                        return;
                }
                if (s->seq == (uint8_t) (w->seq_before + 1)) {
                        w->have_seq = true;
                        w->seq = s->seq;
                }
        }
        same = w->have_seq ? s->seq == w->seq : s->mode == (uint8_t) w->rec.mode;

        if (same && running) {
                uint64_t mono = clock_mono_usec();

                /* The wrap's own remaining time bounds ours: never a STOP later than its end. Our
                 * time in was then a lower bound (a restart on a clock R10 cannot vouch for), so
                 * the session began that much earlier too: the record's duration follows. */
                if (mono + (uint64_t) s->remaining_s * USEC_PER_SEC < w->deadline_mono) {
                        uint64_t whole = (uint64_t) w->rec.prescribed_s * USEC_PER_SEC;

                        w->deadline_mono = mono + (uint64_t) s->remaining_s * USEC_PER_SEC;
                        if (w->deadline_mono > whole && w->deadline_mono - whole < w->start_mono)
                                w->start_mono = w->deadline_mono - whole;
                }
                log_session(LOG_INFO, w->address, w->rec.session_id, "back: the session is still running (%u s left on the wrap)",
                            (unsigned) s->remaining_s);
                w->phase = PHASE_RUNNING;
                w->lost_at = 0;
                if (!w->have_seq) {
                        w->have_seq = true;
                        w->seq = s->seq;
                }
                w->start_unconfirmed = false;
                /* The session keeps its own clock: STOP at the original prescribed end. */
                arm_session_timer(w, w->deadline_mono);
                skin_watch(w);
                /* R5 holds from the first Status back, not from the next one 5 s later. */
                if (s->faults)
                        safety_check(w, &(RulesEvent) { .type = RULES_EVENT_FAULT, .fault_flags = s->faults });
                else if (w->phase == PHASE_RUNNING)
                        reported_check(w, s);
                return;
        }
        if (same && (s->state == WIRE_STATE_DONE ||
                     (s->state == WIRE_STATE_IDLE && s->elapsed_s >= w->rec.prescribed_s))) {
                int64_t end = w->rec.started_at ? w->rec.started_at + w->rec.prescribed_s : now;
                session_close(w, OUTCOME_COMPLETED, end < now ? end : now, w->rec.prescribed_s,
                              "the wrap ran the session to its end while away");
                return;
        }
        if (same && s->state == WIRE_STATE_FAULT) {
                session_close(w, OUTCOME_STOPPED_FOR_SAFETY, now, s->elapsed_s,
                              "the wrap stopped with a fault while away");
                return;
        }
        if (same && s->state == WIRE_STATE_IDLE) {
                session_close(w, OUTCOME_INTERRUPTED, w->lost_at ? w->lost_at : now, s->elapsed_s,
                              "the wrap stopped before the prescribed end while away");
                return;
        }
        session_interrupted(w, "the wrap no longer knows the session");
        if (running)
                stray_session(w, s);
}

/* A notification that changes nothing anyone sees (the same Status, the same temperature
 * again) publishes nothing: only a change of the live state, or of the session, is told. */
static void wrap_changed_if(Wrap *w, const WrapLive *before, SessionPhase phase_before) {
        if (w->phase != phase_before || memcmp(before, &w->live, sizeof *before) != 0)
                wrap_changed(w);
}

/* R5: what the wrap runs must be what was started: the skin limit depends on it. */
static void reported_check(Wrap *w, const WireStatus *s) {
        TherapyMode by_state = s->state == WIRE_STATE_HEATING ? THERAPY_HEAT : THERAPY_COLD;
        TherapyMode mode = s->mode == THERAPY_COLD || s->mode == THERAPY_HEAT ? (TherapyMode) s->mode : THERAPY_NONE;

        if (mode != by_state)
                mode = THERAPY_NONE;   /* cooling in heat mode, or the like: not what was started */
        safety_check(w, &(RulesEvent) { .type = RULES_EVENT_REPORTED, .mode = mode, .setpoint = s->setpoint });
}

void wrap_on_status(Wrap *w, const WireStatus *s) {
        bool running = s->state == WIRE_STATE_COOLING || s->state == WIRE_STATE_HEATING;
        WrapLive before = w->live;
        SessionPhase phase_before = w->phase;

        w->have_live_seq = true;
        w->live_seq = s->seq;
        w->live.has_status = true;
        w->live.state = s->state;
        w->live.faults = s->faults;
        w->live.has_pack = s->pack != WIRE_NO_READING;
        w->live.pack = w->live.has_pack ? s->pack : 0;

        switch (w->phase) {
        case PHASE_NONE:
                if (running)
                        unknown_running(w, s);
                else if (w->closed_running >= 2 && w->have_closed_seq && s->seq == w->closed_seq) {
                        log_session(LOG_NOTICE, w->address, w->closed_session, "the wrap stopped the session "
                                    "the gateway ended, %u Statuses late", w->closed_running);
                        w->closed_running = 0;
                }
                break;
        case PHASE_AWAY:
                if (w->live.connected)
                        reconcile(w, s);
                break;
        case PHASE_STARTING:
        case PHASE_RUNNING:
                if (s->state == WIRE_STATE_FAULT || s->faults) {
                        safety_check(w, &(RulesEvent) { .type = RULES_EVENT_FAULT, .fault_flags = s->faults,
                                                        .fault_state = s->state == WIRE_STATE_FAULT });
                        break;
                }
                /* A late Status of the session closed before this one is not this one. */
                if (running && !w->have_seq && w->have_closed_seq && s->seq == w->closed_seq)
                        break;
                if (running && !w->have_seq) {
                        w->have_seq = true;
                        w->seq = s->seq;
                }
                /* R5: a mode or setpoint other than the one started is stopped, not learned. */
                if (running && s->seq == w->seq) {
                        reported_check(w, s);
                        if (w->phase == PHASE_NONE)
                                break;
                }
                if (w->phase != PHASE_RUNNING || !w->have_seq || s->seq != w->seq)
                        break;
                if (s->state == WIRE_STATE_DONE || (s->state == WIRE_STATE_IDLE && s->elapsed_s >= w->rec.prescribed_s)) {
                        /* The wrap's fail-safe ended it (a hair before our STOP): completed. */
                        send_stop(w, STOP_COMPLETED);
                        session_close(w, OUTCOME_COMPLETED, manager_now(w->m), w->rec.prescribed_s,
                                      "the prescribed time is over (the wrap ended it)");
                } else if (s->state == WIRE_STATE_IDLE)
                        /* Stopped early: the stop press is usually notified with it. */
                        arm(w, &w->idle_timer, mono_usec() + STOP_BUTTON_WAIT_USEC, on_idle_timer);
                break;
        }
        update_remaining(w);
        wrap_changed_if(w, &before, phase_before);
}

void wrap_on_temperature(Wrap *w, const WireTemperature *t) {
        WrapLive before = w->live;
        SessionPhase phase_before = w->phase;

        w->live.has_skin = true;
        w->live.skin = t->centi_c;
        if (w->phase == PHASE_STARTING || w->phase == PHASE_RUNNING) {
                skin_stats_add(&w->rec.skin, t->centi_c);
                skin_watch(w);
                safety_check(w, &(RulesEvent) { .type = RULES_EVENT_SKIN, .skin = t->centi_c });
        }
        wrap_changed_if(w, &before, phase_before);
}

void wrap_on_response(Wrap *w, const WireResponse *r) {
        if (r->opcode == WIRE_OP_STOP && w->phase == PHASE_NONE)
                w->stop_answered = true;
        if (r->opcode != WIRE_OP_START) {
                if (r->result != WIRE_RESULT_SUCCESS)
                        log_wrap(LOG_INFO, w->address, "the wrap answered opcode 0x%02x with %s", r->opcode,
                                 wire_result_to_string(r->result));
                return;
        }
        if (w->phase != PHASE_STARTING)
                return;
        disarm(w->answer_timer);
        w->rec.start_result = r->result;
        if (r->result == WIRE_RESULT_SUCCESS) {
                /* start_result reaches the store with the closed record. */
                w->phase = PHASE_RUNNING;
                wrap_changed(w);
                return;
        }
        w->rec.started_at = 0;
        log_session(LOG_WARNING, w->address, w->rec.session_id, "the wrap refused START: %s",
                    wire_result_to_string(r->result));
        session_close(w, OUTCOME_NOT_STARTED, 0, 0, wire_result_to_string(r->result));
}

void wrap_on_write_failed(Wrap *w, uint8_t opcode, int error) {
        if (opcode != WIRE_OP_START || w->phase != PHASE_STARTING)
                return;
        /* The reply was lost, not the write: the wrap's Status shows it runs this session. */
        if (w->have_seq) {
                log_session(LOG_WARNING, w->address, w->rec.session_id, "writing START reported a failure, "
                            "but the wrap runs the session");
                disarm(w->answer_timer);
                w->phase = PHASE_RUNNING;
                wrap_changed(w);
                return;
        }
        /* The link went with START written: it may run on the wrap's fail-safe. Like a link
         * lost during a session (R6 counts it), until the sequence number says otherwise. */
        if (!wrap_link_ready(w)) {
                log_session(LOG_WARNING, w->address, w->rec.session_id, "writing START failed as the link went: "
                            "the session may run; its sequence number decides on reconnect");
                w->start_unconfirmed = true;
                wrap_link_down(w);
                return;
        }
        /* Still connected: the wrap's Status shows within the answer's wait whether it took. */
        log_session(LOG_WARNING, w->address, w->rec.session_id, "writing START reported a failure; "
                    "waiting for the wrap's Status to show whether it runs");
}

void wrap_on_battery(Wrap *w, int percent) {
        if (w->live.battery == percent)
                return;
        w->live.battery = percent;
        wrap_changed(w);
}

void wrap_on_info(Wrap *w, const WrapInfo *info) {
        WrapDeviceInfo stored = { .manufacturer = "" };
        int r;

        w->info = *info;
        w->info.have = true;
        log_wrap(LOG_INFO, w->address, "%s %s, serial %s, firmware %s", info->manufacturer, info->model,
                 info->serial, info->firmware);
        /* Kept for the clinic's reports and FHIR Device (once a run: it is read once a run). */
        snprintf(stored.manufacturer, sizeof stored.manufacturer, "%s", info->manufacturer);
        snprintf(stored.model, sizeof stored.model, "%s", info->model);
        snprintf(stored.serial, sizeof stored.serial, "%s", info->serial);
        snprintf(stored.firmware, sizeof stored.firmware, "%s", info->firmware);
        r = w->m->store ? store_device_info_set(w->m->store, w->id, &stored, manager_now(w->m)) : 0;
        if (r < 0 && store_is_broken(r))
                manager_store_failed(w->m, r);
        else if (r < 0)
                log_wrap_errno(LOG_WARNING, r, w->address, "Cannot store the Device Information: %m");
        wrap_changed(w);
}

void wrap_on_malformed(Wrap *w, WrapValueKind kind, const char *why) {
        static const char *const names[_WRAP_VALUE_MAX] = {
                [WRAP_VALUE_STATUS] = "Therapy Status",
                [WRAP_VALUE_BUTTON] = "Button Event",
                [WRAP_VALUE_TEMPERATURE] = "Temperature Measurement",
                [WRAP_VALUE_CONTROL_POINT] = "Control Point",
                [WRAP_VALUE_BATTERY] = "Battery Level",
        };

        w->m->malformed++;
        w->malformed++;
        if (kind < _WRAP_VALUE_MAX && !(w->malformed_logged & (1u << kind))) {
                w->malformed_logged |= 1u << kind;
                log_wrap(LOG_WARNING, w->address, "%s value rejected: %s (further ones are counted, not logged)",
                         names[kind], why ? why : "malformed");
        }
        wrap_changed(w);
}

void wrap_link_up(Wrap *w) {
        w->live.connected = true;
        w->live.has_status = false;
        wrap_changed(w);
        manager_update_status(w->m);
}

void wrap_link_down(Wrap *w) {
        w->live.connected = false;
        if (w->phase == PHASE_STARTING || w->phase == PHASE_RUNNING) {
                if (w->phase == PHASE_STARTING)
                        w->start_unconfirmed = true;   /* no answer came: it may run (R6 counts it) */
                w->phase = PHASE_AWAY;
                manager_stamp(w->m, &w->lost_at, &w->lost_boot);
                w->lost_elapsed_s = elapsed_s(w, 0);
                disarm(w->answer_timer);
                disarm(w->idle_timer);
                /* R5 needs readings; none come over a lost link. Watched again when it is back. */
                disarm(w->skin_timer);
                log_session(LOG_WARNING, w->address, w->rec.session_id,
                            "link lost during the session; it keeps its clock and is reconciled on reconnect");
        }
        wrap_changed(w);
        manager_update_status(w->m);
}

/* ---- Lifecycle ---- */

int wrap_new(Manager *m, const char *address, const char *name, Wrap **ret) {
        Wrap *w, **tail;
        int r;

        w = calloc(1, sizeof *w);
        if (!w)
                return -ENOMEM;
        w->m = m;
        w->live.battery = -1;
        r = bdaddr_normalize(address, w->address);
        if (r >= 0)
                r = wrap_id_from_address(w->address, w->id);
        if (r < 0) {
                free(w);
                return r;
        }
        snprintf(w->name, sizeof w->name, "%s", name ? name : "");
        for (tail = &m->wraps; *tail; tail = &(*tail)->next)
                ;
        *tail = w;
        m->n_wraps++;
        if (ret)
                *ret = w;
        return 0;
}

void wrap_free(Wrap *w) {
        Manager *m;

        if (!w)
                return;
        m = w->m;
        for (Wrap **p = &m->wraps; *p; p = &(*p)->next)
                if (*p == w) {
                        *p = w->next;
                        m->n_wraps--;
                        break;
                }
        sd_event_source_disable_unref(w->timer);
        sd_event_source_disable_unref(w->answer_timer);
        sd_event_source_disable_unref(w->idle_timer);
        sd_event_source_disable_unref(w->skin_timer);
        if (w->has_unsaved)
                log_session(LOG_ERR, w->address, w->unsaved.session_id, "the %s session's record (%s, %u s) could "
                            "not be stored and is lost with the daemon; the store keeps it open",
                            therapy_mode_to_string(w->unsaved.mode), session_outcome_to_string(w->unsaved.outcome),
                            (unsigned) w->unsaved.duration_s);
        free(w);
}

void wrap_removed(Wrap *w) {
        if (w->phase == PHASE_STARTING || w->phase == PHASE_RUNNING)
                session_stop(w, STOP_USER, OUTCOME_STOPPED_BY_USER, "the wrap was removed");
        else if (w->phase == PHASE_AWAY)
                session_interrupted(w, "the wrap was removed while away");
}

/* A session the store still holds open (we restarted): the wrap's next Status decides. */
static void take_over(Manager *m, const SessionRecord *rec) {
        Wrap *w = wrap_find(m, rec->wrap);
        int64_t now = manager_now(m), elapsed, left;
        RulesClock clk;
        RulesTime started;
        RulesState st = { 0 };
        uint32_t cap;
        bool exact;

        /* Closed already: the record kept in memory is the one to store (unsaved_flush). */
        if (w && w->has_unsaved && streq(w->unsaved.session_id, rec->session_id))
                return;
        /* The store came back while this very session runs (it failed and was reopened): its row
         * stays open, and the session's own end closes it. */
        if (w && w->phase != PHASE_NONE && streq(w->rec.session_id, rec->session_id))
                return;
        if (!w || w->phase != PHASE_NONE) {
                SessionRecord r = *rec;
                r.outcome = OUTCOME_INTERRUPTED;
                r.ended_at = now > r.started_at ? now : r.started_at;
                r.ended_boot = -1;
                r.clock_synced = r.clock_synced && manager_clock_trusted(m);
                r.duration_s = 0;
                r.compliant = false;
                if (wrap_record_put(m, &r) >= 0)
                        log_session(LOG_NOTICE, rec->wrap, rec->session_id,
                                    "open session closed as interrupted: %s",
                                    w ? "its wrap runs another session" : "its wrap is no longer adopted");
                return;
        }
        if (m->store && store_rules_state(m->store, w->id, &m->config.therapy, &st) < 0)
                memset(&st, 0, sizeof st);
        w->rec = *rec;
        /* The store is not trusted to hold a sane duration: R1 and R4 bound the timer too. */
        cap = rec->mode == THERAPY_HEAT ? RULES_HEAT_MAX_S : RULES_COLD_MAX_S;
        if (w->rec.prescribed_s > cap)
                w->rec.prescribed_s = cap;

        /*
         * How long it has run, on R10's clock: the boot clock in this boot, a trusted wall clock
         * across boots, else a lower bound (the wrap's remaining_s bounds it when it is back).
         * Never by started_at against a wall clock that may be behind: that put the STOP late.
         */
        manager_clock(m, &clk);
        started = (RulesTime) {
                .wall = rec->started_at ? rec->started_at : rec->requested_at,
                .wall_ok = rec->clock_synced,
                .boot_s = rec->started_at ? rec->started_boot : rec->requested_boot,
        };
        if (started.boot_s >= 0)
                snprintf(started.boot_id, sizeof started.boot_id, "%s", rec->boot_id);
        elapsed = rules_elapsed(&started, &clk, &exact);
        if (elapsed < 0)
                elapsed = 0;
        if (elapsed > (int64_t) w->rec.prescribed_s)
                elapsed = w->rec.prescribed_s;
        left = (int64_t) w->rec.prescribed_s - elapsed;

        w->rules = st;
        w->rules.active = true;
        w->rules.active_mode = rec->mode;
        w->rules.active_started = 0;
        w->rules.active_duration_s = w->rec.prescribed_s;
        w->rules.active_setpoint = rec->setpoint;
        w->phase = PHASE_AWAY;
        w->lost_at = 0;
        w->lost_boot = -1;
        w->have_seq = false;
        /* An open record whose START has no answer stored may never have run. */
        w->start_unconfirmed = rec->start_result == 0;
        w->have_seq_before = false;
        {
                uint64_t mono = clock_mono_usec(), back = (uint64_t) elapsed * USEC_PER_SEC;

                w->start_mono = mono > back ? mono - back : 1;
                w->deadline_mono = mono + (uint64_t) left * USEC_PER_SEC;
        }
        arm_session_timer(w, w->deadline_mono);
        update_remaining(w);
        log_session(LOG_NOTICE, w->address, rec->session_id,
                    "%s session still open from before the restart (%lld s in%s); reconciling when the wrap is back",
                    therapy_mode_to_string(rec->mode), (long long) elapsed, exact ? "" : " at least");
}

/* R10: the clock is trusted now; an open record of this boot gets its true times. */
void wraps_clock_trusted(Manager *m, int64_t wall0) {
        for (Wrap *w = m->wraps; w; w = w->next) {
                if (w->phase != PHASE_NONE && streq(w->rec.boot_id, m->boot_id) &&
                    record_correct_times(&w->rec, wall0)) {
                        /* The store's copy too, so a restart takes it over with the right times. */
                        (void) wrap_record_put(m, &w->rec);
                        if (w->lost_at && w->lost_boot >= 0)
                                w->lost_at = wall0 + w->lost_boot;
                }
                if (w->has_unsaved && streq(w->unsaved.boot_id, m->boot_id))
                        (void) record_correct_times(&w->unsaved, wall0);
        }
}

int wraps_load(Manager *m) {
        StoredWrap *list = NULL;
        SessionRecord *open = NULL;
        size_t n = 0, n_open = 0;
        int r;

        if (!m->store)
                return -ENXIO;
        r = store_wrap_list(m->store, &list, &n);
        if (r < 0)
                return r;
        for (size_t i = 0; i < n; i++)
                if (!wrap_find_address(m, list[i].address)) {
                        r = wrap_new(m, list[i].address, list[i].name, NULL);
                        if (r < 0)
                                log_wrap_errno(LOG_ERR, r, list[i].address, "cannot load the wrap: %m");
                }
        free(list);

        /* Closed records kept while the store was down go first: they supersede open ones. */
        for (Wrap *w = m->wraps; w && m->store; w = w->next)
                (void) unsaved_flush(w);
        if (!m->store)
                return -ENXIO;

        r = store_sessions_open(m->store, &open, &n_open);
        if (r < 0)
                return r;
        for (size_t i = 0; i < n_open; i++)
                take_over(m, &open[i]);
        free(open);
        return 0;
}

void wraps_shutdown(Manager *m) {
        for (Wrap *w = m->wraps; w; w = w->next)
                if (w->phase == PHASE_STARTING || w->phase == PHASE_RUNNING)
                        session_stop(w, STOP_SHUTDOWN, OUTCOME_INTERRUPTED,
                                     "the gateway is shutting down: nothing would supervise the session");
        for (Wrap *w = m->wraps; w && m->store; w = w->next)
                (void) unsaved_flush(w);
        if (m->bus)
                (void) sd_bus_flush(m->bus);
}

void wraps_free(Manager *m) {
        while (m->wraps)
                wrap_free(m->wraps);
}
