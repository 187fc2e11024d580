/* wrapfw: one knee wrap's firmware behaviour, as the profile describes it; pure, time passed in. */
#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "clock.h"
#include "util.h"
#include "wire.h"
#include "wrapfw.h"

#define QUEUE_MAX 32

/* Time constants of the thermal model, in seconds: the element is fast, the skin is slow. */
#define TAU_PACK_S 40.0
#define TAU_SKIN_S 300.0

struct WrapFw {
        uint8_t state, mode, faults, session_seq, press_seq, battery;
        int16_t setpoint;
        uint16_t duration_s;
        uint64_t session_start;     /* while cooling/heating */
        uint64_t done_until;        /* while state 3 is shown */
        uint64_t next_status;       /* while cooling/heating */
        uint64_t next_temp;
        bool press_pending;
        uint64_t press_deadline;
        unsigned no_gateway_count, sessions_completed;

        double skin, pack;          /* °C */
        bool skin_hold;

        /* Faults a gateway must notice (R5): a thermometer that indicates nothing, a Status
         * reporting another mode than the one running. */
        bool thermometer_silent;
        bool misreport;
        uint8_t reported_mode;
        uint64_t model_t;

        WrapFwOutput queue[QUEUE_MAX];
        size_t n_queue;
};

static uint64_t s_to_usec(unsigned s) {
        return (uint64_t) s * USEC_PER_SEC;
}

static bool running(const WrapFw *fw) {
        return fw->state == WIRE_STATE_COOLING || fw->state == WIRE_STATE_HEATING;
}

static void enqueue(WrapFw *fw, WrapFwChannel ch, const uint8_t *b, size_t n) {
        /* The host flushes after every call, so a full queue means a broken host: drop the newest. */
        if (fw->n_queue >= QUEUE_MAX || n == 0 || n > WRAPFW_VALUE_MAX)
                return;
        WrapFwOutput *o = &fw->queue[fw->n_queue++];
        o->channel = ch;
        memcpy(o->value, b, n);
        o->size = n;
}

/* Moves the thermal model forward to t (first-order lags toward the current targets). */
static void model_advance(WrapFw *fw, uint64_t t) {
        if (t <= fw->model_t)
                return;
        double dt = (double) (t - fw->model_t) / (double) USEC_PER_SEC;
        double target = running(fw) ? fw->setpoint / 100.0 : WRAPFW_AMBIENT_CENTI / 100.0;

        fw->pack += (target - fw->pack) * (1.0 - exp(-dt / TAU_PACK_S));
        if (!fw->skin_hold) {
                double skin_target = running(fw) ? fw->setpoint / 100.0 : WRAPFW_SKIN_BASELINE_CENTI / 100.0;
                fw->skin += (skin_target - fw->skin) * (1.0 - exp(-dt / TAU_SKIN_S));
        }
        fw->model_t = t;
}

static int16_t to_centi(double c) {
        double v = round(c * 100.0);
        if (v < -32767.0)
                v = -32767.0;
        if (v > 32767.0)
                v = 32767.0;
        return (int16_t) v;
}

static uint16_t elapsed_at(const WrapFw *fw, uint64_t t) {
        if (running(fw)) {
                uint64_t e = t > fw->session_start ? (t - fw->session_start) / USEC_PER_SEC : 0;
                return (uint16_t) (e > fw->duration_s ? fw->duration_s : e);
        }
        if (fw->state == WIRE_STATE_DONE)
                return fw->duration_s;
        return 0;
}

static void status_bytes(WrapFw *fw, uint64_t t, uint8_t out[static WIRE_STATUS_SIZE]) {
        WireStatus s = {
                .state = fw->state,
                .mode = fw->misreport ? fw->reported_mode : fw->mode,
                .setpoint = fw->setpoint,
                .pack = (fw->faults & WIRE_FAULT_SENSOR) ? WIRE_NO_READING : to_centi(fw->pack),
                .elapsed_s = elapsed_at(fw, t),
                .faults = fw->faults,
                .seq = fw->session_seq,
        };
        if (running(fw))
                s.remaining_s = (uint16_t) (fw->duration_s - s.elapsed_s);
        wire_status_encode(&s, out);
}

static void queue_status(WrapFw *fw, uint64_t t) {
        uint8_t b[WIRE_STATUS_SIZE];

        status_bytes(fw, t, b);
        enqueue(fw, WRAPFW_STATUS, b, sizeof b);
}

static void queue_temperature(WrapFw *fw) {
        uint8_t b[WIRE_TEMPERATURE_MAX_SIZE];
        size_t n;

        if (fw->thermometer_silent)
                return;
        if (fw->faults & WIRE_FAULT_SENSOR)
                /* A failed sensor sends NaN: "no reading", never a temperature. */
                n = wire_temperature_encode_special(0x7FFFFF, b);
        else {
                WireTemperature t = {
                        .centi_c = to_centi(fw->skin),
                        .has_type = true,
                        .type = 0x02,
                };
                n = wire_temperature_encode(&t, b);
        }
        enqueue(fw, WRAPFW_TEMPERATURE, b, n);
}

static void set_state(WrapFw *fw, uint8_t state, uint64_t t) {
        model_advance(fw, t);
        fw->state = state;
        if (running(fw))
                fw->next_status = t + s_to_usec(WRAPFW_STATUS_PERIOD_S);
        if (state == WIRE_STATE_DONE)
                fw->done_until = t + s_to_usec(WRAPFW_DONE_HOLD_S);
        queue_status(fw, t);
}

/* Runs every timer of the wrap that falls due up to now, earliest first. */
static void tick(WrapFw *fw, uint64_t now) {
        for (;;) {
                uint64_t end = running(fw) ? fw->session_start + s_to_usec(fw->duration_s) : UINT64_MAX;
                uint64_t status = running(fw) ? fw->next_status : UINT64_MAX;
                uint64_t done = fw->state == WIRE_STATE_DONE ? fw->done_until : UINT64_MAX;
                uint64_t press = fw->press_pending ? fw->press_deadline : UINT64_MAX;
                uint64_t temp = fw->next_temp;
                uint64_t t = end;

                if (status < t) t = status;
                if (done < t) t = done;
                if (press < t) t = press;
                if (temp < t) t = temp;
                if (t > now)
                        break;

                model_advance(fw, t);
                if (t == end) {
                        /* The fail-safe: the wrap ends the session itself at its duration. */
                        fw->sessions_completed++;
                        set_state(fw, WIRE_STATE_DONE, t);
                        fw->next_temp = t + s_to_usec(WRAPFW_TEMP_IDLE_S);
                } else if (t == status) {
                        queue_status(fw, t);
                        fw->next_status = t + s_to_usec(WRAPFW_STATUS_PERIOD_S);
                } else if (t == done) {
                        set_state(fw, WIRE_STATE_IDLE, t);
                } else if (t == press) {
                        /* Neither START nor DENY came: blink "no gateway", stay as we are. */
                        fw->press_pending = false;
                        fw->no_gateway_count++;
                } else {
                        queue_temperature(fw);
                        fw->next_temp = t + s_to_usec(running(fw) ? WRAPFW_TEMP_SESSION_S : WRAPFW_TEMP_IDLE_S);
                }
        }
        model_advance(fw, now);
}

WrapFw *wrapfw_new(const char *address, uint64_t now_usec) {
        char norm[BDADDR_STR_MAX];
        WrapFw *fw;

        if (!address || bdaddr_normalize(address, norm) < 0)
                return NULL;
        fw = calloc(1, sizeof *fw);
        if (!fw)
                return NULL;
        fw->battery = 87;
        fw->skin = WRAPFW_SKIN_BASELINE_CENTI / 100.0;
        fw->pack = WRAPFW_AMBIENT_CENTI / 100.0;
        fw->model_t = now_usec;
        fw->next_temp = now_usec + s_to_usec(WRAPFW_TEMP_IDLE_S);
        return fw;
}

WrapFw *wrapfw_free(WrapFw *fw) {
        free(fw);
        return NULL;
}

int wrapfw_press(WrapFw *fw, uint8_t event, uint64_t now_usec) {
        uint8_t b[2];

        if (event < WIRE_BUTTON_COLD || event > WIRE_BUTTON_STOP)
                return -EINVAL;
        tick(fw, now_usec);

        fw->press_seq++;
        wire_button_encode(&(WireButton) { .event = event, .seq = fw->press_seq }, b);
        enqueue(fw, WRAPFW_BUTTON, b, sizeof b);

        if (event == WIRE_BUTTON_STOP) {
                /* The stop button acts on the wrap itself, before any gateway answers. */
                fw->press_pending = false;
                if (running(fw))
                        set_state(fw, WIRE_STATE_IDLE, now_usec);
        } else {
                /* Start buttons only ask: the gateway decides with START or DENY. */
                fw->press_pending = true;
                fw->press_deadline = now_usec + s_to_usec(WRAPFW_NO_GATEWAY_S);
        }
        return 0;
}

uint8_t wrapfw_write_cp(WrapFw *fw, const uint8_t *b, size_t n, uint64_t now_usec,
                        uint8_t out_indication[3]) {
        WireRequest q;
        uint8_t result, ind[3];

        tick(fw, now_usec);
        result = wire_request_decode(b, n, &q);

        if (result == WIRE_RESULT_SUCCESS)
                switch (q.opcode) {
                case WIRE_OP_START:
                        if (running(fw))
                                result = WIRE_RESULT_BUSY;
                        else if (fw->faults)
                                result = WIRE_RESULT_FAULT;
                        break;
                default:
                        break;
                }

        wire_response_encode(&(WireResponse) { .opcode = n > 0 ? b[0] : 0, .result = result }, ind);
        enqueue(fw, WRAPFW_CONTROL_POINT, ind, sizeof ind);
        if (out_indication)
                memcpy(out_indication, ind, sizeof ind);

        if (result != WIRE_RESULT_SUCCESS)
                return result;

        switch (q.opcode) {
        case WIRE_OP_START:
                fw->press_pending = false;
                fw->session_seq++;
                fw->mode = q.mode;
                fw->setpoint = q.setpoint;
                fw->duration_s = q.duration_s;
                fw->session_start = now_usec;
                fw->next_temp = now_usec + s_to_usec(WRAPFW_TEMP_SESSION_S);
                set_state(fw, q.mode == 1 ? WIRE_STATE_COOLING : WIRE_STATE_HEATING, now_usec);
                break;
        case WIRE_OP_STOP:
                if (running(fw) || fw->state == WIRE_STATE_DONE) {
                        set_state(fw, WIRE_STATE_IDLE, now_usec);
                        fw->next_temp = now_usec + s_to_usec(WRAPFW_TEMP_IDLE_S);
                }
                break;
        case WIRE_OP_DENY:
                fw->press_pending = false;
                break;
        }
        return result;
}

void wrapfw_advance(WrapFw *fw, uint64_t now_usec, wrapfw_emit_t emit, void *userdata) {
        tick(fw, now_usec);
        /* Copy out first: an emit callback may call back into the wrap. */
        while (fw->n_queue > 0) {
                WrapFwOutput o = fw->queue[0];
                memmove(fw->queue, fw->queue + 1, (fw->n_queue - 1) * sizeof fw->queue[0]);
                fw->n_queue--;
                if (emit)
                        emit(&o, userdata);
        }
}

uint64_t wrapfw_next_deadline(const WrapFw *fw) {
        uint64_t t = fw->next_temp;

        if (fw->n_queue > 0)
                return 0;
        if (running(fw)) {
                uint64_t end = fw->session_start + s_to_usec(fw->duration_s);
                if (end < t) t = end;
                if (fw->next_status < t) t = fw->next_status;
        }
        if (fw->state == WIRE_STATE_DONE && fw->done_until < t)
                t = fw->done_until;
        if (fw->press_pending && fw->press_deadline < t)
                t = fw->press_deadline;
        return t;
}

size_t wrapfw_read_status(WrapFw *fw, uint64_t now_usec, uint8_t out[static 12]) {
        tick(fw, now_usec);
        status_bytes(fw, now_usec, out);
        return WIRE_STATUS_SIZE;
}

uint8_t wrapfw_battery(const WrapFw *fw) {
        return fw->battery;
}

void wrapfw_set_skin(WrapFw *fw, int16_t centi, bool hold, uint64_t now_usec) {
        tick(fw, now_usec);
        fw->skin = centi / 100.0;
        fw->skin_hold = hold;
}

void wrapfw_set_fault(WrapFw *fw, uint8_t flags, uint64_t now_usec) {
        tick(fw, now_usec);
        if (flags == fw->faults)
                return;
        fw->faults = flags;
        if (flags && fw->state != WIRE_STATE_FAULT) {
                /* The element goes off at once and stays off until the next START. */
                set_state(fw, WIRE_STATE_FAULT, now_usec);
                fw->next_temp = now_usec + s_to_usec(WRAPFW_TEMP_IDLE_S);
        } else
                queue_status(fw, now_usec);
}

void wrapfw_set_thermometer_silent(WrapFw *fw, bool silent, uint64_t now_usec) {
        tick(fw, now_usec);
        fw->thermometer_silent = silent;
}

void wrapfw_set_reported_mode(WrapFw *fw, int mode, uint64_t now_usec) {
        tick(fw, now_usec);
        fw->misreport = mode >= 0;
        fw->reported_mode = mode >= 0 ? (uint8_t) mode : 0;
        queue_status(fw, now_usec);
}

void wrapfw_set_battery(WrapFw *fw, uint8_t percent, uint64_t now_usec) {
        tick(fw, now_usec);
        if (percent > 100)
                percent = 100;
        if (percent == fw->battery)
                return;
        fw->battery = percent;
        enqueue(fw, WRAPFW_BATTERY, &percent, 1);
}

void wrapfw_get_info(WrapFw *fw, uint64_t now_usec, WrapFwInfo *ret) {
        tick(fw, now_usec);
        *ret = (WrapFwInfo) {
                .state = fw->state,
                .mode = fw->mode,
                .faults = fw->faults,
                .session_seq = fw->session_seq,
                .press_seq = fw->press_seq,
                .battery = fw->battery,
                .setpoint = fw->setpoint,
                .pack = (fw->faults & WIRE_FAULT_SENSOR) ? WIRE_NO_READING : to_centi(fw->pack),
                .skin = to_centi(fw->skin),
                .elapsed_s = elapsed_at(fw, now_usec),
                .duration_s = fw->duration_s,
                .press_pending = fw->press_pending,
                .no_gateway_count = fw->no_gateway_count,
                .sessions_completed = fw->sessions_completed,
        };
        if (running(fw))
                ret->remaining_s = (uint16_t) (fw->duration_s - ret->elapsed_s);
}
