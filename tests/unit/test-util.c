/* Unit tests for util: clock formats, DST-aware day ends, ids and strict parsing. */
#include <errno.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdlib.h>
#include <time.h>
#include <cmocka.h>

#include "clock.h"
#include "util.h"

static void set_tz(const char *tz) {
        setenv("TZ", tz, 1);
        tzset();
}

static void test_iso_format_offset(void **state) {
        char buf[CLOCK_ISO_MAX];

        set_tz("Europe/Berlin");
        assert_string_equal(clock_format_iso(1795183445, buf), "2026-11-20T15:04:05+01:00");
        assert_string_equal(clock_format_iso(1782000000, buf), "2026-06-21T02:00:00+02:00");
        set_tz("UTC");
        assert_string_equal(clock_format_iso(1795183445, buf), "2026-11-20T14:04:05+00:00");
        set_tz("America/St_Johns");
        assert_string_equal(clock_format_iso(1795183445, buf), "2026-11-20T10:34:05-03:30");
}

static void test_parse_iso(void **state) {
        int64_t t;
        bool date_only;

        set_tz("UTC");
        assert_int_equal(clock_parse_iso("2026-11-20T14:04:05Z", &t, &date_only), 0);
        assert_int_equal(t, 1795183445);
        assert_false(date_only);
        assert_int_equal(clock_parse_iso("2026-11-20T15:04:05+01:00", &t, NULL), 0);
        assert_int_equal(t, 1795183445);
        assert_int_equal(clock_parse_iso("2026-11-20", &t, &date_only), 0);
        assert_true(date_only);
        assert_int_equal(t, 1795219200); /* 2026-11-21T00:00Z: the end of that day */
        assert_int_equal(clock_parse_iso("2026-02-30", &t, NULL), -EINVAL);
        assert_int_equal(clock_parse_iso("2026-11-20T25:00", &t, NULL), -EINVAL);
        assert_int_equal(clock_parse_iso("2026-11-20x", &t, NULL), -EINVAL);
        assert_int_equal(clock_parse_iso("20261120", &t, NULL), -EINVAL);
        assert_int_equal(clock_parse_iso("2026-11-20T14:04:05+01", &t, NULL), -EINVAL);
        /* Issue 8: no signs, spaces or short fields where digits belong. */
        static const char *const signed_fields[] = {
                "2026-+9-01", "2026-09-+1", "2026--9-01", "+026-09-01", "-026-09-01", "2026- 9-01",
                "2026-11-20T-9:-9:-9", "2026-11-20T+9:00", "2026-11-20T09:+0", "2026-11-20T09:00:-1",
                "2026-11-20T09:00:+1", "2026-11-20T 9:00", "2026-11-20T09:00+-9:00", "2026-11-20T09:00++9:00",
                "2026-11-20T09:00-+1:00", "2026-11-20T09:00+01:-0", "2026-11-20T09:00+ 1:00", "2026-1-20",
                "2026-11-2", "2026-11-20T9:00", "2026-11-20T09:0", "2026-11-20T09:00:0", "2026-11-20T09:00+1:00",
        };
        for (size_t i = 0; i < ELEMENTSOF(signed_fields); i++) {
                t = 4242;
                if (clock_parse_iso(signed_fields[i], &t, NULL) != -EINVAL)
                        fail_msg("accepted \"%s\"", signed_fields[i]);
                assert_int_equal(t, 4242);
        }
}

/* The three HTTP-date forms, a date past 2038 (armhf: 64-bit time_t through libc), and refusals. */
static void test_parse_http_date(void **state) {
        int64_t t = 0;

        assert_int_equal(clock_parse_http_date("Sun, 06 Nov 1994 08:49:37 GMT", &t), 0);
        assert_int_equal(t, 784111777);
        t = 0;
        assert_int_equal(clock_parse_http_date("Sunday, 06-Nov-94 08:49:37 GMT", &t), 0);
        assert_int_equal(t, 784111777);
        t = 0;
        assert_int_equal(clock_parse_http_date("Sun Nov  6 08:49:37 1994", &t), 0);
        assert_int_equal(t, 784111777);
        assert_int_equal(clock_parse_http_date("Tue, 01 Mar 2039 10:00:00 GMT", &t), 0);
        assert_int_equal(t, INT64_C(2182586400));
        assert_int_equal(clock_parse_http_date("Sun, 06 Nov 1994 08:49:37 GMT trailing", &t), -EINVAL);
        assert_int_equal(clock_parse_http_date("120", &t), -EINVAL);
        assert_int_equal(clock_parse_http_date("", &t), -EINVAL);
        assert_int_equal(clock_parse_http_date(NULL, &t), -EINVAL);
}

static void test_day_end_dst(void **state) {
        int64_t a, b;

        /* Europe/Berlin: 2026-03-29 has 23 hours, 2026-10-25 has 25. */
        set_tz("Europe/Berlin");
        assert_int_equal(clock_local_day_end(2026, 3, 28, &a), 0);
        assert_int_equal(clock_local_day_end(2026, 3, 29, &b), 0);
        assert_int_equal(b - a, 23 * 3600);
        assert_int_equal(clock_local_day_end(2026, 10, 24, &a), 0);
        assert_int_equal(clock_local_day_end(2026, 10, 25, &b), 0);
        assert_int_equal(b - a, 25 * 3600);
        assert_int_equal(clock_local_day_end(2026, 12, 31, &a), 0);
        assert_int_equal(a, 1798758000); /* 2027-01-01T00:00+01:00 */
        set_tz("UTC");
}

static void test_ids(void **state) {
        char a[BDADDR_STR_MAX], id[WRAP_ID_MAX], u1[UUID_STR_MAX], u2[UUID_STR_MAX];

        assert_int_equal(bdaddr_normalize("aa:bb:cc:00:11:2f", a), 0);
        assert_string_equal(a, "AA:BB:CC:00:11:2F");
        assert_int_equal(bdaddr_normalize("AA:BB:CC:00:11", a), -EINVAL);
        assert_int_equal(bdaddr_normalize("AA:BB:CC:00:11:GG", a), -EINVAL);
        assert_int_equal(wrap_id_from_address("AA:BB:CC:00:11:2F", id), 0);
        assert_string_equal(id, "wrap_aabbcc00112f");
        assert_int_equal(uuid_generate_str(u1), 0);
        assert_int_equal(uuid_generate_str(u2), 0);
        assert_int_equal(strlen(u1), 36);
        assert_int_equal(u1[14], '4');
        assert_string_not_equal(u1, u2);
}

static void test_parse(void **state) {
        int64_t v;
        int32_t c;
        bool b;

        assert_int_equal(parse_int64("42", &v), 0);
        assert_int_equal(v, 42);
        assert_int_equal(parse_int64("42x", &v), -EINVAL);
        assert_int_equal(parse_int64(" 42", &v), -EINVAL);
        assert_int_equal(parse_int64("", &v), -EINVAL);
        assert_int_equal(parse_int64("99999999999999999999", &v), -ERANGE);
        assert_int_equal(parse_decimal_centi("10", &c), 0);
        assert_int_equal(c, 1000);
        assert_int_equal(parse_decimal_centi("10.5", &c), 0);
        assert_int_equal(c, 1050);
        assert_int_equal(parse_decimal_centi("-3.25", &c), 0);
        assert_int_equal(c, -325);
        assert_int_equal(parse_decimal_centi("10.555", &c), -EINVAL);
        assert_int_equal(parse_decimal_centi("1.", &c), -EINVAL);
        assert_int_equal(parse_decimal_centi("abc", &c), -EINVAL);
        assert_int_equal(parse_bool("Yes", &b), 0);
        assert_true(b);
        assert_int_equal(parse_bool("off", &b), 0);
        assert_false(b);
        assert_int_equal(parse_bool("maybe", &b), -EINVAL);
}

static void test_backoff(void **state) {
        const uint64_t s = 1000000;

        /* 1 s doubling to 60 s, ±20 %, never under the minimum. */
        assert_int_equal(backoff_usec(0, s, 60 * s, 0), s);
        assert_int_equal(backoff_usec(0, s, 60 * s, 2 * (s / 5)), s + s / 5);
        assert_int_equal(backoff_usec(3, s, 60 * s, 0), 8 * s - 8 * s / 5);
        assert_int_equal(backoff_usec(3, s, 60 * s, 2 * (8 * s / 5)), 8 * s + 8 * s / 5);
        assert_int_equal(backoff_usec(6, s, 60 * s, 12 * s), 60 * s);
        assert_int_equal(backoff_usec(1000, s, 60 * s, 0), 48 * s);
        for (unsigned n = 0; n < 40; n++) {
                uint64_t d = backoff_usec(n, s, 60 * s, random_u64());
                assert_true(d >= s && d <= 72 * s);
        }
        /* The one monotonic clock reads, and never goes back. */
        {
                uint64_t a = mono_usec(), b = mono_usec();

                assert_true(a > 0 && b >= a);
        }
}

int main(void) {
        const struct CMUnitTest tests[] = {
                cmocka_unit_test(test_iso_format_offset),
                cmocka_unit_test(test_parse_iso),
                cmocka_unit_test(test_parse_http_date),
                cmocka_unit_test(test_day_end_dst),
                cmocka_unit_test(test_ids),
                cmocka_unit_test(test_parse),
                cmocka_unit_test(test_backoff),
        };
        return cmocka_run_group_tests(tests, NULL, NULL);
}
