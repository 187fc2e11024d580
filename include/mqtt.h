/* mqtt: the broker client (libmosquitto inside sd-event), live state, commands and HA discovery. */
#pragma once

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "config.h"
#include <systemd/sd-event.h>

typedef struct Mqtt Mqtt;
typedef struct Store Store;
typedef struct Command Command;                 /* src/mqtt/commands.h */
typedef struct StateView StateView;             /* src/mqtt/state.h */
typedef struct BridgeHealth BridgeHealth;       /* src/mqtt/state.h */
typedef struct DiscoveryDevice DiscoveryDevice; /* src/mqtt/discovery.h */
typedef struct Compliance Compliance;           /* store.h */

/*
 * The client is a leaf: it knows topics, payloads and the outbox, never the daemon's wraps.
 * It asks and reports through these hooks, which the daemon sets (as dbus-broker's dispatch
 * callbacks are set by their owner); it includes no header of the daemon's (a meson test
 * checks). A wrap is its id ("wrap_aabbccddeeff"). Every hook may be NULL.
 */
typedef struct MqttHooks {
        void *userdata;
        /* The store, for the outbox (NULL while it is unavailable); asked at each use. */
        Store *(*store)(void *userdata);
        /* A store call failed with store_is_broken(error). */
        void (*store_failed)(void *userdata, int error);
        /* A command (parsed by commands.c) for the daemon's door; wrap is NULL for a bridge
         * request that names none. Returns 0 with *ret_data (JSON for the response's "data", or
         * NULL) and *ret_error set when the door decided to refuse (a refusal by the rules),
         * or -errno with *ret_error saying why. */
        int (*command)(void *userdata, const char *wrap, const Command *c, char **ret_data, const char **ret_error);
        /* A wrap's state (its strings stay valid until the next call). -ENOENT: not known. */
        int (*wrap_state)(void *userdata, const char *wrap, StateView *ret);
        /* Its compliance over the last 7 and 30 days. */
        int (*wrap_compliance)(void *userdata, const char *wrap, Compliance *ret7, Compliance *ret30);
        /* Its name and Device Information, for discovery; false when not known. Cheap: asked
         * at every flush until the Device Information is there. */
        bool (*wrap_device)(void *userdata, const char *wrap, DiscoveryDevice *d);
        /* The patient profile's label, which names the device, or NULL; asked only when the
         * discovery configs go out (it may read the store). Valid until the next call. */
        const char *(*wrap_label)(void *userdata, const char *wrap);
        /* The daemon's share of bridge/health (uptime, wraps connected, store, malformed). */
        void (*health)(void *userdata, BridgeHealth *h);
        /* Connected or not any more: mqtt_connected() reads differently. */
        void (*connection_changed)(void *userdata);
} MqttHooks;

/*
 * Every call below accepts q == NULL and then does nothing: the daemon's Mqtt is NULL when
 * [mqtt] host is not set, so callers never need to check.
 */

/* ---- lifetime ---- */

/*
 * Builds the client from `config` ([mqtt]; read again by mqtt_reload, so it must outlive the
 * client) and starts connecting in the background (a broker that is down is never fatal).
 * Fails only on a setup that can never work: a TLS CA, certificate or key file that cannot
 * be read, a password file that cannot be read. It logs that error itself, once, naming the
 * file; the daemon should then exit 1.
 */
int mqtt_new(sd_event *event, const Config *config, const MqttHooks *hooks, Mqtt **ret);
/* Publishes {"state":"offline"} (best effort, no waiting), disconnects and frees. */
Mqtt *mqtt_free(Mqtt *q);
/* After a configuration reload: reconnects with the new broker settings. Same errors as mqtt_new. */
int mqtt_reload(Mqtt *q);

/* ---- what the daemon tells it ---- */

/* New rows are in the store's outbox (after the transaction committed): send them. */
void mqtt_kick(Mqtt *q);

/*
 * A wrap's live state changed (link up/down, a status, temperature or battery notification,
 * a session started or ended). Cheap: the state is asked for later through hooks.wrap_state,
 * and publishing is coalesced and deferred to the loop.
 */
void mqtt_wrap_changed(Mqtt *q, const char *wrap);

/* A record that counts in compliance but is no session (a run) was added: recompute it. */
void mqtt_wrap_compliance_changed(Mqtt *q, const char *wrap);

/* A wrap's patient profile changed: its discovery (the device name is the label) again. */
void mqtt_wrap_profile_changed(Mqtt *q, const char *wrap);

/* A wrap was adopted: publish its discovery configs and state. */
void mqtt_wrap_added(Mqtt *q, const char *wrap, const char *address);
/* A wrap was removed: clear its discovery configs and retained topics (empty retained messages). */
void mqtt_wrap_removed(Mqtt *q, const char *wrap);

/* Adoption opened or closed (until: Unix seconds on the scaled clock, 0 closed), the adapter
 * changed, ...: republish <base>/bridge/info. */
void mqtt_bridge_changed(Mqtt *q, int64_t adoption_until);

/* For STATUS= and bridge/info. */
bool mqtt_connected(Mqtt *q);
