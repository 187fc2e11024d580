/* Unit tests for wire: byte vectors worked out by hand from shared/wrap-profile.md. */
#include <errno.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>
#include <cmocka.h>

#include "util.h"
#include "wire.h"

#define BYTES(...) ((const uint8_t[]) { __VA_ARGS__ })
#define NBYTES(...) sizeof((const uint8_t[]) { __VA_ARGS__ })
/* Decodes the literal bytes with decoder `fn` into `out`, returning its result. */
#define DECODE(fn, out, why, ...) fn(BYTES(__VA_ARGS__), NBYTES(__VA_ARGS__), (out), (why))

/* A rejection: -EBADMSG, a reason, and the output left alone. */
#define ASSERT_REJECTED(fn, T, ...)                                             \
        do {                                                                    \
                T _out, _before;                                                \
                const char *_why = NULL;                                        \
                memset(&_out, 0xa5, sizeof _out);                               \
                memcpy(&_before, &_out, sizeof _out);                           \
                assert_int_equal(DECODE(fn, &_out, &_why, __VA_ARGS__), -EBADMSG); \
                assert_non_null(_why);                                          \
                assert_memory_equal(&_out, &_before, sizeof _out);              \
        } while (0)

/* ---- Status ---- */

static void test_status_vector(void **state) {
        WireStatus s;
        const char *why = NULL;
        uint8_t out[WIRE_STATUS_SIZE];
        /* cooling, cold, 10.00 °C, pack 12.34 °C, 300 s elapsed, 600 s left, not worn, seq 7 */
        static const uint8_t v[] = { 0x01, 0x01, 0xe8, 0x03, 0xd2, 0x04, 0x2c, 0x01, 0x58, 0x02, 0x10, 0x07 };

        assert_int_equal(wire_status_decode(v, sizeof v, &s, &why), 0);
        assert_int_equal(s.state, WIRE_STATE_COOLING);
        assert_int_equal(s.mode, 1);
        assert_int_equal(s.setpoint, 1000);
        assert_int_equal(s.pack, 1234);
        assert_int_equal(s.elapsed_s, 300);
        assert_int_equal(s.remaining_s, 600);
        assert_int_equal(s.faults, WIRE_FAULT_NOT_WORN);
        assert_int_equal(s.seq, 7);

        assert_int_equal(wire_status_encode(&s, out), WIRE_STATUS_SIZE);
        assert_memory_equal(out, v, sizeof v);
}

static void test_status_negative_and_no_reading(void **state) {
        WireStatus s;
        uint8_t out[WIRE_STATUS_SIZE];
        /* fault, cold, −5.00 °C (0xfe0c), pack 0x8000, 65535 s elapsed, 0 left, all faults, seq 255 */
        static const uint8_t v[] = { 0x04, 0x01, 0x0c, 0xfe, 0x00, 0x80, 0xff, 0xff, 0x00, 0x00, 0x3f, 0xff };

        assert_int_equal(wire_status_decode(v, sizeof v, &s, NULL), 0);
        assert_int_equal(s.state, WIRE_STATE_FAULT);
        assert_int_equal(s.setpoint, -500);
        assert_int_equal(s.pack, WIRE_NO_READING);
        assert_int_equal(s.elapsed_s, 65535);
        assert_int_equal(s.faults, 0x3f);
        assert_int_equal(s.seq, 255);
        assert_int_equal(wire_status_encode(&s, out), WIRE_STATUS_SIZE);
        assert_memory_equal(out, v, sizeof v);
}

static void test_status_longer_accepted(void **state) {
        WireStatus s;
        /* idle, heat last, 40.00 °C, pack 25.00 °C, then two bytes a later firmware appended */
        static const uint8_t v[] = { 0x00, 0x02, 0xa0, 0x0f, 0xc4, 0x09, 0x00, 0x00, 0x00, 0x00, 0x00, 0x03,
                                     0xde, 0xad };

        assert_int_equal(wire_status_decode(v, 13, &s, NULL), 0);
        assert_int_equal(wire_status_decode(v, sizeof v, &s, NULL), 0);
        assert_int_equal(s.state, WIRE_STATE_IDLE);
        assert_int_equal(s.mode, 2);
        assert_int_equal(s.setpoint, 4000);
        assert_int_equal(s.pack, 2500);
        assert_int_equal(s.seq, 3);
}

static void test_status_rejected(void **state) {
        static const uint8_t v[] = { 0x01, 0x01, 0xe8, 0x03, 0xd2, 0x04, 0x2c, 0x01, 0x58, 0x02, 0x10, 0x07 };
        WireStatus s, before;
        const char *why;

        for (size_t n = 0; n < WIRE_STATUS_SIZE; n++) {
                memset(&s, 0xa5, sizeof s);
                before = s;
                why = NULL;
                assert_int_equal(wire_status_decode(v, n, &s, &why), -EBADMSG);
                assert_non_null(why);
                assert_memory_equal(&s, &before, sizeof s);
        }
        /* state 5 and mode 3 are not in the profile */
        ASSERT_REJECTED(wire_status_decode, WireStatus, 0x05, 0x01, 0xe8, 0x03, 0xd2, 0x04, 0x2c, 0x01, 0x58, 0x02, 0x10, 0x07);
        ASSERT_REJECTED(wire_status_decode, WireStatus, 0xff, 0x01, 0xe8, 0x03, 0xd2, 0x04, 0x2c, 0x01, 0x58, 0x02, 0x10, 0x07);
        ASSERT_REJECTED(wire_status_decode, WireStatus, 0x01, 0x03, 0xe8, 0x03, 0xd2, 0x04, 0x2c, 0x01, 0x58, 0x02, 0x10, 0x07);
        assert_int_equal(wire_status_decode(NULL, 0, &s, NULL), -EBADMSG);
}

/* ---- Button ---- */

static void test_button(void **state) {
        WireButton e;
        uint8_t out[2];

        assert_int_equal(DECODE(wire_button_decode, &e, NULL, 0x01, 0x05), 0);
        assert_int_equal(e.event, WIRE_BUTTON_COLD);
        assert_int_equal(e.seq, 5);
        assert_int_equal(DECODE(wire_button_decode, &e, NULL, 0x02, 0x00), 0);
        assert_int_equal(e.event, WIRE_BUTTON_HEAT);
        assert_int_equal(DECODE(wire_button_decode, &e, NULL, 0x03, 0xff), 0);
        assert_int_equal(e.event, WIRE_BUTTON_STOP);
        assert_int_equal(e.seq, 255);
        assert_int_equal(wire_button_encode(&e, out), 2);
        assert_memory_equal(out, BYTES(0x03, 0xff), 2);

        ASSERT_REJECTED(wire_button_decode, WireButton, 0x00, 0x01);
        ASSERT_REJECTED(wire_button_decode, WireButton, 0x04, 0x01);
        ASSERT_REJECTED(wire_button_decode, WireButton, 0xff, 0x01);
        ASSERT_REJECTED(wire_button_decode, WireButton, 0x01);
        ASSERT_REJECTED(wire_button_decode, WireButton, 0x01, 0x05, 0x00);
        assert_int_equal(wire_button_decode(BYTES(0x01), 0, &e, NULL), -EBADMSG);
}

/* ---- IEEE 11073 FLOAT ---- */

static void test_float(void **state) {
        int32_t c;

        assert_int_equal(wire_float_to_centi(0xfe000e74, &c), 0);    /* 3700 × 10^-2 */
        assert_int_equal(c, 3700);
        assert_int_equal(wire_float_to_centi(0xff000172, &c), 0);    /* 370 × 10^-1 */
        assert_int_equal(c, 3700);
        assert_int_equal(wire_float_to_centi(0x00000025, &c), 0);    /* 37 × 10^0 */
        assert_int_equal(c, 3700);
        assert_int_equal(wire_float_to_centi(0x01000004, &c), 0);    /* 4 × 10^1 */
        assert_int_equal(c, 4000);
        assert_int_equal(wire_float_to_centi(0xfefffdf3, &c), 0);    /* −525 × 10^-2 */
        assert_int_equal(c, -525);
        assert_int_equal(wire_float_to_centi(0xfd008f11, &c), 0);    /* 36625 × 10^-3: .5 up */
        assert_int_equal(c, 3663);
        assert_int_equal(wire_float_to_centi(0xfdff70ef, &c), 0);    /* −36625 × 10^-3: .5 away from 0 */
        assert_int_equal(c, -3663);
        assert_int_equal(wire_float_to_centi(0xfd000005, &c), 0);    /* 0.005 */
        assert_int_equal(c, 1);
        assert_int_equal(wire_float_to_centi(0xfdfffffb, &c), 0);    /* −0.005 */
        assert_int_equal(c, -1);
        assert_int_equal(wire_float_to_centi(0xfc000031, &c), 0);    /* 0.0049 */
        assert_int_equal(c, 0);
        assert_int_equal(wire_float_to_centi(0xfc00ea5f, &c), 0);    /* 59999 × 10^-4 = 5.9999 */
        assert_int_equal(c, 600);
        assert_int_equal(wire_float_to_centi(0x807fffff, &c), 0);    /* 8388607 × 10^-128 */
        assert_int_equal(c, 0);
        assert_int_equal(wire_float_to_centi(0xf77fffff, &c), 0);    /* 8388607 × 10^-9 = 0.0084 */
        assert_int_equal(c, 1);
        assert_int_equal(wire_float_to_centi(0xf67fffff, &c), 0);    /* × 10^-10 */
        assert_int_equal(c, 0);
        assert_int_equal(wire_float_to_centi(0x7f000000, &c), 0);    /* 0 × 10^127 */
        assert_int_equal(c, 0);

}

static void test_float_range(void **state) {
        int32_t c = 42;

        /* 4697620 × 10^2 = 469762000 hundredths: fits int32. */
        assert_int_equal(wire_float_to_centi(0x0047ae14, &c), 0);
        assert_int_equal(c, 469762000);
        /* 4697620 × 10^1 hundredths ×10 → 4697620000: past int32. */
        c = 42;
        assert_int_equal(wire_float_to_centi(0x0147ae14, &c), -ERANGE);
        assert_int_equal(c, 42);
        assert_int_equal(wire_float_to_centi(0x7f000001, &c), -ERANGE);
        assert_int_equal(wire_float_to_centi(0x7f800000, &c), -ERANGE);  /* −8388608 × 10^127 */
}

static void test_float_special(void **state) {
        static const uint32_t special[] = { 0x7fffff, 0x800000, 0x7ffffe, 0x800002, 0x800001 };
        int32_t c = 42;

        for (size_t i = 0; i < ELEMENTSOF(special); i++) {
                assert_int_equal(wire_float_to_centi(special[i], &c), -ENODATA);
                assert_int_equal(c, 42);
        }
        /* The same mantissas are ordinary numbers with any other exponent. */
        assert_int_equal(wire_float_to_centi(0xfe7fffff, &c), 0);
        assert_int_equal(c, 8388607);
        assert_int_equal(wire_float_to_centi(0xfe800000, &c), 0);
        assert_int_equal(c, -8388608);
        assert_int_equal(wire_float_to_centi(0xfe800002, &c), 0);
        assert_int_equal(c, -8388606);
}

/* ---- Temperature Measurement ---- */

static int32_t temp_ok(const uint8_t *b, size_t n) {
        WireTemperature t;
        const char *why = NULL;

        assert_int_equal(wire_temperature_decode(b, n, &t, &why), 0);
        return t.centi_c;
}
#define TEMP(...) temp_ok(BYTES(__VA_ARGS__), NBYTES(__VA_ARGS__))

static void test_temperature_celsius(void **state) {
        WireTemperature t;
        uint8_t out[WIRE_TEMPERATURE_MAX_SIZE];

        assert_int_equal(DECODE(wire_temperature_decode, &t, NULL, 0x00, 0x74, 0x0e, 0x00, 0xfe), 0);
        assert_int_equal(t.centi_c, 3700);
        assert_false(t.fahrenheit);
        assert_false(t.has_timestamp);
        assert_false(t.has_type);
        assert_int_equal(wire_temperature_encode(&t, out), 5);
        assert_memory_equal(out, BYTES(0x00, 0x74, 0x0e, 0x00, 0xfe), 5);

        assert_int_equal(TEMP(0x00, 0x25, 0x00, 0x00, 0x00), 3700);          /* 37 × 10^0 */
        assert_int_equal(TEMP(0x00, 0xf3, 0xfd, 0xff, 0xfe), -525);          /* −5.25 */
        assert_int_equal(TEMP(0x00, 0x11, 0x8f, 0x00, 0xfd), 3663);          /* 36.625 */
        assert_int_equal(TEMP(0x00, 0xef, 0x70, 0xff, 0xfd), -3663);         /* −36.625 */
        assert_int_equal(TEMP(0x00, 0x98, 0x3a, 0x00, 0xfe), 15000);         /* 150.00: the edge */
        assert_int_equal(TEMP(0x00, 0x78, 0xec, 0xff, 0xfe), -5000);         /* −50.00: the edge */
        assert_int_equal(TEMP(0x00, 0x00, 0x00, 0x00, 0x7f), 0);             /* 0 × 10^127 */
        assert_int_equal(TEMP(0x00, 0xff, 0xff, 0x7f, 0x80), 0);             /* tiny */
}

static void test_temperature_fahrenheit(void **state) {
        WireTemperature t;
        uint8_t out[WIRE_TEMPERATURE_MAX_SIZE];

        /* 986 × 10^-1 °F = 98.6 °F = 37.00 °C */
        assert_int_equal(DECODE(wire_temperature_decode, &t, NULL, 0x01, 0xda, 0x03, 0x00, 0xff), 0);
        assert_int_equal(t.centi_c, 3700);
        assert_true(t.fahrenheit);

        assert_int_equal(TEMP(0x01, 0x64, 0x00, 0x00, 0x00), 3778);          /* 100 °F = 37.777… */
        assert_int_equal(TEMP(0x01, 0x20, 0x00, 0x00, 0x00), 0);             /* 32 °F */
        assert_int_equal(TEMP(0x01, 0xd8, 0xff, 0xff, 0x00), -4000);         /* −40 °F = −40 °C */
        assert_int_equal(TEMP(0x01, 0x00, 0x00, 0x00, 0x00), -1778);         /* 0 °F = −17.777… */
        assert_int_equal(TEMP(0x01, 0x09, 0x7d, 0x00, 0xfd), 1);             /* 32.009 °F = 0.005 °C: .5 up */
        assert_int_equal(TEMP(0x01, 0xf7, 0x7c, 0x00, 0xfd), -1);            /* 31.991 °F = −0.005 °C: away from 0 */
        assert_int_equal(TEMP(0x01, 0x2c, 0x01, 0x00, 0x00), 14889);         /* 300 °F = 148.888… */
        assert_int_equal(TEMP(0x01, 0xf8, 0x75, 0x00, 0xfe), 15000);         /* 302.00 °F = 150.00 */
        /* Extreme exponents: the value is ~0 °F, whatever the mantissa. */
        assert_int_equal(TEMP(0x01, 0xff, 0xff, 0x7f, 0xf2), -1778);         /* 8388607 × 10^-14 */
        assert_int_equal(TEMP(0x01, 0xff, 0xff, 0x7f, 0xf1), -1778);         /* × 10^-15 */
        assert_int_equal(TEMP(0x01, 0x00, 0x00, 0x80, 0x80), -1778);         /* −8388608 × 10^-128 */

        /* Encoding in °F: centi_c then means hundredths of °F (9860 = 0x2684). */
        t = (WireTemperature) { .centi_c = 9860, .fahrenheit = true };
        assert_int_equal(wire_temperature_encode(&t, out), 5);
        assert_memory_equal(out, BYTES(0x01, 0x84, 0x26, 0x00, 0xfe), 5);
        assert_int_equal(temp_ok(out, 5), 3700);
}

static void test_temperature_implausible(void **state) {
        ASSERT_REJECTED(wire_temperature_decode, WireTemperature, 0x00, 0x99, 0x3a, 0x00, 0xfe);   /* 150.01 */
        ASSERT_REJECTED(wire_temperature_decode, WireTemperature, 0x00, 0x77, 0xec, 0xff, 0xfe);   /* −50.01 */
        ASSERT_REJECTED(wire_temperature_decode, WireTemperature, 0x00, 0xff, 0xff, 0x7f, 0xfe);   /* 83886.07 */
        ASSERT_REJECTED(wire_temperature_decode, WireTemperature, 0x00, 0x01, 0x00, 0x00, 0x7f);   /* 10^127 */
        ASSERT_REJECTED(wire_temperature_decode, WireTemperature, 0x00, 0x00, 0x00, 0x80, 0x7f);   /* −8388608 × 10^127 */
        ASSERT_REJECTED(wire_temperature_decode, WireTemperature, 0x01, 0xfa, 0x75, 0x00, 0xfe);   /* 302.02 °F */
        ASSERT_REJECTED(wire_temperature_decode, WireTemperature, 0x01, 0x01, 0x00, 0x00, 0x7f);   /* 10^127 °F */
        ASSERT_REJECTED(wire_temperature_decode, WireTemperature, 0x01, 0xff, 0xff, 0x7f, 0x01);   /* 83886070 °F */
}

static void test_temperature_special(void **state) {
        static const uint32_t special[] = { 0x7fffff, 0x800000, 0x7ffffe, 0x800002, 0x800001 };
        uint8_t b[13];

        for (size_t i = 0; i < ELEMENTSOF(special); i++) {
                for (uint8_t unit = 0; unit <= 1; unit++) {
                        WireTemperature t = { .centi_c = 4242 };
                        const char *why = NULL;

                        assert_int_equal(wire_temperature_encode_special(special[i], b), 5);
                        assert_int_equal(b[0], 0);
                        assert_int_equal(le32_get(b + 1), special[i]);
                        b[0] = unit;
                        assert_int_equal(wire_temperature_decode(b, 5, &t, &why), -ENODATA);
                        assert_string_equal(why, "no reading");
                        assert_int_equal(t.centi_c, 4242);
                }
        }
        /* NaN with a time stamp and type: still no reading. */
        assert_int_equal(wire_temperature_decode(
                BYTES(0x06, 0xff, 0xff, 0x7f, 0x00, 0xea, 0x07, 0x0b, 0x15, 0x0e, 0x37, 0x1e, 0x02), 13,
                &(WireTemperature) { 0 }, NULL), -ENODATA);
        /* Only the five special mantissas can be encoded as such. */
        assert_int_equal(wire_temperature_encode_special(0x123456, b), 0);
        assert_int_equal(wire_temperature_encode_special(0xfe7fffff, b), 0);
}

static void test_temperature_timestamp_type(void **state) {
        WireTemperature t;
        uint8_t out[WIRE_TEMPERATURE_MAX_SIZE];
        /* 37.00 °C, 2026-11-21 14:55:30, body (general) */
        static const uint8_t v[] = { 0x06, 0x74, 0x0e, 0x00, 0xfe, 0xea, 0x07, 0x0b, 0x15, 0x0e, 0x37, 0x1e, 0x02 };

        assert_int_equal(wire_temperature_decode(v, sizeof v, &t, NULL), 0);
        assert_int_equal(t.centi_c, 3700);
        assert_true(t.has_timestamp);
        assert_int_equal(t.year, 2026);
        assert_int_equal(t.month, 11);
        assert_int_equal(t.day, 21);
        assert_int_equal(t.hours, 14);
        assert_int_equal(t.minutes, 55);
        assert_int_equal(t.seconds, 30);
        assert_true(t.has_type);
        assert_int_equal(t.type, 2);
        assert_int_equal(wire_temperature_encode(&t, out), sizeof v);
        assert_memory_equal(out, v, sizeof v);

        /* time stamp only */
        assert_int_equal(DECODE(wire_temperature_decode, &t, NULL,
                                0x02, 0x74, 0x0e, 0x00, 0xfe, 0xea, 0x07, 0x0b, 0x15, 0x0e, 0x37, 0x1e), 0);
        assert_true(t.has_timestamp);
        assert_false(t.has_type);
        assert_int_equal(wire_temperature_encode(&t, out), 12);
        assert_int_equal(out[0], 0x02);
        assert_memory_equal(out + 1, v + 1, 11);

        /* type only */
        assert_int_equal(DECODE(wire_temperature_decode, &t, NULL, 0x04, 0x74, 0x0e, 0x00, 0xfe, 0x02), 0);
        assert_false(t.has_timestamp);
        assert_true(t.has_type);
        assert_int_equal(t.type, 2);

        /* unknown year, month and day (0 = not known in the SIG's Date Time) */
        assert_int_equal(DECODE(wire_temperature_decode, &t, NULL,
                                0x02, 0x74, 0x0e, 0x00, 0xfe, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00), 0);
        assert_int_equal(t.year, 0);
        /* the edges: 1582-12-31 23:59:59 and 9999-01-01 */
        assert_int_equal(TEMP(0x02, 0x74, 0x0e, 0x00, 0xfe, 0x2e, 0x06, 0x0c, 0x1f, 0x17, 0x3b, 0x3b), 3700);
        assert_int_equal(TEMP(0x02, 0x74, 0x0e, 0x00, 0xfe, 0x0f, 0x27, 0x01, 0x01, 0x00, 0x00, 0x00), 3700);
        /* every SIG temperature type, 1..9 */
        for (uint8_t type = 1; type <= 9; type++)
                assert_int_equal(temp_ok((const uint8_t[]) { 0x04, 0x74, 0x0e, 0x00, 0xfe, type }, 6), 3700);
}

static void test_temperature_reserved_flags(void **state) {
        WireTemperature t;

        /* Bits 3–7 set: ignored. */
        assert_int_equal(DECODE(wire_temperature_decode, &t, NULL, 0xf8, 0x74, 0x0e, 0x00, 0xfe), 0);
        assert_int_equal(t.centi_c, 3700);
        assert_false(t.fahrenheit);
        assert_int_equal(DECODE(wire_temperature_decode, &t, NULL, 0xf9, 0xda, 0x03, 0x00, 0xff), 0);
        assert_int_equal(t.centi_c, 3700);
        assert_true(t.fahrenheit);
        assert_int_equal(DECODE(wire_temperature_decode, &t, NULL,
                                0xfe, 0x74, 0x0e, 0x00, 0xfe, 0xea, 0x07, 0x0b, 0x15, 0x0e, 0x37, 0x1e, 0x02), 0);
        assert_true(t.has_timestamp);
        assert_true(t.has_type);
}

static void test_temperature_rejected(void **state) {
        static const uint8_t full[] = { 0x06, 0x74, 0x0e, 0x00, 0xfe, 0xea, 0x07, 0x0b, 0x15, 0x0e, 0x37, 0x1e, 0x02 };
        WireTemperature t;
        const char *why;

        /* Every length short of what the flags say. */
        for (size_t n = 0; n < sizeof full; n++) {
                why = NULL;
                assert_int_equal(wire_temperature_decode(full, n, &t, &why), -EBADMSG);
                assert_non_null(why);
        }
        /* Longer than the flags say. */
        ASSERT_REJECTED(wire_temperature_decode, WireTemperature, 0x00, 0x74, 0x0e, 0x00, 0xfe, 0x02);
        ASSERT_REJECTED(wire_temperature_decode, WireTemperature, 0x04, 0x74, 0x0e, 0x00, 0xfe, 0x02, 0x00);
        ASSERT_REJECTED(wire_temperature_decode, WireTemperature,
                        0x02, 0x74, 0x0e, 0x00, 0xfe, 0xea, 0x07, 0x0b, 0x15, 0x0e, 0x37, 0x1e, 0x02);
        ASSERT_REJECTED(wire_temperature_decode, WireTemperature, 0x00, 0x74, 0x0e, 0x00);
        ASSERT_REJECTED(wire_temperature_decode, WireTemperature, 0x00);
        assert_int_equal(wire_temperature_decode(NULL, 0, &t, NULL), -EBADMSG);

}

/* Issue 8: a bad time stamp or a reserved type byte drops that field, never the reading (R5). */
static void test_temperature_bad_fields_kept(void **state) {
        WireTemperature t;

        /* Time stamp fields out of range: year 1581, 10000, month 13, day 32, 24 h, 60 min, 60 s. */
#define TS(y0, y1, mo, d, h, mi, s) do { \
        assert_int_equal(DECODE(wire_temperature_decode, &t, NULL, 0x06, 0x74, 0x0e, 0x00, 0xfe, \
                                y0, y1, mo, d, h, mi, s, 0x02), 0); \
        assert_int_equal(t.centi_c, 3700); \
        assert_false(t.has_timestamp); \
        assert_true(t.has_type); \
} while (0)
        TS(0x2d, 0x06, 0x01, 0x01, 0x00, 0x00, 0x00);
        TS(0x10, 0x27, 0x01, 0x01, 0x00, 0x00, 0x00);
        TS(0x01, 0x00, 0x01, 0x01, 0x00, 0x00, 0x00);
        TS(0xea, 0x07, 0x0d, 0x01, 0x00, 0x00, 0x00);
        TS(0xea, 0x07, 0x01, 0x20, 0x00, 0x00, 0x00);
        TS(0xea, 0x07, 0x01, 0x01, 0x18, 0x00, 0x00);
        TS(0xea, 0x07, 0x01, 0x01, 0x00, 0x3c, 0x00);
        TS(0xea, 0x07, 0x01, 0x01, 0x00, 0x00, 0x3c);
        TS(0xea, 0x07, 0xff, 0xff, 0xff, 0xff, 0xff);
#undef TS
        /* Reserved temperature types. */
        for (unsigned type = 0; type <= 0xff; type += type == 0 ? 10 : 1) {
                assert_int_equal(DECODE(wire_temperature_decode, &t, NULL, 0x04, 0x74, 0x0e, 0x00, 0xfe, type), 0);
                assert_int_equal(t.centi_c, 3700);
                assert_false(t.has_type);
        }
        /* Both bad, in °F: 98.6 °F is still 37.00 °C. */
        assert_int_equal(DECODE(wire_temperature_decode, &t, NULL,
                                0x07, 0xda, 0x03, 0x00, 0xff, 0xea, 0x07, 0x0d, 0x20, 0x18, 0x3c, 0x3c, 0x00), 0);
        assert_int_equal(t.centi_c, 3700);
        assert_false(t.has_timestamp);
        assert_false(t.has_type);
        /* A special value with bad fields is still no reading. */
        assert_int_equal(DECODE(wire_temperature_decode, &t, NULL, 0x04, 0xff, 0xff, 0x7f, 0x00, 0x00), -ENODATA);
}

static void test_temperature_encode_limits(void **state) {
        uint8_t out[WIRE_TEMPERATURE_MAX_SIZE];

        assert_int_equal(wire_temperature_encode(&(WireTemperature) { .centi_c = 0x7fffff }, out), 5);
        assert_memory_equal(out, BYTES(0x00, 0xff, 0xff, 0x7f, 0xfe), 5);
        assert_int_equal(wire_temperature_encode(&(WireTemperature) { .centi_c = -0x800000 }, out), 5);
        assert_memory_equal(out, BYTES(0x00, 0x00, 0x00, 0x80, 0xfe), 5);
        assert_int_equal(wire_temperature_encode(&(WireTemperature) { .centi_c = 0x800000 }, out), 0);
        assert_int_equal(wire_temperature_encode(&(WireTemperature) { .centi_c = -0x800001 }, out), 0);
        assert_int_equal(wire_temperature_encode(&(WireTemperature) {
                .centi_c = 3700, .has_timestamp = true, .year = 2026, .month = 13, .day = 1 }, out), 0);
}

/* ---- Control Point ---- */

static void test_request_encode(void **state) {
        uint8_t out[WIRE_CP_MAX_SIZE];
        WireRequest q;

        /* START cold 10.00 °C for 900 s */
        q = (WireRequest) { .opcode = WIRE_OP_START, .mode = 1, .setpoint = 1000, .duration_s = 900 };
        assert_int_equal(wire_request_encode(&q, out), 6);
        assert_memory_equal(out, BYTES(0x01, 0x01, 0xe8, 0x03, 0x84, 0x03), 6);
        /* START heat 40.00 °C for 1200 s */
        q = (WireRequest) { .opcode = WIRE_OP_START, .mode = 2, .setpoint = 4000, .duration_s = 1200 };
        assert_int_equal(wire_request_encode(&q, out), 6);
        assert_memory_equal(out, BYTES(0x01, 0x02, 0xa0, 0x0f, 0xb0, 0x04), 6);
        /* STOP, gateway shutting down */
        q = (WireRequest) { .opcode = WIRE_OP_STOP, .reason = 3 };
        assert_int_equal(wire_request_encode(&q, out), 2);
        assert_memory_equal(out, BYTES(0x02, 0x03), 2);
        /* DENY, rest interval not over, 90 minutes */
        q = (WireRequest) { .opcode = WIRE_OP_DENY, .reason = 2, .minutes = 90 };
        assert_int_equal(wire_request_encode(&q, out), 4);
        assert_memory_equal(out, BYTES(0x03, 0x02, 0x5a, 0x00), 4);
        /* DENY, other, 300 minutes */
        q = (WireRequest) { .opcode = WIRE_OP_DENY, .reason = 4, .minutes = 300 };
        assert_int_equal(wire_request_encode(&q, out), 4);
        assert_memory_equal(out, BYTES(0x03, 0x04, 0x2c, 0x01), 4);
        /* Not a request. */
        assert_int_equal(wire_request_encode(&(WireRequest) { .opcode = 0x04 }, out), 0);
        assert_int_equal(wire_request_encode(&(WireRequest) { .opcode = WIRE_OP_RESPONSE }, out), 0);
}

#define REQ(q, ...) wire_request_decode(BYTES(__VA_ARGS__), NBYTES(__VA_ARGS__), (q))

static void test_request_decode(void **state) {
        WireRequest q;
        uint8_t out[WIRE_CP_MAX_SIZE];

        assert_int_equal(REQ(&q, 0x01, 0x01, 0xe8, 0x03, 0x84, 0x03), WIRE_RESULT_SUCCESS);
        assert_int_equal(q.opcode, WIRE_OP_START);
        assert_int_equal(q.mode, 1);
        assert_int_equal(q.setpoint, 1000);
        assert_int_equal(q.duration_s, 900);
        assert_int_equal(wire_request_encode(&q, out), 6);
        assert_memory_equal(out, BYTES(0x01, 0x01, 0xe8, 0x03, 0x84, 0x03), 6);

        assert_int_equal(REQ(&q, 0x02, 0x00), WIRE_RESULT_SUCCESS);
        assert_int_equal(q.opcode, WIRE_OP_STOP);
        assert_int_equal(q.reason, 0);
        assert_int_equal(REQ(&q, 0x02, 0x03), WIRE_RESULT_SUCCESS);
        assert_int_equal(q.reason, 3);

        assert_int_equal(REQ(&q, 0x03, 0x01, 0x00, 0x00), WIRE_RESULT_SUCCESS);
        assert_int_equal(q.opcode, WIRE_OP_DENY);
        assert_int_equal(q.reason, 1);
        assert_int_equal(q.minutes, 0);
        assert_int_equal(REQ(&q, 0x03, 0x04, 0xff, 0xff), WIRE_RESULT_SUCCESS);
        assert_int_equal(q.minutes, 65535);
}

static void test_request_limits(void **state) {
        WireRequest q;

        /* cold 5.00–20.00 °C (500 = f4 01, 2000 = d0 07) */
        assert_int_equal(REQ(&q, 0x01, 0x01, 0xf3, 0x01, 0x84, 0x03), WIRE_RESULT_INVALID_PARAMETER);
        assert_int_equal(REQ(&q, 0x01, 0x01, 0xf4, 0x01, 0x84, 0x03), WIRE_RESULT_SUCCESS);
        assert_int_equal(REQ(&q, 0x01, 0x01, 0xd0, 0x07, 0x84, 0x03), WIRE_RESULT_SUCCESS);
        assert_int_equal(REQ(&q, 0x01, 0x01, 0xd1, 0x07, 0x84, 0x03), WIRE_RESULT_INVALID_PARAMETER);
        assert_int_equal(REQ(&q, 0x01, 0x01, 0x9c, 0xff, 0x84, 0x03), WIRE_RESULT_INVALID_PARAMETER);  /* −1.00 */
        assert_int_equal(q.setpoint, -100);
        /* heat 35.00–45.00 °C (3500 = ac 0d, 4500 = 94 11) */
        assert_int_equal(REQ(&q, 0x01, 0x02, 0xab, 0x0d, 0x84, 0x03), WIRE_RESULT_INVALID_PARAMETER);
        assert_int_equal(REQ(&q, 0x01, 0x02, 0xac, 0x0d, 0x84, 0x03), WIRE_RESULT_SUCCESS);
        assert_int_equal(REQ(&q, 0x01, 0x02, 0x94, 0x11, 0x84, 0x03), WIRE_RESULT_SUCCESS);
        assert_int_equal(REQ(&q, 0x01, 0x02, 0x95, 0x11, 0x84, 0x03), WIRE_RESULT_INVALID_PARAMETER);
        /* a cold setpoint with heat, and a heat setpoint with cold */
        assert_int_equal(REQ(&q, 0x01, 0x02, 0xe8, 0x03, 0x84, 0x03), WIRE_RESULT_INVALID_PARAMETER);
        assert_int_equal(REQ(&q, 0x01, 0x01, 0xa0, 0x0f, 0x84, 0x03), WIRE_RESULT_INVALID_PARAMETER);
        /* duration 60–1800 s (60 = 3c 00, 1800 = 08 07) */
        assert_int_equal(REQ(&q, 0x01, 0x01, 0xe8, 0x03, 0x3b, 0x00), WIRE_RESULT_INVALID_PARAMETER);
        assert_int_equal(REQ(&q, 0x01, 0x01, 0xe8, 0x03, 0x3c, 0x00), WIRE_RESULT_SUCCESS);
        assert_int_equal(REQ(&q, 0x01, 0x01, 0xe8, 0x03, 0x08, 0x07), WIRE_RESULT_SUCCESS);
        assert_int_equal(REQ(&q, 0x01, 0x01, 0xe8, 0x03, 0x09, 0x07), WIRE_RESULT_INVALID_PARAMETER);
        assert_int_equal(REQ(&q, 0x01, 0x01, 0xe8, 0x03, 0x00, 0x00), WIRE_RESULT_INVALID_PARAMETER);
        /* modes 0 and 3 */
        assert_int_equal(REQ(&q, 0x01, 0x00, 0xe8, 0x03, 0x84, 0x03), WIRE_RESULT_INVALID_PARAMETER);
        assert_int_equal(REQ(&q, 0x01, 0x03, 0xe8, 0x03, 0x84, 0x03), WIRE_RESULT_INVALID_PARAMETER);
        assert_int_equal(q.opcode, WIRE_OP_START);
        /* STOP reasons 0..3, DENY reasons 1..4 */
        assert_int_equal(REQ(&q, 0x02, 0x04), WIRE_RESULT_INVALID_PARAMETER);
        assert_int_equal(REQ(&q, 0x02, 0xff), WIRE_RESULT_INVALID_PARAMETER);
        assert_int_equal(REQ(&q, 0x03, 0x00, 0x00, 0x00), WIRE_RESULT_INVALID_PARAMETER);
        assert_int_equal(REQ(&q, 0x03, 0x05, 0x00, 0x00), WIRE_RESULT_INVALID_PARAMETER);
}

static void test_request_malformed(void **state) {
        WireRequest q;

        /* wrong sizes for known opcodes: invalid parameter, and the opcode kept for the answer */
        assert_int_equal(REQ(&q, 0x01, 0x01, 0xe8, 0x03, 0x84), WIRE_RESULT_INVALID_PARAMETER);
        assert_int_equal(q.opcode, WIRE_OP_START);
        assert_int_equal(REQ(&q, 0x01, 0x01, 0xe8, 0x03, 0x84, 0x03, 0x00), WIRE_RESULT_INVALID_PARAMETER);
        assert_int_equal(REQ(&q, 0x01), WIRE_RESULT_INVALID_PARAMETER);
        assert_int_equal(REQ(&q, 0x02), WIRE_RESULT_INVALID_PARAMETER);
        assert_int_equal(q.opcode, WIRE_OP_STOP);
        assert_int_equal(REQ(&q, 0x02, 0x00, 0x00), WIRE_RESULT_INVALID_PARAMETER);
        assert_int_equal(REQ(&q, 0x03, 0x01, 0x00), WIRE_RESULT_INVALID_PARAMETER);
        assert_int_equal(q.opcode, WIRE_OP_DENY);
        assert_int_equal(REQ(&q, 0x03, 0x01, 0x00, 0x00, 0x00), WIRE_RESULT_INVALID_PARAMETER);
        assert_int_equal(wire_request_decode(BYTES(0x01), 0, &q), WIRE_RESULT_INVALID_PARAMETER);
        assert_int_equal(wire_request_decode(NULL, 0, &q), WIRE_RESULT_INVALID_PARAMETER);

        /* unknown opcodes: not supported, whatever their size */
        assert_int_equal(REQ(&q, 0x00), WIRE_RESULT_NOT_SUPPORTED);
        assert_int_equal(REQ(&q, 0x04, 0x01), WIRE_RESULT_NOT_SUPPORTED);
        assert_int_equal(q.opcode, 0x04);
        assert_int_equal(REQ(&q, 0x80, 0x01, 0x01), WIRE_RESULT_NOT_SUPPORTED);
        assert_int_equal(REQ(&q, 0xff, 0x01, 0xe8, 0x03, 0x84, 0x03), WIRE_RESULT_NOT_SUPPORTED);
}

static void test_response(void **state) {
        WireResponse p;
        uint8_t out[3];

        assert_int_equal(DECODE(wire_response_decode, &p, NULL, 0x80, 0x01, 0x01), 0);
        assert_int_equal(p.opcode, WIRE_OP_START);
        assert_int_equal(p.result, WIRE_RESULT_SUCCESS);
        assert_int_equal(wire_response_encode(&p, out), 3);
        assert_memory_equal(out, BYTES(0x80, 0x01, 0x01), 3);
        assert_int_equal(DECODE(wire_response_decode, &p, NULL, 0x80, 0x01, 0x04), 0);
        assert_int_equal(p.result, WIRE_RESULT_BUSY);
        assert_int_equal(DECODE(wire_response_decode, &p, NULL, 0x80, 0x03, 0x05), 0);
        assert_int_equal(p.opcode, WIRE_OP_DENY);
        assert_int_equal(p.result, WIRE_RESULT_FAULT);
        assert_int_equal(wire_response_encode(&(WireResponse) { .opcode = 2, .result = 3 }, out), 3);
        assert_memory_equal(out, BYTES(0x80, 0x02, 0x03), 3);

        ASSERT_REJECTED(wire_response_decode, WireResponse, 0x80, 0x01);
        ASSERT_REJECTED(wire_response_decode, WireResponse, 0x80, 0x01, 0x01, 0x00);
        ASSERT_REJECTED(wire_response_decode, WireResponse, 0x81, 0x01, 0x01);
        ASSERT_REJECTED(wire_response_decode, WireResponse, 0x01, 0x01, 0x01);
        ASSERT_REJECTED(wire_response_decode, WireResponse, 0x80, 0x00, 0x01);
        ASSERT_REJECTED(wire_response_decode, WireResponse, 0x80, 0x04, 0x01);
        ASSERT_REJECTED(wire_response_decode, WireResponse, 0x80, 0x80, 0x01);
        ASSERT_REJECTED(wire_response_decode, WireResponse, 0x80, 0x01, 0x00);
        ASSERT_REJECTED(wire_response_decode, WireResponse, 0x80, 0x01, 0x06);
        assert_int_equal(wire_response_decode(NULL, 0, &p, NULL), -EBADMSG);
}

/* ---- Battery ---- */

static void test_battery(void **state) {
        uint8_t pct;

        assert_int_equal(DECODE(wire_battery_decode, &pct, NULL, 0x00), 0);
        assert_int_equal(pct, 0);
        assert_int_equal(DECODE(wire_battery_decode, &pct, NULL, 0x64), 0);
        assert_int_equal(pct, 100);
        assert_int_equal(DECODE(wire_battery_decode, &pct, NULL, 0x2a), 0);
        assert_int_equal(pct, 42);
        ASSERT_REJECTED(wire_battery_decode, uint8_t, 0x65);
        ASSERT_REJECTED(wire_battery_decode, uint8_t, 0xff);
        ASSERT_REJECTED(wire_battery_decode, uint8_t, 0x32, 0x00);
        assert_int_equal(wire_battery_decode(BYTES(0x32), 0, &pct, NULL), -EBADMSG);
}

/* ---- Names ---- */

static void test_names(void **state) {
        assert_string_equal(wire_state_to_string(WIRE_STATE_IDLE), "idle");
        assert_string_equal(wire_state_to_string(WIRE_STATE_COOLING), "cooling");
        assert_string_equal(wire_state_to_string(WIRE_STATE_HEATING), "heating");
        assert_string_equal(wire_state_to_string(WIRE_STATE_DONE), "done");
        assert_string_equal(wire_state_to_string(WIRE_STATE_FAULT), "fault");
        assert_string_equal(wire_state_to_string(5), "unknown");
        assert_string_equal(wire_state_to_string(255), "unknown");
        assert_string_equal(wire_result_to_string(WIRE_RESULT_SUCCESS), "success");
        assert_string_equal(wire_result_to_string(WIRE_RESULT_NOT_SUPPORTED), "opcode not supported");
        assert_string_equal(wire_result_to_string(WIRE_RESULT_INVALID_PARAMETER), "invalid parameter");
        assert_string_equal(wire_result_to_string(WIRE_RESULT_BUSY), "busy");
        assert_string_equal(wire_result_to_string(WIRE_RESULT_FAULT), "fault present");
        assert_string_equal(wire_result_to_string(0), "unknown");
        assert_string_equal(wire_result_to_string(6), "unknown");
}

/* Device Information strings: only well-formed UTF-8 reaches JSON, and a full buffer never
 * ends in half a character. */
static void test_info_string(void **state) {
        char out[64];
        char small[5];

        /* Plain, unterminated on the wire, and cut at a NUL. */
        assert_int_equal(wire_info_string((const uint8_t *) "KW-1", 4, out, sizeof out), 4);
        assert_string_equal(out, "KW-1");
        assert_int_equal(wire_info_string((const uint8_t *) "KW\0junk", 7, out, sizeof out), 2);
        assert_string_equal(out, "KW");
        /* Multi-byte characters kept whole: "Kühl 冷 🧊". */
        assert_int_equal(wire_info_string((const uint8_t *) "K\xc3\xbc" "hl \xe5\x86\xb7 \xf0\x9f\xa7\x8a", 14, out, sizeof out), 14);
        assert_memory_equal(out, "K\xc3\xbc" "hl \xe5\x86\xb7 \xf0\x9f\xa7\x8a", 15);
        /* Latin-1, not UTF-8: the stray bytes go. */
        assert_int_equal(wire_info_string((const uint8_t *) "K\xfc" "hl", 4, out, sizeof out), 3);
        assert_string_equal(out, "Khl");
        /* Cut in the middle of a character on the wire. */
        assert_int_equal(wire_info_string((const uint8_t *) "KW\xe5\x86", 4, out, sizeof out), 2);
        assert_string_equal(out, "KW");
        /* Overlong, surrogate, past U+10FFFF, lone continuation, C0 and C1 controls. */
        assert_int_equal(wire_info_string((const uint8_t *) "a\xc0\xaf" "b\xed\xa0\x80" "c\xf4\x90\x80\x80" "d\x80" "e\x01" "f\xc2\x85" "g", 22,
                                          out, sizeof out), 7);
        assert_string_equal(out, "abcdefg");
        /* A full buffer: the 4-byte character does not fit after "abc", so it is left out whole. */
        assert_int_equal(wire_info_string((const uint8_t *) "abc\xf0\x9f\xa7\x8a", 7, small, sizeof small), 3);
        assert_string_equal(small, "abc");
        assert_int_equal(wire_info_string((const uint8_t *) "", 0, small, sizeof small), 0);
        assert_string_equal(small, "");
}

int main(void) {
        const struct CMUnitTest tests[] = {
                cmocka_unit_test(test_status_vector),
                cmocka_unit_test(test_status_negative_and_no_reading),
                cmocka_unit_test(test_status_longer_accepted),
                cmocka_unit_test(test_status_rejected),
                cmocka_unit_test(test_button),
                cmocka_unit_test(test_float),
                cmocka_unit_test(test_float_range),
                cmocka_unit_test(test_float_special),
                cmocka_unit_test(test_temperature_celsius),
                cmocka_unit_test(test_temperature_fahrenheit),
                cmocka_unit_test(test_temperature_implausible),
                cmocka_unit_test(test_temperature_special),
                cmocka_unit_test(test_temperature_timestamp_type),
                cmocka_unit_test(test_temperature_reserved_flags),
                cmocka_unit_test(test_temperature_rejected),
                cmocka_unit_test(test_temperature_bad_fields_kept),
                cmocka_unit_test(test_temperature_encode_limits),
                cmocka_unit_test(test_request_encode),
                cmocka_unit_test(test_request_decode),
                cmocka_unit_test(test_request_limits),
                cmocka_unit_test(test_request_malformed),
                cmocka_unit_test(test_response),
                cmocka_unit_test(test_battery),
                cmocka_unit_test(test_names),
                cmocka_unit_test(test_info_string),
        };

        return cmocka_run_group_tests(tests, NULL, NULL);
}
