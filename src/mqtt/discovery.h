/* discovery: Home Assistant MQTT discovery configs for the gateway and each wrap (jansson). */
#pragma once

#include <stddef.h>

#include "config.h"

typedef struct DiscoveryMsg {
        char *topic;                  /* <discovery_prefix>/<component>/<node>/<object>/config */
        char *payload;                /* retained JSON */
} DiscoveryMsg;

typedef struct DiscoveryDevice {
        const char *wrap;             /* "wrap_aabbccddeeff" */
        const char *address;          /* "AA:BB:CC:DD:EE:FF" */
        const char *name;             /* the BLE name, or NULL */
        const char *label;            /* the patient profile's label ("Patient 12"), or NULL: the device name */
        const char *manufacturer, *model, *serial, *firmware;   /* NULL when not read yet */
} DiscoveryDevice;

/* The gateway's node id ("kneewrap_bridge" for base "kneewrap"): topics and unique_ids use it. */
int discovery_bridge_node(const Config *c, char **ret);

/* The configs for one wrap, in a fixed order. Payloads are NULL when `clear` (removal). */
int discovery_wrap(const Config *c, const DiscoveryDevice *d, bool clear, DiscoveryMsg **ret, size_t *ret_n);
/* The configs for the gateway itself. */
int discovery_bridge(const Config *c, DiscoveryMsg **ret, size_t *ret_n);

void discovery_msgs_free(DiscoveryMsg *m, size_t n);
