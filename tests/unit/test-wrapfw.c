/* Unit tests for wrapfw: the simulated wrap's firmware, byte for byte against the profile. */
#include <errno.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>
#include <cmocka.h>

#include "clock.h"
#include "util.h"
#include "wire.h"
#include "wrapfw.h"

#define S(x) ((uint64_t) (x) * USEC_PER_SEC)
#define T0 S(1000)

typedef struct Sink {
        WrapFwOutput out[256];
        size_t n;
} Sink;

static void collect(const WrapFwOutput *o, void *userdata) {
        Sink *k = userdata;
        assert_true(k->n < ELEMENTSOF(k->out));
        k->out[k->n++] = *o;
}

static void run(WrapFw *fw, uint64_t now, Sink *k) {
        k->n = 0;
        wrapfw_advance(fw, now, collect, k);
}

static size_t count(const Sink *k, WrapFwChannel ch) {
        size_t c = 0;
        for (size_t i = 0; i < k->n; i++)
                c += k->out[i].channel == ch;
        return c;
}

static WireStatus last_status(const Sink *k) {
        WireStatus s = { 0 };
        const char *why;
        for (size_t i = k->n; i > 0; i--)
                if (k->out[i - 1].channel == WRAPFW_STATUS) {
                        assert_int_equal(wire_status_decode(k->out[i - 1].value, k->out[i - 1].size, &s, &why), 0);
                        return s;
                }
        fail_msg("no status notification");
        return s;
}

static uint8_t start(WrapFw *fw, uint8_t mode, int16_t setpoint, uint16_t duration, uint64_t now, uint8_t ind[3]) {
        uint8_t b[WIRE_CP_MAX_SIZE];
        size_t n = wire_request_encode(&(WireRequest) { .opcode = WIRE_OP_START, .mode = mode,
                                                         .setpoint = setpoint, .duration_s = duration }, b);
        return wrapfw_write_cp(fw, b, n, now, ind);
}

static void test_start_bytes_and_session(void **state) {
        WrapFw *fw = wrapfw_new("aa:bb:cc:00:11:22", T0);
        const uint8_t start_bytes[] = { 0x01, 0x01, 0xe8, 0x03, 0x84, 0x03 };
        uint8_t ind[3];
        Sink k;

        assert_non_null(fw);
        assert_int_equal(wrapfw_write_cp(fw, start_bytes, sizeof start_bytes, T0, ind), WIRE_RESULT_SUCCESS);
        assert_memory_equal(ind, ((uint8_t[]) { 0x80, 0x01, 0x01 }), 3);

        run(fw, T0, &k);
        /* The answer first, then the state change. */
        assert_int_equal(k.n, 2);
        assert_int_equal(k.out[0].channel, WRAPFW_CONTROL_POINT);
        assert_memory_equal(k.out[0].value, ind, 3);
        WireStatus s = last_status(&k);
        assert_int_equal(s.state, WIRE_STATE_COOLING);
        assert_int_equal(s.mode, 1);
        assert_int_equal(s.setpoint, 1000);
        assert_int_equal(s.elapsed_s, 0);
        assert_int_equal(s.remaining_s, 900);
        assert_int_equal(s.seq, 1);

        /* Status every 5 s, temperature every 5 s in a session. */
        assert_int_equal(wrapfw_next_deadline(fw), T0 + S(5));
        run(fw, T0 + S(30), &k);
        assert_int_equal(count(&k, WRAPFW_STATUS), 6);
        assert_int_equal(count(&k, WRAPFW_TEMPERATURE), 6);
        s = last_status(&k);
        assert_int_equal(s.elapsed_s, 30);
        assert_int_equal(s.remaining_s, 870);

        /* A second START while it runs is busy. */
        assert_int_equal(start(fw, 2, 4000, 600, T0 + S(31), ind), WIRE_RESULT_BUSY);
        assert_memory_equal(ind, ((uint8_t[]) { 0x80, 0x01, 0x04 }), 3);
        wrapfw_free(fw);
}

static void test_fail_safe_end(void **state) {
        WrapFw *fw = wrapfw_new("AA:BB:CC:00:11:22", T0);
        Sink k;
        WrapFwInfo info;

        assert_int_equal(start(fw, 2, 4000, 60, T0, NULL), WIRE_RESULT_SUCCESS);
        run(fw, T0 + S(59), &k);
        assert_int_equal(last_status(&k).state, WIRE_STATE_HEATING);
        run(fw, T0 + S(60), &k);
        WireStatus s = last_status(&k);
        assert_int_equal(s.state, WIRE_STATE_DONE);
        assert_int_equal(s.elapsed_s, 60);
        assert_int_equal(s.remaining_s, 0);
        assert_int_equal(s.mode, 2);
        /* No more periodic status once done; then idle. */
        run(fw, T0 + S(60) + S(WRAPFW_DONE_HOLD_S) - 1, &k);
        assert_int_equal(count(&k, WRAPFW_STATUS), 0);
        run(fw, T0 + S(60) + S(WRAPFW_DONE_HOLD_S), &k);
        s = last_status(&k);
        assert_int_equal(s.state, WIRE_STATE_IDLE);
        assert_int_equal(s.mode, 2);  /* the last session's mode */
        wrapfw_get_info(fw, T0 + S(70), &info);
        assert_int_equal(info.sessions_completed, 1);
        /* Idle: a temperature every 60 s, nothing else. */
        run(fw, T0 + S(70) + S(600), &k);
        assert_int_equal(count(&k, WRAPFW_STATUS), 0);
        assert_in_range(count(&k, WRAPFW_TEMPERATURE), 10, 11);
        wrapfw_free(fw);
}

static void test_limits_and_malformed(void **state) {
        WrapFw *fw = wrapfw_new("AA:BB:CC:00:11:22", T0);
        uint8_t ind[3];
        Sink k;

        assert_int_equal(start(fw, 1, 499, 600, T0, ind), WIRE_RESULT_INVALID_PARAMETER);
        assert_int_equal(start(fw, 1, 2001, 600, T0, ind), WIRE_RESULT_INVALID_PARAMETER);
        assert_int_equal(start(fw, 2, 3499, 600, T0, ind), WIRE_RESULT_INVALID_PARAMETER);
        assert_int_equal(start(fw, 2, 4501, 600, T0, ind), WIRE_RESULT_INVALID_PARAMETER);
        assert_int_equal(start(fw, 1, 1000, 59, T0, ind), WIRE_RESULT_INVALID_PARAMETER);
        assert_int_equal(start(fw, 1, 1000, 1801, T0, ind), WIRE_RESULT_INVALID_PARAMETER);
        assert_int_equal(start(fw, 3, 1000, 600, T0, ind), WIRE_RESULT_INVALID_PARAMETER);
        assert_int_equal(wrapfw_write_cp(fw, (uint8_t[]) { 0x01, 0x01 }, 2, T0, ind), WIRE_RESULT_INVALID_PARAMETER);
        assert_memory_equal(ind, ((uint8_t[]) { 0x80, 0x01, 0x03 }), 3);
        assert_int_equal(wrapfw_write_cp(fw, (uint8_t[]) { 0x7f }, 1, T0, ind), WIRE_RESULT_NOT_SUPPORTED);
        assert_memory_equal(ind, ((uint8_t[]) { 0x80, 0x7f, 0x02 }), 3);
        run(fw, T0, &k);
        /* Refusals answer, but change nothing: no status notification. */
        assert_int_equal(count(&k, WRAPFW_CONTROL_POINT), 9);
        assert_int_equal(count(&k, WRAPFW_STATUS), 0);
        /* The boundaries themselves are inside. */
        assert_int_equal(start(fw, 1, 500, 60, T0, ind), WIRE_RESULT_SUCCESS);
        wrapfw_free(fw);
}

static void test_button_no_gateway(void **state) {
        WrapFw *fw = wrapfw_new("AA:BB:CC:00:11:22", T0);
        Sink k;
        WrapFwInfo info;

        assert_int_equal(wrapfw_press(fw, 9, T0), -EINVAL);
        assert_int_equal(wrapfw_press(fw, WIRE_BUTTON_COLD, T0), 0);
        run(fw, T0, &k);
        assert_int_equal(k.n, 1);
        assert_int_equal(k.out[0].channel, WRAPFW_BUTTON);
        assert_memory_equal(k.out[0].value, ((uint8_t[]) { 0x01, 0x01 }), 2);
        assert_int_equal(wrapfw_next_deadline(fw), T0 + S(5));

        /* Nothing answers: the wrap stays idle and counts a "no gateway". */
        run(fw, T0 + S(5), &k);
        assert_int_equal(count(&k, WRAPFW_STATUS), 0);
        wrapfw_get_info(fw, T0 + S(5), &info);
        assert_false(info.press_pending);
        assert_int_equal(info.no_gateway_count, 1);
        assert_int_equal(info.state, WIRE_STATE_IDLE);

        /* A DENY in time clears the press. */
        assert_int_equal(wrapfw_press(fw, WIRE_BUTTON_HEAT, T0 + S(10)), 0);
        uint8_t b[WIRE_CP_MAX_SIZE];
        size_t n = wire_request_encode(&(WireRequest) { .opcode = WIRE_OP_DENY, .reason = 1, .minutes = 90 }, b);
        assert_int_equal(wrapfw_write_cp(fw, b, n, T0 + S(12), NULL), WIRE_RESULT_SUCCESS);
        run(fw, T0 + S(20), &k);
        wrapfw_get_info(fw, T0 + S(20), &info);
        assert_int_equal(info.no_gateway_count, 1);
        assert_int_equal(info.press_seq, 2);
        wrapfw_free(fw);
}

static void test_stop_button_stops_at_once(void **state) {
        WrapFw *fw = wrapfw_new("AA:BB:CC:00:11:22", T0);
        Sink k;

        assert_int_equal(start(fw, 1, 1000, 900, T0, NULL), WIRE_RESULT_SUCCESS);
        run(fw, T0, &k);
        assert_int_equal(wrapfw_press(fw, WIRE_BUTTON_STOP, T0 + S(12)), 0);
        run(fw, T0 + S(12), &k);
        /* Periodic status at 5 and 10 s, then the press, then the state change. */
        assert_int_equal(k.out[k.n - 2].channel, WRAPFW_BUTTON);
        assert_memory_equal(k.out[k.n - 2].value, ((uint8_t[]) { 0x03, 0x01 }), 2);
        WireStatus s = last_status(&k);
        assert_int_equal(s.state, WIRE_STATE_IDLE);
        /* STOP when idle is still answered with success. */
        uint8_t ind[3];
        assert_int_equal(wrapfw_write_cp(fw, (uint8_t[]) { 0x02, 0x00 }, 2, T0 + S(13), ind), WIRE_RESULT_SUCCESS);
        assert_memory_equal(ind, ((uint8_t[]) { 0x80, 0x02, 0x01 }), 3);
        wrapfw_free(fw);
}

static void test_fault(void **state) {
        WrapFw *fw = wrapfw_new("AA:BB:CC:00:11:22", T0);
        uint8_t ind[3], st[12];
        Sink k;

        assert_int_equal(start(fw, 2, 4000, 900, T0, NULL), WIRE_RESULT_SUCCESS);
        run(fw, T0, &k);
        wrapfw_set_fault(fw, WIRE_FAULT_OVER_TEMP, T0 + S(2));
        run(fw, T0 + S(2), &k);
        WireStatus s = last_status(&k);
        assert_int_equal(s.state, WIRE_STATE_FAULT);
        assert_int_equal(s.faults, WIRE_FAULT_OVER_TEMP);
        /* No periodic status: the session is over. */
        run(fw, T0 + S(30), &k);
        assert_int_equal(count(&k, WRAPFW_STATUS), 0);
        assert_int_equal(start(fw, 2, 4000, 900, T0 + S(31), ind), WIRE_RESULT_FAULT);
        assert_memory_equal(ind, ((uint8_t[]) { 0x80, 0x01, 0x05 }), 3);

        /* Cleared flags: still state 4 until the next START, which is then accepted. */
        wrapfw_set_fault(fw, 0, T0 + S(32));
        wrapfw_read_status(fw, T0 + S(32), st);
        assert_int_equal(st[0], WIRE_STATE_FAULT);
        assert_int_equal(st[10], 0);
        assert_int_equal(start(fw, 2, 4000, 900, T0 + S(33), ind), WIRE_RESULT_SUCCESS);
        wrapfw_read_status(fw, T0 + S(33), st);
        assert_int_equal(st[0], WIRE_STATE_HEATING);
        assert_int_equal(st[11], 2);

        /* A sensor failure has no pack reading and indicates NaN. */
        run(fw, T0 + S(40), &k);
        wrapfw_set_fault(fw, WIRE_FAULT_SENSOR, T0 + S(40));
        wrapfw_read_status(fw, T0 + S(40), st);
        assert_int_equal(le16_get(st + 4), 0x8000);
        run(fw, T0 + S(200), &k);
        WireTemperature t;
        const char *why;
        for (size_t i = 0; i < k.n; i++)
                if (k.out[i].channel == WRAPFW_TEMPERATURE)
                        assert_int_equal(wire_temperature_decode(k.out[i].value, k.out[i].size, &t, &why), -ENODATA);
        wrapfw_free(fw);
}

static void test_seq_wraps(void **state) {
        WrapFw *fw = wrapfw_new("AA:BB:CC:00:11:22", T0);
        uint8_t st[12];
        Sink k;
        uint64_t t = T0;

        for (int i = 0; i < 256; i++) {
                assert_int_equal(start(fw, 1, 1000, 60, t, NULL), WIRE_RESULT_SUCCESS);
                assert_int_equal(wrapfw_write_cp(fw, (uint8_t[]) { 0x02, 0x00 }, 2, t + S(1), NULL), WIRE_RESULT_SUCCESS);
                run(fw, t + S(1), &k);
                t += S(2);
        }
        wrapfw_read_status(fw, t, st);
        assert_int_equal(st[11], 0);  /* 256 STARTs: 255 then 0 */
        uint8_t seqs[256];
        for (int i = 0; i < 256; i++) {
                assert_int_equal(wrapfw_press(fw, WIRE_BUTTON_STOP, t), 0);
                run(fw, t, &k);
                assert_int_equal(k.n, 1);
                seqs[i] = k.out[0].value[1];
        }
        assert_int_equal(seqs[0], 1);
        assert_int_equal(seqs[254], 255);
        assert_int_equal(seqs[255], 0);
        wrapfw_free(fw);
}

static void test_temperature_model(void **state) {
        WrapFw *fw = wrapfw_new("AA:BB:CC:00:11:22", T0);
        WrapFwInfo info;
        Sink k;

        wrapfw_get_info(fw, T0, &info);
        assert_int_equal(info.skin, WRAPFW_SKIN_BASELINE_CENTI);
        assert_int_equal(start(fw, 1, 1000, 900, T0, NULL), WIRE_RESULT_SUCCESS);
        run(fw, T0 + S(900), &k);
        wrapfw_get_info(fw, T0 + S(600), &info);
        /* Toward the setpoint, never past it. */
        assert_in_range(info.skin, 1000, 1800);
        assert_in_range(info.pack, 1000, 1100);

        /* Every indication decodes as a body temperature in °C. */
        WireTemperature t;
        const char *why;
        int32_t prev = INT32_MAX;
        for (size_t i = 0; i < k.n; i++)
                if (k.out[i].channel == WRAPFW_TEMPERATURE) {
                        assert_int_equal(wire_temperature_decode(k.out[i].value, k.out[i].size, &t, &why), 0);
                        assert_false(t.fahrenheit);
                        assert_true(t.has_type);
                        assert_int_equal(t.type, 2);
                        assert_true(t.centi_c <= prev);
                        prev = t.centi_c;
                }

        /* Recovers toward the baseline when idle. */
        run(fw, T0 + S(900 + 3600), &k);
        wrapfw_get_info(fw, T0 + S(900 + 3600), &info);
        assert_in_range(info.skin, 3200, 3300);

        /* A pinned skin value stays put and is what the next indication carries. */
        run(fw, T0 + S(5000), &k);
        wrapfw_set_skin(fw, 750, true, T0 + S(5000));
        run(fw, T0 + S(5100), &k);
        assert_true(count(&k, WRAPFW_TEMPERATURE) >= 1);
        for (size_t i = 0; i < k.n; i++)
                if (k.out[i].channel == WRAPFW_TEMPERATURE) {
                        assert_int_equal(wire_temperature_decode(k.out[i].value, k.out[i].size, &t, &why), 0);
                        assert_int_equal(t.centi_c, 750);
                }
        wrapfw_free(fw);
}

static void test_battery(void **state) {
        WrapFw *fw = wrapfw_new("AA:BB:CC:00:11:22", T0);
        Sink k;

        assert_null(wrapfw_new("not-an-address", T0));
        assert_int_equal(wrapfw_battery(fw), 87);
        wrapfw_set_battery(fw, 42, T0);
        wrapfw_set_battery(fw, 42, T0);
        run(fw, T0, &k);
        assert_int_equal(k.n, 1);
        assert_int_equal(k.out[0].channel, WRAPFW_BATTERY);
        assert_int_equal(k.out[0].value[0], 42);
        wrapfw_free(fw);
}

int main(void) {
        const struct CMUnitTest tests[] = {
                cmocka_unit_test(test_start_bytes_and_session),
                cmocka_unit_test(test_fail_safe_end),
                cmocka_unit_test(test_limits_and_malformed),
                cmocka_unit_test(test_button_no_gateway),
                cmocka_unit_test(test_stop_button_stops_at_once),
                cmocka_unit_test(test_fault),
                cmocka_unit_test(test_seq_wraps),
                cmocka_unit_test(test_temperature_model),
                cmocka_unit_test(test_battery),
        };
        return cmocka_run_group_tests(tests, NULL, NULL);
}
