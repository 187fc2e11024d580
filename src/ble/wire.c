/* wire: builds and parses every characteristic of the KneeWrap GATT profile, byte for byte. */
#include <errno.h>
#include <string.h>

#include "util.h"
#include "wire.h"

#define SET_WHY(p, s) do { if (p) *(p) = (s); } while (0)

/* Plausible bounds for any temperature a wrap's sensors can report, in 0.01 °C. Skin sits
 * around 20–40 °C and the element is driven between 5 and 45 °C; nothing a working sensor
 * on a knee reads lies outside −50..+150 °C. A value out there is a broken sensor or a
 * misframed value, and must never reach the therapy rules as a temperature. */
#define TEMP_MIN_CENTI (-5000)
#define TEMP_MAX_CENTI 15000

/* Wrap firmware limits (profile: "Wrap firmware limits"). */
#define COLD_MIN_CENTI 500
#define COLD_MAX_CENTI 2000
#define HEAT_MIN_CENTI 3500
#define HEAT_MAX_CENTI 4500
#define DURATION_MIN_S 60
#define DURATION_MAX_S 1800

/* IEEE 11073-20601 FLOAT special mantissas; they mean something only with exponent 0. */
#define FLOAT_NAN      0x7FFFFFu
#define FLOAT_NRES     0x800000u
#define FLOAT_PINF     0x7FFFFEu
#define FLOAT_NINF     0x800002u
#define FLOAT_RESERVED 0x800001u

#define TM_FLAG_FAHRENHEIT 0x01u
#define TM_FLAG_TIMESTAMP  0x02u
#define TM_FLAG_TYPE       0x04u

/* ---- Therapy Status ---- */

int wire_status_decode(const uint8_t *b, size_t n, WireStatus *ret, const char **ret_why) {
        WireStatus s;

        /* Longer is fine: a later firmware may append fields after these 12 bytes. */
        if (!b || n < WIRE_STATUS_SIZE) {
                SET_WHY(ret_why, "status shorter than 12 bytes");
                return -EBADMSG;
        }

        s = (WireStatus) {
                .state = b[0],
                .mode = b[1],
                .setpoint = (int16_t) le16_get(b + 2),
                .pack = (int16_t) le16_get(b + 4),      /* 0x8000 stays WIRE_NO_READING */
                .elapsed_s = le16_get(b + 6),
                .remaining_s = le16_get(b + 8),
                .faults = b[10],                        /* unknown bits kept: a later fault is still a fault */
                .seq = b[11],
        };

        if (s.state > WIRE_STATE_FAULT) {
                SET_WHY(ret_why, "status state out of range");
                return -EBADMSG;
        }
        if (s.mode > 2) {
                SET_WHY(ret_why, "status mode out of range");
                return -EBADMSG;
        }

        *ret = s;
        return 0;
}

size_t wire_status_encode(const WireStatus *s, uint8_t out[static WIRE_STATUS_SIZE]) {
        out[0] = s->state;
        out[1] = s->mode;
        le16_put(out + 2, (uint16_t) s->setpoint);
        le16_put(out + 4, (uint16_t) s->pack);
        le16_put(out + 6, s->elapsed_s);
        le16_put(out + 8, s->remaining_s);
        out[10] = s->faults;
        out[11] = s->seq;
        return WIRE_STATUS_SIZE;
}

/* ---- Button Event ---- */

int wire_button_decode(const uint8_t *b, size_t n, WireButton *ret, const char **ret_why) {
        if (!b || n != 2) {
                SET_WHY(ret_why, "button event is not 2 bytes");
                return -EBADMSG;
        }
        if (b[0] < WIRE_BUTTON_COLD || b[0] > WIRE_BUTTON_STOP) {
                SET_WHY(ret_why, "button event out of range");
                return -EBADMSG;
        }

        *ret = (WireButton) { .event = b[0], .seq = b[1] };
        return 0;
}

size_t wire_button_encode(const WireButton *e, uint8_t out[static 2]) {
        out[0] = e->event;
        out[1] = e->seq;
        return 2;
}

/* ---- IEEE 11073-20601 FLOAT ---- */

static void float_split(uint32_t raw, int32_t *ret_mantissa, int *ret_exponent) {
        uint32_t m = raw & 0xFFFFFFu;

        /* Sign-extend by arithmetic on values, not shifts of negative numbers. */
        *ret_mantissa = (m & 0x800000u) ? (int32_t) m - 0x1000000 : (int32_t) m;
        *ret_exponent = (raw >> 24) >= 0x80u ? (int) (raw >> 24) - 0x100 : (int) (raw >> 24);
}

static bool float_is_special(uint32_t raw) {
        uint32_t m = raw & 0xFFFFFFu;

        if ((raw >> 24) != 0)
                return false;
        return m == FLOAT_NAN || m == FLOAT_NRES || m == FLOAT_PINF || m == FLOAT_NINF || m == FLOAT_RESERVED;
}

/* n / d rounded half away from zero; d > 0. */
static int64_t div_round(int64_t n, int64_t d) {
        int64_t q = n / d, r = n % d;   /* C truncates toward zero, so r has n's sign */

        if (r >= 0 ? 2 * r >= d : -2 * r >= d)
                q += n < 0 ? -1 : 1;
        return q;
}

static int64_t pow10_i64(int k) {
        int64_t p = 1;

        while (k-- > 0)
                p *= 10;
        return p;
}

int wire_float_to_centi(uint32_t raw, int32_t *ret) {
        int32_t m;
        int e, k;
        int64_t v;

        if (float_is_special(raw))
                return -ENODATA;

        float_split(raw, &m, &e);
        k = e + 2;      /* hundredths = m × 10^(e+2) */

        if (m == 0)
                v = 0;
        else if (k >= 0) {
                v = m;
                for (; k > 0; k--) {
                        v *= 10;        /* |m| < 2^23, so one step past INT32 cannot overflow int64 */
                        if (v > INT32_MAX || v < INT32_MIN)
                                return -ERANGE;
                }
        } else if (k < -9)
                v = 0;  /* |m| < 2^23 < 10^9 / 2: rounds to 0 */
        else
                v = div_round(m, pow10_i64(-k));

        *ret = (int32_t) v;
        return 0;
}

/* (F − 32) × 5/9 in hundredths of °C, exactly and rounded once, from m × 10^e °F. Returns
 * -ERANGE for values no sensor could report (checked by the caller more tightly anyway). */
static int float_fahrenheit_to_centi_c(int32_t m, int e, int32_t *ret) {
        int64_t num, den;

        if (e >= 0) {
                /* An integral value in °F: bound it well beyond any plausible reading first. */
                int64_t f = m;

                for (; e > 0 && f != 0; e--) {
                        f *= 10;
                        if (f > 10000000 || f < -10000000)
                                return -ERANGE;
                }
                num = (f - 32) * 500;   /* hundredths of °C = (F − 32) × 500 / 9 */
                den = 9;
        } else {
                int d = -e;

                if (d > 14) {
                        /* |m × 10^e| < 10^-8 °F here, moving the result by less than 10^-6
                         * hundredths from −1777.78 (0 °F), which is 0.22 from a rounding
                         * boundary: the answer is that of 0 °F. Dropping the mantissa keeps
                         * the arithmetic inside int64 (16000 × 10^d overflows past d = 14). */
                        m = 0;
                        d = 0;
                }
                num = (int64_t) m * 500 - 16000 * pow10_i64(d);
                den = 9 * pow10_i64(d);
        }

        num = div_round(num, den);
        if (num > INT32_MAX || num < INT32_MIN)
                return -ERANGE;
        *ret = (int32_t) num;
        return 0;
}

/* ---- Temperature Measurement (0x2A1C) ---- */

static bool timestamp_valid(uint16_t year, uint8_t month, uint8_t day, uint8_t h, uint8_t min, uint8_t s) {
        /* SIG Date Time: 0 means "not known" for year, month and day; everything else
         * outside these ranges is reserved for future use. */
        if (year != 0 && (year < 1582 || year > 9999))
                return false;
        if (month > 12 || day > 31)
                return false;
        return h <= 23 && min <= 59 && s <= 59;
}

int wire_temperature_decode(const uint8_t *b, size_t n, WireTemperature *ret, const char **ret_why) {
        WireTemperature t = { 0 };
        size_t want = 5;
        uint32_t raw;
        int32_t m;
        int e, r;

        if (!b || n < 1) {
                SET_WHY(ret_why, "temperature measurement is empty");
                return -EBADMSG;
        }

        /* Bits 3–7 are reserved: ignored, as the SIG says, not rejected. */
        t.fahrenheit = b[0] & TM_FLAG_FAHRENHEIT;
        t.has_timestamp = b[0] & TM_FLAG_TIMESTAMP;
        t.has_type = b[0] & TM_FLAG_TYPE;
        want += t.has_timestamp ? 7 : 0;
        want += t.has_type ? 1 : 0;

        if (n < want) {
                SET_WHY(ret_why, "temperature measurement shorter than its flags say");
                return -EBADMSG;
        }
        /* 0x2A1C has no room for appended fields: the SIG grows it only through flag bits,
         * which change its length. Bytes beyond what the flags announce therefore mean a
         * misframed value or flags that lie, and a temperature read from it is not trusted. */
        if (n > want) {
                SET_WHY(ret_why, "temperature measurement longer than its flags say");
                return -EBADMSG;
        }

        raw = le32_get(b + 1);

        if (t.has_timestamp) {
                const uint8_t *p = b + 5;

                t.year = le16_get(p);
                t.month = p[2];
                t.day = p[3];
                t.hours = p[4];
                t.minutes = p[5];
                t.seconds = p[6];
                /* The gateway never reads the wrap's time stamp, and R5 needs the reading:
                 * a bad one is dropped, the temperature kept. */
                if (!timestamp_valid(t.year, t.month, t.day, t.hours, t.minutes, t.seconds)) {
                        t.has_timestamp = false;
                        t.year = t.month = t.day = t.hours = t.minutes = t.seconds = 0;
                }
        }

        if (t.has_type) {
                t.type = b[want - 1];
                /* SIG Temperature Type: 1 armpit … 9 tympanum; 0 and 10–255 reserved. */
                if (t.type < 1 || t.type > 9) {
                        t.has_type = false;
                        t.type = 0;
                }
        }

        if (float_is_special(raw)) {
                SET_WHY(ret_why, "no reading");
                return -ENODATA;
        }

        if (t.fahrenheit) {
                float_split(raw, &m, &e);
                r = float_fahrenheit_to_centi_c(m, e, &t.centi_c);
        } else
                r = wire_float_to_centi(raw, &t.centi_c);
        if (r < 0 || t.centi_c < TEMP_MIN_CENTI || t.centi_c > TEMP_MAX_CENTI) {
                SET_WHY(ret_why, "temperature outside what a sensor can read");
                return -EBADMSG;
        }

        *ret = t;
        return 0;
}

size_t wire_temperature_encode(const WireTemperature *t, uint8_t out[static WIRE_TEMPERATURE_MAX_SIZE]) {
        size_t n = 5;

        /* Exponent −2 carries a 24-bit signed mantissa; anything wider cannot be sent. */
        if (t->centi_c < -0x800000 || t->centi_c > 0x7FFFFF)
                return 0;
        if (t->has_timestamp &&
            !timestamp_valid(t->year, t->month, t->day, t->hours, t->minutes, t->seconds))
                return 0;

        out[0] = (uint8_t) ((t->fahrenheit ? TM_FLAG_FAHRENHEIT : 0) |
                            (t->has_timestamp ? TM_FLAG_TIMESTAMP : 0) |
                            (t->has_type ? TM_FLAG_TYPE : 0));
        le32_put(out + 1, 0xFE000000u | ((uint32_t) t->centi_c & 0xFFFFFFu));

        if (t->has_timestamp) {
                le16_put(out + n, t->year);
                out[n + 2] = t->month;
                out[n + 3] = t->day;
                out[n + 4] = t->hours;
                out[n + 5] = t->minutes;
                out[n + 6] = t->seconds;
                n += 7;
        }
        if (t->has_type)
                out[n++] = t->type;
        return n;
}

size_t wire_temperature_encode_special(uint32_t mantissa24, uint8_t out[static 5]) {
        if (!float_is_special(mantissa24))
                return 0;

        out[0] = 0;
        le32_put(out + 1, mantissa24);  /* exponent 0 */
        return 5;
}

/* ---- Control Point ---- */

size_t wire_request_encode(const WireRequest *r, uint8_t out[static WIRE_CP_MAX_SIZE]) {
        out[0] = r->opcode;

        switch (r->opcode) {
        case WIRE_OP_START:
                out[1] = r->mode;
                le16_put(out + 2, (uint16_t) r->setpoint);
                le16_put(out + 4, r->duration_s);
                return 6;
        case WIRE_OP_STOP:
                out[1] = r->reason;
                return 2;
        case WIRE_OP_DENY:
                out[1] = r->reason;
                le16_put(out + 2, r->minutes);
                return 4;
        default:
                return 0;
        }
}

uint8_t wire_request_decode(const uint8_t *b, size_t n, WireRequest *ret) {
        WireRequest q = { 0 };

        if (!b || n < 1) {
                *ret = q;
                return WIRE_RESULT_INVALID_PARAMETER;
        }
        q.opcode = b[0];

        switch (q.opcode) {
        case WIRE_OP_START:
                if (n != 6)
                        break;
                q.mode = b[1];
                q.setpoint = (int16_t) le16_get(b + 2);
                q.duration_s = le16_get(b + 4);
                *ret = q;
                if (q.mode == 1 && (q.setpoint < COLD_MIN_CENTI || q.setpoint > COLD_MAX_CENTI))
                        return WIRE_RESULT_INVALID_PARAMETER;
                if (q.mode == 2 && (q.setpoint < HEAT_MIN_CENTI || q.setpoint > HEAT_MAX_CENTI))
                        return WIRE_RESULT_INVALID_PARAMETER;
                if (q.mode < 1 || q.mode > 2)
                        return WIRE_RESULT_INVALID_PARAMETER;
                if (q.duration_s < DURATION_MIN_S || q.duration_s > DURATION_MAX_S)
                        return WIRE_RESULT_INVALID_PARAMETER;
                return WIRE_RESULT_SUCCESS;

        case WIRE_OP_STOP:
                if (n != 2)
                        break;
                q.reason = b[1];
                *ret = q;
                return q.reason <= 3 ? WIRE_RESULT_SUCCESS : WIRE_RESULT_INVALID_PARAMETER;

        case WIRE_OP_DENY:
                if (n != 4)
                        break;
                q.reason = b[1];
                q.minutes = le16_get(b + 2);
                *ret = q;
                return q.reason >= 1 && q.reason <= 4 ? WIRE_RESULT_SUCCESS : WIRE_RESULT_INVALID_PARAMETER;

        default:
                *ret = q;
                return WIRE_RESULT_NOT_SUPPORTED;
        }

        /* A known opcode of the wrong size: only the opcode is meaningful, for the answer. */
        *ret = q;
        return WIRE_RESULT_INVALID_PARAMETER;
}

size_t wire_response_encode(const WireResponse *r, uint8_t out[static 3]) {
        out[0] = WIRE_OP_RESPONSE;
        out[1] = r->opcode;
        out[2] = r->result;
        return 3;
}

int wire_response_decode(const uint8_t *b, size_t n, WireResponse *ret, const char **ret_why) {
        if (!b || n != 3) {
                SET_WHY(ret_why, "control point response is not 3 bytes");
                return -EBADMSG;
        }
        if (b[0] != WIRE_OP_RESPONSE) {
                SET_WHY(ret_why, "control point indication is not a response");
                return -EBADMSG;
        }
        /* A gateway only ever writes START, STOP and DENY: any other opcode cannot be an
         * answer to it. */
        if (b[1] < WIRE_OP_START || b[1] > WIRE_OP_DENY) {
                SET_WHY(ret_why, "control point response to an unknown opcode");
                return -EBADMSG;
        }
        if (b[2] < WIRE_RESULT_SUCCESS || b[2] > WIRE_RESULT_FAULT) {
                SET_WHY(ret_why, "control point result code unknown");
                return -EBADMSG;
        }

        *ret = (WireResponse) { .opcode = b[1], .result = b[2] };
        return 0;
}

/* ---- Battery Level ---- */

int wire_battery_decode(const uint8_t *b, size_t n, uint8_t *ret, const char **ret_why) {
        if (!b || n != 1) {
                SET_WHY(ret_why, "battery level is not 1 byte");
                return -EBADMSG;
        }
        if (b[0] > 100) {
                SET_WHY(ret_why, "battery level above 100 %");
                return -EBADMSG;
        }

        *ret = b[0];
        return 0;
}

/* ---- Names ---- */

const char *wire_state_to_string(uint8_t state) {
        static const char *const table[] = {
                [WIRE_STATE_IDLE] = "idle",
                [WIRE_STATE_COOLING] = "cooling",
                [WIRE_STATE_HEATING] = "heating",
                [WIRE_STATE_DONE] = "done",
                [WIRE_STATE_FAULT] = "fault",
        };

        return state < ELEMENTSOF(table) ? table[state] : "unknown";
}

const char *wire_result_to_string(uint8_t result) {
        switch (result) {
        case WIRE_RESULT_SUCCESS:           return "success";
        case WIRE_RESULT_NOT_SUPPORTED:     return "opcode not supported";
        case WIRE_RESULT_INVALID_PARAMETER: return "invalid parameter";
        case WIRE_RESULT_BUSY:              return "busy";
        case WIRE_RESULT_FAULT:             return "fault present";
        default:                            return "unknown";
        }
}

/* The length of the well-formed UTF-8 sequence at b (RFC 3629, table 3-7 of Unicode), or 0. */
static size_t utf8_sequence(const uint8_t *b, size_t n) {
        uint8_t lo = 0x80, hi = 0xbf;
        size_t len;

        if (b[0] < 0x80)
                return 1;
        if (b[0] >= 0xc2 && b[0] <= 0xdf)
                len = 2;
        else if (b[0] >= 0xe0 && b[0] <= 0xef) {
                len = 3;
                if (b[0] == 0xe0)
                        lo = 0xa0;          /* overlong */
                else if (b[0] == 0xed)
                        hi = 0x9f;          /* surrogates */
        } else if (b[0] >= 0xf0 && b[0] <= 0xf4) {
                len = 4;
                if (b[0] == 0xf0)
                        lo = 0x90;          /* overlong */
                else if (b[0] == 0xf4)
                        hi = 0x8f;          /* past U+10FFFF */
        } else
                return 0;
        if (n < len || b[1] < lo || b[1] > hi)
                return 0;
        for (size_t i = 2; i < len; i++)
                if (b[i] < 0x80 || b[i] > 0xbf)
                        return 0;
        return len;
}

size_t wire_info_string(const uint8_t *b, size_t n, char *dst, size_t size) {
        size_t k = 0;

        if (size == 0)
                return 0;
        for (size_t i = 0; i < n && b[i] != 0;) {
                size_t len = utf8_sequence(b + i, n - i);

                if (len == 0) {
                        i++;                /* a stray or cut byte: drop it, resynchronise */
                        continue;
                }
                if ((len == 1 && (b[i] < 0x20 || b[i] == 0x7f)) || (len == 2 && b[i] == 0xc2 && b[i + 1] < 0xa0)) {
                        i += len;           /* C0 and C1 controls */
                        continue;
                }
                if (k + len + 1 > size)
                        break;              /* full: never half a character */
                memcpy(dst + k, b + i, len);
                k += len;
                i += len;
        }
        dst[k] = '\0';
        return k;
}
