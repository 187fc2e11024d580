/* bluez: the daemon's BLE central, a BlueZ (org.bluez) client over sd-bus in the one sd-event loop. */
#pragma once

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <systemd/sd-bus.h>
#include <systemd/sd-event.h>

#include "config.h"
#include "wire.h"

/*
 * The client watches org.bluez (NameOwnerChanged), mirrors the objects it needs from
 * ObjectManager (adapters, devices, GATT services and characteristics, Battery1), keeps the
 * configured adapter powered and discovering while an adopted wrap is missing or adoption
 * is open, adopts (pairs, trusts, stores) the wraps config allows, and keeps one link per
 * adopted wrap: connect with backoff, wait for the GATT objects, notifications on. Nothing
 * here decides a session, or knows what a session is: decoded values go up through the
 * hooks below. A leaf: it includes no header of the daemon's (a meson test checks).
 *
 * Real time, not the scaled clock, times every BLE retry and timeout: the radio and
 * bluetoothd run in real time whatever KNEEWRAP_TIME_SCALE says.
 */

/* Device Information, read once per link and run. */
typedef struct WrapInfo {
        bool have;
        char manufacturer[64];
        char model[64];
        char serial[64];
        char firmware[64];
} WrapInfo;

/* The GATT values a wrap sends, for the malformed-value counters. */
typedef enum WrapValueKind {
        WRAP_VALUE_STATUS,
        WRAP_VALUE_BUTTON,
        WRAP_VALUE_TEMPERATURE,
        WRAP_VALUE_CONTROL_POINT,
        WRAP_VALUE_BATTERY,
        _WRAP_VALUE_MAX,
} WrapValueKind;

typedef struct Bluez Bluez;

/*
 * How the client reports up: the daemon sets these (as dbus-broker's dispatch callbacks are
 * set by their owner), and the client calls nothing of the daemon's. A wrap is its
 * normalised address ("AA:BB:CC:DD:EE:FF"). Every hook may be NULL. A hook may call back
 * into the client (bluez_link_remove() included): the client looks its link up again after.
 */
typedef struct BluezHooks {
        void *userdata;
        /* An adopted wrap's link: notifications on (a Status read follows), or gone. */
        void (*link_up)(void *userdata, const char *address);
        void (*link_down)(void *userdata, const char *address);
        /* Decoded with wire.h. received_usec: mono_usec() when the press arrived, for latency. */
        void (*status)(void *userdata, const char *address, const WireStatus *s);
        void (*button)(void *userdata, const char *address, const WireButton *b, uint64_t received_usec);
        void (*temperature)(void *userdata, const char *address, const WireTemperature *t);
        void (*response)(void *userdata, const char *address, const WireResponse *r);
        /* A Control Point write (bluez_write_request) failed: -errno. */
        void (*write_failed)(void *userdata, const char *address, uint8_t opcode, int error);
        void (*battery)(void *userdata, const char *address, int percent);
        void (*info)(void *userdata, const char *address, const WrapInfo *info);
        /* A value the wire codec rejected. */
        void (*malformed)(void *userdata, const char *address, WrapValueKind kind, const char *why);
        /* Adoption. may_adopt: can the daemon record an adoption now (asked before pairing)?
         * adopt: the wrap is paired and trusted; the daemon records it and adds its link
         * (bluez_link_add), or returns -errno and the client tries again later. */
        bool (*may_adopt)(void *userdata);
        int (*adopt)(void *userdata, const char *address, const char *name);
        /* bluez_status() may read differently now (called often; make it cheap). */
        void (*status_changed)(void *userdata);
        /* The adapter in use changed, or the adoption window closed. */
        void (*bridge_changed)(void *userdata);
} BluezHooks;

/*
 * Registers the matches and the pairing agent and starts watching org.bluez (BlueZ need not
 * be running). `config` ([bluetooth]: adapter, allow, auto_adopt, power_on) is read as it is
 * at each look, so a reload applies; it must outlive the client. Links come from
 * bluez_link_add().
 */
int bluez_new(sd_event *event, sd_bus *bus, const Config *config, const BluezHooks *hooks, Bluez **ret);
/* Cancels every call and drops every link; stops no session (the daemon does that first). */
Bluez *bluez_free(Bluez *b);

/* The adoption window: open until `until` (Unix seconds on the scaled clock), 0 = closed.
 * Discovers now, and until it ends. */
void bluez_set_adoption(Bluez *b, int64_t until);

/* The links of the adopted wraps: connect with backoff, GATT objects, notifications. */
int bluez_link_add(Bluez *b, const char *address);
/* Drops the link; with `forget`, also disconnects and removes the bond (Adapter1.RemoveDevice). */
void bluez_link_remove(Bluez *b, const char *address, bool forget);
bool bluez_link_ready(Bluez *b, const char *address);
/* Encodes with wire.h and writes the Control Point (with response). A failed write comes
 * back through hooks.write_failed; the answer through hooks.response. -ENOTCONN when down. */
int bluez_write_request(Bluez *b, const char *address, const WireRequest *req);

/* For STATUS=: "bluetoothd not running", "no usable adapter: ...", "hci0: 2/3 wraps connected". */
const char *bluez_status(Bluez *b, char *buf, size_t size);
