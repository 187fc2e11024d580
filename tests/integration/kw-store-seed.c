/* kw-store-seed: puts wraps and sessions into a store through store.h, for kneewrapctl's tests. */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "clock.h"
#include "record.h"
#include "rules.h"
#include "store.h"
#include "util.h"

/*
 * kw-store-seed DB wrap ADDRESS NAME AT
 * kw-store-seed DB session WRAP cold|heat OUTCOME REQUESTED_AT DURATION_S [REFUSAL MINUTES_LEFT]
 * kw-store-seed DB sessions WRAP N FIRST_AT   N completed cold sessions 2 h apart; prints their ids
 * kw-store-seed DB correct SESSION_ID DURATION_S   rewrites a session's duration (a correction)
 * kw-store-seed DB diary WRAP AT SCORE
 * kw-store-seed DB history ADDRESS NOW
 * kw-store-seed DB injury WRAP YYYY-MM-DD
 * Adoption needs BlueZ and sessions need a wrap: tests that only read history seed it here,
 * and a test that needs an injury before the daemon starts (kneewrapctl needs the daemon).
 * "history" writes three weeks of one runner's knee before NOW, the same every time: the
 * wrap, its profile and Device Information, an injury, runs, cold sessions that followed
 * them or not (one refused by R6, one stopped early), heat asked for in the first week,
 * a falling pain diary, and alerts (for reports and the screenshot in docs/).
 */
static int seed_sessions(Store *s, const char *wrap, int64_t n, int64_t first_at) {
        for (int64_t i = 0; i < n; i++) {
                SessionRecord rec = {
                        .mode = THERAPY_COLD,
                        .source = SOURCE_BUTTON,
                        .outcome = OUTCOME_COMPLETED,
                        .requested_at = first_at + i * 7200,
                        .started_at = first_at + i * 7200 + 1,
                        .ended_at = first_at + i * 7200 + 901,
                        .prescribed_s = 900,
                        .duration_s = 900,
                        .compliant = true,
                        .setpoint = 1200,
                };
                int r;

                uuid_generate_str(rec.session_id);
                snprintf(rec.wrap, sizeof rec.wrap, "%s", wrap);
                r = store_session_put(s, &rec, NULL);
                if (r < 0)
                        return r;
                printf("%s\n", rec.session_id);
        }
        return 0;
}

static int correct_session(Store *s, const char *session_id, int64_t duration) {
        SessionRecord rec;
        int r;

        r = store_session_get(s, session_id, &rec);
        if (r < 0)
                return r;
        rec.duration_s = (uint32_t) duration;
        rec.ended_at = rec.started_at + duration;
        rec.compliant = rules_compliant(rec.mode, rec.duration_s);
        return store_session_put(s, &rec, NULL);
}

static SessionRecord session_at(const char *wrap, TherapyMode mode, int64_t at, uint32_t ran, SessionOutcome o,
                                RefusalReason why, uint16_t left, int64_t injury) {
        SessionRecord rec = { .mode = mode, .source = SOURCE_BUTTON, .requested_at = at, .outcome = o,
                              .prescribed_s = 900, .setpoint = mode == THERAPY_COLD ? 1000 : 4000 };

        uuid_generate_str(rec.session_id);
        snprintf(rec.wrap, sizeof rec.wrap, "%s", wrap);
        if (o == OUTCOME_REFUSED) {
                rec.refusal = why;
                rec.minutes_left = left;
        } else {
                rec.started_at = at + 1;
                rec.ended_at = at + 1 + ran;
                rec.duration_s = ran;
                rec.compliant = rules_compliant(mode, ran);
                for (uint32_t t = 0; t < ran; t += 60)
                        skin_stats_add(&rec.skin, mode == THERAPY_COLD ? 1500 - (int32_t) (t / 60) * 20 : 3800);
        }
        rec.has_days_since_injury = true;
        rec.days_since_injury = (int32_t) ((at - injury) / 8640);
        return rec;
}

static int history(Store *s, const char *address, int64_t now) {
        char wrap[WRAP_ID_MAX];
        int64_t day0, injury;
        WrapDeviceInfo info = { .manufacturer = "KneeWrap", .model = "KW-1", .serial = "", .firmware = "1.4.2" };
        PatientProfile p = { .knee = KNEE_LEFT, .label = "Patient 12", .clinic_ref = "PT-2026-12" };
        int r;

        /* Local midnight three weeks ago; the injury that morning. */
        r = clock_local_day_start(now, 20, &day0);
        injury = day0 + 9 * 3600;
        if (r >= 0)
                r = wrap_id_from_address(address, wrap);
        if (r >= 0)
                r = store_wrap_add(s, address, "KneeWrap 1122", day0 - RULES_DAY_S);
        snprintf(info.serial, sizeof info.serial, "%s", wrap + 5);
        snprintf(p.wrap, sizeof p.wrap, "%s", wrap);
        if (r >= 0)
                r = store_device_info_set(s, wrap, &info, day0);
        if (r >= 0)
                r = store_profile_set(s, &p, day0);
        if (r >= 0)
                r = store_injury_add(s, wrap, injury, NULL, injury);
        for (int d = 0; r >= 0 && d < 21; d++) {
                int64_t morning = day0 + d * RULES_DAY_S + 7 * 3600 + (d % 3) * 900;
                RunRecord run = { .ended_at = morning, .minutes = 30 + (uint32_t) (d % 4) * 8,
                                  .meters = 5000 + (uint32_t) (d % 5) * 900, .source = d % 2 ? SOURCE_MQTT : SOURCE_CLI,
                                  .recorded_at = morning };
                SessionRecord rec;
                DiaryEntry e = { .at = day0 + d * RULES_DAY_S + 20 * 3600, .where = WHERE_BELOW,
                                 .score = (uint8_t) (d < 3 ? 7 : 7 - d / 4) };

                snprintf(run.wrap, sizeof run.wrap, "%s", wrap);
                if (d % 7 == 5)
                        continue;   /* a rest day */
                r = store_run_add(s, &run, NULL, NULL);
                if (r < 0)
                        break;
                if (d == 4 || d == 12)
                        continue;   /* no cold after the run */
                if (d == 8) {       /* cold right after an evening session: refused by R6 */
                        rec = session_at(wrap, THERAPY_COLD, morning - 1800, 900, OUTCOME_COMPLETED, REFUSAL_NONE, 0, injury);
                        r = store_session_put(s, &rec, NULL);
                        rec = session_at(wrap, THERAPY_COLD, morning + 600, 0, OUTCOME_REFUSED, REFUSAL_REST_INTERVAL, 45, injury);
                } else if (d == 15)
                        rec = session_at(wrap, THERAPY_COLD, morning + 900, 420, OUTCOME_STOPPED_BY_USER, REFUSAL_NONE, 0, injury);
                else
                        rec = session_at(wrap, THERAPY_COLD, morning + 600 + (d % 4) * 300, d < 10 ? 900 : 720,
                                         OUTCOME_COMPLETED, REFUSAL_NONE, 0, injury);
                if (r >= 0)
                        r = store_session_put(s, &rec, NULL);
                if (r >= 0 && d % 2 == 0)
                        r = store_diary_add(s, wrap, &e, NULL, NULL, NULL);
                if (r >= 0 && d == 2) {
                        AlertRecord a = { .kind = ALERT_HEAT_FIRST_WEEK, .at = e.at - 3600,
                                          .text = "Heat was asked for 2.5 days after the injury and refused (R2)." };
                        snprintf(a.wrap, sizeof a.wrap, "%s", wrap);
                        rec = session_at(wrap, THERAPY_HEAT, a.at, 0, OUTCOME_REFUSED, REFUSAL_HEAT_TOO_SOON, 6480, injury);
                        snprintf(a.session_id, sizeof a.session_id, "%s", rec.session_id);
                        r = store_session_put(s, &rec, NULL);
                        if (r >= 0)
                                r = store_alert_add(s, &a, NULL, NULL);
                        if (r >= 0)
                                r = store_alert_ack(s, a.id, a.at + 7200, NULL, NULL, NULL);
                }
                if (r >= 0 && d == 17) {
                        /* Raised at that day's cold request, as the daemon does: it names the session. */
                        AlertRecord a = { .kind = ALERT_LOW_BATTERY, .at = rec.requested_at,
                                          .text = "The battery was at 14 % when a cold session was asked for: charge the wrap." };
                        snprintf(a.wrap, sizeof a.wrap, "%s", wrap);
                        snprintf(a.session_id, sizeof a.session_id, "%s", rec.session_id);
                        r = store_alert_add(s, &a, NULL, NULL);
                }
        }
        return r;
}

int main(int argc, char *argv[]) {
        Store *s = NULL;
        int64_t at, dur, left = 0;
        int r;

        if (argc < 3)
                return 2;
        r = store_open(argv[1], &s);
        if (r < 0) {
                fprintf(stderr, "store_open: %s\n", strerror(-r));
                return 1;
        }
        if (streq(argv[2], "history") && argc == 5 && parse_int64(argv[4], &at) == 0)
                r = history(s, argv[3], at);
        else if (streq(argv[2], "wrap") && argc == 6 && parse_int64(argv[5], &at) == 0)
                r = store_wrap_add(s, argv[3], argv[4], at);
        else if (streq(argv[2], "injury") && argc == 5) {
                bool date_only;

                r = clock_parse_iso(argv[4], &at, &date_only);
                if (r >= 0)
                        r = store_injury_add(s, argv[3], at, date_only ? argv[4] : NULL, clock_real_sec());
        }
        else if (streq(argv[2], "session") && (argc == 8 || argc == 10) &&
                 parse_int64(argv[6], &at) == 0 && parse_int64(argv[7], &dur) == 0 &&
                 (argc == 8 || parse_int64(argv[9], &left) == 0)) {
                SessionRecord rec = { 0 };

                uuid_generate_str(rec.session_id);
                snprintf(rec.wrap, sizeof rec.wrap, "%s", argv[3]);
                rec.mode = (TherapyMode) therapy_mode_from_string(argv[4]);
                rec.source = SOURCE_BUTTON;
                rec.outcome = (SessionOutcome) session_outcome_from_string(argv[5]);
                rec.requested_at = at;
                rec.prescribed_s = rec.mode == THERAPY_COLD ? 900 : 900;
                if (rec.outcome != OUTCOME_REFUSED) {
                        rec.started_at = at + 1;
                        rec.ended_at = at + 1 + dur;
                        rec.duration_s = (uint32_t) dur;
                }
                rec.compliant = rules_compliant(rec.mode, rec.duration_s) && rec.outcome != OUTCOME_REFUSED;
                if (argc == 10) {
                        rec.refusal = (RefusalReason) refusal_reason_from_string(argv[8]);
                        rec.minutes_left = (uint16_t) left;
                }
                r = store_session_put(s, &rec, NULL);
        } else if (streq(argv[2], "sessions") && argc == 6 && parse_int64(argv[4], &dur) == 0 &&
                   parse_int64(argv[5], &at) == 0)
                r = seed_sessions(s, argv[3], dur, at);
        else if (streq(argv[2], "correct") && argc == 5 && parse_int64(argv[4], &dur) == 0)
                r = correct_session(s, argv[3], dur);
        else if (streq(argv[2], "diary") && argc == 6 && parse_int64(argv[4], &at) == 0 &&
                 parse_int64(argv[5], &left) == 0) {
                DiaryEntry e = { .at = at, .score = (uint8_t) left, .where = WHERE_FRONT };
                r = store_diary_add(s, argv[3], &e, NULL, NULL, NULL);
        } else
                r = -EINVAL;
        if (r < 0)
                fprintf(stderr, "kw-store-seed: %s (%s)\n", strerror(-r), store_errmsg(s) ? store_errmsg(s) : "");
        store_close(s);
        return r < 0 ? 1 : 0;
}
