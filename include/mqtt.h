/* mqtt: the broker client (libmosquitto inside sd-event), live state, commands and HA discovery. */
#pragma once

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "config.h"
#include "manager.h"

/*
 * Every hook below accepts q == NULL and then does nothing: Manager.mqtt is NULL when
 * [mqtt] host is not set, so callers never need to check.
 */

/* ---- lifetime (manager.c) ---- */

/*
 * Builds the client from m->config and starts connecting in the background (a broker that
 * is down is never fatal). Fails only on a setup that can never work: a TLS CA, certificate
 * or key file that cannot be read, a password file that cannot be read. It logs that
 * error itself, once, naming the file; the daemon should then exit 1.
 */
int mqtt_new(Manager *m, Mqtt **ret);
/* Publishes {"state":"offline"} (best effort, no waiting), disconnects and frees. */
Mqtt *mqtt_free(Mqtt *q);
/* After a configuration reload: reconnects with the new broker settings. Same errors as mqtt_new. */
int mqtt_reload(Mqtt *q);

/* ---- hooks for the daemon (wrap.c, manager.c) ---- */

/* New rows are in the store's outbox (after the transaction committed): send them. */
void mqtt_kick(Mqtt *q);

/*
 * A wrap's live state changed (link up/down, a status, temperature or battery notification,
 * a session started or ended; wrap is its id). Cheap: the state is read back later through
 * the wrap.h getters, and publishing is coalesced and deferred to the loop. The retained
 * state also carries what the store knows (heat allowed from, last session, compliance),
 * so call it after a session record was committed too.
 */
void mqtt_wrap_changed(Mqtt *q, const char *wrap);

/* A record that counts in compliance but is no session (a run) was added: recompute it. */
void mqtt_wrap_compliance_changed(Mqtt *q, const char *wrap);

/* A wrap's patient profile changed: its discovery (the device name is the label) again. */
void mqtt_wrap_profile_changed(Mqtt *q, const char *wrap);

/* A wrap was adopted: publish its discovery configs and state. */
void mqtt_wrap_added(Mqtt *q, const char *wrap);
/* A wrap was removed: clear its discovery configs and retained topics (empty retained messages). */
void mqtt_wrap_removed(Mqtt *q, const char *wrap);

/* Adoption opened or closed, the adapter changed, ...: republish <base>/bridge/info. */
void mqtt_bridge_changed(Mqtt *q);

/* For STATUS= and bridge/info. */
bool mqtt_connected(Mqtt *q);
