/* door: the one door: every action that changes the gateway's state (see door.h). */
#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "bluez.h"
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

static int need_store(Manager *m, const char **ret_error) {
        if (m->store)
                return 0;
        set_error(ret_error, "the store is unavailable (%s): nothing can be recorded now",
                  manager_store_problem(m->store_error));
        return -EAGAIN;
}

static int store_fail(Manager *m, int r, const char *what, const char **ret_error) {
        if (store_is_broken(r)) {
                set_error(ret_error, "the store failed while %s (%s)", what, manager_store_problem(r));
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

int door_set_injury(Manager *m, const char *wrap, const char *iso_or_null, const char **ret_error) {
        int64_t now = manager_now(m), at;
        bool date_only;
        char today[11], date[11] = "";
        int r;

        r = wrap_known(m, wrap, NULL, ret_error);
        if (r < 0)
                return r;

        if (!iso_or_null) {
                r = store_injury_resolve(m->store, wrap, now);
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

        r = clock_parse_iso(iso_or_null, &at, &date_only);
        if (r < 0) {
                set_error(ret_error, "\"%s\" is not a date (YYYY-MM-DD) or a date and time "
                          "(YYYY-MM-DDTHH:MM[:SS], optionally Z or ±HH:MM)", iso_or_null);
                return -EINVAL;
        }
        if (date_only) {
                /* A date resolves to the end of that local day; it may be today, not later. */
                snprintf(date, sizeof date, "%.10s", iso_or_null);
                clock_format_date(now, today);
                if (strcmp(date, today) > 0) {
                        set_error(ret_error, "the injury date %s is in the future", date);
                        return -EINVAL;
                }
        } else if (at > now + FUTURE_SLACK_S) {
                set_error(ret_error, "the injury time %s is in the future", iso_or_null);
                return -EINVAL;
        }

        r = store_injury_add(m->store, wrap, at, date_only ? date : NULL, now);
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
        OutboxMsg msg = { 0 };
        AlertKind alert;
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

        /* R9: the alert is committed with the entry, or neither is. */
        alert = rules_diary_alert(e);
        if (alert != ALERT_NONE && m->config.mqtt_host) {
                r = payload_alert_msg(&m->config, wrap, alert, e->at,
                                      "Sudden swelling after a pop: have the knee imaged urgently (R9).",
                                      NULL, &msg);
                if (r < 0) {
                        set_error(ret_error, "cannot build the alert: %s", strerror(-r));
                        return r;
                }
        }
        r = store_diary_add(m->store, wrap, e, alert, alert != ALERT_NONE && m->config.mqtt_host ? &msg : NULL);
        outbox_msg_done(&msg);
        if (r < 0)
                return store_fail(m, r, "recording the diary entry", ret_error);

        if (alert != ALERT_NONE)
                log_wrap(LOG_ALERT, wrap, "Red flag: sudden swelling after a pop: have the knee imaged urgently (R9).");
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

int door_set_prescription(Manager *m, const char *wrap, const RulesPrescription *values, unsigned set,
                          RulesPrescription *ret_in_force, const char **ret_error) {
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
        r = store_prescription_set(m->store, wrap, &rx, manager_now(m));
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

int door_clear_prescription(Manager *m, const char *wrap, const char **ret_error) {
        int r;

        r = wrap_known(m, wrap, NULL, ret_error);
        if (r < 0)
                return r;
        r = store_prescription_clear(m->store, wrap);
        if (r < 0 && r != -ENOENT)
                return store_fail(m, r, "clearing the prescription", ret_error);
        wraps_stored_invalidate(m, wrap);
        log_wrap(LOG_INFO, wrap, "Prescription cleared: the configured defaults apply.");
        mqtt_kick(m->mqtt);
        return 0;
}

int door_open_adoption(Manager *m, unsigned seconds, const char **ret_error) {
        if (seconds > DOOR_ADOPTION_MAX_S) {
                set_error(ret_error, "adoption opens for at most %d seconds, not %u", DOOR_ADOPTION_MAX_S, seconds);
                return -EINVAL;
        }
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

int door_remove_wrap(Manager *m, const char *wrap, const char **ret_error) {
        StoredWrap sw;
        int r;

        r = wrap_known(m, wrap, &sw, ret_error);
        if (r < 0)
                return r;

        r = store_wrap_remove(m->store, sw.wrap);
        if (r < 0)
                return store_fail(m, r, "removing the wrap", ret_error);
        log_wrap(LOG_NOTICE, sw.wrap, "Removed (%s); its history stays in the store.", sw.address);

        (void) manager_wrap_forget(m, sw.wrap);
        mqtt_wrap_removed(m->mqtt, sw.wrap);
        manager_update_status(m);
        return 0;
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

int door_start(Manager *m, const char *wrap, TherapyMode mode, RequestSource source, uint64_t press_usec,
               SessionRecord *ret_record, const char **ret_error) {
        Wrap *w;
        int r;

        if (mode != THERAPY_COLD && mode != THERAPY_HEAT) {
                set_error(ret_error, "mode must be cold or heat");
                return -EINVAL;
        }
        r = session_wrap(m, wrap, &w, ret_error);
        if (r < 0)
                return r;
        return wrap_request_start(w, mode, source, press_usec, ret_record, ret_error);
}

int door_stop(Manager *m, const char *wrap, RequestSource source, const char **ret_error) {
        Wrap *w;
        int r;

        r = session_wrap(m, wrap, &w, ret_error);
        if (r < 0)
                return r;
        return wrap_request_stop(w, source, ret_error);
}
