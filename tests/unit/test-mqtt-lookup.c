/* Unit tests for the MQTT client's name lookup: numeric hosts parsed in place, a name answered through the loop. */
#include <setjmp.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include "lookup.h"

static void test_numeric(void **state) {
        char a[LOOKUP_ADDR_MAX];

        assert_true(lookup_numeric("192.0.2.7", a));
        assert_string_equal(a, "192.0.2.7");
        assert_true(lookup_numeric("2001:db8:0:0::1", a));
        assert_string_equal(a, "2001:db8::1");      /* its normal form */
        assert_true(lookup_numeric("::1", NULL));
        assert_true(lookup_numeric("fe80::1%lo", a));
        assert_string_equal(a, "fe80::1%lo");
        /* Names are never looked up here. */
        assert_false(lookup_numeric("localhost", a));
        assert_false(lookup_numeric("homeassistant.local", a));
        assert_false(lookup_numeric("", a));
        assert_false(lookup_numeric(NULL, a));
}

typedef struct Seen {
        int calls;
        LookupAnswer a;
} Seen;

static void on_answer(Lookup *l, const LookupAnswer *a, void *userdata) {
        Seen *s = userdata;

        s->calls++;
        s->a = *a;
        (void) lookup_free(l);
}

static void test_name_through_the_loop(void **state) {
        sd_event *e = NULL;
        Lookup *l = NULL, *dropped = NULL;
        Seen seen = { 0 }, never = { 0 };

        assert_int_equal(sd_event_new(&e), 0);
        /* One forgotten at once: its answer must never arrive, its thread ends by itself. */
        assert_int_equal(lookup_start(e, "localhost", on_answer, &never, &dropped), 0);
        dropped = lookup_free(dropped);
        assert_int_equal(lookup_start(e, "localhost", on_answer, &seen, &l), 0);
        while (seen.calls == 0)
                assert_true(sd_event_run(e, UINT64_MAX) >= 0);
        assert_int_equal(seen.calls, 1);
        assert_int_equal(seen.a.error, 0);
        assert_true(seen.a.n >= 1);
        for (size_t i = 0; i < seen.a.n; i++)
                assert_true(lookup_numeric(seen.a.addrs[i], NULL));   /* what libmosquitto gets */
        assert_int_equal(never.calls, 0);
        sd_event_unref(e);
}

int main(void) {
        const struct CMUnitTest tests[] = {
                cmocka_unit_test(test_numeric),
                cmocka_unit_test(test_name_through_the_loop),
        };
        return cmocka_run_group_tests(tests, NULL, NULL);
}
