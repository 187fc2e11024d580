/* wrapfw: one knee wrap's firmware (shared/wrap-profile.md) as a pure state machine, for simulators. */
#pragma once

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/*
 * No I/O and no clock reads: every call takes the (monotonic, possibly scaled) time in µs.
 * Calls that change the wrap queue what it sends; wrapfw_advance() runs the wrap's timers
 * up to `now` and hands every queued notification/indication to the host, in order. A host
 * arms one timer for wrapfw_next_deadline() and calls wrapfw_advance() after every other
 * call. All bytes are built by wire.h.
 */

typedef struct WrapFw WrapFw;

typedef enum WrapFwChannel {
        WRAPFW_STATUS,          /* Therapy Status notification */
        WRAPFW_BUTTON,          /* Button Event notification */
        WRAPFW_CONTROL_POINT,   /* Control Point response indication */
        WRAPFW_TEMPERATURE,     /* Temperature Measurement indication (skin) */
        WRAPFW_BATTERY,         /* Battery Level notification */
} WrapFwChannel;

#define WRAPFW_VALUE_MAX 16

typedef struct WrapFwOutput {
        WrapFwChannel channel;
        uint8_t value[WRAPFW_VALUE_MAX];
        size_t size;
} WrapFwOutput;

typedef void (*wrapfw_emit_t)(const WrapFwOutput *out, void *userdata);

/* Timing of the firmware, in seconds of (scaled) wrap time. */
#define WRAPFW_STATUS_PERIOD_S      5
#define WRAPFW_TEMP_SESSION_S       5
#define WRAPFW_TEMP_IDLE_S         60
#define WRAPFW_NO_GATEWAY_S         5
#define WRAPFW_DONE_HOLD_S          5   /* state 3 is shown this long before state 0 */

#define WRAPFW_SKIN_BASELINE_CENTI 3300
#define WRAPFW_AMBIENT_CENTI       2200

/* address: "AA:BB:CC:DD:EE:FF"; used for the serial number. NULL on bad input or OOM. */
WrapFw *wrapfw_new(const char *address, uint64_t now_usec);
WrapFw *wrapfw_free(WrapFw *fw);

/* A button press (WIRE_BUTTON_*). Returns 0, or -EINVAL for an unknown event. */
int wrapfw_press(WrapFw *fw, uint8_t event, uint64_t now_usec);

/*
 * A write to the Control Point. Returns the result code the wrap answers with (WIRE_RESULT_*),
 * and queues that answer as an indication. When out_indication is not NULL it also receives
 * the 3 indication bytes.
 */
uint8_t wrapfw_write_cp(WrapFw *fw, const uint8_t *b, size_t n, uint64_t now_usec,
                        uint8_t out_indication[3]);

/* Runs the wrap up to now and emits what it sends, in order. */
void wrapfw_advance(WrapFw *fw, uint64_t now_usec, wrapfw_emit_t emit, void *userdata);

/* When wrapfw_advance() must run next (UINT64_MAX: never on its own; <= now: at once). */
uint64_t wrapfw_next_deadline(const WrapFw *fw);

/* The current Therapy Status bytes (12), as a read returns them. */
size_t wrapfw_read_status(WrapFw *fw, uint64_t now_usec, uint8_t out[static 12]);
uint8_t wrapfw_battery(const WrapFw *fw);

/* Test knobs. */
/* Pins the skin temperature (0.01 °C) until released with hold=false. */
void wrapfw_set_skin(WrapFw *fw, int16_t centi, bool hold, uint64_t now_usec);
/* Sets the fault flags (WIRE_FAULT_*). Any flag turns the element off (state 4) until START. */
void wrapfw_set_fault(WrapFw *fw, uint8_t flags, uint64_t now_usec);
void wrapfw_set_battery(WrapFw *fw, uint8_t percent, uint64_t now_usec);
/* A thermometer that indicates nothing (R5: the gateway must notice within 15 s). */
void wrapfw_set_thermometer_silent(WrapFw *fw, bool silent, uint64_t now_usec);
/* Status reports `mode` (0 none, 1 cold, 2 heat) whatever runs; -1: the truth again. */
void wrapfw_set_reported_mode(WrapFw *fw, int mode, uint64_t now_usec);

/* Introspection, for logs and tests. */
typedef struct WrapFwInfo {
        uint8_t state, mode, faults, session_seq, press_seq, battery;
        int16_t setpoint, pack, skin;
        uint16_t elapsed_s, remaining_s, duration_s;
        bool press_pending;             /* a cold/heat press waits for START or DENY */
        unsigned no_gateway_count;      /* presses that timed out ("no gateway" blinks) */
        unsigned sessions_completed;    /* sessions the fail-safe ended at their duration */
} WrapFwInfo;

void wrapfw_get_info(WrapFw *fw, uint64_t now_usec, WrapFwInfo *ret);
