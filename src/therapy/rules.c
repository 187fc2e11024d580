/* rules: therapy rules R1–R10 as pure functions of (state, event, now); all safety logic lives here. */
#include <errno.h>
#include <stdint.h>
#include <string.h>

#include "rules.h"

/*
 * Times come from records, the command line and clinics, so nothing here trusts them to be
 * sane: arithmetic on them saturates instead of overflowing (which would be undefined, and
 * could turn "refuse for a week" into "allow").
 */
static int64_t sat_add(int64_t a, int64_t b) {
        int64_t r;

        if (__builtin_add_overflow(a, b, &r))
                return b > 0 ? INT64_MAX : INT64_MIN;
        return r;
}

static int64_t sat_sub(int64_t a, int64_t b) {
        int64_t r;

        if (__builtin_sub_overflow(a, b, &r))
                return b < 0 ? INT64_MAX : INT64_MIN;
        return r;
}

/* DENY carries whole minutes, rounded up: "1 minute" must never be said when 61 s are left. */
static uint16_t minutes_left(int64_t left_s) {
        int64_t m;

        if (left_s <= 0)
                return 0;
        m = left_s / 60 + (left_s % 60 != 0);
        return m > UINT16_MAX ? UINT16_MAX : (uint16_t) m;
}

/* A prescription that slipped past the check still cannot shorten a wait (R2, R6). */
static int64_t heat_wait_s(const RulesPrescription *rx) {
        return rx->heat_wait_s < RULES_HEAT_WAIT_MIN_S ? RULES_HEAT_WAIT_MIN_S : (int64_t) rx->heat_wait_s;
}

static int64_t cold_rest_s(const RulesPrescription *rx) {
        return rx->cold_rest_s < RULES_COLD_REST_MIN_S ? RULES_COLD_REST_MIN_S : (int64_t) rx->cold_rest_s;
}

void rules_prescription_default(RulesPrescription *rx) {
        *rx = (RulesPrescription) {
                .cold_s = RULES_COLD_DEFAULT_S,
                .cold_setpoint = RULES_COLD_SETPOINT_DEFAULT,
                .heat_s = RULES_HEAT_DEFAULT_S,
                .heat_setpoint = RULES_HEAT_SETPOINT_DEFAULT,
                .heat_wait_s = RULES_HEAT_WAIT_MIN_S,
                .cold_rest_s = RULES_COLD_REST_MIN_S,
        };
}

int rules_prescription_check(const RulesPrescription *rx, const char **ret_field, const char **ret_why) {
        const char *field = NULL, *why = NULL;

        if (!rx)
                return -EINVAL;

        if (rx->cold_s < RULES_COLD_MIN_S || rx->cold_s > RULES_COLD_MAX_S)
                field = "cold_s", why = "R1: a cold session lasts 600 to 900 s (10 to 15 minutes)";
        else if (rx->cold_setpoint < RULES_COLD_SETPOINT_MIN || rx->cold_setpoint > RULES_COLD_SETPOINT_MAX)
                field = "cold_setpoint", why = "the cold setpoint must be 8.00 to 15.00 °C";
        else if (rx->heat_s < RULES_HEAT_MIN_S || rx->heat_s > RULES_HEAT_MAX_S)
                field = "heat_s", why = "R4: a heat session lasts 60 to 1200 s (at most 20 minutes)";
        else if (rx->heat_setpoint < RULES_HEAT_SETPOINT_MIN || rx->heat_setpoint > RULES_HEAT_SETPOINT_MAX)
                field = "heat_setpoint", why = "the heat setpoint must be 38.00 to 42.00 °C";
        else if (rx->heat_wait_s < RULES_HEAT_WAIT_MIN_S || rx->heat_wait_s > RULES_HEAT_WAIT_MAX_S)
                field = "heat_wait_s", why = "R2: the wait before heat is 7 to 365 days, never shorter";
        else if (rx->cold_rest_s < RULES_COLD_REST_MIN_S || rx->cold_rest_s > RULES_COLD_REST_MAX_S)
                field = "cold_rest_s", why = "R6: the rest between cold sessions is 1 to 24 hours, never shorter";

        if (ret_field)
                *ret_field = field;
        if (ret_why)
                *ret_why = why;
        return field ? -ERANGE : 0;
}

bool rules_heat_allowed(const RulesState *s, int64_t now, int64_t *ret_from) {
        int64_t from;

        /* R3: no unresolved injury (the caller drops resolved ones), no wait. */
        if (!s->has_injury) {
                if (ret_from)
                        *ret_from = now;
                return true;
        }

        /* R2: elapsed seconds, not calendar days, so a DST change neither adds nor removes an hour. */
        from = sat_add(s->injury_at, heat_wait_s(&s->rx));
        if (now >= from) {
                if (ret_from)
                        *ret_from = now;
                return true;
        }
        if (ret_from)
                *ret_from = from;
        return false;
}

int64_t rules_elapsed(const RulesTime *t, const RulesClock *now, bool *ret_exact) {
        bool same_boot = !t->stated && t->boot_id[0] && strncmp(t->boot_id, now->boot_id, RULES_BOOT_ID_MAX) == 0;
        bool exact = true;
        int64_t e;

        if (same_boot)
                /* The boot clock counts suspend and never steps: exact, whatever the wall clock did. */
                e = sat_sub(now->boot_s, t->boot_s);
        else if (t->wall_ok && now->wall_ok) {
                e = sat_sub(now->wall, t->wall);
                /* An event of an earlier boot lies at least this boot's uptime in the past. */
                if (!t->stated && e < now->boot_s)
                        e = now->boot_s;
        } else {
                exact = false;
                /* A stated time with no trusted clock to compare it with proves nothing. */
                e = t->stated ? 0 : now->boot_s;
        }
        if (ret_exact)
                *ret_exact = exact;
        return e;
}

int64_t rules_time_place(const RulesTime *t, const RulesClock *now, bool *ret_bound) {
        bool exact;
        int64_t e = rules_elapsed(t, now, &exact);

        if (ret_bound)
                *ret_bound = !exact;
        return sat_sub(now->wall, e);
}

/* R4: seconds of heat at or after x. */
static int64_t heat_after(const RulesState *s, int64_t x, bool *ret_bound) {
        int64_t sum = 0;

        for (unsigned i = 0; i < s->n_heat && i < RULES_HEAT_HISTORY; i++) {
                int64_t a = s->heat[i].start, b = sat_add(a, s->heat[i].s);

                if (a < x)
                        a = x;
                if (b <= a)
                        continue;
                sum = sat_add(sum, b - a);
                if (ret_bound && s->heat[i].bound)
                        *ret_bound = true;
        }
        return sum;
}

bool rules_heat_cap_allows(const RulesState *s, int64_t now, uint32_t len, int64_t *ret_from, bool *ret_bound) {
        int64_t budget, lo, hi, x;
        bool bound = false;

        if (len > RULES_HEAT_CAP_S)
                len = RULES_HEAT_CAP_S;
        budget = RULES_HEAT_CAP_S - (int64_t) len;
        /*
         * The 60 minutes that hold most heat are those that end with the new session: they
         * hold it all, and what came in the 60 − len minutes before it. So the session may
         * start at t once the heat after t + len − 60 min is within the budget; that heat only
         * falls as t grows, and the earliest such t is found by halving.
         */
        lo = sat_add(now, (int64_t) len - RULES_HEAT_CAP_WINDOW_S);
        /* Sessions older than the list may still fall in the window when its oldest does:
         * nothing then proves the cap holds (a flood of short sessions), and how long to wait
         * is unknown. */
        if (s->heat_more && s->n_heat > 0) {
                int64_t oldest_end = INT64_MAX;

                for (unsigned i = 0; i < s->n_heat && i < RULES_HEAT_HISTORY; i++)
                        if (sat_add(s->heat[i].start, s->heat[i].s) < oldest_end)
                                oldest_end = sat_add(s->heat[i].start, s->heat[i].s);
                if (oldest_end > lo) {
                        if (ret_from)
                                *ret_from = now;
                        if (ret_bound)
                                *ret_bound = false;
                        return false;
                }
        }
        if (heat_after(s, lo, &bound) <= budget) {
                if (ret_from)
                        *ret_from = now;
                if (ret_bound)
                        *ret_bound = false;
                return true;
        }
        hi = lo;
        for (unsigned i = 0; i < s->n_heat && i < RULES_HEAT_HISTORY; i++)
                if (sat_add(s->heat[i].start, s->heat[i].s) > hi)
                        hi = sat_add(s->heat[i].start, s->heat[i].s);
        /* heat_after(lo) > budget >= 0 = heat_after(hi) */
        while (hi - lo > 1) {
                x = lo + (hi - lo) / 2;
                if (heat_after(s, x, NULL) <= budget)
                        hi = x;
                else
                        lo = x;
        }
        if (ret_from)
                *ret_from = sat_add(hi, RULES_HEAT_CAP_WINDOW_S - (int64_t) len);
        if (ret_bound)
                *ret_bound = bound;
        return false;
}

bool rules_compliant(TherapyMode mode, uint32_t duration_s) {
        return mode == THERAPY_COLD && duration_s >= RULES_COMPLIANT_COLD_S;
}

bool rules_days_since_injury(const RulesState *s, int64_t now, int32_t *ret_tenths) {
        int64_t elapsed, tenths;

        if (!s->has_injury)
                return false;
        elapsed = sat_sub(now, s->injury_from);
        /* Floored: "7.0 days" must not be shown a second before the seventh day is over. */
        tenths = elapsed <= 0 ? 0 : elapsed / (RULES_DAY_S / 10);
        if (ret_tenths)
                *ret_tenths = tenths > INT32_MAX ? INT32_MAX : (int32_t) tenths;
        return true;
}

/* The session's real end: R1 and R4 hold even if the recorded duration says more. */
static int64_t active_deadline(const RulesState *s) {
        uint32_t d = s->active_duration_s;
        uint32_t cap = s->active_mode == THERAPY_HEAT ? RULES_HEAT_MAX_S : RULES_COLD_MAX_S;

        if (d > cap)
                d = cap;
        return sat_add(s->active_started, d);
}

/* R10: a wait nobody can prove over. How long is unknown: it ends when the clock is trusted. */
static RulesDecision unsynced(const char *why) {
        return (RulesDecision) {
                .action = RULES_DENY,
                .deny = DENY_CLOCK_UNSYNCED,
                .minutes_left = 0,
                .why = why,
        };
}

static RulesDecision decide_start(const RulesState *s, const RulesEvent *ev, int64_t now) {
        int64_t from;

        if (s->active)
                return (RulesDecision) {
                        .action = RULES_DENY,
                        .deny = DENY_SESSION_ACTIVE,
                        /* After this session other rules (R6) may apply: the wait is unknown. */
                        .minutes_left = 0,
                        .why = "a session is already running on this wrap",
                };

        if (ev->mode != THERAPY_COLD && ev->mode != THERAPY_HEAT)
                return (RulesDecision) {
                        .action = RULES_DENY,
                        .deny = DENY_OTHER,
                        .why = "a session must be cold or heat",
                };

        if (rules_prescription_check(&s->rx, NULL, NULL) < 0)
                return (RulesDecision) {
                        .action = RULES_DENY,
                        .deny = DENY_OTHER,
                        .why = "the prescription is out of bounds: nothing starts on it",
                };

        if (ev->mode == THERAPY_HEAT) {
                bool bound;

                if (!rules_heat_allowed(s, now, &from))
                        return s->injury_bound ? unsynced("R10: the clock is not trusted, so nothing proves "
                                                          "the wait after the injury (R2) is over")
                                : (RulesDecision) {
                                .action = RULES_DENY,
                                .deny = DENY_HEAT_TOO_SOON,
                                .minutes_left = minutes_left(sat_sub(from, now)),
                                .allowed_at = from,
                                .why = "R2: heat refused until 7 days after the injury",
                        };
                if (!rules_heat_cap_allows(s, now, s->rx.heat_s, &from, &bound))
                        return bound ? unsynced("R10: the clock is not trusted, so nothing proves the last "
                                                "hour's heat leaves room for this session (R4)")
                                : (RulesDecision) {
                                .action = RULES_DENY,
                                .deny = DENY_REST_INTERVAL,
                                .minutes_left = minutes_left(sat_sub(from, now)),
                                .allowed_at = from,
                                .why = "R4: at most 20 minutes of heat in any 60 minutes",
                        };
                return (RulesDecision) {
                        .action = RULES_START,
                        .mode = THERAPY_HEAT,
                        .setpoint = s->rx.heat_setpoint,
                        .duration_s = s->rx.heat_s,
                        .deadline = sat_add(now, s->rx.heat_s),
                        .why = s->has_injury ? "R2: heat allowed, the wait after the injury is over"
                                             : "R3: heat allowed, no unresolved injury",
                };
        }

        if (s->has_last_cold) {
                int64_t until = sat_add(s->last_cold_end, cold_rest_s(&s->rx));

                if (now < until && s->last_cold_bound)
                        return unsynced("R10: the clock is not trusted, so nothing proves the rest since "
                                        "the last cold session (R6) is over");
                if (now < until)
                        return (RulesDecision) {
                                .action = RULES_DENY,
                                .deny = DENY_REST_INTERVAL,
                                .minutes_left = minutes_left(sat_sub(until, now)),
                                .allowed_at = until,
                                .why = "R6: cold refused until the skin has rested since the last cold session",
                        };
        }
        return (RulesDecision) {
                .action = RULES_START,
                .mode = THERAPY_COLD,
                .setpoint = s->rx.cold_setpoint,
                .duration_s = s->rx.cold_s,
                .deadline = sat_add(now, s->rx.cold_s),
                .why = "R1: cold session for the prescribed time",
        };
}

RulesDecision rules_decide(const RulesState *s, const RulesEvent *ev, int64_t now) {
        int64_t deadline;

        if (ev->type == RULES_EVENT_START)
                return decide_start(s, ev, now);

        if (!s->active)
                return (RulesDecision) {
                        .action = RULES_NONE,
                        .why = "no session is running",
                };

        deadline = active_deadline(s);

        switch (ev->type) {

        case RULES_EVENT_STOP:
                return (RulesDecision) {
                        .action = RULES_STOP,
                        .stop = STOP_USER,
                        .why = "stop asked for",
                };

        case RULES_EVENT_TICK:
                if (now >= deadline)
                        return (RulesDecision) {
                                .action = RULES_STOP,
                                .stop = STOP_COMPLETED,
                                .deadline = deadline,
                                .why = s->active_mode == THERAPY_HEAT
                                        ? "R4: the heat session's time is over"
                                        : "R1: the cold session's time is over",
                        };
                return (RulesDecision) {
                        .action = RULES_NONE,
                        .deadline = deadline,
                        .why = "the session is running",
                };

        case RULES_EVENT_SKIN:
                if (s->active_mode == THERAPY_COLD && ev->skin < RULES_SKIN_COLD_MIN)
                        return (RulesDecision) {
                                .action = RULES_STOP,
                                .stop = STOP_SAFETY,
                                .deadline = deadline,
                                .why = "R5: skin below 8 °C in a cold session",
                        };
                if (s->active_mode == THERAPY_HEAT && ev->skin > RULES_SKIN_HEAT_MAX)
                        return (RulesDecision) {
                                .action = RULES_STOP,
                                .stop = STOP_SAFETY,
                                .deadline = deadline,
                                .why = "R5: skin above 43 °C in a heat session",
                        };
                return (RulesDecision) {
                        .action = RULES_NONE,
                        .deadline = deadline,
                        .why = "R5: skin temperature within limits",
                };

        case RULES_EVENT_FAULT:
                /* Every flag counts, low battery and "not worn" too: the wrap is not fit to run. */
                if (ev->fault_state || ev->fault_flags != 0)
                        return (RulesDecision) {
                                .action = RULES_STOP,
                                .stop = STOP_SAFETY,
                                .deadline = deadline,
                                .why = "R5: the wrap reports a fault",
                        };
                return (RulesDecision) {
                        .action = RULES_NONE,
                        .deadline = deadline,
                        .why = "R5: no fault reported",
                };

        case RULES_EVENT_REPORTED:
                /* R5: what runs is not what the gateway started (nor what the skin limit is for). */
                if (ev->mode != s->active_mode || ev->setpoint != s->active_setpoint)
                        return (RulesDecision) {
                                .action = RULES_STOP,
                                .stop = STOP_SAFETY,
                                .deadline = deadline,
                                .why = "R5: the wrap reports a mode or setpoint other than the one started",
                        };
                return (RulesDecision) {
                        .action = RULES_NONE,
                        .deadline = deadline,
                        .why = "R5: the wrap runs what was started",
                };

        case RULES_EVENT_SILENCE:
                if (ev->silent_s >= RULES_SKIN_SILENCE_S)
                        return (RulesDecision) {
                                .action = RULES_STOP,
                                .stop = STOP_SAFETY,
                                .deadline = deadline,
                                .why = "R5: no valid skin reading for 15 s: the gateway cannot see the skin",
                        };
                return (RulesDecision) {
                        .action = RULES_NONE,
                        .deadline = deadline,
                        .why = "R5: skin readings arrive",
                };

        case RULES_EVENT_START:
                break;
        }

        return (RulesDecision) {
                .action = RULES_NONE,
                .deadline = deadline,
                .why = "unknown event",
        };
}

AlertKind rules_diary_alert(const DiaryEntry *e) {
        if (!e)
                return ALERT_NONE;
        if ((e->flags & DIARY_SWELLING) && (e->flags & DIARY_POP))
                return ALERT_RED_FLAG;
        return ALERT_NONE;
}

/*
 * Compares a/b with c/d exactly (b, d > 0), by the Euclidean expansion of both fractions:
 * no float rounding and, unlike cross-multiplying, no product that could overflow.
 * Returns <0, 0 or >0.
 */
static int frac_cmp(uint64_t a, uint64_t b, uint64_t c, uint64_t d) {
        int sign = 1;

        for (;;) {
                uint64_t qa = a / b, qc = c / d, ra = a % b, rc = c % d;

                if (qa != qc)
                        return qa < qc ? -sign : sign;
                if (ra == 0 || rc == 0)
                        return ra == rc ? 0 : ra == 0 ? -sign : sign;
                /* Equal integer parts: ra/b vs rc/d is the reverse of b/ra vs d/rc. */
                a = b, b = ra;
                c = d, d = rc;
                sign = -sign;
        }
}

AlertKind rules_persisting_pain(const RulesState *s, const DiaryEntry *entries, size_t n,
                                unsigned already_raised, int64_t now) {
        uint64_t first_sum = 0, first_n = 0, last_sum = 0, last_n = 0;
        int64_t age, first_end, last_start;
        bool improved;

        if (!s->has_injury)
                return ALERT_NONE;

        age = sat_sub(now, s->injury_from);
        if (age < RULES_PAIN_ALERT_DAYS * RULES_DAY_S)
                return ALERT_NONE;
        /* Once overdue is raised nothing is left to say: "see a physio" would come after it. */
        if (already_raised & ALERT_SEE_PHYSIO_OVERDUE)
                return ALERT_NONE;
        if (age < RULES_PAIN_OVERDUE_DAYS * RULES_DAY_S && (already_raised & ALERT_SEE_PHYSIO))
                return ALERT_NONE;

        first_end = sat_add(s->injury_from, RULES_PAIN_WINDOW_DAYS * RULES_DAY_S);
        last_start = sat_sub(now, RULES_PAIN_WINDOW_DAYS * RULES_DAY_S);
        for (size_t i = 0; entries && i < n; i++) {
                const DiaryEntry *e = entries + i;

                if (e->score > 10)
                        continue;
                if (e->at >= s->injury_from && e->at < first_end) {
                        first_sum += e->score;
                        first_n++;
                }
                if (e->at > last_start && e->at <= now) {
                        last_sum += e->score;
                        last_n++;
                }
        }

        /*
         * Improvement is shown only by entries in both windows with
         * mean(last) <= mean(first) - 2, i.e. (last_sum + 2 last_n) / last_n <= first_sum / first_n.
         * No entry in the first week leaves nothing to improve on: cautiously, no improvement.
         */
        improved = first_n > 0 && last_n > 0 &&
                frac_cmp(last_sum + RULES_PAIN_IMPROVEMENT * last_n, last_n, first_sum, first_n) <= 0;
        if (improved)
                return ALERT_NONE;

        if (age >= RULES_PAIN_OVERDUE_DAYS * RULES_DAY_S)
                return ALERT_SEE_PHYSIO_OVERDUE;
        return ALERT_SEE_PHYSIO;
}
