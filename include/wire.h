/* wire: the KneeWrap GATT profile's bytes (shared/wrap-profile.md), built and parsed here only. */
#pragma once

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define WIRE_UUID_THERAPY_SERVICE  "fac50001-c475-4e93-816c-09c2563ceaf2"
#define WIRE_UUID_STATUS           "fac50002-c475-4e93-816c-09c2563ceaf2"
#define WIRE_UUID_BUTTON           "fac50003-c475-4e93-816c-09c2563ceaf2"
#define WIRE_UUID_CONTROL_POINT    "fac50004-c475-4e93-816c-09c2563ceaf2"
#define WIRE_UUID_DEVICE_INFO      "0000180a-0000-1000-8000-00805f9b34fb"
#define WIRE_UUID_MANUFACTURER     "00002a29-0000-1000-8000-00805f9b34fb"
#define WIRE_UUID_MODEL            "00002a24-0000-1000-8000-00805f9b34fb"
#define WIRE_UUID_SERIAL           "00002a25-0000-1000-8000-00805f9b34fb"
#define WIRE_UUID_FIRMWARE         "00002a26-0000-1000-8000-00805f9b34fb"
#define WIRE_UUID_BATTERY_SERVICE  "0000180f-0000-1000-8000-00805f9b34fb"
#define WIRE_UUID_BATTERY_LEVEL    "00002a19-0000-1000-8000-00805f9b34fb"
#define WIRE_UUID_HEALTH_THERMO    "00001809-0000-1000-8000-00805f9b34fb"
#define WIRE_UUID_TEMP_MEASUREMENT "00002a1c-0000-1000-8000-00805f9b34fb"

/*
 * Decoders return 0, or a negative errno with a static reason in *ret_why:
 *   -EBADMSG  malformed (too short, bad field, reserved value);
 *   -ENODATA  well-formed but "no reading" (an IEEE 11073 special value, pack 0x8000).
 * No decoder reads past `n`, and none turns a malformed value into a temperature.
 */

/* Therapy Status: 12 bytes; longer values are accepted (later firmware), shorter rejected. */
enum {
        WIRE_STATE_IDLE = 0,
        WIRE_STATE_COOLING = 1,
        WIRE_STATE_HEATING = 2,
        WIRE_STATE_DONE = 3,
        WIRE_STATE_FAULT = 4,
};

enum {
        WIRE_FAULT_OVER_TEMP   = 1 << 0,
        WIRE_FAULT_UNDER_TEMP  = 1 << 1,
        WIRE_FAULT_SENSOR      = 1 << 2,
        WIRE_FAULT_LOW_BATTERY = 1 << 3,
        WIRE_FAULT_NOT_WORN    = 1 << 4,
        WIRE_FAULT_ELEMENT     = 1 << 5,
};

#define WIRE_STATUS_SIZE 12
#define WIRE_NO_READING  ((int16_t) INT16_MIN)   /* 0x8000 */

typedef struct WireStatus {
        uint8_t state;        /* WIRE_STATE_* */
        uint8_t mode;         /* 0 none, 1 cold, 2 heat */
        int16_t setpoint;     /* 0.01 °C */
        int16_t pack;         /* 0.01 °C, WIRE_NO_READING when absent */
        uint16_t elapsed_s;
        uint16_t remaining_s;
        uint8_t faults;       /* WIRE_FAULT_* */
        uint8_t seq;          /* START accepted counter, wraps at 255 */
} WireStatus;

int wire_status_decode(const uint8_t *b, size_t n, WireStatus *ret, const char **ret_why);
size_t wire_status_encode(const WireStatus *s, uint8_t out[static WIRE_STATUS_SIZE]);

/* Button Event: exactly 2 bytes. */
enum {
        WIRE_BUTTON_COLD = 1,
        WIRE_BUTTON_HEAT = 2,
        WIRE_BUTTON_STOP = 3,
};

typedef struct WireButton {
        uint8_t event;
        uint8_t seq;
} WireButton;

int wire_button_decode(const uint8_t *b, size_t n, WireButton *ret, const char **ret_why);
size_t wire_button_encode(const WireButton *e, uint8_t out[static 2]);

/* Temperature Measurement (0x2A1C): skin temperature, always returned in 0.01 °C. */
typedef struct WireTemperature {
        int32_t centi_c;      /* converted from °F when the unit flag says so */
        bool fahrenheit;      /* the unit it arrived in */
        bool has_timestamp;
        uint16_t year;
        uint8_t month, day, hours, minutes, seconds;
        bool has_type;
        uint8_t type;
} WireTemperature;

#define WIRE_TEMPERATURE_MAX_SIZE 13

/* A time stamp out of range or a reserved type byte is dropped (has_timestamp, has_type
 * cleared), and the temperature kept: the skin reading is what R5 needs. */
int wire_temperature_decode(const uint8_t *b, size_t n, WireTemperature *ret, const char **ret_why);
/* Encodes centi_c (or °F when .fahrenheit: centi_c is then hundredths of a °F) with exponent -2. */
size_t wire_temperature_encode(const WireTemperature *t, uint8_t out[static WIRE_TEMPERATURE_MAX_SIZE]);
/* The special values, for tests and simulators. */
size_t wire_temperature_encode_special(uint32_t mantissa24, uint8_t out[static 5]);

/* IEEE 11073-20601 32-bit FLOAT to hundredths; -ENODATA for special values, -ERANGE past int32. */
int wire_float_to_centi(uint32_t raw, int32_t *ret);

/* Control Point. */
enum {
        WIRE_OP_START = 0x01,
        WIRE_OP_STOP = 0x02,
        WIRE_OP_DENY = 0x03,
        WIRE_OP_RESPONSE = 0x80,
};

enum {
        WIRE_RESULT_SUCCESS = 0x01,
        WIRE_RESULT_NOT_SUPPORTED = 0x02,
        WIRE_RESULT_INVALID_PARAMETER = 0x03,
        WIRE_RESULT_BUSY = 0x04,
        WIRE_RESULT_FAULT = 0x05,
};

#define WIRE_CP_MAX_SIZE 6

typedef struct WireRequest {
        uint8_t opcode;
        uint8_t mode;          /* START */
        int16_t setpoint;      /* START, 0.01 °C */
        uint16_t duration_s;   /* START */
        uint8_t reason;        /* STOP, DENY */
        uint16_t minutes;      /* DENY */
} WireRequest;

size_t wire_request_encode(const WireRequest *r, uint8_t out[static WIRE_CP_MAX_SIZE]);
/*
 * The wrap's side: parses a written request. Returns the result code the wrap answers with
 * for a malformed one (WIRE_RESULT_NOT_SUPPORTED for an unknown opcode,
 * WIRE_RESULT_INVALID_PARAMETER for a wrong size or parameter), or WIRE_RESULT_SUCCESS.
 */
uint8_t wire_request_decode(const uint8_t *b, size_t n, WireRequest *ret);

typedef struct WireResponse {
        uint8_t opcode;        /* the request's */
        uint8_t result;        /* WIRE_RESULT_* */
} WireResponse;

size_t wire_response_encode(const WireResponse *r, uint8_t out[static 3]);
int wire_response_decode(const uint8_t *b, size_t n, WireResponse *ret, const char **ret_why);

/* Battery Level: one byte, 0..100. */
int wire_battery_decode(const uint8_t *b, size_t n, uint8_t *ret, const char **ret_why);

/*
 * Device Information strings (0x2A29, 0x2A24, 0x2A25, 0x2A26): UTF-8, not terminated on the
 * wire. Copies what is valid into dst (size bytes, always terminated): it stops at a NUL,
 * drops control characters and every byte that is not part of a well-formed UTF-8 sequence
 * (overlong forms, surrogates and code points past U+10FFFF included), and never cuts a
 * character when dst is full. The result is always valid UTF-8. Returns its length.
 */
size_t wire_info_string(const uint8_t *b, size_t n, char *dst, size_t size);

/* Human-readable names for logs and state. */
const char *wire_state_to_string(uint8_t state);       /* "idle", "cooling", ... "unknown" */
const char *wire_result_to_string(uint8_t result);
