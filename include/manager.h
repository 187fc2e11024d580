/* manager: the daemon's one object; it owns the event loop and wires every module to it. */
#pragma once

#include <stdbool.h>
#include <stdint.h>
#include <systemd/sd-bus.h>
#include <systemd/sd-event.h>

#include "bluez.h"
#include "config.h"
#include "mqtt.h"
#include "record.h"
#include "rules.h"
#include "store.h"
#include "uplink-state.h"

typedef struct Wrap Wrap;         /* daemon/wrap.c: one adopted wrap and its session */
typedef struct BusApi BusApi;     /* daemon/bus-api.c: our own D-Bus API, org.kneewrap1 */

typedef struct Manager {
        sd_event *event;
        sd_bus *bus;                 /* the system bus: BlueZ, and our own API */

        char *config_path;
        Config config;

        Store *store;                /* NULL while the store cannot be opened */
        int store_error;             /* the last store error (negative errno), 0 when healthy */
        sd_event_source *store_retry;

        Bluez *bluez;                /* the BLE leaf; reports through the hooks of leaves.c */
        const struct WrapLinkOps *link_ops; /* how wrap.c reaches a wrap (the BLE leaf, or a test's fake) */
        void *link_userdata;
        Mqtt *mqtt;                  /* NULL when [mqtt] host is not set */
        BusApi *api;                 /* NULL without a bus (kneewrapctl's loop-less Manager) */

        Wrap *wraps;                 /* adopted wraps, a list (at most a few dozen) */
        unsigned n_wraps;

        int64_t adoption_until;      /* Unix seconds (scaled clock); adoption open while now < it */

        uint64_t started_usec;       /* monotonic, for uptime */
        uint64_t malformed;          /* GATT values rejected by the wire codec */
        uint64_t requests_dropped;   /* requests over one a second per wrap and kind (door.c) */
        uint64_t request_interval_usec; /* door.c's limit: USEC_PER_SEC from manager_new; 0: none */
        struct DoorRate *rates;      /* door.c: when each wrap's last request of each kind was decided */
        size_t n_rates;

        bool ready;                  /* READY=1 sent */

        /* manager.c's own bookkeeping. */
        int log_verbose;             /* -v given n times: n levels above [daemon] log_level */
        sd_event_source *r8_timer;
        sd_event_source *exit_source; /* stops the sessions while the bus is still up */   /* the daily R8 check, just after local midnight */
        unsigned store_retries;      /* store retries failed so far, for the backoff */
        char *status;                /* the last STATUS= sent, to send changes only */
        uint64_t now_iteration;      /* manager_now() caches per event-loop iteration */
        int64_t now_sec;

        /* R10 (daemon/timekeep.c). */
        char boot_id[RULES_BOOT_ID_MAX];   /* "" when unreadable */
        int64_t newest_wall;         /* the newest time stored from a trusted clock */
        int clock_sync;              /* the kernel's word: 1 synchronised, 0 not, -1 not read yet */
        bool clock_was_trusted;
        bool has_clock_offset;
        int64_t clock_offset;        /* wall − boot clock (s) at the last check: a step moves it */
        sd_event_source *time_change;
        sd_event_source *sync_timer;
        uint64_t clock_step_until;   /* mono_usec(): the sync state is polled fast until then */

        uint64_t skin_silence_usec;  /* R5's 15 s of real time (0: that); unit tests shorten it */

        /* The clinic uplink's figures (its state file and what the store holds past its
         * cursor), for STATUS= and bridge/health: read when the uplink writes its state and
         * at each health report, never on the notification path. */
        UplinkReport uplink;
        sd_event_source *uplink_watch;
} Manager;

int manager_new(const char *config_path, Manager **ret);
/* Reads the clinic uplink's figures again into m->uplink. */
void manager_uplink_refresh(Manager *m);
Manager *manager_free(Manager *m);
int manager_run(Manager *m);

/* SIGHUP: loads the config again; keeps the running one (and logs why) when the new is invalid. */
int manager_reload(Manager *m);

/*
 * A store call failed (-ENOSPC, -EIO, -EUCLEAN, ...): logs it, closes the store (m->store becomes NULL,
 * so sessions are refused as store_unavailable), says so in STATUS= and retries with backoff.
 */
void manager_store_failed(Manager *m, int error);

/* STATUS= for people: what works, what does not. Call after any change worth reading. */
void manager_update_status(Manager *m);

/* Scaled time, read once per event-loop iteration. */
int64_t manager_now(Manager *m);

/*
 * R10 (daemon/timekeep.c). The wall clock counts only while the kernel says it is
 * synchronised (or [daemon] clock_trusted says so) and it is not behind the newest stored
 * time; waits within one boot run on the boot clock.
 */
int manager_time_setup(Manager *m);
void manager_time_free(Manager *m);
bool manager_clock_trusted(Manager *m);
void manager_clock(Manager *m, RulesClock *ret);
/* A record's time stamp: the wall clock and this boot's CLOCK_BOOTTIME (s; -1 without a boot id). */
void manager_stamp(Manager *m, int64_t *ret_wall, int64_t *ret_boot);
/* A time was stored (newest_wall follows the trusted ones). */
void manager_time_stored(Manager *m, int64_t wall, bool synced);
/* Reads the sync state again and acts on a change (corrects and republishes records). */
void manager_clock_check(Manager *m);
/* For STATUS= and kneewrapctl status: "clock synchronised", ... */
const char *manager_clock_status(Manager *m);

/* What a store error means, for people, and what to do: "the disk is full: free space on the
 * file system of <the store's directory>", "file corrupt or truncated: ...", ... Valid until
 * the next call. */
const char *manager_store_problem(Manager *m, int error);

/* R8 (persisting pain) for one wrap: raises its alert when due. 1 when raised, 0, or -errno. */
int manager_r8_check(Manager *m, const char *wrap, int64_t now);

/* The daemon's side of its leaves (leaves.c): the hooks it sets on the BLE client, the
 * link operations wrap.c uses, and the wraps' life: loading from the store (adding their
 * links), adoption, removal. */
void manager_ble_hooks(Manager *m, BluezHooks *ret);
void manager_mqtt_hooks(Manager *m, MqttHooks *ret);
/* Creates m->mqtt with the daemon's hooks. */
int manager_mqtt_new(Manager *m);
extern const struct WrapLinkOps manager_link_ops;
int manager_wraps_load(Manager *m);
int manager_wrap_adopt(Manager *m, const char *address, const char *name);
/* Ends its session, drops its link and bond, frees it. -ENOENT when not known. */
int manager_wrap_forget(Manager *m, const char *wrap);

/* Every action that changes state goes through the one door: door.h. */
