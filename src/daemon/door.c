/* door: the one door: every action that changes the gateway's state (see door.h). */
#include <errno.h>
#include <inttypes.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "alert.h"
#include "bluez.h"
#include "bus-api.h"
#include "clock.h"
#include "door.h"
#include "log.h"
#include "manager.h"
#include "mqtt.h"
#include "payload.h"
#include "rules.h"
#include "store.h"
#include "util.h"
#include "wrap.h"

/* A diary entry or an injury may be a little ahead of our clock (the asker's is not ours). */
#define FUTURE_SLACK_S 300

/* The ret_error text of the one-door calls: valid until the next call (one thread). */
static char error_buf[256];

static const char *set_error(const char **ret_error, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static const char *set_error(const char **ret_error, const char *fmt, ...) {
        va_list ap;

        va_start(ap, fmt);
        vsnprintf(error_buf, sizeof error_buf, fmt, ap);
        va_end(ap);
        if (ret_error)
                *ret_error = error_buf;
        return error_buf;
}

static int rate_limit(Manager *m, const char *wrap, DoorRateKind kind, const char **ret_error);

static int need_store(Manager *m, const char **ret_error) {
        if (m->store)
                return 0;
        set_error(ret_error, "the store is unavailable (%s): nothing can be recorded now",
                  manager_store_problem(m, m->store_error));
        return -EAGAIN;
}

static int store_fail(Manager *m, int r, const char *what, const char **ret_error) {
        if (store_is_broken(r)) {
                set_error(ret_error, "the store failed while %s (%s)", what, manager_store_problem(m, r));
                manager_store_failed(m, r);
        } else
                set_error(ret_error, "%s failed: %s", what, strerror(-r));
        return r;
}

/* Every action on an adopted wrap starts here: the store works, and the wrap is in it. */
static int wrap_known(Manager *m, const char *wrap, StoredWrap *ret, const char **ret_error) {
        StoredWrap sw;
        int r;

        r = need_store(m, ret_error);
        if (r < 0)
                return r;
        if (!wrap || !*wrap) {
                set_error(ret_error, "no wrap given");
                return -EINVAL;
        }
        r = store_wrap_get(m->store, wrap, ret ? ret : &sw);
        if (r == -ENOENT) {
                set_error(ret_error, "no adopted wrap is called \"%s\"", wrap);
                return r;
        }
        if (r < 0)
                return store_fail(m, r, "looking up the wrap", ret_error);
        return 0;
}

static int set_injury(Manager *m, const char *wrap, const char *iso_or_null, const AuditRecord *audit,
                      const char **ret_error) {
        int64_t now = manager_now(m), at;
        bool date_only;
        char today[11], date[11] = "";
        bool trusted;
        int r;

        r = wrap_known(m, wrap, NULL, ret_error);
        if (r < 0)
                return r;

        /* The request limit is met just before the write: a malformed request records nothing
         * and takes no turn. */
        if (!iso_or_null) {
                r = rate_limit(m, wrap, DOOR_RATE_INJURY, ret_error);
                if (r < 0)
                        return r;
                r = store_injury_resolve(m->store, wrap, now, audit);
                if (r == -ENOENT) {
                        set_error(ret_error, "%s has no unresolved injury", wrap);
                        return r;
                }
                if (r < 0)
                        return store_fail(m, r, "resolving the injury", ret_error);
                wraps_stored_invalidate(m, wrap);
                log_wrap(LOG_INFO, wrap, "Injury marked resolved: heat is allowed (R3).");
                mqtt_kick(m->mqtt);
                return 0;
        }

        /* R10: "today" and "now" are the moment of entry. With no trusted clock the date is not
         * known: it counts from that moment (the boot clock) and is dated once the clock syncs. */
        if (streq(iso_or_null, "today") || streq(iso_or_null, "now")) {
                RulesTime rec = { .wall_ok = manager_clock_trusted(m) };

                manager_stamp(m, &rec.wall, &rec.boot_s);
                snprintf(rec.boot_id, sizeof rec.boot_id, "%s", m->boot_id);
                if (!rec.wall_ok && !m->boot_id[0]) {
                        set_error(ret_error, "the clock is not synchronised and this boot has no id: "
                                  "give the injury's date (YYYY-MM-DD) instead of \"%s\"", iso_or_null);
                        return -EINVAL;
                }
                r = rate_limit(m, wrap, DOOR_RATE_INJURY, ret_error);
                if (r < 0)
                        return r;
                if (rec.wall_ok) {
                        if (streq(iso_or_null, "today"))
                                r = store_injury_add_stamped(m->store, wrap, 0, clock_format_date(now, date), &rec, NULL, audit);
                        else
                                r = store_injury_add_stamped(m->store, wrap, now, NULL, &rec, NULL, audit);
                } else
                        r = store_injury_add_stamped(m->store, wrap, 0, NULL, &rec, iso_or_null, audit);
                if (r < 0)
                        return store_fail(m, r, "recording the injury", ret_error);
                manager_time_stored(m, rec.wall, rec.wall_ok);
                wraps_stored_invalidate(m, wrap);
                log_wrap(LOG_INFO, wrap, "Injury recorded: %s%s; heat is refused for the wait after it (R2).",
                         iso_or_null, rec.wall_ok ? "" : " (the clock is not synchronised: it counts from this "
                         "moment and gets its date when the clock syncs, R10)");
                mqtt_kick(m->mqtt);
                (void) manager_r8_check(m, wrap, now);
                return 0;
        }

        r = clock_parse_iso(iso_or_null, &at, &date_only);
        if (r < 0) {
                set_error(ret_error, "\"%s\" is not a date (YYYY-MM-DD) or a date and time "
                          "(YYYY-MM-DDTHH:MM[:SS], optionally Z or ±HH:MM)", iso_or_null);
                return -EINVAL;
        }
        trusted = manager_clock_trusted(m);
        if (date_only)
                snprintf(date, sizeof date, "%.10s", iso_or_null);
        /* "In the future" means something only on a trusted clock (R10); a later injury than
         * the true one only makes R2 wait longer, so without one the date is taken as given. */
        if (date_only && trusted) {
                /* A date resolves to the end of that local day; it may be today, not later. */
                clock_format_date(now, today);
                if (strcmp(date, today) > 0) {
                        set_error(ret_error, "the injury date %s is in the future", date);
                        return -EINVAL;
                }
        } else if (trusted && at > now + FUTURE_SLACK_S) {
                set_error(ret_error, "the injury time %s is in the future", iso_or_null);
                return -EINVAL;
        }

        r = rate_limit(m, wrap, DOOR_RATE_INJURY, ret_error);
        if (r < 0)
                return r;
        {
                RulesTime rec = { .wall_ok = trusted };

                manager_stamp(m, &rec.wall, &rec.boot_s);
                snprintf(rec.boot_id, sizeof rec.boot_id, "%s", m->boot_id);
                r = store_injury_add_stamped(m->store, wrap, at, date_only ? date : NULL, &rec, NULL, audit);
                if (r >= 0)
                        manager_time_stored(m, rec.wall, rec.wall_ok);
        }
        if (r < 0)
                return store_fail(m, r, "recording the injury", ret_error);
        wraps_stored_invalidate(m, wrap);
        log_wrap(LOG_INFO, wrap, "Injury recorded: %s; heat is refused for the wait after it (R2).", iso_or_null);
        mqtt_kick(m->mqtt);
        (void) manager_r8_check(m, wrap, now);
        return 0;
}

int door_add_diary(Manager *m, const char *wrap, const DiaryEntry *e, const char **ret_error) {
        int64_t now = manager_now(m);
        int r;

        if (!e) {
                set_error(ret_error, "no diary entry given");
                return -EINVAL;
        }
        if (e->score > 10) {
                set_error(ret_error, "the pain score must be 0 to 10, not %u", e->score);
                return -EINVAL;
        }
        if ((unsigned) e->where >= _WHERE_MAX) {
                set_error(ret_error, "unknown place: front, inner, outer, back or below");
                return -EINVAL;
        }
        if (e->flags & ~(DIARY_SWELLING | DIARY_POP | DIARY_GIVING_WAY | DIARY_CATCHING)) {
                set_error(ret_error, "unknown flags: swelling, pop, giving_way and catching are known");
                return -EINVAL;
        }
        if (e->at <= 0 || e->at > now + FUTURE_SLACK_S) {
                set_error(ret_error, "the entry's time is in the future");
                return -EINVAL;
        }
        r = wrap_known(m, wrap, NULL, ret_error);
        if (r < 0)
                return r;
        r = rate_limit(m, wrap, DOOR_RATE_DIARY, ret_error);
        if (r < 0)
                return r;

        /* R9: the alert is committed with the entry, or neither is. */
        AlertRecord red = { .kind = rules_diary_alert(e), .at = e->at };
        AlertMsgCtx ctx = { .config = &m->config };
        snprintf(red.wrap, sizeof red.wrap, "%s", wrap);
        snprintf(red.text, sizeof red.text, "Sudden swelling after a pop: have the knee imaged urgently (R9).");
        r = store_diary_add(m->store, wrap, e, red.kind != ALERT_NONE ? &red : NULL,
                            m->config.mqtt_host ? alert_msg_build : NULL, &ctx);
        if (r < 0)
                return store_fail(m, r, "recording the diary entry", ret_error);

        if (red.kind != ALERT_NONE)
                alert_announce(m, &red);
        else
                log_wrap(LOG_INFO, wrap, "Diary: pain %u/10, %s.", e->score, diary_where_to_string(e->where));

        /* R8 may now be due, or newly not. */
        r = manager_r8_check(m, wrap, now);
        if (store_is_broken(r))
                manager_store_failed(m, r);
        else if (r < 0)
                log_wrap_errno(LOG_ERR, r, wrap, "R8 check failed: %m");
        mqtt_kick(m->mqtt);
        return 0;
}

static const char *rx_field_name(const char *field) {
        /* The names kneewrapctl's options and the config use, not the struct's. */
        static const struct { const char *field, *name; } map[] = {
                { "cold_s", "cold minutes" },
                { "cold_setpoint", "cold setpoint" },
                { "heat_s", "heat minutes" },
                { "heat_setpoint", "heat setpoint" },
                { "heat_wait_s", "heat wait days" },
                { "cold_rest_s", "rest minutes" },
        };
        for (size_t i = 0; i < ELEMENTSOF(map); i++)
                if (streq(map[i].field, field))
                        return map[i].name;
        return field;
}

/* The one merge: the fields in `set` from `values`, the others as in force now. */
static void prescription_merge(RulesPrescription *rx, const RulesPrescription *values, unsigned set) {
        if (set & RX_COLD_S)
                rx->cold_s = values->cold_s;
        if (set & RX_COLD_SETPOINT)
                rx->cold_setpoint = values->cold_setpoint;
        if (set & RX_HEAT_S)
                rx->heat_s = values->heat_s;
        if (set & RX_HEAT_SETPOINT)
                rx->heat_setpoint = values->heat_setpoint;
        if (set & RX_HEAT_WAIT_S)
                rx->heat_wait_s = values->heat_wait_s;
        if (set & RX_COLD_REST_S)
                rx->cold_rest_s = values->cold_rest_s;
}

static int set_prescription(Manager *m, const char *wrap, const RulesPrescription *values, unsigned set,
                            AuditRecord *audit, RulesPrescription *ret_in_force, const char **ret_error) {
        const char *field = NULL, *why = NULL;
        RulesPrescription rx;
        bool prescribed;
        int r;

        if (!values || (set & RX_ALL) == 0 || (set & ~RX_ALL)) {
                set_error(ret_error, "nothing to prescribe (clearing the prescription goes back to the defaults)");
                return -EINVAL;
        }
        r = wrap_known(m, wrap, NULL, ret_error);
        if (r < 0)
                return r;

        r = store_prescription_get(m->store, wrap, &m->config.therapy, &rx, &prescribed);
        if (r < 0)
                return store_fail(m, r, "reading the prescription in force", ret_error);
        prescription_merge(&rx, values, set);

        r = rules_prescription_check(&rx, &field, &why);
        if (r < 0) {
                set_error(ret_error, "%s: %s", rx_field_name(field), why);
                return -ERANGE;
        }
        /* Just before the write: a prescription the rules refuse records nothing, takes no turn. */
        r = rate_limit(m, wrap, DOOR_RATE_PRESCRIPTION, ret_error);
        if (r < 0)
                return r;
        /* The history keeps the whole prescription in force, not only the fields sent. */
        snprintf(audit->detail, sizeof audit->detail,
                 "cold_s=%u cold_setpoint=%d heat_s=%u heat_setpoint=%d heat_wait_s=%u cold_rest_s=%u",
                 rx.cold_s, rx.cold_setpoint, rx.heat_s, rx.heat_setpoint, (unsigned) rx.heat_wait_s, rx.cold_rest_s);
        r = store_prescription_set(m->store, wrap, &rx, manager_now(m), audit);
        if (r < 0)
                return store_fail(m, r, "recording the prescription", ret_error);
        wraps_stored_invalidate(m, wrap);
        log_wrap(LOG_INFO, wrap, "Prescription: cold %u min at %.2f °C, heat %u min at %.2f °C, "
                 "heat wait %u days, rest %u min.",
                 rx.cold_s / 60, rx.cold_setpoint / 100.0, rx.heat_s / 60, rx.heat_setpoint / 100.0,
                 (unsigned) (rx.heat_wait_s / RULES_DAY_S), rx.cold_rest_s / 60);
        mqtt_kick(m->mqtt);
        if (ret_in_force)
                *ret_in_force = rx;
        return 0;
}

static int clear_prescription(Manager *m, const char *wrap, const AuditRecord *audit, const char **ret_error) {
        int r;

        r = wrap_known(m, wrap, NULL, ret_error);
        if (r < 0)
                return r;
        r = rate_limit(m, wrap, DOOR_RATE_PRESCRIPTION, ret_error);
        if (r < 0)
                return r;
        r = store_prescription_clear(m->store, wrap, audit);
        if (r < 0 && r != -ENOENT)
                return store_fail(m, r, "clearing the prescription", ret_error);
        wraps_stored_invalidate(m, wrap);
        log_wrap(LOG_INFO, wrap, "Prescription cleared: the configured defaults apply.");
        mqtt_kick(m->mqtt);
        return 0;
}

/* seconds is checked by door_open_adoption, before the history row. */
static int open_adoption(Manager *m, unsigned seconds) {
        m->adoption_until = seconds ? manager_now(m) + seconds : 0;
        if (seconds)
                log_notice("Adoption open for %u s: a wrap in pairing mode nearby will be adopted.", seconds);
        else
                log_notice("Adoption closed.");

        bluez_set_adoption(m->bluez, m->adoption_until);
        mqtt_bridge_changed(m->mqtt, m->adoption_until);
        manager_update_status(m);
        return 0;
}

static int remove_wrap(Manager *m, const char *wrap, const AuditRecord *audit, const char **ret_error) {
        StoredWrap sw;
        int r;

        r = wrap_known(m, wrap, &sw, ret_error);
        if (r < 0)
                return r;

        r = store_wrap_remove(m->store, sw.wrap, audit);
        if (r < 0)
                return store_fail(m, r, "removing the wrap", ret_error);
        log_wrap(LOG_NOTICE, sw.wrap, "Removed (%s); its history stays in the store.", sw.address);

        (void) manager_wrap_forget(m, sw.wrap);
        mqtt_wrap_removed(m->mqtt, sw.wrap);
        manager_update_status(m);
        return 0;
}

/* ---- the change history: who changed an injury, a prescription, the adoption ---- */

/*
 * One row per change, written by the store in the change's own transaction (a change is
 * never kept without its row), and the same in the journal once the change went through.
 */
static void audit_prepare(Manager *m, const DoorActor *who, const char *wrap, const char *what, const char *detail,
                          AuditRecord *ret) {
        *ret = (AuditRecord) {
                .at = manager_now(m),
                .source = who ? who->source : SOURCE_CLI,
                .uid = who ? who->uid : -1,
        };
        snprintf(ret->wrap, sizeof ret->wrap, "%s", wrap ? wrap : "");
        snprintf(ret->what, sizeof ret->what, "%s", what);
        snprintf(ret->detail, sizeof ret->detail, "%s", detail ? detail : "");
        snprintf(ret->topic, sizeof ret->topic, "%s", who && who->topic ? who->topic : "");
        snprintf(ret->claimed_client, sizeof ret->claimed_client, "%s",
                 who && who->claimed_client ? who->claimed_client : "");
}

static void audit_log(const AuditRecord *a) {
        log_wrap(LOG_NOTICE, a->wrap[0] ? a->wrap : NULL, "Change: %s %s by %s%s%s%s%s%s (uid %" PRId64 ").",
                 a->what, a->detail, request_source_to_string(a->source),
                 a->topic[0] ? " on " : "", a->topic,
                 a->claimed_client[0] ? ", claiming to be \"" : "", a->claimed_client,
                 a->claimed_client[0] ? "\" (not verified)" : "", a->uid);
}

int door_set_injury(Manager *m, const DoorActor *who, const char *wrap, const char *iso_or_null,
                    const char **ret_error) {
        AuditRecord a;
        int r;

        audit_prepare(m, who, wrap, iso_or_null ? "injury" : "injury_resolved", iso_or_null, &a);
        r = set_injury(m, wrap, iso_or_null, &a, ret_error);
        if (r >= 0)
                audit_log(&a);
        return r;
}

int door_set_prescription(Manager *m, const DoorActor *who, const char *wrap, const RulesPrescription *values,
                          unsigned set, RulesPrescription *ret_in_force, const char **ret_error) {
        AuditRecord a;
        int r;

        audit_prepare(m, who, wrap, "prescription", NULL, &a);
        r = set_prescription(m, wrap, values, set, &a, ret_in_force, ret_error);
        if (r >= 0)
                audit_log(&a);
        return r;
}

int door_clear_prescription(Manager *m, const DoorActor *who, const char *wrap, const char **ret_error) {
        AuditRecord a;
        int r;

        audit_prepare(m, who, wrap, "prescription_cleared", NULL, &a);
        r = clear_prescription(m, wrap, &a, ret_error);
        if (r >= 0)
                audit_log(&a);
        return r;
}

int door_open_adoption(Manager *m, const DoorActor *who, unsigned seconds, const char **ret_error) {
        char detail[32];
        AuditRecord a;
        int r;

        if (seconds > DOOR_ADOPTION_MAX_S) {
                set_error(ret_error, "adoption opens for at most %d seconds, not %u", DOOR_ADOPTION_MAX_S, seconds);
                return -EINVAL;
        }
        /* Closing only tightens, like a STOP: it is never limited; closing a closed window
         * changes nothing and records nothing. */
        if (seconds == 0 && m->adoption_until <= manager_now(m))
                return 0;
        if (seconds > 0) {
                r = rate_limit(m, "", DOOR_RATE_ADOPTION, ret_error);
                if (r < 0)
                        return r;
        }
        snprintf(detail, sizeof detail, seconds ? "open %u s" : "closed", seconds);
        audit_prepare(m, who, NULL, "adoption", detail, &a);
        /* The window is not in the store: its row goes first, so that no window opens without
         * it. A store that cannot take the row does not keep adoption closed: the journal
         * has the line. */
        if (m->store) {
                r = store_audit_add(m->store, &a);
                if (r < 0 && store_is_broken(r))
                        manager_store_failed(m, r);
                else if (r < 0)
                        log_error_errno(r, "Cannot add the adoption to the history: %m");
        }
        r = open_adoption(m, seconds);
        if (r >= 0)
                audit_log(&a);
        return r;
}

int door_remove_wrap(Manager *m, const DoorActor *who, const char *wrap, const char **ret_error) {
        AuditRecord a;
        int r;

        audit_prepare(m, who, wrap, "removal", NULL, &a);
        r = remove_wrap(m, wrap, &a, ret_error);
        if (r >= 0)
                audit_log(&a);
        return r;
}

/* ---- sessions: the door checks the request, the wrap's session (wrap.c) runs it ---- */

static int session_wrap(Manager *m, const char *wrap, Wrap **ret, const char **ret_error) {
        if (!wrap || !*wrap) {
                set_error(ret_error, "no wrap given");
                return -EINVAL;
        }
        *ret = wrap_find(m, wrap);
        if (!*ret) {
                set_error(ret_error, "no adopted wrap is called \"%s\"", wrap);
                return -ENOENT;
        }
        return 0;
}

/*
 * At most one request of a kind per wrap per second is decided: every decision is a record,
 * so a flood (a stuck button, a script on the broker) would otherwise fill the store. The
 * extra ones are dropped before anything is recorded, and counted. Kinds are apart, so that
 * a diary entry right after a session start passes; STOP never comes here.
 */
static const char *const rate_kind_name[_DOOR_RATE_MAX] = {
        [DOOR_RATE_SESSION] = "session",
        [DOOR_RATE_DIARY] = "diary",
        [DOOR_RATE_RUN] = "run",
        [DOOR_RATE_INJURY] = "injury",
        [DOOR_RATE_PRESCRIPTION] = "prescription",
        [DOOR_RATE_PROFILE] = "profile",
        [DOOR_RATE_ADOPTION] = "adoption",
};

static int rate_limit(Manager *m, const char *wrap, DoorRateKind kind, const char **ret_error) {
        uint64_t now = clock_mono_usec();
        DoorRate *d = NULL;

        if (m->request_interval_usec == 0)
                return 0;           /* a Manager not made by manager_new (unit tests drive the hub) */

        for (size_t i = 0; i < m->n_rates && !d; i++)
                if (streq(m->rates[i].wrap, wrap))
                        d = m->rates + i;
        if (!d) {
                DoorRate *n = realloc(m->rates, (m->n_rates + 1) * sizeof *n);
                if (!n) {
                        set_error(ret_error, "out of memory");
                        return -ENOMEM;
                }
                m->rates = n;
                d = m->rates + m->n_rates++;
                *d = (DoorRate) { 0 };
                snprintf(d->wrap, sizeof d->wrap, "%s", wrap);
        } else if (d->decided_usec[kind] != 0 && now < d->decided_usec[kind] + m->request_interval_usec) {
                /* Logged once per 100 so that the flood does not fill the journal instead. */
                if (m->requests_dropped++ % 100 == 0)
                        log_wrap(LOG_WARNING, *wrap ? wrap : NULL, "More than one %s request a second: dropped, "
                                 "not recorded (%" PRIu64 " dropped since start).", rate_kind_name[kind],
                                 m->requests_dropped);
                set_error(ret_error, "too many requests: at most one %s request a second %s; this one was dropped",
                          rate_kind_name[kind], *wrap ? "per wrap" : "for the gateway");
                return -ENOBUFS;
        }
        d->decided_usec[kind] = now;
        return 0;
}

/* A battery at or below this when a session is asked for raises ALERT_LOW_BATTERY, at most
 * once in LOW_BATTERY_QUIET_S per wrap. */
#define LOW_BATTERY_PERCENT 20
#define LOW_BATTERY_QUIET_S (12 * 3600)

static bool alert_raised_since(Manager *m, const char *wrap, AlertKind kind, int64_t since) {
        _cleanup_free_ AlertRecord *list = NULL;
        size_t n = 0;

        if (store_alerts_list(m->store, wrap, since, INT64_MAX, false, &list, &n) < 0)
                return false;
        for (size_t i = 0; i < n; i++)
                if (list[i].kind == kind)
                        return true;
        return false;
}

/* What a session request tells a clinic beyond its record: heat asked for in the week after
 * an injury, and a battery too low for the session. */
static void start_alerts(Manager *m, Wrap *w, const SessionRecord *rec) {
        const char *wrap = wrap_get_id(w);
        int battery = wrap_get_live(w)->battery;
        int64_t now = manager_now(m);
        char text[ALERT_TEXT_MAX];
        int r = 0;

        if (!m->store)
                return;
        if (rec->mode == THERAPY_HEAT && rec->outcome == OUTCOME_REFUSED && rec->refusal == REFUSAL_HEAT_TOO_SOON &&
            rec->has_days_since_injury && rec->days_since_injury < 70) {
                snprintf(text, sizeof text, "Heat was asked for %d.%d days after the injury and refused (R2).",
                         rec->days_since_injury / 10, rec->days_since_injury % 10);
                r = alert_raise(m, wrap, ALERT_HEAT_FIRST_WEEK, now, text, rec->session_id);
        }
        if (r >= 0 && battery >= 0 && battery <= LOW_BATTERY_PERCENT &&
            !alert_raised_since(m, wrap, ALERT_LOW_BATTERY, now - LOW_BATTERY_QUIET_S)) {
                snprintf(text, sizeof text, "The battery was at %d %% when a %s session was asked for: charge the wrap.",
                         battery, therapy_mode_to_string(rec->mode));
                r = alert_raise(m, wrap, ALERT_LOW_BATTERY, now, text, rec->session_id[0] ? rec->session_id : NULL);
        }
        if (r < 0 && store_is_broken(r))
                manager_store_failed(m, r);
        else if (r < 0)
                log_wrap_errno(LOG_ERR, r, wrap, "Cannot raise the alert: %m");
}

int door_start(Manager *m, const char *wrap, TherapyMode mode, RequestSource source, uint64_t press_usec,
               SessionRecord *ret_record, const char **ret_error) {
        SessionRecord local, *rec;
        Wrap *w;
        int r;

        if (mode != THERAPY_COLD && mode != THERAPY_HEAT) {
                set_error(ret_error, "mode must be cold or heat");
                return -EINVAL;
        }
        r = session_wrap(m, wrap, &w, ret_error);
        if (r < 0)
                return r;
        r = rate_limit(m, wrap, DOOR_RATE_SESSION, ret_error);
        if (r < 0)
                return r;
        rec = ret_record ? ret_record : &local;
        memset(rec, 0, sizeof *rec);
        r = wrap_request_start(w, mode, source, press_usec, rec, ret_error);
        if (r < 0)
                return r;
        start_alerts(m, w, rec);
        return 0;
}

int door_stop(Manager *m, const char *wrap, RequestSource source, const char **ret_error) {
        Wrap *w;
        int r;

        r = session_wrap(m, wrap, &w, ret_error);
        if (r < 0)
                return r;
        return wrap_request_stop(w, source, ret_error);
}

/* ---- what a clinic reads: runs, the patient profile, alerts acknowledged ---- */

/* How far back a run may be logged: a runner catching up on last week, not last year. */
#define RUN_BACKDATE_MAX_S (31 * RULES_DAY_S)

int door_record_run(Manager *m, const RunRecord *run, int64_t *ret_id, const char **ret_error) {
        int64_t now = manager_now(m), id = 0;
        RunRecord r0;
        char iso[CLOCK_ISO_MAX];
        int r;

        if (!run) {
                set_error(ret_error, "no run given");
                return -EINVAL;
        }
        r0 = *run;
        if (r0.ended_at == 0)
                r0.ended_at = now;   /* "I just ran" */
        if (r0.ended_at > now + FUTURE_SLACK_S) {
                set_error(ret_error, "the run's end is in the future");
                return -EINVAL;
        }
        if (r0.ended_at < now - RUN_BACKDATE_MAX_S) {
                set_error(ret_error, "the run ended more than 31 days ago");
                return -EINVAL;
        }
        if (r0.minutes > RUN_MINUTES_MAX) {
                set_error(ret_error, "a run lasts at most %u minutes, not %u", RUN_MINUTES_MAX, r0.minutes);
                return -EINVAL;
        }
        if (r0.meters > RUN_METERS_MAX) {
                set_error(ret_error, "a run is at most %u km, not %.3f", RUN_METERS_MAX / 1000, r0.meters / 1000.0);
                return -EINVAL;
        }
        r = need_store(m, ret_error);
        if (r < 0)
                return r;
        r = wrap_known(m, r0.wrap, NULL, ret_error);
        if (r < 0)
                return r;
        r = rate_limit(m, r0.wrap, DOOR_RATE_RUN, ret_error);
        if (r < 0)
                return r;
        r0.recorded_at = now;
        r = store_run_add(m->store, &r0, NULL, &id);
        if (r < 0)
                return store_fail(m, r, "recording the run", ret_error);
        log_wrap(LOG_INFO, r0.wrap, "Run %lld recorded (%s): ended %s, %u min, %.2f km; cold within %d min follows it.",
                 (long long) id, request_source_to_string(r0.source), clock_format_iso(r0.ended_at, iso),
                 r0.minutes, r0.meters / 1000.0, RUN_FOLLOW_WINDOW_S / 60);
        if (ret_id)
                *ret_id = id;
        mqtt_wrap_compliance_changed(m->mqtt, r0.wrap);
        return 0;
}

static bool profile_text_ok(const char *s, size_t max) {
        size_t n = strnlen(s, max);

        if (n >= max)
                return false;
        for (size_t i = 0; i < n; i++)
                if ((unsigned char) s[i] < 0x20 || s[i] == 0x7f)
                        return false;
        return true;
}

int door_set_profile(Manager *m, const PatientProfile *p, const char **ret_error) {
        PatientProfile q;
        int r;

        if (!p) {
                set_error(ret_error, "no profile given");
                return -EINVAL;
        }
        q = *p;
        if (!profile_text_ok(q.label, sizeof q.label) || !profile_text_ok(q.clinic_ref, sizeof q.clinic_ref)) {
                set_error(ret_error, "a label or clinic reference is at most %d bytes of text, no control characters",
                          PROFILE_TEXT_MAX - 1);
                return -EINVAL;
        }
        if (q.knee < KNEE_UNSET || q.knee >= _KNEE_MAX) {
                set_error(ret_error, "the knee is left or right");
                return -EINVAL;
        }
        r = need_store(m, ret_error);
        if (r < 0)
                return r;
        r = wrap_known(m, q.wrap, NULL, ret_error);
        if (r < 0)
                return r;
        r = rate_limit(m, q.wrap, DOOR_RATE_PROFILE, ret_error);
        if (r < 0)
                return r;
        r = store_profile_set(m->store, &q, manager_now(m));
        if (r < 0)
                return store_fail(m, r, "setting the patient profile", ret_error);
        /* No label in the journal: it may be the only thing tying the wrap to a person. */
        log_wrap(LOG_INFO, q.wrap, "Patient profile set: %s knee, label %s, clinic reference %s.",
                 knee_to_string(q.knee) ? knee_to_string(q.knee) : "unknown",
                 *q.label ? "set" : "none", *q.clinic_ref ? "set" : "none");
        mqtt_wrap_profile_changed(m->mqtt, q.wrap);
        return 0;
}

int door_ack_alert(Manager *m, int64_t id, AlertRecord *ret, const char **ret_error) {
        AlertMsgCtx ctx = { .config = &m->config };
        AlertRecord a;
        int r;

        if (id <= 0) {
                set_error(ret_error, "an alert id is a positive number");
                return -EINVAL;
        }
        r = need_store(m, ret_error);
        if (r < 0)
                return r;
        r = store_alert_ack(m->store, id, manager_now(m), m->config.mqtt_host ? alert_msg_build : NULL, &ctx, &a);
        if (r == -ENOENT) {
                set_error(ret_error, "no alert has the id %lld", (long long) id);
                return r;
        }
        if (r == -EALREADY) {
                set_error(ret_error, "alert %lld was acknowledged before", (long long) id);
                return r;
        }
        if (r < 0)
                return store_fail(m, r, "acknowledging the alert", ret_error);
        log_wrap(LOG_NOTICE, a.wrap, "Alert %lld (%s) acknowledged.", (long long) id, alert_kind_to_string(a.kind));
        bus_api_alert(m->api, &a);
        mqtt_kick(m->mqtt);
        if (ret)
                *ret = a;
        return 0;
}
