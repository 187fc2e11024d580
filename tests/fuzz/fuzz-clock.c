/* fuzz-clock: clock_parse_iso, the one reader of the ISO 8601 times that come in over MQTT,
 * D-Bus, the command line and the store. */
#include <errno.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "clock.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

#define CHECK(x) do { if (!(x)) abort(); } while (0)

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
        char s[64], again[64];
        int64_t t = 0, t2 = 0;
        bool date_only = false, date_only2 = false;
        int r;

        if (size >= sizeof s)
                return 0;
        memcpy(s, data, size);
        s[size] = 0;
        r = clock_parse_iso(s, &t, &date_only);
        CHECK(r == 0 || r == -EINVAL);
        if (r < 0)
                return 0;
        CHECK(strlen(s) >= 10);
        CHECK(!date_only || strlen(s) == 10);
        /* What was read reads back the same: ISO with the UTC offset spelled "Z". */
        if (!date_only && t > -62135596800LL && t < 253402300800LL) {
                time_t tt = (time_t) t;
                struct tm tm;
                CHECK(gmtime_r(&tt, &tm));
                CHECK(strftime(again, sizeof again, "%Y-%m-%dT%H:%M:%SZ", &tm) > 0);
                CHECK(clock_parse_iso(again, &t2, &date_only2) == 0 && !date_only2 && t2 == t);
        }
        return 0;
}
