/* fuzz-wire: every wire decoder on arbitrary bytes, checking what must hold for any input. */
#include <assert.h>
#include <errno.h>
#include <math.h>
#include <string.h>

#include "util.h"
#include "wire.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

/* The same input is read as every characteristic: a wrap's bytes reach us without any
 * selector, and each decoder must stand on its own against all of them. Invariants are
 * checked with abort() rather than assert() so that they hold in every build type. */
#define CHECK(x) do { if (!(x)) abort(); } while (0)

static bool raw_is_special(uint32_t raw) {
        uint32_t m = raw & 0xFFFFFFu;

        return (raw >> 24) == 0 &&
                (m == 0x7FFFFF || m == 0x800000 || m == 0x7FFFFE || m == 0x800002 || m == 0x800001);
}

static double raw_value(uint32_t raw) {
        int32_t m = (int32_t) (raw & 0xFFFFFFu);
        int e = (int) (raw >> 24);

        if (m & 0x800000)
                m -= 0x1000000;
        if (e & 0x80)
                e -= 0x100;
        return m * pow(10, e);
}

static void fuzz_float(const uint8_t *data, size_t size) {
        int32_t c = 0x5a5a5a5a;
        uint32_t raw;
        double want;
        int r;

        if (size < 4)
                return;
        raw = le32_get(data);
        r = wire_float_to_centi(raw, &c);
        if (raw_is_special(raw)) {
                CHECK(r == -ENODATA);
                CHECK(c == 0x5a5a5a5a);
                return;
        }
        /* Checked against floating point: exact enough here, since int32 has 10 digits. */
        want = raw_value(raw) * 100;
        if (r == -ERANGE) {
                CHECK(fabs(want) > 2147483647.0);
                CHECK(c == 0x5a5a5a5a);
                return;
        }
        CHECK(r == 0);
        CHECK(fabs(c - want) <= 0.5 + 1e-9 * fabs(want) + 1e-9);
        /* Half away from zero: never rounds toward zero on an exact half. */
        if (fabs(fabs(c - want) - 0.5) < 1e-9)
                CHECK(fabs((double) c) > fabs(want));
}

static void fuzz_status(const uint8_t *data, size_t size) {
        WireStatus s, s2;
        uint8_t out[WIRE_STATUS_SIZE];
        const char *why = NULL;

        if (wire_status_decode(data, size, &s, &why) < 0) {
                CHECK(why);
                CHECK(size < WIRE_STATUS_SIZE || data[0] > 4 || data[1] > 2);
                return;
        }
        CHECK(size >= WIRE_STATUS_SIZE);
        CHECK(s.state <= WIRE_STATE_FAULT && s.mode <= 2);
        CHECK(wire_status_encode(&s, out) == WIRE_STATUS_SIZE);
        CHECK(memcmp(out, data, WIRE_STATUS_SIZE) == 0);
        CHECK(wire_status_decode(out, sizeof out, &s2, NULL) == 0);
        CHECK(memcmp(&s, &s2, sizeof s) == 0);
        CHECK(strcmp(wire_state_to_string(s.state), "unknown") != 0);
}

static void fuzz_button(const uint8_t *data, size_t size) {
        WireButton e;
        uint8_t out[2];
        const char *why = NULL;

        if (wire_button_decode(data, size, &e, &why) < 0) {
                CHECK(why);
                return;
        }
        CHECK(size == 2 && e.event >= 1 && e.event <= 3);
        CHECK(wire_button_encode(&e, out) == 2);
        CHECK(memcmp(out, data, 2) == 0);
}

static void fuzz_temperature(const uint8_t *data, size_t size) {
        WireTemperature t, t2;
        uint8_t out[WIRE_TEMPERATURE_MAX_SIZE];
        const char *why = NULL;
        size_t n;
        int r;

        r = wire_temperature_decode(data, size, &t, &why);
        if (r == -ENODATA) {
                CHECK(size >= 5 && raw_is_special(le32_get(data + 1)));
                return;
        }
        if (r < 0) {
                CHECK(r == -EBADMSG && why);
                return;
        }
        CHECK(r == 0);

        /* Never a temperature from a special value, nor one no sensor could read. */
        CHECK(!raw_is_special(le32_get(data + 1)));
        CHECK(t.centi_c >= -5000 && t.centi_c <= 15000);
        CHECK(size == 5 + ((data[0] & 2) ? 7u : 0u) + ((data[0] & 4) ? 1u : 0u));
        /* A bad time stamp or type is dropped, never kept half. */
        CHECK(t.has_timestamp ? (data[0] & 2) != 0 : t.year == 0 && t.month == 0 && t.seconds == 0);
        CHECK(t.has_type ? t.type >= 1 && t.type <= 9 : t.type == 0);
        CHECK(t.fahrenheit == !!(data[0] & 1));

        /* The conversion, against floating point. */
        if (t.fahrenheit) {
                double want = (raw_value(le32_get(data + 1)) - 32) * 500 / 9;
                CHECK(fabs(t.centi_c - want) <= 0.5 + 1e-9);
        } else {
                double want = raw_value(le32_get(data + 1)) * 100;
                CHECK(fabs(t.centi_c - want) <= 0.5 + 1e-9);
        }

        /* Re-encoded in °C it decodes to the same reading, time stamp and type. */
        t.fahrenheit = false;
        n = wire_temperature_encode(&t, out);
        CHECK(n == 5 + (t.has_timestamp ? 7u : 0u) + (t.has_type ? 1u : 0u));
        CHECK(wire_temperature_decode(out, n, &t2, NULL) == 0);
        CHECK(memcmp(&t, &t2, sizeof t) == 0);
        /* Stable from there on: encode(decode(encode(x))) == encode(x). */
        {
                uint8_t out2[WIRE_TEMPERATURE_MAX_SIZE];

                CHECK(wire_temperature_encode(&t2, out2) == n);
                CHECK(memcmp(out, out2, n) == 0);
        }
}

static void fuzz_request(const uint8_t *data, size_t size) {
        WireRequest q, q2;
        uint8_t out[WIRE_CP_MAX_SIZE];
        uint8_t r;
        size_t n;

        r = wire_request_decode(data, size, &q);
        CHECK(r == WIRE_RESULT_SUCCESS || r == WIRE_RESULT_NOT_SUPPORTED || r == WIRE_RESULT_INVALID_PARAMETER);
        CHECK(strcmp(wire_result_to_string(r), "unknown") != 0);
        if (r == WIRE_RESULT_NOT_SUPPORTED)
                CHECK(size >= 1 && (data[0] < WIRE_OP_START || data[0] > WIRE_OP_DENY));
        if (r != WIRE_RESULT_SUCCESS)
                return;

        if (q.opcode == WIRE_OP_START) {
                CHECK(q.mode == 1 || q.mode == 2);
                CHECK(q.mode == 1 ? q.setpoint >= 500 && q.setpoint <= 2000 : q.setpoint >= 3500 && q.setpoint <= 4500);
                CHECK(q.duration_s >= 60 && q.duration_s <= 1800);
        }
        n = wire_request_encode(&q, out);
        CHECK(n == size);
        CHECK(memcmp(out, data, n) == 0);
        CHECK(wire_request_decode(out, n, &q2) == WIRE_RESULT_SUCCESS);
        /* Field by field: a struct copy need not copy the padding byte after .reason, and
         * gcc -O2 does not (memcmp then read stack garbage in the plain-gcc seed replay). */
        CHECK(q.opcode == q2.opcode && q.mode == q2.mode && q.setpoint == q2.setpoint &&
              q.duration_s == q2.duration_s && q.reason == q2.reason && q.minutes == q2.minutes);
}

static void fuzz_response(const uint8_t *data, size_t size) {
        WireResponse p;
        uint8_t out[3];
        const char *why = NULL;

        if (wire_response_decode(data, size, &p, &why) < 0) {
                CHECK(why);
                return;
        }
        CHECK(wire_response_encode(&p, out) == 3);
        CHECK(size == 3 && memcmp(out, data, 3) == 0);
}

static void fuzz_battery(const uint8_t *data, size_t size) {
        uint8_t pct;
        const char *why = NULL;

        if (wire_battery_decode(data, size, &pct, &why) < 0) {
                CHECK(why);
                return;
        }
        CHECK(size == 1 && pct <= 100 && pct == data[0]);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
        /* Decoders get a buffer of exactly `size` bytes, so ASan sees any read past it. */
        /* calloc: an empty input leaves nothing uninitialized for gcc to warn about. */
        uint8_t *copy = calloc(1, size ? size : 1);

        if (!copy)
                return 0;
        if (size > 0)
                memcpy(copy, data, size);

        fuzz_float(copy, size);
        fuzz_status(copy, size);
        fuzz_button(copy, size);
        fuzz_temperature(copy, size);
        fuzz_request(copy, size);
        fuzz_response(copy, size);
        fuzz_battery(copy, size);
        /* And the float again at every offset a temperature value could sit. */
        if (size > 1)
                fuzz_float(copy + 1, size - 1);

        free(copy);
        return 0;
}
