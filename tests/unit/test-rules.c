/* Unit tests for the therapy rules R1–R10 and the record names, with every boundary worked out by hand. */
#include <errno.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <cmocka.h>

#include "clock.h"
#include "record.h"
#include "rules.h"
#include "util.h"

#define MIN_S  ((int64_t) 60)
#define HOUR_S ((int64_t) 3600)
#define DAY_S  ((int64_t) 86400)
#define WEEK_S (7 * DAY_S)

/* 2026-05-01T12:00:00Z: an arbitrary instant far from any DST change. */
#define T0 ((int64_t) 1777636800)

static void set_tz(const char *tz) {
        setenv("TZ", tz, 1);
        tzset();
}

static RulesState idle_state(void) {
        RulesState s = { 0 };

        rules_prescription_default(&s.rx);
        return s;
}

static RulesState active_state(TherapyMode mode, int64_t started, uint32_t duration_s) {
        RulesState s = idle_state();

        s.active = true;
        s.active_mode = mode;
        s.active_started = started;
        s.active_duration_s = duration_s;
        return s;
}

/* Every decision must say why, whatever it is. */
static RulesDecision decide(const RulesState *s, RulesEvent ev, int64_t now) {
        RulesDecision d = rules_decide(s, &ev, now);

        assert_non_null(d.why);
        assert_true(strlen(d.why) > 0);
        return d;
}

static RulesDecision start(const RulesState *s, TherapyMode mode, int64_t now) {
        return decide(s, (RulesEvent) { .type = RULES_EVENT_START, .mode = mode }, now);
}

static RulesDecision tick(const RulesState *s, int64_t now) {
        return decide(s, (RulesEvent) { .type = RULES_EVENT_TICK }, now);
}

static RulesDecision skin(const RulesState *s, int32_t c, int64_t now) {
        return decide(s, (RulesEvent) { .type = RULES_EVENT_SKIN, .skin = c }, now);
}

static RulesDecision fault(const RulesState *s, uint8_t flags, bool state, int64_t now) {
        return decide(s, (RulesEvent) { .type = RULES_EVENT_FAULT, .fault_flags = flags, .fault_state = state }, now);
}

static void assert_deny(RulesDecision d, DenyReason reason, uint16_t minutes) {
        assert_int_equal(d.action, RULES_DENY);
        assert_int_equal(d.deny, reason);
        assert_int_equal(d.minutes_left, minutes);
}

static void assert_why_names(RulesDecision d, const char *rule) {
        assert_non_null(strstr(d.why, rule));
}

/* ---- prescriptions ---- */

static void test_prescription_default(void **state) {
        RulesPrescription rx;
        const char *field = "x", *why = "x";

        rules_prescription_default(&rx);
        assert_int_equal(rx.cold_s, 900);
        assert_int_equal(rx.cold_setpoint, 1000);
        assert_int_equal(rx.heat_s, 900);
        assert_int_equal(rx.heat_setpoint, 4000);
        assert_int_equal(rx.heat_wait_s, 604800);
        assert_int_equal(rx.cold_rest_s, 3600);
        assert_int_equal(rules_prescription_check(&rx, &field, &why), 0);
        assert_null(field);
        assert_null(why);
        assert_int_equal(rules_prescription_check(&rx, NULL, NULL), 0);
        assert_int_equal(rules_prescription_check(NULL, NULL, NULL), -EINVAL);
}

typedef struct Bound {
        const char *field;
        size_t offset;
        bool is_signed;
        int64_t lo, hi;
} Bound;

static void set_field(RulesPrescription *rx, const Bound *b, int64_t v) {
        int32_t i = (int32_t) v;
        uint32_t u = (uint32_t) v;

        if (b->is_signed)
                memcpy((uint8_t *) rx + b->offset, &i, sizeof i);
        else
                memcpy((uint8_t *) rx + b->offset, &u, sizeof u);
}

static void test_prescription_bounds(void **state) {
        /* The bounds of therapy-rules.md, written out here rather than taken from rules.h. */
        static const Bound bounds[] = {
                { "cold_s",        offsetof(RulesPrescription, cold_s),        false, 600,    900 },
                { "cold_setpoint", offsetof(RulesPrescription, cold_setpoint), true,  800,    1500 },
                { "heat_s",        offsetof(RulesPrescription, heat_s),        false, 60,     1200 },
                { "heat_setpoint", offsetof(RulesPrescription, heat_setpoint), true,  3800,   4200 },
                { "heat_wait_s",   offsetof(RulesPrescription, heat_wait_s),   false, 604800, 31536000 },
                { "cold_rest_s",   offsetof(RulesPrescription, cold_rest_s),   false, 3600,   86400 },
        };

        for (size_t i = 0; i < ELEMENTSOF(bounds); i++) {
                const Bound *b = bounds + i;
                RulesPrescription rx;
                const char *field, *why;

                /* Both ends are allowed... */
                rules_prescription_default(&rx);
                set_field(&rx, b, b->lo);
                assert_int_equal(rules_prescription_check(&rx, &field, &why), 0);
                set_field(&rx, b, b->hi);
                assert_int_equal(rules_prescription_check(&rx, &field, &why), 0);

                /* ...one step outside either is refused, naming the field, and left as it was. */
                set_field(&rx, b, b->lo - 1);
                field = why = NULL;
                assert_int_equal(rules_prescription_check(&rx, &field, &why), -ERANGE);
                assert_string_equal(field, b->field);
                assert_non_null(why);
                rules_prescription_default(&rx);
                set_field(&rx, b, b->hi + 1);
                field = why = NULL;
                assert_int_equal(rules_prescription_check(&rx, &field, &why), -ERANGE);
                assert_string_equal(field, b->field);
                assert_non_null(why);
                assert_int_equal(rules_prescription_check(&rx, NULL, NULL), -ERANGE);
        }
}

static void test_prescription_extremes(void **state) {
        RulesPrescription rx;
        const char *field, *why;

        /* Far outside, and the first bad field is the one named. */
        rules_prescription_default(&rx);
        rx.cold_s = 0;
        rx.heat_s = UINT32_MAX;
        assert_int_equal(rules_prescription_check(&rx, &field, &why), -ERANGE);
        assert_string_equal(field, "cold_s");
        assert_non_null(strstr(why, "R1"));

        rules_prescription_default(&rx);
        rx.cold_setpoint = INT32_MIN;
        assert_int_equal(rules_prescription_check(&rx, &field, &why), -ERANGE);
        assert_string_equal(field, "cold_setpoint");

        rules_prescription_default(&rx);
        rx.heat_s = 1800; /* the wrap would take it; R4 does not */
        assert_int_equal(rules_prescription_check(&rx, &field, &why), -ERANGE);
        assert_string_equal(field, "heat_s");
        assert_non_null(strstr(why, "R4"));

        rules_prescription_default(&rx);
        rx.heat_wait_s = 6 * 86400;
        assert_int_equal(rules_prescription_check(&rx, &field, &why), -ERANGE);
        assert_string_equal(field, "heat_wait_s");
        assert_non_null(strstr(why, "R2"));

        rules_prescription_default(&rx);
        rx.cold_rest_s = 1800;
        assert_int_equal(rules_prescription_check(&rx, &field, &why), -ERANGE);
        assert_string_equal(field, "cold_rest_s");
        assert_non_null(strstr(why, "R6"));

        /* A clinic's in-bounds choice passes as it is. */
        rx = (RulesPrescription) { 720, 1200, 600, 3900, 14 * 86400, 2 * 3600 };
        assert_int_equal(rules_prescription_check(&rx, &field, &why), 0);
}

/* ---- R1: cold ---- */

static void test_start_cold_default(void **state) {
        RulesState s = idle_state();
        RulesDecision d = start(&s, THERAPY_COLD, T0);

        assert_int_equal(d.action, RULES_START);
        assert_int_equal(d.mode, THERAPY_COLD);
        assert_int_equal(d.setpoint, 1000);
        assert_int_equal(d.duration_s, 900);
        assert_int_equal(d.deadline, T0 + 900);
        assert_why_names(d, "R1");
}

static void test_start_cold_prescribed(void **state) {
        RulesState s = idle_state();
        RulesDecision d;

        s.rx.cold_s = 600;
        s.rx.cold_setpoint = 1250;
        d = start(&s, THERAPY_COLD, T0);
        assert_int_equal(d.action, RULES_START);
        assert_int_equal(d.setpoint, 1250);
        assert_int_equal(d.duration_s, 600);
        assert_int_equal(d.deadline, T0 + 600);

        /* An injury does not stop cold: cold is what a fresh injury wants. */
        s.has_injury = true;
        s.injury_at = s.injury_from = T0 - 60;
        d = start(&s, THERAPY_COLD, T0);
        assert_int_equal(d.action, RULES_START);
}

static void test_start_bad_request(void **state) {
        RulesState s = idle_state();
        RulesDecision d;

        d = start(&s, THERAPY_NONE, T0);
        assert_deny(d, DENY_OTHER, 0);
        d = start(&s, (TherapyMode) 7, T0);
        assert_deny(d, DENY_OTHER, 0);

        /* A prescription that slipped past the check starts nothing (R1 never passes 15 min). */
        s.rx.cold_s = 1000;
        assert_deny(start(&s, THERAPY_COLD, T0), DENY_OTHER, 0);
        assert_deny(start(&s, THERAPY_HEAT, T0), DENY_OTHER, 0);
        s = idle_state();
        s.rx.heat_wait_s = 0;
        assert_deny(start(&s, THERAPY_HEAT, T0), DENY_OTHER, 0);
}

static void test_tick_deadline(void **state) {
        RulesState s = active_state(THERAPY_COLD, T0, 900);
        RulesDecision d;

        d = tick(&s, T0 + 1);
        assert_int_equal(d.action, RULES_NONE);
        assert_int_equal(d.deadline, T0 + 900);
        d = tick(&s, T0 + 899);
        assert_int_equal(d.action, RULES_NONE);
        assert_int_equal(d.deadline, T0 + 900);
        d = tick(&s, T0 + 900);
        assert_int_equal(d.action, RULES_STOP);
        assert_int_equal(d.stop, STOP_COMPLETED);
        d = tick(&s, T0 + 5000); /* a late tick still stops */
        assert_int_equal(d.action, RULES_STOP);
        assert_int_equal(d.stop, STOP_COMPLETED);

        s = active_state(THERAPY_HEAT, T0, 600);
        assert_int_equal(tick(&s, T0 + 599).action, RULES_NONE);
        d = tick(&s, T0 + 600);
        assert_int_equal(d.action, RULES_STOP);
        assert_int_equal(d.stop, STOP_COMPLETED);

        /* Idle: nothing to stop. */
        s = idle_state();
        d = tick(&s, T0);
        assert_int_equal(d.action, RULES_NONE);
}

static void test_tick_cold_cap(void **state) {
        /* R1 in depth: whatever the state says, cold ends at 15 minutes. */
        RulesState s = active_state(THERAPY_COLD, T0, 1800);
        RulesDecision d;

        d = tick(&s, T0 + 899);
        assert_int_equal(d.action, RULES_NONE);
        assert_int_equal(d.deadline, T0 + 900);
        d = tick(&s, T0 + 900);
        assert_int_equal(d.action, RULES_STOP);
        assert_int_equal(d.stop, STOP_COMPLETED);
        assert_why_names(d, "R1");

        s.active_duration_s = UINT32_MAX;
        assert_int_equal(tick(&s, T0 + 900).action, RULES_STOP);

        /* R4 likewise for heat: 20 minutes at most. */
        s = active_state(THERAPY_HEAT, T0, 3000);
        d = tick(&s, T0 + 1199);
        assert_int_equal(d.action, RULES_NONE);
        assert_int_equal(d.deadline, T0 + 1200);
        d = tick(&s, T0 + 1200);
        assert_int_equal(d.action, RULES_STOP);
        assert_int_equal(d.stop, STOP_COMPLETED);
}

static void test_stop_request(void **state) {
        RulesState s = active_state(THERAPY_HEAT, T0, 900);
        RulesEvent stop = { .type = RULES_EVENT_STOP };
        RulesDecision d;

        d = decide(&s, stop, T0 + 10);
        assert_int_equal(d.action, RULES_STOP);
        assert_int_equal(d.stop, STOP_USER);

        s = idle_state();
        d = decide(&s, stop, T0 + 10);
        assert_int_equal(d.action, RULES_NONE);
}

/* ---- R2/R3: heat ---- */

static void test_heat_no_injury(void **state) {
        RulesState s = idle_state();
        RulesDecision d;
        int64_t from = 0;

        /* R3: no injury recorded. */
        d = start(&s, THERAPY_HEAT, T0);
        assert_int_equal(d.action, RULES_START);
        assert_int_equal(d.mode, THERAPY_HEAT);
        assert_int_equal(d.setpoint, 4000);
        assert_int_equal(d.duration_s, 900);
        assert_int_equal(d.deadline, T0 + 900);
        assert_why_names(d, "R3");
        assert_true(rules_heat_allowed(&s, T0, &from));
        assert_int_equal(from, T0);

        /* R3: a resolved injury reaches the rules as no injury, whatever its date. */
        s.injury_at = s.injury_from = T0 - 3600;
        s.has_injury = false;
        assert_int_equal(start(&s, THERAPY_HEAT, T0).action, RULES_START);

        s.rx.heat_s = 1200;
        s.rx.heat_setpoint = 4200;
        d = start(&s, THERAPY_HEAT, T0);
        assert_int_equal(d.setpoint, 4200);
        assert_int_equal(d.duration_s, 1200);
        assert_int_equal(d.deadline, T0 + 1200);
}

static void test_heat_boundary(void **state) {
        RulesState s = idle_state();
        RulesDecision d;
        int64_t from;

        s.has_injury = true;
        s.injury_at = s.injury_from = T0;

        /* Exactly 7 × 24 h later: allowed. */
        d = start(&s, THERAPY_HEAT, T0 + 604800);
        assert_int_equal(d.action, RULES_START);
        assert_why_names(d, "R2");
        assert_true(rules_heat_allowed(&s, T0 + 604800, &from));
        assert_int_equal(from, T0 + 604800);
        assert_true(rules_heat_allowed(&s, T0 + 604800, NULL));

        /* One second before: refused, one minute left. */
        d = start(&s, THERAPY_HEAT, T0 + 604799);
        assert_deny(d, DENY_HEAT_TOO_SOON, 1);
        assert_int_equal(d.allowed_at, T0 + 604800);   /* what MQTT shows as heat_allowed_at */
        assert_why_names(d, "R2");
        assert_false(rules_heat_allowed(&s, T0 + 604799, &from));
        assert_int_equal(from, T0 + 604800);

        /* Right after the injury: a whole week, 10080 minutes. */
        assert_deny(start(&s, THERAPY_HEAT, T0), DENY_HEAT_TOO_SOON, 10080);
        /* Before the recorded injury (a clock set back): still refused. */
        assert_deny(start(&s, THERAPY_HEAT, T0 - 60), DENY_HEAT_TOO_SOON, 10081);
}

static void test_heat_minutes_rounding(void **state) {
        RulesState s = idle_state();
        int64_t allowed = T0 + 604800;

        s.has_injury = true;
        s.injury_at = s.injury_from = T0;
        assert_deny(start(&s, THERAPY_HEAT, allowed - 1), DENY_HEAT_TOO_SOON, 1);
        assert_deny(start(&s, THERAPY_HEAT, allowed - 59), DENY_HEAT_TOO_SOON, 1);
        assert_deny(start(&s, THERAPY_HEAT, allowed - 60), DENY_HEAT_TOO_SOON, 1);
        assert_deny(start(&s, THERAPY_HEAT, allowed - 61), DENY_HEAT_TOO_SOON, 2);
        assert_deny(start(&s, THERAPY_HEAT, allowed - 120), DENY_HEAT_TOO_SOON, 2);
        assert_deny(start(&s, THERAPY_HEAT, allowed - 121), DENY_HEAT_TOO_SOON, 3);
        assert_deny(start(&s, THERAPY_HEAT, allowed - 3 * DAY_S - 1), DENY_HEAT_TOO_SOON, 4321);

        /* A clinic's 14-day wait: at 7 days, 7 days are left. */
        s.rx.heat_wait_s = 14 * 86400;
        assert_deny(start(&s, THERAPY_HEAT, allowed), DENY_HEAT_TOO_SOON, 10080);
        assert_int_equal(start(&s, THERAPY_HEAT, T0 + 14 * DAY_S).action, RULES_START);

        /* A year's wait does not fit a uint16 of minutes (525600): it saturates, never wraps. */
        s.rx.heat_wait_s = 365 * 86400;
        assert_deny(start(&s, THERAPY_HEAT, T0), DENY_HEAT_TOO_SOON, UINT16_MAX);
}

static void test_heat_date_only_utc(void **state) {
        RulesState s = idle_state();
        int64_t end, start_of_day;

        /* Injured on 2026-05-01 (date only): R2 counts from 2026-05-02T00:00Z. */
        set_tz("UTC");
        assert_int_equal(clock_local_day_end(2026, 5, 1, &end), 0);
        assert_int_equal(clock_local_day_end(2026, 4, 30, &start_of_day), 0);
        assert_int_equal(end, 1777680000);
        assert_int_equal(start_of_day, 1777593600);
        s.has_injury = true;
        s.injury_at = end;
        s.injury_from = start_of_day;

        /* A week after the injury's noon is not enough: 12 hours (720 minutes) are left. */
        assert_deny(start(&s, THERAPY_HEAT, T0 + WEEK_S), DENY_HEAT_TOO_SOON, 720);
        /* 2026-05-08T23:59:59Z: one second short. */
        assert_deny(start(&s, THERAPY_HEAT, 1778284799), DENY_HEAT_TOO_SOON, 1);
        /* 2026-05-09T00:00:00Z: allowed. */
        assert_int_equal(start(&s, THERAPY_HEAT, 1778284800).action, RULES_START);
}

static void test_heat_dst_spring(void **state) {
        RulesState s = idle_state();
        int64_t end, start_of_day, from;

        /* Berlin, 2026-03-29: clocks go 02:00 CET -> 03:00 CEST; the day has 23 hours. */
        set_tz("Europe/Berlin");
        assert_int_equal(clock_local_day_end(2026, 3, 29, &end), 0);
        assert_int_equal(clock_local_day_end(2026, 3, 28, &start_of_day), 0);
        assert_int_equal(start_of_day, 1774738800); /* 2026-03-29T00:00+01:00 */
        assert_int_equal(end, 1774821600);          /* 2026-03-30T00:00+02:00 */
        assert_int_equal(end - start_of_day, 23 * HOUR_S);
        s.has_injury = true;
        s.injury_at = end;
        s.injury_from = start_of_day;

        /* Allowed at 2026-04-06T00:00+02:00 = 2026-04-05T22:00Z. */
        assert_false(rules_heat_allowed(&s, 1775426399, &from));
        assert_int_equal(from, 1775426400);
        assert_deny(start(&s, THERAPY_HEAT, 1775426399), DENY_HEAT_TOO_SOON, 1);
        assert_int_equal(start(&s, THERAPY_HEAT, 1775426400).action, RULES_START);
        set_tz("UTC");
}

static void test_heat_dst_autumn(void **state) {
        RulesState s = idle_state();
        int64_t end, start_of_day, from;

        /* Berlin, 2026-10-25: clocks go 03:00 CEST -> 02:00 CET; the day has 25 hours. */
        set_tz("Europe/Berlin");
        assert_int_equal(clock_local_day_end(2026, 10, 25, &end), 0);
        assert_int_equal(clock_local_day_end(2026, 10, 24, &start_of_day), 0);
        assert_int_equal(start_of_day, 1792879200); /* 2026-10-25T00:00+02:00 */
        assert_int_equal(end, 1792969200);          /* 2026-10-26T00:00+01:00 */
        assert_int_equal(end - start_of_day, 25 * HOUR_S);
        s.has_injury = true;
        s.injury_at = end;
        s.injury_from = start_of_day;

        /* Allowed at 2026-11-02T00:00+01:00 = 2026-11-01T23:00Z. */
        assert_false(rules_heat_allowed(&s, 1793573999, &from));
        assert_int_equal(from, 1793574000);
        assert_deny(start(&s, THERAPY_HEAT, 1793573999), DENY_HEAT_TOO_SOON, 1);
        assert_int_equal(start(&s, THERAPY_HEAT, 1793574000).action, RULES_START);
        set_tz("UTC");
}

static void test_heat_dst_within_the_week(void **state) {
        RulesState s = idle_state();
        int64_t end;

        set_tz("Europe/Berlin");

        /*
         * Injured 2026-03-25 (date only): end of day 2026-03-26T00:00+01:00 = 1774479600. The
         * week holds the spring change, so 7 × 24 h later is 2026-04-02T01:00+02:00
         * (1775084400), an hour after local midnight (1775080800): elapsed time counts.
         */
        assert_int_equal(clock_local_day_end(2026, 3, 25, &end), 0);
        assert_int_equal(end, 1774479600);
        s.has_injury = true;
        s.injury_at = end;
        s.injury_from = end - DAY_S;
        assert_deny(start(&s, THERAPY_HEAT, 1775080800), DENY_HEAT_TOO_SOON, 60);
        assert_deny(start(&s, THERAPY_HEAT, 1775084399), DENY_HEAT_TOO_SOON, 1);
        assert_int_equal(start(&s, THERAPY_HEAT, 1775084400).action, RULES_START);

        /*
         * Injured 2026-10-20 (date only): end of day 2026-10-21T00:00+02:00 = 1792533600. The
         * week holds the autumn change, so 7 × 24 h later is 2026-10-27T23:00+01:00
         * (1793138400), an hour before local midnight (1793142000).
         */
        assert_int_equal(clock_local_day_end(2026, 10, 20, &end), 0);
        assert_int_equal(end, 1792533600);
        s.injury_at = end;
        s.injury_from = end - DAY_S;
        assert_deny(start(&s, THERAPY_HEAT, 1793138399), DENY_HEAT_TOO_SOON, 1);
        assert_int_equal(start(&s, THERAPY_HEAT, 1793138400).action, RULES_START);

        set_tz("UTC");
}

/* ---- R6: rest between cold sessions ---- */

static void test_rest_interval(void **state) {
        RulesState s = idle_state();
        RulesDecision d;

        s.has_last_cold = true;
        s.last_cold_end = T0;

        /* 59:59 after: one minute left. */
        d = start(&s, THERAPY_COLD, T0 + 3599);
        assert_deny(d, DENY_REST_INTERVAL, 1);
        assert_int_equal(d.allowed_at, T0 + 3600);
        assert_why_names(d, "R6");
        /* 60:00 after: allowed. */
        d = start(&s, THERAPY_COLD, T0 + 3600);
        assert_int_equal(d.action, RULES_START);
        assert_int_equal(d.deadline, T0 + 3600 + 900);

        assert_deny(start(&s, THERAPY_COLD, T0), DENY_REST_INTERVAL, 60);
        assert_deny(start(&s, THERAPY_COLD, T0 + 1), DENY_REST_INTERVAL, 60);
        assert_deny(start(&s, THERAPY_COLD, T0 + 60), DENY_REST_INTERVAL, 59);
        assert_deny(start(&s, THERAPY_COLD, T0 + 61), DENY_REST_INTERVAL, 59);

        /* Heat does not wait for the skin to rewarm from cold. */
        assert_int_equal(start(&s, THERAPY_HEAT, T0 + 1).action, RULES_START);

        /* A clinic's two hours. */
        s.rx.cold_rest_s = 7200;
        assert_deny(start(&s, THERAPY_COLD, T0 + 3600), DENY_REST_INTERVAL, 60);
        assert_int_equal(start(&s, THERAPY_COLD, T0 + 7200).action, RULES_START);

        /* No cold session yet: nothing to rest from. */
        s.has_last_cold = false;
        assert_int_equal(start(&s, THERAPY_COLD, T0 + 1).action, RULES_START);
}

static void test_session_active(void **state) {
        RulesState s = active_state(THERAPY_COLD, T0, 900);
        RulesDecision d;

        d = start(&s, THERAPY_COLD, T0 + 10);
        assert_deny(d, DENY_SESSION_ACTIVE, 0);
        d = start(&s, THERAPY_HEAT, T0 + 10);
        assert_deny(d, DENY_SESSION_ACTIVE, 0);
        d = start(&s, THERAPY_NONE, T0 + 10);
        assert_deny(d, DENY_SESSION_ACTIVE, 0);

        /* Even when heat would also be too soon, a running session is the reason given. */
        s.has_injury = true;
        s.injury_at = s.injury_from = T0;
        assert_deny(start(&s, THERAPY_HEAT, T0 + 10), DENY_SESSION_ACTIVE, 0);
}

/* ---- R5: skin and faults ---- */

static void test_skin_cold(void **state) {
        RulesState s = active_state(THERAPY_COLD, T0, 900);
        RulesDecision d;

        d = skin(&s, 800, T0 + 30);
        assert_int_equal(d.action, RULES_NONE);
        assert_int_equal(d.deadline, T0 + 900);
        d = skin(&s, 799, T0 + 30);
        assert_int_equal(d.action, RULES_STOP);
        assert_int_equal(d.stop, STOP_SAFETY);
        assert_why_names(d, "R5");
        assert_int_equal(skin(&s, -500, T0 + 30).stop, STOP_SAFETY);
        /* The heat limit is not the cold one. */
        assert_int_equal(skin(&s, 4301, T0 + 30).action, RULES_NONE);
        assert_int_equal(skin(&s, 3500, T0 + 30).action, RULES_NONE);
}

static void test_skin_heat(void **state) {
        RulesState s = active_state(THERAPY_HEAT, T0, 900);
        RulesDecision d;

        d = skin(&s, 4300, T0 + 30);
        assert_int_equal(d.action, RULES_NONE);
        assert_int_equal(d.deadline, T0 + 900);
        d = skin(&s, 4301, T0 + 30);
        assert_int_equal(d.action, RULES_STOP);
        assert_int_equal(d.stop, STOP_SAFETY);
        assert_why_names(d, "R5");
        /* The cold limit is not the heat one. */
        assert_int_equal(skin(&s, 799, T0 + 30).action, RULES_NONE);
        assert_int_equal(skin(&s, 3000, T0 + 30).action, RULES_NONE);

        /* Idle: readings stop nothing. */
        s = idle_state();
        assert_int_equal(skin(&s, 5000, T0).action, RULES_NONE);
        assert_int_equal(skin(&s, 0, T0).action, RULES_NONE);
}

static void test_fault(void **state) {
        RulesState s = active_state(THERAPY_COLD, T0, 900);
        RulesDecision d;

        d = fault(&s, 0, false, T0 + 5);
        assert_int_equal(d.action, RULES_NONE);
        assert_int_equal(d.deadline, T0 + 900);

        for (unsigned bit = 0; bit < 8; bit++) {
                d = fault(&s, (uint8_t) (1u << bit), false, T0 + 5);
                assert_int_equal(d.action, RULES_STOP);
                assert_int_equal(d.stop, STOP_SAFETY);
                assert_why_names(d, "R5");
        }
        d = fault(&s, 0, true, T0 + 5);
        assert_int_equal(d.action, RULES_STOP);
        assert_int_equal(d.stop, STOP_SAFETY);

        s = active_state(THERAPY_HEAT, T0, 900);
        assert_int_equal(fault(&s, 0x21, true, T0 + 5).stop, STOP_SAFETY);

        s = idle_state();
        assert_int_equal(fault(&s, 0x3f, true, T0).action, RULES_NONE);
}

/* ---- R7, days since injury ---- */

static void test_compliant(void **state) {
        assert_false(rules_compliant(THERAPY_COLD, 0));
        assert_false(rules_compliant(THERAPY_COLD, 599)); /* stopped at 9:59 */
        assert_true(rules_compliant(THERAPY_COLD, 600));  /* 10:00 */
        assert_true(rules_compliant(THERAPY_COLD, 900));
        assert_false(rules_compliant(THERAPY_HEAT, 900));
        assert_false(rules_compliant(THERAPY_HEAT, 1200));
        assert_false(rules_compliant(THERAPY_NONE, 900));
}

static void test_days_since_injury(void **state) {
        RulesState s = idle_state();
        int32_t t = -1;

        assert_false(rules_days_since_injury(&s, T0, &t));
        assert_int_equal(t, -1);

        s.has_injury = true;
        s.injury_from = T0;
        s.injury_at = T0 + 12 * HOUR_S; /* the count is from injury_from */
        assert_true(rules_days_since_injury(&s, T0, &t));
        assert_int_equal(t, 0);
        assert_true(rules_days_since_injury(&s, T0 + 8639, &t));
        assert_int_equal(t, 0);
        assert_true(rules_days_since_injury(&s, T0 + 8640, &t));
        assert_int_equal(t, 1);
        assert_true(rules_days_since_injury(&s, T0 + DAY_S - 1, &t));
        assert_int_equal(t, 9);
        assert_true(rules_days_since_injury(&s, T0 + 3 * DAY_S + 12 * HOUR_S, &t));
        assert_int_equal(t, 35);
        assert_true(rules_days_since_injury(&s, T0 + 28 * DAY_S, &t));
        assert_int_equal(t, 280);
        /* Before the injury (clock set back): never negative. */
        assert_true(rules_days_since_injury(&s, T0 - DAY_S, &t));
        assert_int_equal(t, 0);
}

/* ---- R9 ---- */

static void test_diary_red_flag(void **state) {
        DiaryEntry e = { .at = T0, .score = 3, .where = WHERE_FRONT };

        e.flags = DIARY_SWELLING | DIARY_POP;
        assert_int_equal(rules_diary_alert(&e), ALERT_RED_FLAG);
        e.flags = DIARY_SWELLING | DIARY_POP | DIARY_GIVING_WAY | DIARY_CATCHING;
        e.score = 0;
        assert_int_equal(rules_diary_alert(&e), ALERT_RED_FLAG);
        e.flags = DIARY_SWELLING;
        assert_int_equal(rules_diary_alert(&e), ALERT_NONE);
        e.flags = DIARY_POP;
        assert_int_equal(rules_diary_alert(&e), ALERT_NONE);
        e.flags = DIARY_GIVING_WAY | DIARY_CATCHING | DIARY_SWELLING;
        e.score = 10;
        assert_int_equal(rules_diary_alert(&e), ALERT_NONE);
        e.flags = 0;
        assert_int_equal(rules_diary_alert(&e), ALERT_NONE);
        assert_int_equal(rules_diary_alert(NULL), ALERT_NONE);
}

/* ---- R8 ---- */

/* An injury at T0 with entries at T0 + (day, hour) and the given scores. */
static RulesState injured_at_t0(void) {
        RulesState s = idle_state();

        s.has_injury = true;
        s.injury_at = s.injury_from = T0;
        return s;
}

static DiaryEntry entry(int64_t at, uint8_t score) {
        return (DiaryEntry) { .at = at, .score = score, .where = WHERE_INNER };
}

static void test_r8_no_diary(void **state) {
        RulesState s = injured_at_t0();

        /* No entry at all: no improvement shown. */
        assert_int_equal(rules_persisting_pain(&s, NULL, 0, 0, T0 + 28 * DAY_S - 1), ALERT_NONE);
        assert_int_equal(rules_persisting_pain(&s, NULL, 0, 0, T0 + 27 * DAY_S), ALERT_NONE);
        assert_int_equal(rules_persisting_pain(&s, NULL, 0, 0, T0 + 28 * DAY_S), ALERT_SEE_PHYSIO);
        assert_int_equal(rules_persisting_pain(&s, NULL, 0, 0, T0 + 41 * DAY_S), ALERT_SEE_PHYSIO);
        assert_int_equal(rules_persisting_pain(&s, NULL, 0, 0, T0 + 42 * DAY_S - 1), ALERT_SEE_PHYSIO);
        assert_int_equal(rules_persisting_pain(&s, NULL, 0, 0, T0 + 42 * DAY_S), ALERT_SEE_PHYSIO_OVERDUE);
        assert_int_equal(rules_persisting_pain(&s, NULL, 0, 0, T0 + 100 * DAY_S), ALERT_SEE_PHYSIO_OVERDUE);

        /* No injury: no R8. */
        s.has_injury = false;
        assert_int_equal(rules_persisting_pain(&s, NULL, 0, 0, T0 + 50 * DAY_S), ALERT_NONE);
}

static void test_r8_already_raised(void **state) {
        RulesState s = injured_at_t0();

        assert_int_equal(rules_persisting_pain(&s, NULL, 0, ALERT_SEE_PHYSIO, T0 + 28 * DAY_S), ALERT_NONE);
        assert_int_equal(rules_persisting_pain(&s, NULL, 0, ALERT_SEE_PHYSIO, T0 + 41 * DAY_S), ALERT_NONE);
        assert_int_equal(rules_persisting_pain(&s, NULL, 0, ALERT_SEE_PHYSIO, T0 + 42 * DAY_S),
                         ALERT_SEE_PHYSIO_OVERDUE);
        assert_int_equal(rules_persisting_pain(&s, NULL, 0, ALERT_SEE_PHYSIO | ALERT_SEE_PHYSIO_OVERDUE,
                                               T0 + 42 * DAY_S), ALERT_NONE);
        /* Overdue said already: "see a physio" would be a step back. */
        assert_int_equal(rules_persisting_pain(&s, NULL, 0, ALERT_SEE_PHYSIO_OVERDUE, T0 + 42 * DAY_S),
                         ALERT_NONE);
        assert_int_equal(rules_persisting_pain(&s, NULL, 0, ALERT_SEE_PHYSIO_OVERDUE, T0 + 60 * DAY_S),
                         ALERT_NONE);
        /* Other alerts in the mask change nothing. */
        assert_int_equal(rules_persisting_pain(&s, NULL, 0, ALERT_RED_FLAG | ALERT_SAFETY_STOP, T0 + 28 * DAY_S),
                         ALERT_SEE_PHYSIO);
        /* Both due, neither raised: the overdue one. */
        assert_int_equal(rules_persisting_pain(&s, NULL, 0, 0, T0 + 42 * DAY_S), ALERT_SEE_PHYSIO_OVERDUE);
}

/* First week 7, 6, 8 (mean 7); the last week's entries are given per test. */
static size_t diary_with_last_week(DiaryEntry *out, int64_t now, const uint8_t *last, size_t n_last) {
        size_t n = 0;

        out[n++] = entry(T0 + 1 * HOUR_S, 7);
        out[n++] = entry(T0 + 2 * DAY_S, 6);
        out[n++] = entry(T0 + 6 * DAY_S, 8);
        out[n++] = entry(T0 + 14 * DAY_S, 9); /* in neither window at 28 days or later */
        for (size_t i = 0; i < n_last; i++)
                out[n++] = entry(now - (int64_t) i * DAY_S, last[i]);
        return n;
}

static void test_r8_improvement(void **state) {
        static const int days[] = { 27, 28, 41, 42 };
        RulesState s = injured_at_t0();
        DiaryEntry e[16];

        for (size_t i = 0; i < ELEMENTSOF(days); i++) {
                int64_t now = T0 + days[i] * DAY_S;
                bool due = days[i] >= 28;
                AlertKind alert = days[i] >= 42 ? ALERT_SEE_PHYSIO_OVERDUE : ALERT_SEE_PHYSIO;
                size_t n;

                /* Last week 5, 5, 5: exactly 2 below 7, an improvement. */
                n = diary_with_last_week(e, now, (const uint8_t[]) { 5, 5, 5 }, 3);
                assert_int_equal(rules_persisting_pain(&s, e, n, 0, now), ALERT_NONE);

                /* 5, 5, 6 (mean 5.33): not 2 points better. */
                n = diary_with_last_week(e, now, (const uint8_t[]) { 5, 5, 6 }, 3);
                assert_int_equal(rules_persisting_pain(&s, e, n, 0, now), due ? alert : ALERT_NONE);

                /* Worse, 8: no improvement. */
                n = diary_with_last_week(e, now, (const uint8_t[]) { 8 }, 1);
                assert_int_equal(rules_persisting_pain(&s, e, n, 0, now), due ? alert : ALERT_NONE);

                /* Much better, 1: an improvement. */
                n = diary_with_last_week(e, now, (const uint8_t[]) { 1 }, 1);
                assert_int_equal(rules_persisting_pain(&s, e, n, 0, now), ALERT_NONE);

                /* Nothing in the last week: no improvement shown. */
                n = diary_with_last_week(e, now, NULL, 0);
                assert_int_equal(rules_persisting_pain(&s, e, n, 0, now), due ? alert : ALERT_NONE);

                /* The masks still apply without improvement. */
                n = diary_with_last_week(e, now, (const uint8_t[]) { 8 }, 1);
                assert_int_equal(rules_persisting_pain(&s, e, n, ALERT_SEE_PHYSIO, now),
                                 days[i] >= 42 ? ALERT_SEE_PHYSIO_OVERDUE : ALERT_NONE);
        }
}

static void test_r8_exact_means(void **state) {
        RulesState s = injured_at_t0();
        int64_t now = T0 + 30 * DAY_S;
        DiaryEntry e[16];
        size_t n;

        /* First 7, 6, 6 (19/3 = 6.333…). Last 4,4,5,5,4,4,5 (31/7 = 4.428…): 1.90 better, no. */
        n = 0;
        e[n++] = entry(T0, 7);
        e[n++] = entry(T0 + DAY_S, 6);
        e[n++] = entry(T0 + 2 * DAY_S, 6);
        for (int i = 0; i < 7; i++)
                e[n++] = entry(now - i * DAY_S, (uint8_t) ((i == 2 || i == 3 || i == 6) ? 5 : 4));
        assert_int_equal(rules_persisting_pain(&s, e, n, 0, now), ALERT_SEE_PHYSIO);

        /* Last 4,4,4,5,4,4,5 (30/7 = 4.285…): 2.047 better, yes. */
        e[3 + 2].score = 4;
        assert_int_equal(rules_persisting_pain(&s, e, n, 0, now), ALERT_NONE);

        /* First 6, 5 (5.5), last 3, 4 (3.5): exactly 2, yes. */
        n = 0;
        e[n++] = entry(T0 + HOUR_S, 6);
        e[n++] = entry(T0 + 3 * DAY_S, 5);
        e[n++] = entry(now, 3);
        e[n++] = entry(now - HOUR_S, 4);
        assert_int_equal(rules_persisting_pain(&s, e, n, 0, now), ALERT_NONE);
        /* Last 4, 3, 4 (11/3 = 3.667): 1.83 better, no. */
        e[n++] = entry(now - 2 * HOUR_S, 4);
        assert_int_equal(rules_persisting_pain(&s, e, n, 0, now), ALERT_SEE_PHYSIO);

        /* From 0 pain nothing can improve by 2. */
        n = 0;
        e[n++] = entry(T0, 0);
        e[n++] = entry(now, 0);
        assert_int_equal(rules_persisting_pain(&s, e, n, 0, now), ALERT_SEE_PHYSIO);
        /* 10 to 8: exactly 2. Order does not matter. */
        n = 0;
        e[n++] = entry(now, 8);
        e[n++] = entry(T0, 10);
        assert_int_equal(rules_persisting_pain(&s, e, n, 0, now), ALERT_NONE);
}

static void test_r8_windows(void **state) {
        RulesState s = injured_at_t0();
        int64_t now = T0 + 28 * DAY_S;
        DiaryEntry e[8];
        size_t n;

        /* No entry in the first week: improvement cannot be shown (cautious). */
        n = 0;
        e[n++] = entry(T0 + 7 * DAY_S, 9);   /* just after the first week: not in it */
        e[n++] = entry(now, 0);
        assert_int_equal(rules_persisting_pain(&s, e, n, 0, now), ALERT_SEE_PHYSIO);

        /* The first week is [injury_from, +7 d): its first second counts... */
        n = 0;
        e[n++] = entry(T0, 9);
        e[n++] = entry(now, 0);
        assert_int_equal(rules_persisting_pain(&s, e, n, 0, now), ALERT_NONE);
        /* ...and its last second. */
        e[0].at = T0 + 7 * DAY_S - 1;
        assert_int_equal(rules_persisting_pain(&s, e, n, 0, now), ALERT_NONE);
        /* Before the injury: not part of it. */
        e[0].at = T0 - 1;
        assert_int_equal(rules_persisting_pain(&s, e, n, 0, now), ALERT_SEE_PHYSIO);

        /* The last week is (now - 7 d, now]: exactly 7 days ago is out, a second later in. */
        n = 0;
        e[n++] = entry(T0, 9);
        e[n++] = entry(now - 7 * DAY_S, 0);
        assert_int_equal(rules_persisting_pain(&s, e, n, 0, now), ALERT_SEE_PHYSIO);
        e[1].at = now - 7 * DAY_S + 1;
        assert_int_equal(rules_persisting_pain(&s, e, n, 0, now), ALERT_NONE);
        /* A future entry (a clock set back) is not in it. */
        e[1].at = now + 1;
        assert_int_equal(rules_persisting_pain(&s, e, n, 0, now), ALERT_SEE_PHYSIO);

        /* An entry with an impossible score counts for nothing. */
        n = 0;
        e[n++] = entry(T0, 9);
        e[n++] = entry(now, 0);
        e[n++] = entry(now, 200);
        assert_int_equal(rules_persisting_pain(&s, e, n, 0, now), ALERT_NONE);
}

static void test_r8_date_only_injury(void **state) {
        RulesState s = idle_state();
        int64_t end, start_of_day;

        /* Date-only injury on 2026-10-25, Berlin (a 25-hour day): R8 counts from its start. */
        set_tz("Europe/Berlin");
        assert_int_equal(clock_local_day_end(2026, 10, 25, &end), 0);
        assert_int_equal(clock_local_day_end(2026, 10, 24, &start_of_day), 0);
        set_tz("UTC");
        s.has_injury = true;
        s.injury_at = end;
        s.injury_from = start_of_day;

        assert_int_equal(rules_persisting_pain(&s, NULL, 0, 0, start_of_day + 28 * DAY_S - 1), ALERT_NONE);
        /* 28 × 24 h after the start of the day, though only 27 days minus 1 h after its end. */
        assert_int_equal(rules_persisting_pain(&s, NULL, 0, 0, start_of_day + 28 * DAY_S), ALERT_SEE_PHYSIO);
        assert_int_equal(rules_persisting_pain(&s, NULL, 0, 0, start_of_day + 42 * DAY_S),
                         ALERT_SEE_PHYSIO_OVERDUE);
}

static void test_r8_large_diary(void **state) {
        /* Thousands of entries: the means are compared exactly, not in floating point. */
        enum { N_FIRST = 3001, N_LAST = 2999 };
        RulesState s = injured_at_t0();
        int64_t now = T0 + 35 * DAY_S;
        DiaryEntry *e = calloc(N_FIRST + N_LAST, sizeof(DiaryEntry));
        size_t n = 0, last0;

        assert_non_null(e);
        /* First week mean 7 + 1/3001. */
        for (int i = 0; i < N_FIRST; i++)
                e[n++] = entry(T0 + i * 200, i == 0 ? 8 : 7);
        /* Last week mean 5: 2 + 1/3001 better, an improvement. */
        last0 = n;
        for (int i = 0; i < N_LAST; i++)
                e[n++] = entry(now - i * 200, 5);
        assert_int_equal(rules_persisting_pain(&s, e, n, 0, now), ALERT_NONE);
        /* Last week mean 5 + 1/2999: 2 + 1/3001 - 1/2999 better, just short of 2. */
        e[last0].score = 6;
        assert_int_equal(rules_persisting_pain(&s, e, n, 0, now), ALERT_SEE_PHYSIO);
        free(e);
}

static void test_extreme_times(void **state) {
        RulesState s = idle_state();
        RulesDecision d;
        int32_t t;

        /* Nonsense times from a corrupt record must neither overflow nor allow anything. */
        s.has_injury = true;
        s.injury_at = INT64_MAX - 10;
        s.injury_from = INT64_MAX - 10;
        d = start(&s, THERAPY_HEAT, INT64_MIN);
        assert_deny(d, DENY_HEAT_TOO_SOON, UINT16_MAX);
        assert_false(rules_heat_allowed(&s, INT64_MAX - 11, NULL));
        assert_true(rules_days_since_injury(&s, INT64_MIN, &t));
        assert_int_equal(t, 0);
        assert_int_equal(rules_persisting_pain(&s, NULL, 0, 0, INT64_MIN), ALERT_NONE);

        s.injury_from = INT64_MIN;
        assert_true(rules_days_since_injury(&s, INT64_MAX, &t));
        assert_int_equal(t, INT32_MAX);
        assert_int_equal(rules_persisting_pain(&s, NULL, 0, 0, INT64_MAX), ALERT_SEE_PHYSIO_OVERDUE);

        s = idle_state();
        s.has_last_cold = true;
        s.last_cold_end = INT64_MAX - 5;
        assert_deny(start(&s, THERAPY_COLD, 0), DENY_REST_INTERVAL, UINT16_MAX);

        /* A start near the end of time: the deadline saturates and the tick still works. */
        s = active_state(THERAPY_COLD, INT64_MAX - 100, 900);
        d = tick(&s, INT64_MAX - 50);
        assert_int_equal(d.action, RULES_NONE);
        assert_int_equal(d.deadline, INT64_MAX);
        s = idle_state();
        d = start(&s, THERAPY_COLD, INT64_MAX - 100);
        assert_int_equal(d.action, RULES_START);
        assert_int_equal(d.deadline, INT64_MAX);
}

static void test_why_names_rule(void **state) {
        RulesState s = idle_state();

        s.has_injury = true;
        s.injury_at = s.injury_from = T0;
        assert_string_equal(start(&s, THERAPY_HEAT, T0).why, "R2: heat refused until 7 days after the injury");
        assert_why_names(start(&s, THERAPY_HEAT, T0 + WEEK_S), "R2");
        s.has_injury = false;
        assert_why_names(start(&s, THERAPY_HEAT, T0), "R3");
        s.has_last_cold = true;
        s.last_cold_end = T0;
        assert_why_names(start(&s, THERAPY_COLD, T0), "R6");
        assert_why_names(start(&s, THERAPY_COLD, T0 + HOUR_S), "R1");
        s = active_state(THERAPY_HEAT, T0, 900);
        assert_why_names(tick(&s, T0 + 900), "R4");
        assert_why_names(skin(&s, 4301, T0), "R5");
        assert_why_names(fault(&s, 1, false, T0), "R5");
        s = active_state(THERAPY_COLD, T0, 900);
        assert_why_names(tick(&s, T0 + 900), "R1");
        assert_why_names(skin(&s, 799, T0), "R5");
}

/* ---- names ---- */

static void test_names(void **state) {
        static const char *const outcomes[] = {
                "open", "completed", "stopped_by_user", "stopped_for_safety", "interrupted", "refused",
                "not_started",
        };
        static const char *const refusals[] = {
                NULL, "heat_too_soon", "rest_interval", "session_active", "store_unavailable", "other",
                "clock_unsynced",
        };
        static const char *const wheres[] = { "front", "inner", "outer", "back", "below" };

        assert_int_equal(ELEMENTSOF(outcomes), _OUTCOME_MAX);
        for (int i = 0; i < _OUTCOME_MAX; i++) {
                assert_string_equal(session_outcome_to_string((SessionOutcome) i), outcomes[i]);
                assert_int_equal(session_outcome_from_string(outcomes[i]), i);
        }
        assert_null(session_outcome_to_string(_OUTCOME_MAX));
        assert_int_equal(session_outcome_from_string("done"), -EINVAL);
        assert_int_equal(session_outcome_from_string(NULL), -EINVAL);

        assert_int_equal(ELEMENTSOF(refusals), _REFUSAL_MAX);
        assert_null(refusal_reason_to_string(REFUSAL_NONE));
        for (int i = 1; i < _REFUSAL_MAX; i++) {
                assert_string_equal(refusal_reason_to_string((RefusalReason) i), refusals[i]);
                assert_int_equal(refusal_reason_from_string(refusals[i]), i);
        }
        assert_null(refusal_reason_to_string(_REFUSAL_MAX));
        assert_int_equal(refusal_reason_from_string("none"), -EINVAL);
        assert_int_equal(refusal_reason_from_string(""), -EINVAL);

        assert_int_equal(refusal_from_deny(DENY_HEAT_TOO_SOON), REFUSAL_HEAT_TOO_SOON);
        assert_int_equal(refusal_from_deny(DENY_REST_INTERVAL), REFUSAL_REST_INTERVAL);
        assert_int_equal(refusal_from_deny(DENY_SESSION_ACTIVE), REFUSAL_SESSION_ACTIVE);
        assert_int_equal(refusal_from_deny(DENY_OTHER), REFUSAL_OTHER);
        assert_int_equal(refusal_from_deny((DenyReason) 0), REFUSAL_OTHER);
        assert_string_equal(deny_reason_to_string(DENY_HEAT_TOO_SOON), "heat_too_soon");
        assert_string_equal(deny_reason_to_string(DENY_REST_INTERVAL), "rest_interval");
        assert_string_equal(deny_reason_to_string(DENY_SESSION_ACTIVE), "session_active");
        assert_string_equal(deny_reason_to_string(DENY_OTHER), "other");
        assert_null(deny_reason_to_string((DenyReason) 0));
        assert_null(deny_reason_to_string((DenyReason) 6));

        assert_string_equal(therapy_mode_to_string(THERAPY_NONE), "none");
        assert_string_equal(therapy_mode_to_string(THERAPY_COLD), "cold");
        assert_string_equal(therapy_mode_to_string(THERAPY_HEAT), "heat");
        assert_null(therapy_mode_to_string((TherapyMode) 3));
        assert_int_equal(therapy_mode_from_string("cold"), THERAPY_COLD);
        assert_int_equal(therapy_mode_from_string("heat"), THERAPY_HEAT);
        assert_int_equal(therapy_mode_from_string("none"), THERAPY_NONE);
        assert_int_equal(therapy_mode_from_string("Cold"), -EINVAL);
        assert_int_equal(therapy_mode_from_string(NULL), -EINVAL);

        assert_string_equal(request_source_to_string(SOURCE_BUTTON), "button");
        assert_string_equal(request_source_to_string(SOURCE_MQTT), "mqtt");
        assert_string_equal(request_source_to_string(SOURCE_CLI), "cli");
        assert_string_equal(request_source_to_string(SOURCE_DBUS), "dbus");
        assert_null(request_source_to_string((RequestSource) 4));

        for (int i = 0; i < _WHERE_MAX; i++) {
                assert_string_equal(diary_where_to_string((DiaryWhere) i), wheres[i]);
                assert_int_equal(diary_where_from_string(wheres[i]), i);
        }
        assert_null(diary_where_to_string(_WHERE_MAX));
        assert_int_equal(diary_where_from_string("knee"), -EINVAL);

        assert_string_equal(alert_kind_to_string(ALERT_SEE_PHYSIO), "see_physio");
        assert_string_equal(alert_kind_to_string(ALERT_SEE_PHYSIO_OVERDUE), "see_physio_overdue");
        assert_string_equal(alert_kind_to_string(ALERT_RED_FLAG), "red_flag");
        assert_string_equal(alert_kind_to_string(ALERT_SAFETY_STOP), "safety_stop");
        assert_null(alert_kind_to_string(ALERT_NONE));
        assert_null(alert_kind_to_string(ALERT_SEE_PHYSIO | ALERT_RED_FLAG));
}

/* ---- R4: at most 20 minutes of heat in any 60 minutes ---- */

static RulesState with_heat(RulesState s, int64_t start, uint32_t len) {
        s.heat[s.n_heat++] = (RulesHeat) { .start = start, .s = len };
        return s;
}

static void test_r4_heat_cap(void **state) {
        RulesState s = idle_state();
        RulesDecision d;

        /* Nothing in the last hour: 15 minutes of heat. */
        d = start(&s, THERAPY_HEAT, T0);
        assert_int_equal(d.action, RULES_START);

        /* 15 minutes ended just now: another 15 would make 30 in the hour. */
        s = with_heat(idle_state(), T0 - 900, 900);
        d = start(&s, THERAPY_HEAT, T0);
        assert_int_equal(d.action, RULES_DENY);
        assert_int_equal(d.deny, DENY_REST_INTERVAL);
        assert_int_equal(deny_reason_wire(d.deny), 2);
        assert_non_null(strstr(d.why, "R4"));
        /* It may start once the hour that ends with it holds only 5 of the earlier 15 minutes:
         * the new session [t, t+900] with t + 900 − 3600 = T0 − 300, so t = T0 + 2400 (40 min). */
        assert_int_equal(d.minutes_left, 40);
        assert_int_equal(d.allowed_at, T0 + 2400);
        d = start(&s, THERAPY_HEAT, T0 + 2400 - 1);
        assert_int_equal(d.action, RULES_DENY);
        assert_int_equal(d.minutes_left, 1);
        d = start(&s, THERAPY_HEAT, T0 + 2400);
        assert_int_equal(d.action, RULES_START);

        /* 5 minutes of heat leave room for exactly 15 more, back to back. */
        s = with_heat(idle_state(), T0 - 300, 300);
        assert_int_equal(start(&s, THERAPY_HEAT, T0).action, RULES_START);
        /* ... but not for 20 (a clinic's longest). */
        s.rx.heat_s = 1200;
        d = start(&s, THERAPY_HEAT, T0);
        assert_int_equal(d.action, RULES_DENY);
        /* The 5 minutes must leave the hour that ends with the 20: T0 − 300 + 300 + 3600 − 1200. */
        assert_int_equal(d.minutes_left, 40);

        /* Four 5-minute sessions spread over the hour: 20 minutes, nothing more fits. */
        s = idle_state();
        s.rx.heat_s = 60;
        for (int i = 0; i < 4; i++)
                s = with_heat(s, T0 - 3600 + 60 + i * 900, 300);
        d = start(&s, THERAPY_HEAT, T0);
        assert_int_equal(d.action, RULES_DENY);
        /* The first one (T0 − 3540 .. T0 − 3240) must be out of the hour ending at t + 60. */
        assert_int_equal(d.minutes_left, 1);
        assert_int_equal(start(&s, THERAPY_HEAT, T0 + 360 - 60 - 240).action, RULES_START);

        /* Heat an hour ago and more does not count; cold never does. */
        s = with_heat(idle_state(), T0 - 3600 - 1200, 1200);
        assert_int_equal(start(&s, THERAPY_HEAT, T0).action, RULES_START);
        s = with_heat(idle_state(), T0 - 900, 900);
        assert_int_equal(start(&s, THERAPY_COLD, T0).action, RULES_START);

        /* An interrupted session still possibly running counts in full. */
        s = with_heat(idle_state(), T0 - 60, 1200);
        d = start(&s, THERAPY_HEAT, T0);
        assert_int_equal(d.action, RULES_DENY);

        /* R2 is asked first: both wait, R2 is the reason. */
        s = with_heat(idle_state(), T0 - 900, 900);
        s.has_injury = true;
        s.injury_at = s.injury_from = T0 - DAY_S;
        assert_int_equal(start(&s, THERAPY_HEAT, T0).deny, DENY_HEAT_TOO_SOON);
}

static void test_r4_heat_cap_edges(void **state) {
        RulesState s = idle_state();
        int64_t from;
        bool bound;

        /* Saturating: absurd times never allow by overflow. */
        s = with_heat(idle_state(), INT64_MAX - 2000, 1200);
        assert_false(rules_heat_cap_allows(&s, INT64_MAX - 1000, 900, &from, &bound));
        assert_false(bound);
        assert_true(from > INT64_MAX - 1000);
        s = with_heat(idle_state(), INT64_MIN, 1200);
        assert_true(rules_heat_cap_allows(&s, T0, 900, &from, &bound));
        assert_int_equal(from, T0);
        /* A full history: only what falls in the hour counts. */
        s = idle_state();
        for (int i = 0; i < RULES_HEAT_HISTORY; i++)
                s = with_heat(s, T0 - 7200 + i * 60, 60);
        /* 24 minutes of heat from T0−2h to T0−1h36: none in the last hour. */
        assert_true(rules_heat_cap_allows(&s, T0, 1200, &from, NULL));
        /* A full list whose oldest still falls in the window: older ones may too, R4 refuses. */
        s = idle_state();
        for (int i = 0; i < RULES_HEAT_HISTORY; i++)
                s = with_heat(s, T0 - 2650 + i * 10, 4);
        assert_true(rules_heat_cap_allows(&s, T0, 900, &from, NULL));      /* 256 s + 900: fits */
        s.heat_more = true;
        assert_false(rules_heat_cap_allows(&s, T0, 900, &from, NULL));
        assert_int_equal(start(&s, THERAPY_HEAT, T0).deny, DENY_REST_INTERVAL);
        /* ... but not when even the oldest listed is out of it. */
        for (int i = 0; i < RULES_HEAT_HISTORY; i++)
                s.heat[i].start -= 3600;
        assert_true(rules_heat_cap_allows(&s, T0, 900, &from, NULL));
        /* A bound start makes a refusal clock_unsynced. */
        s = with_heat(idle_state(), T0 - 600, 600);
        s.heat[0].bound = true;
        RulesDecision d = start(&s, THERAPY_HEAT, T0);
        assert_int_equal(d.action, RULES_DENY);
        assert_int_equal(d.deny, DENY_CLOCK_UNSYNCED);
        assert_int_equal(d.minutes_left, 0);
        assert_int_equal(d.allowed_at, 0);      /* unknown: it ends when the clock is trusted */
}

/* ---- R10: time the gateway can trust ---- */

static const char BOOT_A[] = "11111111-2222-3333-4444-555555555555";
static const char BOOT_B[] = "66666666-7777-8888-9999-000000000000";

static RulesClock clk(int64_t wall, bool ok, const char *boot, int64_t boot_s) {
        RulesClock c = { .wall = wall, .wall_ok = ok, .boot_s = boot_s };

        snprintf(c.boot_id, sizeof c.boot_id, "%s", boot);
        return c;
}

static RulesTime stamp(int64_t wall, bool ok, const char *boot, int64_t boot_s) {
        RulesTime t = { .wall = wall, .wall_ok = ok, .boot_s = boot_s };

        snprintf(t.boot_id, sizeof t.boot_id, "%s", boot);
        return t;
}

static void test_r10_elapsed(void **state) {
        RulesClock now;
        RulesTime t;
        bool exact;

        /* Same boot: the boot clock, whatever the wall clock says or did. */
        t = stamp(T0, false, BOOT_A, 1000);
        now = clk(T0 - 3 * DAY_S, false, BOOT_A, 1000 + 3599);
        assert_int_equal(rules_elapsed(&t, &now, &exact), 3599);
        assert_true(exact);
        now = clk(T0 + 30 * DAY_S, true, BOOT_A, 1000 + 3599);    /* stepped forward by NTP */
        assert_int_equal(rules_elapsed(&t, &now, &exact), 3599);
        assert_true(exact);

        /* An earlier boot, both clocks trusted: the wall clock, never less than this uptime. */
        t = stamp(T0, true, BOOT_B, 99999);
        now = clk(T0 + 7200, true, BOOT_A, 60);
        assert_int_equal(rules_elapsed(&t, &now, &exact), 7200);
        assert_true(exact);
        now = clk(T0 + 30, true, BOOT_A, 60);
        assert_int_equal(rules_elapsed(&t, &now, &exact), 60);

        /* An earlier boot, either clock untrusted: only this boot's uptime is known. */
        now = clk(T0 + 7200, false, BOOT_A, 600);
        assert_int_equal(rules_elapsed(&t, &now, &exact), 600);
        assert_false(exact);
        t.wall_ok = false;
        now = clk(T0 + 7200, true, BOOT_A, 600);
        assert_int_equal(rules_elapsed(&t, &now, &exact), 600);
        assert_false(exact);
        /* A boot at 1970 says nothing either. */
        now = clk(0, false, BOOT_A, 5);
        assert_int_equal(rules_elapsed(&t, &now, &exact), 5);
        assert_false(exact);

        /* No boot id recorded (older records): never the same boot. */
        t = stamp(T0, true, "", 1000);
        now = clk(T0 + 100, true, BOOT_A, 1050);
        assert_int_equal(rules_elapsed(&t, &now, &exact), 1050);

        /* A stated time (an injury's date) needs a trusted clock; without one it proves nothing. */
        t = (RulesTime) { .wall = T0 - 10 * DAY_S, .wall_ok = true, .stated = true };
        now = clk(T0, true, BOOT_A, 60);
        assert_int_equal(rules_elapsed(&t, &now, &exact), 10 * DAY_S);
        assert_true(exact);
        now = clk(T0, false, BOOT_A, 60);
        assert_int_equal(rules_elapsed(&t, &now, &exact), 0);
        assert_false(exact);
        /* ... even with a boot stamp in this boot. */
        snprintf(t.boot_id, sizeof t.boot_id, "%s", BOOT_A);
        t.boot_s = 1;
        assert_int_equal(rules_elapsed(&t, &now, &exact), 0);

        /* Placed on now's axis. */
        t = stamp(T0, false, BOOT_A, 1000);
        now = clk(50, false, BOOT_A, 1100);
        assert_int_equal(rules_time_place(&t, &now, &exact), -50);
        assert_false(exact);   /* ret_bound: exact, so not a bound */
}

/* The defects: a stale clock must shorten neither R2 nor R6. */
static void test_r10_waits(void **state) {
        RulesClock now;
        RulesState s;
        RulesDecision d;
        bool bound;

        /* R6: cold recorded at a stale time (3 days behind, this boot), then NTP steps the clock
         * forward 3 days: the rest is measured on the boot clock, 10 minutes have passed. */
        s = idle_state();
        RulesTime end = stamp(T0 - 3 * DAY_S, false, BOOT_A, 2000);
        now = clk(T0 + 600, true, BOOT_A, 2600);
        s.has_last_cold = true;
        s.last_cold_end = rules_time_place(&end, &now, &bound);
        s.last_cold_bound = bound;
        d = start(&s, THERAPY_COLD, now.wall);
        assert_int_equal(d.action, RULES_DENY);
        assert_int_equal(d.deny, DENY_REST_INTERVAL);
        assert_int_equal(d.minutes_left, 50);
        now.boot_s = 2000 + 3600;
        s.last_cold_end = rules_time_place(&end, &now, &bound);
        assert_int_equal(start(&s, THERAPY_COLD, now.wall).action, RULES_START);

        /* R6 across a reboot with no trusted clock: refused as clock_unsynced (DENY 4) until this
         * boot's uptime alone proves the hour. */
        now = clk(T0 + 4 * DAY_S, false, BOOT_B, 120);
        s.last_cold_end = rules_time_place(&end, &now, &bound);
        s.last_cold_bound = bound;
        d = start(&s, THERAPY_COLD, now.wall);
        assert_int_equal(d.action, RULES_DENY);
        assert_int_equal(d.deny, DENY_CLOCK_UNSYNCED);
        assert_int_equal(deny_reason_wire(d.deny), 4);
        assert_int_equal(refusal_from_deny(d.deny), REFUSAL_CLOCK_UNSYNCED);
        assert_non_null(strstr(d.why, "R10"));
        now.boot_s = 3600;
        s.last_cold_end = rules_time_place(&end, &now, &bound);
        assert_int_equal(start(&s, THERAPY_COLD, now.wall).action, RULES_START);

        /* R2: a stated injury date needs a trusted clock. */
        s = idle_state();
        RulesTime inj = { .wall = T0 - 10 * DAY_S, .wall_ok = true, .stated = true };
        now = clk(T0, false, BOOT_A, 300);
        s.has_injury = true;
        s.injury_at = s.injury_from = rules_time_place(&inj, &now, &bound);
        s.injury_bound = bound;
        d = start(&s, THERAPY_HEAT, now.wall);
        assert_int_equal(d.action, RULES_DENY);
        assert_int_equal(d.deny, DENY_CLOCK_UNSYNCED);
        now.wall_ok = true;
        s.injury_at = s.injury_from = rules_time_place(&inj, &now, &bound);
        s.injury_bound = bound;
        assert_int_equal(start(&s, THERAPY_HEAT, now.wall).action, RULES_START);

        /* R2: "injured today" pressed while the clock is 3 days behind counts from that moment
         * (this boot), so heat waits 7 × 24 h on the boot clock, to the second. */
        inj = stamp(T0 - 3 * DAY_S, false, BOOT_A, 500);
        for (int64_t dt = -1; dt <= 1; dt++) {
                now = clk(T0 + 4 * DAY_S + dt, true, BOOT_A, 500 + WEEK_S + dt);
                s.injury_at = s.injury_from = rules_time_place(&inj, &now, &bound);
                s.injury_bound = bound;
                d = start(&s, THERAPY_HEAT, now.wall);
                assert_int_equal(d.action, dt < 0 ? RULES_DENY : RULES_START);
                if (dt < 0) {
                        assert_int_equal(d.deny, DENY_HEAT_TOO_SOON);
                        assert_int_equal(d.minutes_left, 1);
                }
        }

        /* Nothing recorded: no clock is needed (R3, a first cold session). */
        s = idle_state();
        now = clk(0, false, BOOT_A, 1);
        assert_int_equal(start(&s, THERAPY_HEAT, now.wall).action, RULES_START);
        assert_int_equal(start(&s, THERAPY_COLD, now.wall).action, RULES_START);
}

/* ---- R5: the gateway sees what it supervises ---- */

static void test_r5_supervision(void **state) {
        RulesState s = active_state(THERAPY_COLD, T0, 900);
        RulesDecision d;

        s.active_setpoint = 1000;
        d = decide(&s, (RulesEvent) { .type = RULES_EVENT_REPORTED, .mode = THERAPY_COLD, .setpoint = 1000 }, T0 + 5);
        assert_int_equal(d.action, RULES_NONE);
        d = decide(&s, (RulesEvent) { .type = RULES_EVENT_REPORTED, .mode = THERAPY_HEAT, .setpoint = 1000 }, T0 + 5);
        assert_int_equal(d.action, RULES_STOP);
        assert_int_equal(d.stop, STOP_SAFETY);
        d = decide(&s, (RulesEvent) { .type = RULES_EVENT_REPORTED, .mode = THERAPY_COLD, .setpoint = 999 }, T0 + 5);
        assert_int_equal(d.stop, STOP_SAFETY);
        d = decide(&s, (RulesEvent) { .type = RULES_EVENT_REPORTED, .mode = THERAPY_NONE, .setpoint = 1000 }, T0 + 5);
        assert_int_equal(d.stop, STOP_SAFETY);

        d = decide(&s, (RulesEvent) { .type = RULES_EVENT_SILENCE, .silent_s = 14 }, T0 + 14);
        assert_int_equal(d.action, RULES_NONE);
        d = decide(&s, (RulesEvent) { .type = RULES_EVENT_SILENCE, .silent_s = 15 }, T0 + 15);
        assert_int_equal(d.action, RULES_STOP);
        assert_int_equal(d.stop, STOP_SAFETY);
        assert_non_null(strstr(d.why, "R5"));

        /* Nothing runs: nothing to stop. */
        s = idle_state();
        d = decide(&s, (RulesEvent) { .type = RULES_EVENT_SILENCE, .silent_s = 100 }, T0);
        assert_int_equal(d.action, RULES_NONE);
}

static void test_r10_names(void **state) {
        assert_string_equal(refusal_reason_to_string(REFUSAL_CLOCK_UNSYNCED), "clock_unsynced");
        assert_int_equal(refusal_reason_from_string("clock_unsynced"), REFUSAL_CLOCK_UNSYNCED);
        assert_string_equal(deny_reason_to_string(DENY_CLOCK_UNSYNCED), "clock_unsynced");
        assert_int_equal(deny_reason_wire(DENY_HEAT_TOO_SOON), 1);
        assert_int_equal(deny_reason_wire(DENY_REST_INTERVAL), 2);
        assert_int_equal(deny_reason_wire(DENY_SESSION_ACTIVE), 3);
        assert_int_equal(deny_reason_wire(DENY_OTHER), 4);
        assert_int_equal(deny_reason_wire(DENY_CLOCK_UNSYNCED), 4);
}

int main(void) {
        const struct CMUnitTest tests[] = {
                cmocka_unit_test(test_prescription_default),
                cmocka_unit_test(test_prescription_bounds),
                cmocka_unit_test(test_prescription_extremes),
                cmocka_unit_test(test_start_cold_default),
                cmocka_unit_test(test_start_cold_prescribed),
                cmocka_unit_test(test_start_bad_request),
                cmocka_unit_test(test_tick_deadline),
                cmocka_unit_test(test_tick_cold_cap),
                cmocka_unit_test(test_stop_request),
                cmocka_unit_test(test_heat_no_injury),
                cmocka_unit_test(test_heat_boundary),
                cmocka_unit_test(test_heat_minutes_rounding),
                cmocka_unit_test(test_heat_date_only_utc),
                cmocka_unit_test(test_heat_dst_spring),
                cmocka_unit_test(test_heat_dst_autumn),
                cmocka_unit_test(test_heat_dst_within_the_week),
                cmocka_unit_test(test_rest_interval),
                cmocka_unit_test(test_session_active),
                cmocka_unit_test(test_skin_cold),
                cmocka_unit_test(test_skin_heat),
                cmocka_unit_test(test_fault),
                cmocka_unit_test(test_compliant),
                cmocka_unit_test(test_days_since_injury),
                cmocka_unit_test(test_diary_red_flag),
                cmocka_unit_test(test_r8_no_diary),
                cmocka_unit_test(test_r8_already_raised),
                cmocka_unit_test(test_r8_improvement),
                cmocka_unit_test(test_r8_exact_means),
                cmocka_unit_test(test_r8_windows),
                cmocka_unit_test(test_r8_date_only_injury),
                cmocka_unit_test(test_r8_large_diary),
                cmocka_unit_test(test_extreme_times),
                cmocka_unit_test(test_why_names_rule),
                cmocka_unit_test(test_names),
                cmocka_unit_test(test_r4_heat_cap),
                cmocka_unit_test(test_r4_heat_cap_edges),
                cmocka_unit_test(test_r10_elapsed),
                cmocka_unit_test(test_r10_waits),
                cmocka_unit_test(test_r5_supervision),
                cmocka_unit_test(test_r10_names),
        };

        return cmocka_run_group_tests(tests, NULL, NULL);
}
