/* state: the retained and periodic JSON of MQTT (wrap state, compliance, bridge info, health). */
#pragma once

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "config.h"
#include "record.h"
#include "rules.h"
#include "store.h"

/* <base>/<wrap>/state: what the wrap does now and what the store knows about it. */
typedef struct StateView {
        bool connected;
        bool has_status;
        uint8_t state;                /* WIRE_STATE_* */
        uint8_t faults;               /* WIRE_FAULT_* */
        TherapyMode mode;             /* the running session's, THERAPY_NONE without one */
        uint32_t remaining_s;
        bool has_skin, has_pack;
        int32_t skin, pack;           /* 0.01 °C */
        int battery;                  /* percent, -1 unknown */
        const char *session_id;       /* the open session, or NULL */
        bool heat_allowed;
        int64_t heat_allowed_at;      /* 0: null (allowed, or unknown) */
        const char *injury_date;      /* "YYYY-MM-DD" of the injury in force, or NULL */
        const SessionRecord *last;    /* the last finished session, or NULL */
} StateView;

int state_wrap_json(const StateView *v, char **ret);

/* <base>/<wrap>/compliance: the last 7 and 30 days; now = 0 leaves "at" out (then it changes only with the counts). */
int state_compliance_json(const Compliance *d7, const Compliance *d30, int64_t now, char **ret);

/* <base>/bridge/info. wraps: adopted ids. */
typedef struct BridgeInfo {
        const Config *config;
        const char *const *wraps;
        size_t n_wraps;
        bool adoption_open;
        int64_t adoption_until;       /* 0: closed */
} BridgeInfo;
int state_bridge_info_json(const BridgeInfo *b, char **ret);

/* <base>/bridge/health, every 60 s. */
typedef struct BridgeHealth {
        uint64_t uptime_s;
        unsigned wraps_adopted;
        unsigned wraps_connected;
        bool store_ok;
        bool has_outbox_depth;
        uint64_t outbox_depth;
        uint64_t mqtt_reconnects;
        uint64_t malformed;
        uint64_t requests_dropped;
        bool clock_synced;            /* R10: the kernel says the clock is synchronised */
        bool clock_trusted;           /* waits may use the wall clock now */
        bool clock_declared_trusted;  /* [daemon] clock_trusted = yes */
        /* The clinic uplink (kneewrap-uplink), when it has run here. */
        bool uplink;
        bool has_uplink_pending;
        uint64_t uplink_pending;
        int64_t uplink_last_success;  /* 0: never */
        const char *uplink_last_error; /* NULL or "": none since the last success */
        uint64_t uplink_rejected;     /* records the clinic's server refused for good */
} BridgeHealth;
int state_bridge_health_json(const BridgeHealth *h, char **ret);
