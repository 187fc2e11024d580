/* bench-fill-store: writes a store with years of history through store.h, for the start-up benches. */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "rules.h"
#include "store.h"
#include "util.h"

/*
 * Everything goes through the store's own API, so the file has exactly the daemon's schema,
 * indexes and constraints. Sessions are finished ones (completed cold, stopped heat, a few
 * refused) spread over the wraps, one every few hours back from `now`, with a diary entry
 * every day: the shape of a clinic gateway after a few years.
 */

int main(int argc, char *argv[]) {
        const int64_t now = 1795000000;
        unsigned n_sessions, n_wraps;
        Store *s = NULL;
        int r;

        if (argc != 4) {
                fprintf(stderr, "Usage: bench-fill-store DB SESSIONS WRAPS\n");
                return 2;
        }
        n_sessions = (unsigned) strtoul(argv[2], NULL, 10);
        n_wraps = (unsigned) strtoul(argv[3], NULL, 10);
        if (n_wraps == 0 || n_wraps > 255) {
                fprintf(stderr, "WRAPS must be 1..255\n");
                return 2;
        }

        r = store_open(argv[1], &s);
        if (r < 0) {
                fprintf(stderr, "store_open %s: %s\n", argv[1], strerror(-r));
                return 1;
        }

        for (unsigned w = 0; w < n_wraps; w++) {
                char address[BDADDR_STR_MAX];

                snprintf(address, sizeof address, "AA:BB:CC:00:00:%02X", w);
                r = store_wrap_add(s, address, "bench", now - 4 * 365 * RULES_DAY_S);
                if (r < 0 && r != -EEXIST)
                        goto fail;
        }

        for (unsigned i = 0; i < n_sessions; i++) {
                char address[BDADDR_STR_MAX];
                SessionRecord rec = { .source = SOURCE_BUTTON };
                int64_t at = now - (int64_t) (n_sessions - i) * 4 * 3600;

                snprintf(address, sizeof address, "AA:BB:CC:00:00:%02X", i % n_wraps);
                r = wrap_id_from_address(address, rec.wrap);
                if (r >= 0)
                        r = uuid_generate_str(rec.session_id);
                if (r < 0)
                        goto fail;
                rec.requested_at = at;
                if (i % 10 == 9) {
                        rec.mode = THERAPY_HEAT;
                        rec.outcome = OUTCOME_REFUSED;
                        rec.refusal = REFUSAL_HEAT_TOO_SOON;
                        rec.minutes_left = 600;
                        rec.setpoint = RULES_HEAT_SETPOINT_DEFAULT;
                } else if (i % 3 == 0) {
                        rec.mode = THERAPY_HEAT;
                        rec.outcome = OUTCOME_STOPPED_BY_USER;
                        rec.started_at = at + 1;
                        rec.duration_s = 700;
                        rec.ended_at = rec.started_at + rec.duration_s;
                        rec.prescribed_s = RULES_HEAT_DEFAULT_S;
                        rec.setpoint = RULES_HEAT_SETPOINT_DEFAULT;
                } else {
                        rec.mode = THERAPY_COLD;
                        rec.outcome = OUTCOME_COMPLETED;
                        rec.started_at = at + 1;
                        rec.duration_s = RULES_COLD_DEFAULT_S;
                        rec.ended_at = rec.started_at + rec.duration_s;
                        rec.prescribed_s = RULES_COLD_DEFAULT_S;
                        rec.compliant = true;
                        rec.setpoint = RULES_COLD_SETPOINT_DEFAULT;
                        skin_stats_add(&rec.skin, 1500);
                        skin_stats_add(&rec.skin, 1900);
                }
                r = store_session_put(s, &rec, NULL);
                if (r < 0)
                        goto fail;
                if (i % 6 == 0) {
                        DiaryEntry e = { .at = at + 60, .score = (uint8_t) (i % 11), .where = WHERE_FRONT };

                        r = store_diary_add(s, rec.wrap, &e, NULL, NULL, NULL);
                        if (r < 0)
                                goto fail;
                }
        }
        store_close(s);
        return 0;

fail:
        fprintf(stderr, "bench-fill-store: %s (%s)\n", strerror(-r), store_errmsg(s));
        store_close(s);
        return 1;
}
