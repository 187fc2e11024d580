/* kneewrap-sim: a knee wrap on a real Bluetooth adapter, through BlueZ, running the shared firmware (wrapfw). */
/*
 * It registers the KneeWrap GATT profile (shared/wrap-profile.md) as a GATT application on one
 * adapter, advertises as "KneeWrap-" and the adapter address's last two bytes, answers Just
 * Works pairing with its own agent, and
 * drives wrapfw: the firmware decides every byte the wrap sends, exactly as in the mock BlueZ.
 * Button presses, skin temperature, faults and battery come from the command line or from a
 * control socket. It outlives bluetoothd: when org.bluez returns it registers everything again,
 * and the firmware (a running session included) carries on as a real wrap's would.
 */
#include <errno.h>
#include <getopt.h>
#include <signal.h>
#include <stdarg.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <syslog.h>
#include <unistd.h>
#include <systemd/sd-bus.h>
#include <systemd/sd-event.h>

#include "bus-util.h"
#include "clock.h"
#include "kw-build.h"
#include "log.h"
#include "util.h"
#include "wire.h"
#include "wrapfw.h"

#define BZ_NAME          "org.bluez"
#define BZ_ADAPTER       "org.bluez.Adapter1"
#define BZ_DEVICE        "org.bluez.Device1"
#define BZ_GATT_MANAGER  "org.bluez.GattManager1"
#define BZ_ADV_MANAGER   "org.bluez.LEAdvertisingManager1"
#define BZ_AGENT_MANAGER "org.bluez.AgentManager1"
#define BZ_CHR           "org.bluez.GattCharacteristic1"
#define BZ_SVC           "org.bluez.GattService1"
#define BZ_ADV           "org.bluez.LEAdvertisement1"
#define BZ_AGENT         "org.bluez.Agent1"
#define ERR_REJECTED     "org.bluez.Error.Rejected"

#define MAX_DEVICES      16
#define MAX_PRESSES      32
#define CALL_TIMEOUT     (25 * USEC_PER_SEC)
/* btvirt (and some controllers' duplicate filtering) report an advertiser only when scanning
 * or advertising is switched on, so while nobody is connected the advertisement is registered
 * anew this often, on the wall clock. */
#define READVERTISE_USEC (3 * USEC_PER_SEC)

typedef enum ChrId {
        C_MANUF, C_MODEL, C_SERIAL, C_FIRMWARE,
        C_BATTERY, C_TEMP,
        C_STATUS, C_BUTTON, C_CP,
        _C_MAX,
} ChrId;

enum { S_DEVINFO, S_BATTERY, S_THERMO, S_THERAPY, _S_MAX };

typedef struct Sim Sim;

typedef struct Chr {
        Sim *sim;
        ChrId id;
        unsigned service;
        const char *uuid;
        const char *const *flags;
        char path[128];
        uint8_t value[32];
        size_t value_len;
        bool notifying;
} Chr;

typedef struct Svc {
        Sim *sim;
        const char *uuid;
        char path[128];
} Svc;

typedef struct Device {
        char path[128];
        char address[BDADDR_STR_MAX];
        bool connected, paired, bonded;
} Device;

/* Two advertisements take turns, so that the wrap never stops advertising while it switches
 * advertising on anew (see READVERTISE_USEC). */
typedef struct Adv {
        Sim *sim;
        unsigned idx;
        char path[64];
        bool registered;
} Adv;

typedef struct Press {
        uint8_t event;
        uint64_t at_usec;               /* wall clock, after start */
        sd_event_source *timer;
        Sim *sim;
} Press;

struct Sim {
        sd_event *ev;
        sd_bus *bus;
        char adapter[16];
        char adapter_path[64];
        char root[64];                  /* the GATT application */
        char agent_path[64];
        char address[BDADDR_STR_MAX];
        char name[32];
        char firmware[32];
        char serial[16];

        WrapFw *fw;
        sd_event_source *fw_timer;
        /* "stream HZ SECONDS": Therapy Status notified HZ times a second, for the benches. */
        sd_event_source *stream_timer;
        uint64_t stream_period, stream_until;
        unsigned stream_sent;
        uint64_t start_usec;            /* when the wrap last accepted START (its clock), for logs */

        Svc svcs[_S_MAX];
        Chr chrs[_C_MAX];

        /* bluetoothd and what we have there */
        char *bluez_owner;
        bool adapter_present, adapter_powered;
        bool app_registered, app_pending;
        Adv adv[2];
        unsigned adv_cur;               /* the slot registered last */
        bool adv_pending, adv_rotate;
        bool agent_registered;
        bool advertise;                 /* wanted: "advertise on|off" */
        sd_event_source *adv_timer;
        Device devices[MAX_DEVICES];
        size_t n_devices;

        /* start-up knobs, applied once the firmware exists */
        int battery;                    /* -1: firmware default */
        bool skin_set;
        int16_t skin;

        Press presses[MAX_PRESSES];
        size_t n_presses;

        int control_fd;
        char *control_path;
        sd_event_source *control_io;
};

static uint64_t fw_now(void) {
        return clock_mono_usec();
}

static const char *const flags_read[] = { "read", NULL };
static const char *const flags_read_notify[] = { "read", "notify", NULL };
static const char *const flags_indicate[] = { "indicate", NULL };
static const char *const flags_notify[] = { "notify", NULL };
/* The Control Point needs an encrypted link: a central that has not paired can never start a session. */
static const char *const flags_cp[] = { "encrypt-write", "indicate", NULL };

static const struct {
        unsigned service;
        const char *uuid;
        const char *const *flags;
} chr_table[_C_MAX] = {
        [C_MANUF]    = { S_DEVINFO, WIRE_UUID_MANUFACTURER, flags_read },
        [C_MODEL]    = { S_DEVINFO, WIRE_UUID_MODEL, flags_read },
        [C_SERIAL]   = { S_DEVINFO, WIRE_UUID_SERIAL, flags_read },
        [C_FIRMWARE] = { S_DEVINFO, WIRE_UUID_FIRMWARE, flags_read },
        [C_BATTERY]  = { S_BATTERY, WIRE_UUID_BATTERY_LEVEL, flags_read_notify },
        [C_TEMP]     = { S_THERMO, WIRE_UUID_TEMP_MEASUREMENT, flags_indicate },
        [C_STATUS]   = { S_THERAPY, WIRE_UUID_STATUS, flags_read_notify },
        [C_BUTTON]   = { S_THERAPY, WIRE_UUID_BUTTON, flags_notify },
        [C_CP]       = { S_THERAPY, WIRE_UUID_CONTROL_POINT, flags_cp },
};

static const char *const svc_uuids[_S_MAX] = {
        [S_DEVINFO] = WIRE_UUID_DEVICE_INFO,
        [S_BATTERY] = WIRE_UUID_BATTERY_SERVICE,
        [S_THERMO]  = WIRE_UUID_HEALTH_THERMO,
        [S_THERAPY] = WIRE_UUID_THERAPY_SERVICE,
};

static void adv_update(Sim *s);
static void bluez_register(Sim *s);

/* ---- the firmware and what it sends ---- */

static void chr_store(Chr *c, const uint8_t *b, size_t n) {
        if (n > sizeof c->value)
                n = sizeof c->value;
        memcpy(c->value, b, n);
        c->value_len = n;
}

static void fw_emit(const WrapFwOutput *o, void *userdata) {
        static const ChrId map[] = {
                [WRAPFW_STATUS] = C_STATUS, [WRAPFW_BUTTON] = C_BUTTON, [WRAPFW_CONTROL_POINT] = C_CP,
                [WRAPFW_TEMPERATURE] = C_TEMP, [WRAPFW_BATTERY] = C_BATTERY,
        };
        Sim *s = userdata;
        Chr *c;
        int r;

        if ((size_t) o->channel >= ELEMENTSOF(map))
                return;
        c = &s->chrs[map[o->channel]];
        chr_store(c, o->value, o->size);
        /* bluetoothd sends a notification or indication for every PropertiesChanged on Value
         * to each device whose CCCD asks for it, as a wrap's own stack would. That is not the
         * same as StartNotify having been called: a bonded central's CCCDs are restored from
         * bluetoothd's storage (after its restart, say) without a StartNotify. */
        if (!s->bluez_owner)
                return;
        r = sd_bus_emit_properties_changed(s->bus, c->path, BZ_CHR, "Value", NULL);
        if (r < 0)
                log_warning_errno(r, "cannot signal %s's value: %m", c->uuid);
}

static int on_fw_timer(sd_event_source *es, uint64_t usec, void *userdata);

/* Runs the firmware up to now, sends what it queued, and arms the one timer at its next deadline. */
static void fw_kick(Sim *s) {
        uint64_t next;
        int r;

        if (!s->fw)
                return;
        wrapfw_advance(s->fw, fw_now(), fw_emit, s);
        next = wrapfw_next_deadline(s->fw);
        if (next == UINT64_MAX) {
                (void) sd_event_source_set_enabled(s->fw_timer, SD_EVENT_OFF);
                return;
        }
        /* The firmware runs on the scaled clock; sd-event wants the real one. */
        next = clock_mono_to_real_usec(next);
        if (!s->fw_timer) {
                r = sd_event_add_time(s->ev, &s->fw_timer, CLOCK_MONOTONIC, next, 0, on_fw_timer, s);
                if (r < 0)
                        log_error_errno(r, "cannot arm the firmware timer: %m");
                return;
        }
        (void) sd_event_source_set_time(s->fw_timer, next);
        (void) sd_event_source_set_enabled(s->fw_timer, SD_EVENT_ONESHOT);
}

static int on_fw_timer(sd_event_source *es, uint64_t usec, void *userdata) {
        fw_kick(userdata);
        return 0;
}

/* The bench's stream: the current Therapy Status, notified again at a fixed rate (real time). */
static int on_stream_timer(sd_event_source *es, uint64_t usec, void *userdata) {
        Sim *s = userdata;
        WrapFwOutput o = { .channel = WRAPFW_STATUS };

        if (!s->fw || usec >= s->stream_until) {
                log_info("stream done: %u Status notifications", s->stream_sent);
                return sd_event_source_set_enabled(es, SD_EVENT_OFF);
        }
        o.size = wrapfw_read_status(s->fw, fw_now(), o.value);
        fw_emit(&o, s);
        s->stream_sent++;
        (void) sd_event_source_set_time(es, usec + s->stream_period);
        return 0;
}

static int sim_stream(Sim *s, unsigned hz, unsigned seconds) {
        uint64_t now;
        int r;

        if (hz == 0 || hz > 1000 || seconds > 3600)
                return -ERANGE;
        (void) sd_event_now(s->ev, CLOCK_MONOTONIC, &now);
        s->stream_period = USEC_PER_SEC / hz;
        s->stream_until = now + (uint64_t) seconds * USEC_PER_SEC;
        s->stream_sent = 0;
        if (!s->stream_timer) {
                r = sd_event_add_time(s->ev, &s->stream_timer, CLOCK_MONOTONIC, now, 0, on_stream_timer, s);
                if (r < 0)
                        return r;
        } else
                (void) sd_event_source_set_time(s->stream_timer, now);
        log_info("streaming Therapy Status at %u Hz for %u s", hz, seconds);
        return sd_event_source_set_enabled(s->stream_timer, SD_EVENT_ON);
}

static int sim_press(Sim *s, uint8_t event) {
        static const char *const names[] = { "?", "cold", "heat", "stop" };
        int r;

        if (!s->fw)
                return -EAGAIN;
        r = wrapfw_press(s->fw, event, fw_now());
        if (r < 0)
                return r;
        log_info("button: %s pressed", names[event]);
        fw_kick(s);
        return 0;
}

static void fw_create(Sim *s) {
        char norm[BDADDR_STR_MAX];

        if (s->fw || bdaddr_normalize(s->address, norm) < 0)
                return;
        s->fw = wrapfw_new(norm, fw_now());
        if (!s->fw) {
                log_error("out of memory for the firmware");
                sd_event_exit(s->ev, EXIT_FAILURE);
                return;
        }
        /* The name and serial number come from the address, as on a real wrap. */
        snprintf(s->name, sizeof s->name, "KneeWrap-%c%c%c%c", norm[12], norm[13], norm[15], norm[16]);
        snprintf(s->serial, sizeof s->serial, "KW%c%c%c%c%c%c", norm[9], norm[10], norm[12], norm[13],
                 norm[15], norm[16]);
        if (s->battery >= 0)
                wrapfw_set_battery(s->fw, (uint8_t) s->battery, fw_now());
        if (s->skin_set)
                wrapfw_set_skin(s->fw, s->skin, true, fw_now());
        log_info("%s (%s) on %s", s->name, norm, s->adapter);
        fw_kick(s);
        for (size_t i = 0; i < s->n_presses; i++)
                if (s->presses[i].event && !s->presses[i].timer) {
                        /* Its time passed while the adapter was not there yet. */
                        (void) sim_press(s, s->presses[i].event);
                        s->presses[i].event = 0;
                }
}

/* ---- GATT objects (org.bluez.GattService1, GattCharacteristic1) ---- */

static int prop_svc_uuid(sd_bus *bus, const char *path, const char *iface, const char *prop,
                         sd_bus_message *reply, void *userdata, sd_bus_error *error) {
        return sd_bus_message_append(reply, "s", ((Svc *) userdata)->uuid);
}

static int prop_true(sd_bus *bus, const char *path, const char *iface, const char *prop,
                     sd_bus_message *reply, void *userdata, sd_bus_error *error) {
        return sd_bus_message_append(reply, "b", 1);
}

static const sd_bus_vtable svc_vtable[] = {
        SD_BUS_VTABLE_START(0),
        SD_BUS_PROPERTY("UUID", "s", prop_svc_uuid, 0, SD_BUS_VTABLE_PROPERTY_CONST),
        SD_BUS_PROPERTY("Primary", "b", prop_true, 0, SD_BUS_VTABLE_PROPERTY_CONST),
        SD_BUS_VTABLE_END,
};

static int prop_chr_uuid(sd_bus *bus, const char *path, const char *iface, const char *prop,
                         sd_bus_message *reply, void *userdata, sd_bus_error *error) {
        return sd_bus_message_append(reply, "s", ((Chr *) userdata)->uuid);
}

static int prop_chr_service(sd_bus *bus, const char *path, const char *iface, const char *prop,
                            sd_bus_message *reply, void *userdata, sd_bus_error *error) {
        Chr *c = userdata;
        return sd_bus_message_append(reply, "o", c->sim->svcs[c->service].path);
}

static int prop_chr_flags(sd_bus *bus, const char *path, const char *iface, const char *prop,
                          sd_bus_message *reply, void *userdata, sd_bus_error *error) {
        return sd_bus_message_append_strv(reply, (char **) ((Chr *) userdata)->flags);
}

static int prop_chr_value(sd_bus *bus, const char *path, const char *iface, const char *prop,
                          sd_bus_message *reply, void *userdata, sd_bus_error *error) {
        Chr *c = userdata;
        return sd_bus_message_append_array(reply, 'y', c->value, c->value_len);
}

static int prop_chr_notifying(sd_bus *bus, const char *path, const char *iface, const char *prop,
                              sd_bus_message *reply, void *userdata, sd_bus_error *error) {
        return sd_bus_message_append(reply, "b", ((Chr *) userdata)->notifying);
}

typedef struct {
        uint16_t *offset;
        const char **type, **device;
} Options;

static int read_option(sd_bus_message *m, const char *key, const char *contents, void *userdata) {
        Options *o = userdata;
        int r;

        if (streq(key, "offset") && streq(contents, "q"))
                r = sd_bus_message_read(m, "v", "q", o->offset);
        else if (streq(key, "type") && streq(contents, "s"))
                r = sd_bus_message_read(m, "v", "s", o->type);
        else if (streq(key, "device") && streq(contents, "o"))
                r = sd_bus_message_read(m, "v", "o", o->device);
        else
                return 0;
        return r < 0 ? r : 1;
}

/* Reads the options dictionary of ReadValue/WriteValue: offset, type and the device. */
static int read_options(sd_bus_message *m, uint16_t *offset, const char **type, const char **device) {
        Options o = { .offset = offset, .type = type, .device = device };

        return bus_message_read_dict(m, read_option, &o);
}

static bool from_bluez(Sim *s, sd_bus_message *m) {
        const char *sender = sd_bus_message_get_sender(m);
        return s->bluez_owner && sender && streq(sender, s->bluez_owner);
}

static int method_read_value(sd_bus_message *m, void *userdata, sd_bus_error *error) {
        Chr *c = userdata;
        Sim *s = c->sim;
        _cleanup_(sd_bus_message_unrefp) sd_bus_message *reply = NULL;
        uint16_t offset = 0;
        const char *type = NULL, *device = NULL, *str = NULL;
        uint8_t b[32];
        size_t n = 0;
        int r;

        if (!from_bluez(s, m))
                return sd_bus_error_set(error, SD_BUS_ERROR_ACCESS_DENIED, "Only bluetoothd reads the wrap");
        r = read_options(m, &offset, &type, &device);
        if (r < 0)
                return sd_bus_error_set(error, "org.bluez.Error.InvalidArguments", "Invalid options");
        switch (c->id) {
        case C_MANUF: str = "KneeWrap Labs"; break;
        case C_MODEL: str = "KW-1"; break;
        case C_SERIAL: str = s->serial; break;
        case C_FIRMWARE: str = s->firmware; break;
        case C_BATTERY:
                fw_kick(s);
                b[0] = wrapfw_battery(s->fw);
                n = 1;
                break;
        case C_STATUS:
                n = wrapfw_read_status(s->fw, fw_now(), b);
                fw_kick(s);
                break;
        default:
                return sd_bus_error_set(error, "org.bluez.Error.NotPermitted", "Read not permitted");
        }
        if (str) {
                n = strlen(str);
                memcpy(b, str, n);
        }
        if (offset > n)
                return sd_bus_error_set(error, "org.bluez.Error.InvalidOffset", "Invalid offset");
        log_debug("read of %s by %s: %zu bytes", c->uuid, device ? device : "?", n - offset);
        r = sd_bus_message_new_method_return(m, &reply);
        if (r < 0)
                return r;
        r = sd_bus_message_append_array(reply, 'y', b + offset, n - offset);
        if (r < 0)
                return r;
        return sd_bus_send(NULL, reply, NULL);
}

/* One line per request; "before" is the wrap as the request found it, since_start the time
 * since the last START it accepted, on its own clock (-1: none yet). */
static void log_request(const uint8_t *b, size_t n, uint8_t result, const char *device, const WrapFwInfo *before,
                        double since_start) {
        WireRequest q;
        char hex[3 * 16 + 1] = "";

        for (size_t i = 0; i < n && i < 16; i++)
                snprintf(hex + 3 * i, 4, "%s%02x", i ? " " : "", b[i]);
        if (wire_request_decode(b, n, &q) != WIRE_RESULT_SUCCESS) {
                log_info("control point: [%s] from %s: malformed, answered %s", hex, device,
                         wire_result_to_string(result));
                return;
        }
        switch (q.opcode) {
        case WIRE_OP_START:
                log_info("control point: START %s setpoint %.2f C duration %u s from %s: %s",
                         q.mode == 1 ? "cold" : "heat", q.setpoint / 100.0, q.duration_s, device,
                         wire_result_to_string(result));
                break;
        case WIRE_OP_STOP:
                log_info("control point: STOP reason %u (%.1f s after START, of %u s; the wrap was %s) from %s: %s",
                         q.reason, since_start, before->duration_s, wire_state_to_string(before->state), device,
                         wire_result_to_string(result));
                break;
        case WIRE_OP_DENY:
                log_info("control point: DENY reason %u minutes %u from %s: %s", q.reason, q.minutes,
                         device, wire_result_to_string(result));
                break;
        }
}

static int method_write_value(sd_bus_message *m, void *userdata, sd_bus_error *error) {
        Chr *c = userdata;
        Sim *s = c->sim;
        uint16_t offset = 0;
        const char *type = NULL, *device = NULL;
        const void *v;
        size_t n;
        uint8_t result;
        WrapFwInfo before;
        uint64_t now;
        int r;

        if (!from_bluez(s, m))
                return sd_bus_error_set(error, SD_BUS_ERROR_ACCESS_DENIED, "Only bluetoothd writes to the wrap");
        r = sd_bus_message_read_array(m, 'y', &v, &n);
        if (r >= 0)
                r = read_options(m, &offset, &type, &device);
        if (r < 0)
                return sd_bus_error_set(error, "org.bluez.Error.InvalidArguments", "Invalid arguments");
        if (c->id != C_CP)
                return sd_bus_error_set(error, "org.bluez.Error.NotPermitted", "Write not permitted");
        if (offset != 0)
                return sd_bus_error_set(error, "org.bluez.Error.InvalidOffset", "Invalid offset");

        /* The write is acknowledged at the ATT level; the result travels in the indication. */
        wrapfw_get_info(s->fw, fw_now(), &before);
        now = fw_now();
        result = wrapfw_write_cp(s->fw, v, n, now, NULL);
        log_request(v, n, result, device ? device : "?", &before,
                    s->start_usec ? (double) (now - s->start_usec) / USEC_PER_SEC : -1.0);
        if (result == WIRE_RESULT_SUCCESS && n > 0 && ((const uint8_t *) v)[0] == WIRE_OP_START)
                s->start_usec = now;
        r = sd_bus_reply_method_return(m, NULL);
        fw_kick(s);
        return r;
}

static int method_start_notify(sd_bus_message *m, void *userdata, sd_bus_error *error) {
        Chr *c = userdata;

        if (!from_bluez(c->sim, m))
                return sd_bus_error_set(error, SD_BUS_ERROR_ACCESS_DENIED, "Only bluetoothd subscribes");
        if (!c->notifying) {
                c->notifying = true;
                log_info("%s: a central subscribed", c->uuid);
                (void) sd_bus_emit_properties_changed(c->sim->bus, c->path, BZ_CHR, "Notifying", NULL);
        }
        return sd_bus_reply_method_return(m, NULL);
}

static int method_stop_notify(sd_bus_message *m, void *userdata, sd_bus_error *error) {
        Chr *c = userdata;

        if (!from_bluez(c->sim, m))
                return sd_bus_error_set(error, SD_BUS_ERROR_ACCESS_DENIED, "Only bluetoothd subscribes");
        if (c->notifying) {
                c->notifying = false;
                log_info("%s: unsubscribed", c->uuid);
                (void) sd_bus_emit_properties_changed(c->sim->bus, c->path, BZ_CHR, "Notifying", NULL);
        }
        return sd_bus_reply_method_return(m, NULL);
}

static int method_confirm(sd_bus_message *m, void *userdata, sd_bus_error *error) {
        return sd_bus_reply_method_return(m, NULL);
}

static const sd_bus_vtable chr_vtable[] = {
        SD_BUS_VTABLE_START(0),
        SD_BUS_PROPERTY("UUID", "s", prop_chr_uuid, 0, SD_BUS_VTABLE_PROPERTY_CONST),
        SD_BUS_PROPERTY("Service", "o", prop_chr_service, 0, SD_BUS_VTABLE_PROPERTY_CONST),
        SD_BUS_PROPERTY("Flags", "as", prop_chr_flags, 0, SD_BUS_VTABLE_PROPERTY_CONST),
        SD_BUS_PROPERTY("Value", "ay", prop_chr_value, 0, SD_BUS_VTABLE_PROPERTY_EMITS_CHANGE),
        SD_BUS_PROPERTY("Notifying", "b", prop_chr_notifying, 0, SD_BUS_VTABLE_PROPERTY_EMITS_CHANGE),
        SD_BUS_METHOD("ReadValue", "a{sv}", "ay", method_read_value, SD_BUS_VTABLE_UNPRIVILEGED),
        SD_BUS_METHOD("WriteValue", "aya{sv}", "", method_write_value, SD_BUS_VTABLE_UNPRIVILEGED),
        SD_BUS_METHOD("StartNotify", "", "", method_start_notify, SD_BUS_VTABLE_UNPRIVILEGED),
        SD_BUS_METHOD("StopNotify", "", "", method_stop_notify, SD_BUS_VTABLE_UNPRIVILEGED),
        SD_BUS_METHOD("Confirm", "", "", method_confirm, SD_BUS_VTABLE_UNPRIVILEGED),
        SD_BUS_VTABLE_END,
};

/* ---- the advertisement (org.bluez.LEAdvertisement1) ---- */

static int prop_adv_type(sd_bus *bus, const char *path, const char *iface, const char *prop,
                         sd_bus_message *reply, void *userdata, sd_bus_error *error) {
        return sd_bus_message_append(reply, "s", "peripheral");
}

static int prop_adv_uuids(sd_bus *bus, const char *path, const char *iface, const char *prop,
                          sd_bus_message *reply, void *userdata, sd_bus_error *error) {
        return sd_bus_message_append(reply, "as", 1, WIRE_UUID_THERAPY_SERVICE);
}

static int prop_adv_name(sd_bus *bus, const char *path, const char *iface, const char *prop,
                         sd_bus_message *reply, void *userdata, sd_bus_error *error) {
        return sd_bus_message_append(reply, "s", ((Adv *) userdata)->sim->name);
}

static int method_adv_release(sd_bus_message *m, void *userdata, sd_bus_error *error) {
        Adv *a = userdata;

        log_info("bluetoothd released advertisement %u", a->idx);
        a->registered = false;
        return sd_bus_reply_method_return(m, NULL);
}

static const sd_bus_vtable adv_vtable[] = {
        SD_BUS_VTABLE_START(0),
        SD_BUS_PROPERTY("Type", "s", prop_adv_type, 0, SD_BUS_VTABLE_PROPERTY_CONST),
        SD_BUS_PROPERTY("ServiceUUIDs", "as", prop_adv_uuids, 0, SD_BUS_VTABLE_PROPERTY_CONST),
        SD_BUS_PROPERTY("LocalName", "s", prop_adv_name, 0, SD_BUS_VTABLE_PROPERTY_CONST),
        SD_BUS_METHOD("Release", "", "", method_adv_release, SD_BUS_VTABLE_UNPRIVILEGED),
        SD_BUS_VTABLE_END,
};

/* ---- devices on our adapter: who is connected, who holds a bond ---- */

static bool device_path_ours(Sim *s, const char *path) {
        size_t n = strlen(s->adapter_path);
        return strncmp(path, s->adapter_path, n) == 0 && strncmp(path + n, "/dev_", 5) == 0 &&
               !strchr(path + n + 1, '/');
}

static Device *device_find(Sim *s, const char *path, bool create) {
        for (size_t i = 0; i < s->n_devices; i++)
                if (streq(s->devices[i].path, path))
                        return &s->devices[i];
        if (!create || s->n_devices >= MAX_DEVICES || strlen(path) >= sizeof s->devices[0].path)
                return NULL;
        Device *d = &s->devices[s->n_devices++];
        *d = (Device) { .connected = false };
        snprintf(d->path, sizeof d->path, "%s", path);
        return d;
}

static void device_forget(Sim *s, const char *path) {
        for (size_t i = 0; i < s->n_devices; i++)
                if (streq(s->devices[i].path, path)) {
                        s->devices[i] = s->devices[--s->n_devices];
                        return;
                }
}

static Device *device_connected(Sim *s) {
        for (size_t i = 0; i < s->n_devices; i++)
                if (s->devices[i].connected)
                        return &s->devices[i];
        return NULL;
}

static size_t n_connected(Sim *s) {
        size_t k = 0;
        for (size_t i = 0; i < s->n_devices; i++)
                k += s->devices[i].connected;
        return k;
}

static int call_async(Sim *s, const char *path, const char *iface, const char *method,
                      sd_bus_message_handler_t cb, const char *types, ...);

static void device_disconnect(Sim *s, Device *d) {
        int r = call_async(s, d->path, BZ_DEVICE, "Disconnect", NULL, NULL);
        if (r < 0)
                log_warning_errno(r, "cannot disconnect %s: %m", d->path);
}

static int device_prop(sd_bus_message *m, const char *key, const char *contents, void *userdata) {
        Device *d = userdata;
        const char *str;
        int b, r;

        if (streq(contents, "b") && (streq(key, "Connected") || streq(key, "Paired") || streq(key, "Bonded"))) {
                r = sd_bus_message_read(m, "v", "b", &b);
                if (r < 0)
                        return r;
                if (streq(key, "Connected"))
                        d->connected = b;
                else if (streq(key, "Paired"))
                        d->paired = b;
                else
                        d->bonded = b;
        } else if (streq(key, "Address") && streq(contents, "s")) {
                r = sd_bus_message_read(m, "v", "s", &str);
                if (r < 0)
                        return r;
                snprintf(d->address, sizeof d->address, "%s", str);
        } else
                return 0;
        return 1;
}

/* Reads a Device1 property dictionary into d. */
static int device_props(Sim *s, sd_bus_message *m, Device *d) {
        bool was_connected = d->connected;
        int r;

        r = bus_message_read_dict(m, device_prop, d);
        if (r < 0)
                return r;

        if (d->connected != was_connected) {
                log_info("central %s %s", d->address[0] ? d->address : d->path,
                         d->connected ? "connected" : "disconnected");
                if (d->connected && n_connected(s) > 1) {
                        /* A wrap accepts one central at a time. */
                        log_info("refusing %s: another central is connected", d->address);
                        device_disconnect(s, d);
                }
                adv_update(s);
        }
        return 0;
}

static int adapter_prop(sd_bus_message *m, const char *key, const char *contents, void *userdata) {
        Sim *s = userdata;
        const char *str;
        int b, r;

        if (streq(key, "Address") && streq(contents, "s")) {
                r = sd_bus_message_read(m, "v", "s", &str);
                if (r >= 0)
                        snprintf(s->address, sizeof s->address, "%s", str);
        } else if (streq(key, "Powered") && streq(contents, "b")) {
                r = sd_bus_message_read(m, "v", "b", &b);
                if (r >= 0)
                        s->adapter_powered = b;
        } else
                return 0;
        return r < 0 ? r : 1;
}

static int adapter_props(Sim *s, sd_bus_message *m) {
        return bus_message_read_dict(m, adapter_prop, s);
}

/* One object's a{sa{sv}}: our adapter and the devices on it. */
static int object_ifaces(Sim *s, const char *path, sd_bus_message *m) {
        int r;

        r = sd_bus_message_enter_container(m, 'a', "{sa{sv}}");
        if (r < 0)
                return r;
        while ((r = sd_bus_message_enter_container(m, 'e', "sa{sv}")) > 0) {
                const char *iface;

                r = sd_bus_message_read(m, "s", &iface);
                if (r < 0)
                        return r;
                if (streq(iface, BZ_ADAPTER) && streq(path, s->adapter_path)) {
                        r = adapter_props(s, m);
                        s->adapter_present = true;
                } else if (streq(iface, BZ_DEVICE) && device_path_ours(s, path)) {
                        Device *d = device_find(s, path, true);
                        r = d ? device_props(s, m, d) : sd_bus_message_skip(m, "a{sv}");
                } else
                        r = sd_bus_message_skip(m, "a{sv}");
                if (r < 0)
                        return r;
                r = sd_bus_message_exit_container(m);
                if (r < 0)
                        return r;
        }
        if (r < 0)
                return r;
        return sd_bus_message_exit_container(m);
}

/* ---- calls to bluetoothd ---- */

static int call_asyncv(Sim *s, void *userdata, const char *path, const char *iface, const char *method,
                       sd_bus_message_handler_t cb, const char *types, va_list ap) {
        _cleanup_(sd_bus_message_unrefp) sd_bus_message *m = NULL;
        int r;

        r = sd_bus_message_new_method_call(s->bus, &m, BZ_NAME, path, iface, method);
        if (r < 0)
                return r;
        if (types) {
                r = sd_bus_message_appendv(m, types, ap);
                if (r < 0)
                        return r;
        }
        return sd_bus_call_async(s->bus, NULL, m, cb, userdata, CALL_TIMEOUT);
}

static int call_async(Sim *s, const char *path, const char *iface, const char *method,
                      sd_bus_message_handler_t cb, const char *types, ...) {
        va_list ap;
        int r;

        va_start(ap, types);
        r = call_asyncv(s, s, path, iface, method, cb, types, ap);
        va_end(ap);
        return r;
}

static int call_adv(Adv *a, const char *method, sd_bus_message_handler_t cb, const char *types, ...) {
        va_list ap;
        int r;

        va_start(ap, types);
        r = call_asyncv(a->sim, a, a->sim->adapter_path, BZ_ADV_MANAGER, method, cb, types, ap);
        va_end(ap);
        return r;
}

static const char *reply_error(sd_bus_message *m) {
        const sd_bus_error *e = sd_bus_message_get_error(m);
        return e ? e->name : NULL;
}

static int on_register_app(sd_bus_message *m, void *userdata, sd_bus_error *ret_error) {
        Sim *s = userdata;
        const sd_bus_error *e = sd_bus_message_get_error(m);

        s->app_pending = false;
        if (e && !sd_bus_error_has_name(e, "org.bluez.Error.AlreadyExists")) {
                log_error("RegisterApplication on %s failed: %s: %s", s->adapter, e->name, e->message);
                return 0;
        }
        s->app_registered = true;
        log_info("GATT application registered on %s", s->adapter);
        return 0;
}

static int on_register_adv(sd_bus_message *m, void *userdata, sd_bus_error *ret_error) {
        Adv *a = userdata;
        Sim *s = a->sim;
        const sd_bus_error *e = sd_bus_message_get_error(m);

        s->adv_pending = false;
        if (e && !sd_bus_error_has_name(e, "org.bluez.Error.AlreadyExists")) {
                log_warning("RegisterAdvertisement on %s failed: %s: %s", s->adapter, e->name, e->message);
                return 0;
        }
        if (!s->adv[0].registered && !s->adv[1].registered)
                log_debug("advertising as %s", s->name);
        a->registered = true;
        s->adv_cur = a->idx;
        /* Next: the older one goes; or a central connected meanwhile, or advertising was switched off. */
        adv_update(s);
        return 0;
}

static int on_unregister_adv(sd_bus_message *m, void *userdata, sd_bus_error *ret_error) {
        Adv *a = userdata;

        a->sim->adv_pending = false;
        a->registered = false;
        if (reply_error(m))
                log_debug("UnregisterAdvertisement: %s", reply_error(m));
        adv_update(a->sim);
        return 0;
}

static bool adv_wanted(Sim *s) {
        return s->advertise && s->fw && !device_connected(s);
}

static bool adv_any(Sim *s) {
        return s->adv[0].registered || s->adv[1].registered;
}

/*
 * Brings advertising to what is wanted, one call in flight at a time. While advertising, a
 * rotation registers the other advertisement first and then unregisters the older one: the
 * wrap is never without one. (Unregistering first left a gap in which bluetoothd queued the
 * new registration behind a central's pending Pair Device, which itself waited for the
 * wrap's advertisement: bluetoothd sends one management command at a time.)
 */
static void adv_update(Sim *s) {
        Adv *cur = &s->adv[s->adv_cur], *other = &s->adv[s->adv_cur ^ 1u], *a = NULL;
        bool reg = false;
        int r;

        if (!s->bluez_owner || !s->adapter_present || s->adv_pending)
                return;
        if (adv_wanted(s)) {
                if (!cur->registered && !other->registered) {
                        a = cur;
                        reg = true;
                } else if (cur->registered && other->registered)
                        a = other;
                else if (s->adv_rotate) {
                        s->adv_rotate = false;
                        a = cur->registered ? other : cur;
                        reg = true;
                }
        } else if (cur->registered)
                a = cur;
        else if (other->registered)
                a = other;
        if (!a)
                return;
        if (reg)
                r = call_adv(a, "RegisterAdvertisement", on_register_adv, "oa{sv}", a->path, 0);
        else
                r = call_adv(a, "UnregisterAdvertisement", on_unregister_adv, "o", a->path);
        if (r < 0)
                log_warning_errno(r, "cannot call LEAdvertisingManager1: %m");
        else
                s->adv_pending = true;
}

static int on_adv_timer(sd_event_source *es, uint64_t usec, void *userdata) {
        Sim *s = userdata;

        (void) sd_event_source_set_time(es, usec + READVERTISE_USEC);
        (void) sd_event_source_set_enabled(es, SD_EVENT_ON);
        s->adv_rotate = adv_wanted(s);
        adv_update(s);
        return 0;
}

static int on_register_agent(sd_bus_message *m, void *userdata, sd_bus_error *ret_error) {
        Sim *s = userdata;
        const sd_bus_error *e = sd_bus_message_get_error(m);

        if (e && !sd_bus_error_has_name(e, "org.bluez.Error.AlreadyExists")) {
                log_warning("RegisterAgent failed: %s: %s; pairing will fail", e->name, e->message);
                return 0;
        }
        s->agent_registered = true;
        /* Incoming pairing goes to the default agent: the wrap is the responder. */
        (void) call_async(s, "/org/bluez", BZ_AGENT_MANAGER, "RequestDefaultAgent", NULL, "o", s->agent_path);
        return 0;
}

static void bluez_register(Sim *s) {
        int r;

        if (!s->bluez_owner || !s->adapter_present)
                return;
        fw_create(s);
        if (!s->fw)
                return;
        if (!s->adapter_powered) {
                log_info("%s is off: powering it on", s->adapter);
                r = sd_bus_call_method_async(s->bus, NULL, BZ_NAME, s->adapter_path,
                                             "org.freedesktop.DBus.Properties", "Set", NULL, NULL,
                                             "ssv", BZ_ADAPTER, "Powered", "b", 1);
                if (r < 0)
                        log_warning_errno(r, "cannot power %s on: %m", s->adapter);
        }
        /* A central reads the GAP Device Name after connecting, and BlueZ then shows that as
         * the device's Name: bluetoothd serves the adapter's alias there, so the alias is the
         * wrap's name too. */
        r = sd_bus_call_method_async(s->bus, NULL, BZ_NAME, s->adapter_path, "org.freedesktop.DBus.Properties",
                                     "Set", NULL, NULL, "ssv", BZ_ADAPTER, "Alias", "s", s->name);
        if (r < 0)
                log_warning_errno(r, "cannot set %s's alias: %m", s->adapter);
        if (!s->agent_registered) {
                r = call_async(s, "/org/bluez", BZ_AGENT_MANAGER, "RegisterAgent", on_register_agent,
                               "os", s->agent_path, "NoInputNoOutput");
                if (r < 0)
                        log_warning_errno(r, "cannot register the agent: %m");
        }
        if (!s->app_registered && !s->app_pending) {
                r = call_async(s, s->adapter_path, BZ_GATT_MANAGER, "RegisterApplication",
                               on_register_app, "oa{sv}", s->root, 0);
                if (r < 0)
                        log_error_errno(r, "cannot register the GATT application: %m");
                else
                        s->app_pending = true;
        }
        adv_update(s);
}

static int on_managed_objects(sd_bus_message *m, void *userdata, sd_bus_error *ret_error) {
        Sim *s = userdata;
        int r;

        if (reply_error(m)) {
                log_warning("GetManagedObjects: %s", reply_error(m));
                return 0;
        }
        r = sd_bus_message_enter_container(m, 'a', "{oa{sa{sv}}}");
        while (r >= 0 && (r = sd_bus_message_enter_container(m, 'e', "oa{sa{sv}}")) > 0) {
                const char *path;

                r = sd_bus_message_read(m, "o", &path);
                if (r >= 0)
                        r = object_ifaces(s, path, m);
                if (r >= 0)
                        r = sd_bus_message_exit_container(m);
        }
        if (r < 0) {
                log_warning_errno(r, "cannot parse bluetoothd's objects: %m");
                return 0;
        }
        if (!s->adapter_present) {
                log_warning("%s not found; waiting for it", s->adapter);
                return 0;
        }
        bluez_register(s);
        return 0;
}

static void bluez_vanished(Sim *s) {
        log_warning("bluetoothd left the bus; waiting for it to return");
        free(s->bluez_owner);
        s->bluez_owner = NULL;
        s->adapter_present = s->adapter_powered = false;
        s->app_registered = s->app_pending = false;
        s->adv[0].registered = s->adv[1].registered = s->adv_pending = false;
        s->agent_registered = false;
        s->n_devices = 0;
        for (size_t i = 0; i < _C_MAX; i++)
                s->chrs[i].notifying = false;
}

static void bluez_appeared(Sim *s, const char *owner) {
        int r;

        if (s->bluez_owner && streq(s->bluez_owner, owner))
                return;
        if (s->bluez_owner)
                bluez_vanished(s);
        s->bluez_owner = strdup(owner);
        if (!s->bluez_owner)
                return;
        log_info("bluetoothd is on the bus (%s)", owner);
        r = call_async(s, "/", "org.freedesktop.DBus.ObjectManager", "GetManagedObjects",
                       on_managed_objects, NULL);
        if (r < 0)
                log_error_errno(r, "cannot ask bluetoothd for its objects: %m");
}

static int on_name_owner_changed(sd_bus_message *m, void *userdata, sd_bus_error *ret_error) {
        Sim *s = userdata;
        const char *name, *old, *new;

        if (sd_bus_message_read(m, "sss", &name, &old, &new) < 0 || !streq(name, BZ_NAME))
                return 0;
        if (*new)
                bluez_appeared(s, new);
        else if (s->bluez_owner)
                bluez_vanished(s);
        return 0;
}

static int on_get_name_owner(sd_bus_message *m, void *userdata, sd_bus_error *ret_error) {
        Sim *s = userdata;
        const char *owner;

        if (reply_error(m)) {
                log_warning("bluetoothd is not running; waiting for it");
                return 0;
        }
        if (sd_bus_message_read(m, "s", &owner) >= 0)
                bluez_appeared(s, owner);
        return 0;
}

static int on_interfaces_added(sd_bus_message *m, void *userdata, sd_bus_error *ret_error) {
        Sim *s = userdata;
        const char *path;
        bool had = s->adapter_present;

        if (!s->bluez_owner || sd_bus_message_read(m, "o", &path) < 0)
                return 0;
        if (!streq(path, s->adapter_path) && !device_path_ours(s, path))
                return 0;
        if (object_ifaces(s, path, m) < 0)
                return 0;
        if (!had && s->adapter_present) {
                log_info("%s appeared", s->adapter);
                bluez_register(s);
        }
        return 0;
}

static int on_interfaces_removed(sd_bus_message *m, void *userdata, sd_bus_error *ret_error) {
        Sim *s = userdata;
        const char *path, *iface;
        int r;

        if (!s->bluez_owner || sd_bus_message_read(m, "o", &path) < 0)
                return 0;
        r = sd_bus_message_enter_container(m, 'a', "s");
        while (r >= 0 && sd_bus_message_read(m, "s", &iface) > 0) {
                if (streq(iface, BZ_ADAPTER) && streq(path, s->adapter_path)) {
                        log_warning("%s went away; waiting for it", s->adapter);
                        s->adapter_present = s->adapter_powered = false;
                        s->app_registered = s->adv[0].registered = s->adv[1].registered = false;
                        s->n_devices = 0;
                } else if (streq(iface, BZ_DEVICE) && device_path_ours(s, path)) {
                        device_forget(s, path);
                        adv_update(s);
                }
        }
        return 0;
}

static int on_props_changed(sd_bus_message *m, void *userdata, sd_bus_error *ret_error) {
        Sim *s = userdata;
        const char *path = sd_bus_message_get_path(m), *iface;
        bool was_powered = s->adapter_powered;

        if (!s->bluez_owner || !path || sd_bus_message_read(m, "s", &iface) < 0)
                return 0;
        if (streq(iface, BZ_DEVICE) && device_path_ours(s, path)) {
                Device *d = device_find(s, path, true);
                if (d)
                        (void) device_props(s, m, d);
        } else if (streq(iface, BZ_ADAPTER) && streq(path, s->adapter_path)) {
                (void) adapter_props(s, m);
                if (s->adapter_powered && !was_powered) {
                        /* A power cycle drops advertising instances. */
                        s->adv[0].registered = s->adv[1].registered = false;
                        adv_update(s);
                }
        }
        return 0;
}

/* ---- the pairing agent: NoInputNoOutput, one bond at a time ---- */

static int agent_decide(Sim *s, sd_bus_message *m, sd_bus_error *error) {
        const char *path;

        if (!from_bluez(s, m))
                return sd_bus_error_set(error, SD_BUS_ERROR_ACCESS_DENIED, "Only bluetoothd asks the agent");
        if (sd_bus_message_read(m, "o", &path) < 0)
                return sd_bus_error_set(error, ERR_REJECTED, "Bad request");
        if (!device_path_ours(s, path)) {
                log_info("pairing of %s refused: not on %s", path, s->adapter);
                return sd_bus_error_set(error, ERR_REJECTED, "Not this wrap's adapter");
        }
        /* The profile: pairing is accepted only while the wrap holds no bond. */
        for (size_t i = 0; i < s->n_devices; i++)
                if (s->devices[i].bonded) {
                        log_info("pairing of %s refused: the wrap holds a bond with %s (clear-bond clears it)",
                                 path, s->devices[i].address);
                        return sd_bus_error_set(error, ERR_REJECTED, "The wrap holds a bond");
                }
        log_info("pairing with %s accepted (Just Works)", path);
        return sd_bus_reply_method_return(m, NULL);
}

static int agent_confirm(sd_bus_message *m, void *userdata, sd_bus_error *error) {
        return agent_decide(userdata, m, error);
}

static int agent_refuse(sd_bus_message *m, void *userdata, sd_bus_error *error) {
        if (!from_bluez(userdata, m))
                return sd_bus_error_set(error, SD_BUS_ERROR_ACCESS_DENIED, "Only bluetoothd asks the agent");
        return sd_bus_error_set(error, ERR_REJECTED, "A wrap has no display and no keypad");
}

static int agent_ok(sd_bus_message *m, void *userdata, sd_bus_error *error) {
        if (!from_bluez(userdata, m))
                return sd_bus_error_set(error, SD_BUS_ERROR_ACCESS_DENIED, "Only bluetoothd asks the agent");
        return sd_bus_reply_method_return(m, NULL);
}

static int agent_release(sd_bus_message *m, void *userdata, sd_bus_error *error) {
        Sim *s = userdata;

        s->agent_registered = false;
        return agent_ok(m, userdata, error);
}

static const sd_bus_vtable agent_vtable[] = {
        SD_BUS_VTABLE_START(0),
        SD_BUS_METHOD("Release", "", "", agent_release, SD_BUS_VTABLE_UNPRIVILEGED),
        SD_BUS_METHOD("RequestPinCode", "o", "s", agent_refuse, SD_BUS_VTABLE_UNPRIVILEGED),
        SD_BUS_METHOD("DisplayPinCode", "os", "", agent_ok, SD_BUS_VTABLE_UNPRIVILEGED),
        SD_BUS_METHOD("RequestPasskey", "o", "u", agent_refuse, SD_BUS_VTABLE_UNPRIVILEGED),
        SD_BUS_METHOD("DisplayPasskey", "ouq", "", agent_ok, SD_BUS_VTABLE_UNPRIVILEGED),
        SD_BUS_METHOD("RequestConfirmation", "ou", "", agent_confirm, SD_BUS_VTABLE_UNPRIVILEGED),
        SD_BUS_METHOD("RequestAuthorization", "o", "", agent_confirm, SD_BUS_VTABLE_UNPRIVILEGED),
        SD_BUS_METHOD("AuthorizeService", "os", "", agent_ok, SD_BUS_VTABLE_UNPRIVILEGED),
        SD_BUS_METHOD("Cancel", "", "", agent_ok, SD_BUS_VTABLE_UNPRIVILEGED),
        SD_BUS_VTABLE_END,
};

/* ---- commands: the control socket and --press ---- */

static int parse_button(const char *w, uint8_t *ret) {
        if (streq(w, "cold"))
                *ret = WIRE_BUTTON_COLD;
        else if (streq(w, "heat"))
                *ret = WIRE_BUTTON_HEAT;
        else if (streq(w, "stop"))
                *ret = WIRE_BUTTON_STOP;
        else
                return -EINVAL;
        return 0;
}

static void format_status(Sim *s, char *buf, size_t size) {
        WrapFwInfo i;
        Device *d = device_connected(s);

        if (!s->fw) {
                snprintf(buf, size, "ok adapter=%s waiting-for-adapter", s->adapter);
                return;
        }
        wrapfw_get_info(s->fw, fw_now(), &i);
        snprintf(buf, size,
                 "ok name=%s address=%s state=%s mode=%u setpoint=%.2f pack=%.2f skin=%.2f "
                 "elapsed=%u remaining=%u faults=0x%02x seq=%u presses=%u battery=%u "
                 "no-gateway=%u completed=%u pending=%d central=%s bonded=%d registered=%d advertising=%d",
                 s->name, s->address, wire_state_to_string(i.state), i.mode, i.setpoint / 100.0,
                 i.pack / 100.0, i.skin / 100.0, i.elapsed_s, i.remaining_s, i.faults, i.session_seq,
                 i.press_seq, i.battery, i.no_gateway_count, i.sessions_completed, i.press_pending,
                 d ? d->address : "none", d ? d->bonded : 0, s->app_registered, adv_any(s));
}

/* Runs one text command; the answer starts with "ok" or "error:". */
static void run_command(Sim *s, char *line, char *out, size_t size) {
        char *words[3] = { NULL };
        size_t n = 0;
        int r = 0;

        for (char *save = NULL, *w = strtok_r(line, " \t\r\n", &save); w && n < ELEMENTSOF(words);
             w = strtok_r(NULL, " \t\r\n", &save))
                words[n++] = w;
        if (n == 0) {
                snprintf(out, size, "error: empty command");
                return;
        }
        snprintf(out, size, "ok");

        if (streq(words[0], "status")) {
                format_status(s, out, size);
                return;
        }
        if (streq(words[0], "quit")) {
                log_info("quit requested");
                sd_event_exit(s->ev, 0);
                return;
        }
        if (streq(words[0], "advertise") && n == 2 && (streq(words[1], "on") || streq(words[1], "off"))) {
                s->advertise = streq(words[1], "on");
                log_info("advertising %s", s->advertise ? "on" : "off");
                adv_update(s);
                return;
        }
        if (streq(words[0], "drop")) {
                size_t k = 0;
                for (size_t i = 0; i < s->n_devices; i++)
                        if (s->devices[i].connected) {
                                log_info("dropping the link to %s", s->devices[i].address);
                                device_disconnect(s, &s->devices[i]);
                                k++;
                        }
                if (k == 0)
                        snprintf(out, size, "ok no central connected");
                return;
        }
        if (streq(words[0], "clear-bond")) {
                /* The 10-second stop press: the wrap forgets its bond and pairs again. */
                for (size_t i = 0; i < s->n_devices; i++)
                        if (s->devices[i].bonded || s->devices[i].paired) {
                                log_info("clearing the bond with %s", s->devices[i].address);
                                (void) call_async(s, s->adapter_path, BZ_ADAPTER, "RemoveDevice", NULL,
                                                  "o", s->devices[i].path);
                        }
                return;
        }
        if (!s->fw && (streq(words[0], "press") || streq(words[0], "skin") || streq(words[0], "fault") ||
                       streq(words[0], "clear-fault") || streq(words[0], "battery") ||
                       streq(words[0], "thermometer") || streq(words[0], "report-mode"))) {
                snprintf(out, size, "error: the wrap has no adapter yet");
                return;
        }
        if (!s->fw)
                r = -EOPNOTSUPP;
        else if (streq(words[0], "press") && n == 2) {
                uint8_t ev;
                r = parse_button(words[1], &ev);
                if (r >= 0)
                        r = sim_press(s, ev);
        } else if (streq(words[0], "skin") && n == 2) {
                int32_t centi;
                if (streq(words[1], "auto"))
                        wrapfw_set_skin(s->fw, WRAPFW_SKIN_BASELINE_CENTI, false, fw_now());
                else if ((r = parse_decimal_centi(words[1], &centi)) >= 0 && (centi < -4000 || centi > 8000))
                        r = -ERANGE;
                else if (r >= 0) {
                        wrapfw_set_skin(s->fw, (int16_t) centi, true, fw_now());
                        log_info("skin held at %.2f C", centi / 100.0);
                }
        } else if (streq(words[0], "fault") && n == 2) {
                char *end;
                unsigned long f = strtoul(words[1], &end, 0);
                if (*end || f > 0xff || f == 0)
                        r = -EINVAL;
                else {
                        wrapfw_set_fault(s->fw, (uint8_t) f, fw_now());
                        log_info("fault flags 0x%02lx", f);
                }
        } else if (streq(words[0], "stream") && n == 3) {
                int64_t hz, secs;
                if ((r = parse_int64(words[1], &hz)) >= 0 && (r = parse_int64(words[2], &secs)) >= 0)
                        r = hz < 1 || secs < 0 ? -ERANGE : sim_stream(s, (unsigned) hz, (unsigned) secs);
        } else if (streq(words[0], "clear-fault") && n == 1) {
                wrapfw_set_fault(s->fw, 0, fw_now());
                log_info("faults cleared");
        } else if (streq(words[0], "thermometer") && n == 2 && (streq(words[1], "on") || streq(words[1], "off"))) {
                /* R5: a gateway must notice a thermometer that says nothing. */
                wrapfw_set_thermometer_silent(s->fw, streq(words[1], "off"), fw_now());
                log_info("thermometer %s", words[1]);
        } else if (streq(words[0], "report-mode") && n == 2) {
                /* R5: a Status that reports another mode than the one running. */
                int mode = streq(words[1], "true") ? -1 : streq(words[1], "none") ? 0 :
                           streq(words[1], "cold") ? 1 : streq(words[1], "heat") ? 2 : -2;
                if (mode == -2)
                        r = -EINVAL;
                else {
                        wrapfw_set_reported_mode(s->fw, mode, fw_now());
                        log_info("Status reports mode %s", words[1]);
                }
        } else if (streq(words[0], "battery") && n == 2) {
                int64_t v;
                if ((r = parse_int64(words[1], &v)) >= 0 && (v < 0 || v > 100))
                        r = -ERANGE;
                if (r >= 0) {
                        wrapfw_set_battery(s->fw, (uint8_t) v, fw_now());
                        log_info("battery %" PRId64 " %%", v);
                }
        } else
                r = -EOPNOTSUPP;

        if (r < 0)
                snprintf(out, size, "error: %s", r == -EOPNOTSUPP ? "unknown command" : strerror(-r));
        fw_kick(s);
}

static int on_control(sd_event_source *es, int fd, uint32_t revents, void *userdata) {
        Sim *s = userdata;
        struct sockaddr_un from;
        socklen_t flen = sizeof from;
        char buf[256], out[768];
        ssize_t n;

        n = recvfrom(fd, buf, sizeof buf - 1, MSG_DONTWAIT, (struct sockaddr *) &from, &flen);
        if (n < 0)
                return 0;
        buf[n] = 0;
        if (strncmp(buf, "status", 6) != 0)
                log_debug("control: %s", buf);
        run_command(s, buf, out, sizeof out);
        /* A client that bound its socket gets the answer. */
        if (flen > sizeof(sa_family_t))
                (void) sendto(fd, out, strlen(out), MSG_DONTWAIT | MSG_NOSIGNAL, (struct sockaddr *) &from, flen);
        return 0;
}

static int control_open(Sim *s) {
        struct sockaddr_un sa = { .sun_family = AF_UNIX };
        int fd, r;

        if (strlen(s->control_path) >= sizeof sa.sun_path)
                return -ENAMETOOLONG;
        memcpy(sa.sun_path, s->control_path, strlen(s->control_path));
        fd = socket(AF_UNIX, SOCK_DGRAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
        if (fd < 0)
                return -errno;
        (void) unlink(s->control_path);
        if (bind(fd, (struct sockaddr *) &sa, sizeof sa) < 0) {
                r = -errno;
                close(fd);
                return r;
        }
        s->control_fd = fd;
        return sd_event_add_io(s->ev, &s->control_io, fd, EPOLLIN, on_control, s);
}

/* The client side: sends one command and prints the answer. */
static int control_send(const char *path, const char *cmd) {
        struct sockaddr_un sa = { .sun_family = AF_UNIX };
        struct timeval tv = { .tv_sec = 10 };
        char out[1024];
        ssize_t n;
        int fd;

        if (strlen(path) >= sizeof sa.sun_path) {
                fprintf(stderr, "%s: path too long\n", path);
                return EXIT_FAILURE;
        }
        memcpy(sa.sun_path, path, strlen(path));
        fd = socket(AF_UNIX, SOCK_DGRAM | SOCK_CLOEXEC, 0);
        if (fd < 0) {
                fprintf(stderr, "%s: %m\n", path);
                return EXIT_FAILURE;
        }
        /* Autobind to an abstract address, so the answer finds its way back. */
        if (bind(fd, (struct sockaddr *) &(struct sockaddr_un) { .sun_family = AF_UNIX }, sizeof(sa_family_t)) < 0 ||
            setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv) < 0 ||
            sendto(fd, cmd, strlen(cmd), 0, (struct sockaddr *) &sa, sizeof sa) < 0) {
                fprintf(stderr, "%s: %m\n", path);
                close(fd);
                return EXIT_FAILURE;
        }
        n = recv(fd, out, sizeof out - 1, 0);
        if (n < 0) {
                fprintf(stderr, "%s: no answer: %m\n", path);
                close(fd);
                return EXIT_FAILURE;
        }
        close(fd);
        out[n] = 0;
        printf("%s\n", out);
        return strncmp(out, "ok", 2) == 0 ? EXIT_SUCCESS : EXIT_FAILURE;
}

static int on_press_timer(sd_event_source *es, uint64_t usec, void *userdata) {
        Press *p = userdata;
        Sim *s = p->sim;

        p->timer = sd_event_source_disable_unref(p->timer);
        if (!s->fw)
                return 0;       /* fw_create() presses it once the adapter is there */
        (void) sim_press(s, p->event);
        p->event = 0;
        return 0;
}

/* "cold@5s", "heat@2.5", "stop": a button and when, in wall-clock seconds after start. */
static int parse_press(const char *arg, Press *p) {
        char word[16];
        const char *at = strchr(arg, '@');
        size_t n = at ? (size_t) (at - arg) : strlen(arg);
        int32_t centi = 0;
        int r;

        if (n == 0 || n >= sizeof word)
                return -EINVAL;
        memcpy(word, arg, n);
        word[n] = 0;
        r = parse_button(word, &p->event);
        if (r < 0)
                return r;
        if (at) {
                char t[24];
                size_t k = strlen(at + 1);
                if (k == 0 || k >= sizeof t)
                        return -EINVAL;
                memcpy(t, at + 1, k + 1);
                if (t[k - 1] == 's')
                        t[k - 1] = 0;
                r = parse_decimal_centi(t, &centi);
                if (r < 0 || centi < 0)
                        return -EINVAL;
        }
        p->at_usec = (uint64_t) centi * 10000;
        return 0;
}

/* ---- set-up ---- */

static int sim_export(Sim *s) {
        int r;

        snprintf(s->root, sizeof s->root, "/org/kneewrap/sim/%s/app", s->adapter);
        snprintf(s->agent_path, sizeof s->agent_path, "/org/kneewrap/sim/%s/agent", s->adapter);

        r = sd_bus_add_object_manager(s->bus, NULL, s->root);
        if (r < 0)
                return r;
        for (unsigned i = 0; i < _S_MAX; i++) {
                Svc *v = &s->svcs[i];
                v->sim = s;
                v->uuid = svc_uuids[i];
                snprintf(v->path, sizeof v->path, "%s/service%u", s->root, i);
                r = sd_bus_add_object_vtable(s->bus, NULL, v->path, BZ_SVC, svc_vtable, v);
                if (r < 0)
                        return r;
        }
        for (unsigned i = 0; i < _C_MAX; i++) {
                Chr *c = &s->chrs[i];
                c->sim = s;
                c->id = i;
                c->service = chr_table[i].service;
                c->uuid = chr_table[i].uuid;
                c->flags = chr_table[i].flags;
                snprintf(c->path, sizeof c->path, "%s/char%u", s->svcs[c->service].path, i);
                r = sd_bus_add_object_vtable(s->bus, NULL, c->path, BZ_CHR, chr_vtable, c);
                if (r < 0)
                        return r;
        }
        for (unsigned i = 0; i < ELEMENTSOF(s->adv); i++) {
                Adv *a = &s->adv[i];
                a->sim = s;
                a->idx = i;
                snprintf(a->path, sizeof a->path, "/org/kneewrap/sim/%s/advertisement%u", s->adapter, i);
                r = sd_bus_add_object_vtable(s->bus, NULL, a->path, BZ_ADV, adv_vtable, a);
                if (r < 0)
                        return r;
        }
        return sd_bus_add_object_vtable(s->bus, NULL, s->agent_path, BZ_AGENT, agent_vtable, s);
}

static int sim_connect(Sim *s) {
        char rule[256];
        int r;

        r = sd_bus_open_system(&s->bus);
        if (r < 0)
                return log_error_errno(r, "cannot connect to the system bus: %m");
        r = sd_bus_attach_event(s->bus, s->ev, 0);
        if (r < 0)
                return log_error_errno(r, "cannot attach the bus to the event loop: %m");
        r = sim_export(s);
        if (r < 0)
                return log_error_errno(r, "cannot export the GATT objects: %m");

        r = sd_bus_add_match_async(s->bus, NULL,
                                   "type='signal',sender='org.freedesktop.DBus',path='/org/freedesktop/DBus',"
                                   "interface='org.freedesktop.DBus',member='NameOwnerChanged',arg0='org.bluez'",
                                   on_name_owner_changed, NULL, s);
        if (r >= 0)
                r = sd_bus_add_match_async(s->bus, NULL,
                                           "type='signal',sender='org.bluez',interface='org.freedesktop.DBus.ObjectManager',"
                                           "member='InterfacesAdded'", on_interfaces_added, NULL, s);
        if (r >= 0)
                r = sd_bus_add_match_async(s->bus, NULL,
                                           "type='signal',sender='org.bluez',interface='org.freedesktop.DBus.ObjectManager',"
                                           "member='InterfacesRemoved'", on_interfaces_removed, NULL, s);
        if (r >= 0) {
                snprintf(rule, sizeof rule,
                         "type='signal',sender='org.bluez',interface='org.freedesktop.DBus.Properties',"
                         "member='PropertiesChanged',path_namespace='%s'", s->adapter_path);
                r = sd_bus_add_match_async(s->bus, NULL, rule, on_props_changed, NULL, s);
        }
        if (r < 0)
                return log_error_errno(r, "cannot subscribe to bluetoothd's signals: %m");
        r = sd_bus_call_method_async(s->bus, NULL, "org.freedesktop.DBus", "/org/freedesktop/DBus",
                                     "org.freedesktop.DBus", "GetNameOwner", on_get_name_owner, s,
                                     "s", BZ_NAME);
        if (r < 0)
                return log_error_errno(r, "cannot ask who owns %s: %m", BZ_NAME);
        return 0;
}

static void help(void) {
        printf("Usage: %s --adapter hciN [OPTIONS]\n"
               "       %s --control PATH --send COMMAND\n"
               "\n"
               "A knee wrap on a Bluetooth adapter: serves the KneeWrap GATT profile through BlueZ,\n"
               "advertises as KneeWrap-<last 2 address bytes> and runs the wrap's firmware.\n"
               "\n"
               "  -h --help             Show this help and exit\n"
               "     --version          Show the version and exit\n"
               "  -a --adapter hciN     The adapter to be the wrap on (required)\n"
               "  -p --press BUTTON[@SECONDS]\n"
               "                        Press cold, heat or stop that many seconds after start\n"
               "                        (repeatable)\n"
               "  -C --control PATH     Take commands on this unix datagram socket\n"
               "     --send COMMAND     Send COMMAND to the socket given by --control, print the\n"
               "                        answer, and exit\n"
               "     --battery PERCENT  Start with this battery level\n"
               "     --skin CELSIUS     Hold the skin temperature at this value\n"
               "     --firmware VERSION The Firmware Revision string (default 1.0.0)\n"
               "     --no-advertise     Start with advertising off\n"
               "  -v --verbose          Log more\n"
               "\n"
               "Commands: press cold|heat|stop, skin C|auto, fault FLAGS, clear-fault, battery N,\n"
               "          thermometer on|off, report-mode cold|heat|none|true,\n"
               "advertise on|off, drop, clear-bond, status, quit. See kneewrap-sim(1).\n",
               program_invocation_short_name, program_invocation_short_name);
}

static void sim_done(Sim *s) {
        for (size_t i = 0; i < s->n_presses; i++)
                s->presses[i].timer = sd_event_source_disable_unref(s->presses[i].timer);
        s->fw_timer = sd_event_source_disable_unref(s->fw_timer);
        s->stream_timer = sd_event_source_disable_unref(s->stream_timer);
        s->adv_timer = sd_event_source_disable_unref(s->adv_timer);
        s->control_io = sd_event_source_disable_unref(s->control_io);
        if (s->control_fd >= 0) {
                close(s->control_fd);
                (void) unlink(s->control_path);
        }
        s->bus = sd_bus_flush_close_unref(s->bus);
        s->ev = sd_event_unref(s->ev);
        s->fw = wrapfw_free(s->fw);
        free(s->bluez_owner);
}

int main(int argc, char *argv[]) {
        enum { ARG_VERSION = 0x100, ARG_SEND, ARG_BATTERY, ARG_SKIN, ARG_FIRMWARE, ARG_NO_ADVERTISE };
        static const struct option options[] = {
                { "help",         no_argument,       NULL, 'h' },
                { "version",      no_argument,       NULL, ARG_VERSION },
                { "adapter",      required_argument, NULL, 'a' },
                { "press",        required_argument, NULL, 'p' },
                { "control",      required_argument, NULL, 'C' },
                { "send",         required_argument, NULL, ARG_SEND },
                { "battery",      required_argument, NULL, ARG_BATTERY },
                { "skin",         required_argument, NULL, ARG_SKIN },
                { "firmware",     required_argument, NULL, ARG_FIRMWARE },
                { "no-advertise", no_argument,       NULL, ARG_NO_ADVERTISE },
                { "verbose",      no_argument,       NULL, 'v' },
                { 0 }
        };
        static Sim sim;
        Sim *s = &sim;
        const char *send = NULL;
        int level = LOG_INFO, c, r;

        *s = (Sim) { .battery = -1, .advertise = true, .control_fd = -1 };
        snprintf(s->firmware, sizeof s->firmware, "1.0.0");

        while ((c = getopt_long(argc, argv, "ha:p:C:v", options, NULL)) >= 0)
                switch (c) {
                case 'h':
                        help();
                        return EXIT_SUCCESS;
                case ARG_VERSION:
                        printf("kneewrap-sim %s\n", KW_VERSION);
                        return EXIT_SUCCESS;
                case 'a':
                        if (strlen(optarg) >= sizeof s->adapter || strncmp(optarg, "hci", 3) != 0 ||
                            strspn(optarg + 3, "0123456789") != strlen(optarg + 3) || !optarg[3]) {
                                fprintf(stderr, "--adapter: expected hciN, got \"%s\"\n", optarg);
                                return EXIT_FAILURE;
                        }
                        snprintf(s->adapter, sizeof s->adapter, "%s", optarg);
                        break;
                case 'p':
                        if (s->n_presses >= MAX_PRESSES || parse_press(optarg, &s->presses[s->n_presses]) < 0) {
                                fprintf(stderr, "--press: expected cold|heat|stop[@SECONDS], got \"%s\"\n", optarg);
                                return EXIT_FAILURE;
                        }
                        s->presses[s->n_presses].sim = s;
                        s->n_presses++;
                        break;
                case 'C':
                        s->control_path = optarg;
                        break;
                case ARG_SEND:
                        send = optarg;
                        break;
                case ARG_BATTERY: {
                        int64_t v;
                        if (parse_int64(optarg, &v) < 0 || v < 0 || v > 100) {
                                fprintf(stderr, "--battery: expected 0..100, got \"%s\"\n", optarg);
                                return EXIT_FAILURE;
                        }
                        s->battery = (int) v;
                        break;
                }
                case ARG_SKIN: {
                        int32_t v;
                        if (parse_decimal_centi(optarg, &v) < 0 || v < -4000 || v > 8000) {
                                fprintf(stderr, "--skin: expected degrees Celsius, got \"%s\"\n", optarg);
                                return EXIT_FAILURE;
                        }
                        s->skin = (int16_t) v;
                        s->skin_set = true;
                        break;
                }
                case ARG_FIRMWARE:
                        if (strlen(optarg) == 0 || strlen(optarg) >= sizeof s->firmware) {
                                fprintf(stderr, "--firmware: expected 1 to %zu characters\n", sizeof s->firmware - 1);
                                return EXIT_FAILURE;
                        }
                        snprintf(s->firmware, sizeof s->firmware, "%s", optarg);
                        break;
                case ARG_NO_ADVERTISE:
                        s->advertise = false;
                        break;
                case 'v':
                        level = LOG_DEBUG;
                        break;
                default:
                        return EXIT_FAILURE;
                }
        if (optind < argc) {
                fprintf(stderr, "unexpected argument \"%s\"\n", argv[optind]);
                return EXIT_FAILURE;
        }
        if (send) {
                if (!s->control_path) {
                        fprintf(stderr, "--send needs --control PATH\n");
                        return EXIT_FAILURE;
                }
                return control_send(s->control_path, send);
        }
        if (!s->adapter[0]) {
                fprintf(stderr, "--adapter hciN is required: the wrap must be on an adapter of its own\n");
                return EXIT_FAILURE;
        }
        snprintf(s->adapter_path, sizeof s->adapter_path, "/org/bluez/%.15s", s->adapter);

        log_setup(level);
        r = clock_setup();
        if (r < 0) {
                log_error("KNEEWRAP_TIME_SCALE must be 1..100000");
                return EXIT_FAILURE;
        }
        if (clock_scale() != 1)
                log_info("KNEEWRAP_TIME_SCALE=%u: the wrap's time runs %u times faster", clock_scale(), clock_scale());

        r = sd_event_default(&s->ev);
        if (r < 0)
                goto fail;
        sigset_t mask;
        sigemptyset(&mask);
        sigaddset(&mask, SIGTERM);
        sigaddset(&mask, SIGINT);
        sigprocmask(SIG_BLOCK, &mask, NULL);
        r = sd_event_add_signal(s->ev, NULL, SIGTERM, NULL, NULL);
        if (r >= 0)
                r = sd_event_add_signal(s->ev, NULL, SIGINT, NULL, NULL);
        if (r < 0)
                goto fail;

        if (s->control_path) {
                r = control_open(s);
                if (r < 0) {
                        log_error_errno(r, "cannot open the control socket %s: %m", s->control_path);
                        goto logged;
                }
        }
        {
                uint64_t now;
                (void) sd_event_now(s->ev, CLOCK_MONOTONIC, &now);
                for (size_t i = 0; i < s->n_presses; i++) {
                        r = sd_event_add_time(s->ev, &s->presses[i].timer, CLOCK_MONOTONIC,
                                              now + s->presses[i].at_usec, 0, on_press_timer, &s->presses[i]);
                        if (r < 0)
                                goto fail;
                }
                r = sd_event_add_time(s->ev, &s->adv_timer, CLOCK_MONOTONIC, now + READVERTISE_USEC, 0,
                                      on_adv_timer, s);
                if (r < 0)
                        goto fail;
        }

        r = sim_connect(s);
        if (r < 0)
                goto logged;
        r = sd_event_loop(s->ev);
        sim_done(s);
        return r == 0 ? EXIT_SUCCESS : EXIT_FAILURE;
fail:
        log_error_errno(r, "kneewrap-sim failed: %m");
logged:
        sim_done(s);
        return EXIT_FAILURE;
}
