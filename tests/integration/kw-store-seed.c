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
 * kw-store-seed DB injury WRAP YYYY-MM-DD
 * Adoption needs BlueZ and sessions need a wrap: tests that only read history seed it here,
 * and a test that needs an injury before the daemon starts (kneewrapctl needs the daemon).
 */
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
        if (streq(argv[2], "wrap") && argc == 6 && parse_int64(argv[5], &at) == 0)
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
        } else
                r = -EINVAL;
        if (r < 0)
                fprintf(stderr, "kw-store-seed: %s (%s)\n", strerror(-r), store_errmsg(s) ? store_errmsg(s) : "");
        store_close(s);
        return r < 0 ? 1 : 0;
}
