/* wrap: one adopted wrap, its live state and its therapy session (the session side of manager.h). */
#pragma once

#include <stdbool.h>
#include <stdint.h>

#include "bluez.h"
#include "manager.h"
#include "record.h"
#include "rules.h"
#include "util.h"
#include "wire.h"

/*
 * A Wrap exists for every adopted wrap (loaded from the store at start, or created at
 * adoption) and lives in Manager.wraps, a singly linked list in adoption order. The daemon
 * owns it; the BLE client (ble/bluez.c, a leaf) knows only its address, and the daemon's
 * hooks (leaves.c) feed it decoded GATT values through the wrap_on_*() calls below.
 * Everything a session does is decided here, through the rules.
 */


/* What the wrap is doing now, for MQTT and STATUS=. */
typedef struct WrapLive {
        bool connected;               /* the link is up and notifications are on */
        bool has_status;
        uint8_t state;                /* WIRE_STATE_*, as the wrap last reported it */
        uint8_t faults;               /* WIRE_FAULT_* */
        TherapyMode mode;             /* the gateway's running session; THERAPY_NONE without one */
        uint32_t remaining_s;         /* of that session, by the gateway's (scaled) clock */
        bool has_skin;
        int32_t skin;                 /* 0.01 °C, the last valid 0x2A1C reading */
        bool has_pack;
        int32_t pack;                 /* 0.01 °C */
        int battery;                  /* percent, -1 when unknown */
        bool has_last;
        char last_session[UUID_STR_MAX];
        SessionOutcome last_outcome;
} WrapLive;

/*
 * How a wrap's session reaches the wrap: manager.c points these at the BLE client
 * (bluez_write_request, bluez_link_ready), unit tests at a fake link. Manager.link_ops and
 * Manager.link_userdata hold them.
 */
typedef struct WrapLinkOps {
        int (*write_request)(void *userdata, const char *address, const WireRequest *req);
        bool (*ready)(void *userdata, const char *address);
} WrapLinkOps;

/* What the store says of a wrap, for MQTT's state: kept in memory, so that a notification
 * runs no SQL; read once, and again only after the daemon wrote something it depends on
 * (a session record, an injury, a prescription, a reload). */
typedef struct WrapStored {
        bool valid;
        bool has_rules;
        RulesState rules;             /* the prescription in force, the injury, the last cold end */
        bool has_last;
        SessionRecord last;           /* the last finished session */
        /* The same on R10's clock (store_rules_state_at), as the door decides on it. Placed
         * again after a write, when the clock steps or its trust changes, and in every new
         * second while it is not trusted (a date stated then is placed at "now": a bound that
         * does not age). */
        bool has_placed;
        RulesState placed;
        int64_t placed_wall;          /* the wall clock it was placed on */
} WrapStored;
const WrapStored *wrap_stored(Wrap *w);
/* The daemon wrote something about `wrap` (NULL: about every wrap, or the store moved). */
void wraps_stored_invalidate(Manager *m, const char *wrap);
/* The wall clock stepped, or R10's trust in it changed: what MQTT shows is placed again. */
void wraps_clock_changed(Manager *m);

/*
 * What MQTT shows as "heat allowed": the door's own decision (rules_decide() on the view
 * store_rules_state_at() places on R10's clock, as wrap_request_start() takes it) for a heat
 * request now, the running session aside (it is shown by its own entities, and ends).
 * *ret_from: when heat is refused, the instant it will be allowed; 0 when unknown (R10: the
 * clock is not trusted) or allowed. False too when the store cannot be read.
 */
bool wrap_heat_allowed(Wrap *w, int64_t *ret_from);

/* Lifecycle (the daemon's: manager.c and leaves.c; the BLE link is added beside it). */
int wrap_new(Manager *m, const char *address, const char *name, Wrap **ret);
/* Unlinks from m->wraps and frees; an open session stays open in the store. */
void wrap_free(Wrap *w);
/* Creates a Wrap for every wrap in the store not yet known, and takes over the sessions the
 * store still holds open (a restart mid-session). Safe to call again. */
int wraps_load(Manager *m);
/* At shutdown, while the bus is still up: every running session is stopped (STOP reason 3)
 * and closed as interrupted, since nothing supervises a session (R5) while the gateway is
 * down. A crash leaves them open instead; wraps_load() reconciles those. */
void wraps_shutdown(Manager *m);
void wraps_free(Manager *m);
/* The wrap was removed (manager_remove_wrap): ends its session as stopped by the user. */
void wrap_removed(Wrap *w);

/* R10 (timekeep.c): the clock is trusted now; open records of this boot get their true times. */
void wraps_clock_trusted(Manager *m, int64_t wall0);
/* Writes a record (with its outbox message when it is closed), as every session record is. */
int wrap_record_put(Manager *m, const SessionRecord *rec);

Wrap *wrap_find(Manager *m, const char *wrap_or_address);
Wrap *wrap_find_address(Manager *m, const char *address);

/* Getters, for MQTT and the D-Bus API. Iterate with: for (w = m->wraps; w; w = wrap_next(w)). */
Wrap *wrap_next(const Wrap *w);
const char *wrap_get_id(const Wrap *w);
const char *wrap_get_address(const Wrap *w);
const char *wrap_get_name(const Wrap *w);
const WrapLive *wrap_get_live(const Wrap *w);
const WrapInfo *wrap_get_info(const Wrap *w);
uint64_t wrap_get_malformed(const Wrap *w);
/* The open session's record (outcome OUTCOME_OPEN), or NULL when none is open. */
const SessionRecord *wrap_get_session(const Wrap *w);

/* Events from the BLE client, all decoded by wire.h before they get here. */
void wrap_link_up(Wrap *w);                           /* notifications on; a Status read follows */
void wrap_link_down(Wrap *w);
void wrap_on_status(Wrap *w, const WireStatus *s);
void wrap_on_button(Wrap *w, const WireButton *b, uint64_t received_usec);
void wrap_on_temperature(Wrap *w, const WireTemperature *t);
void wrap_on_response(Wrap *w, const WireResponse *r);
void wrap_on_write_failed(Wrap *w, uint8_t opcode, int error);
void wrap_on_battery(Wrap *w, int percent);
void wrap_on_info(Wrap *w, const WrapInfo *info);
/* The session side of door_start() and door_stop() (door.h), which checked the request. */
int wrap_request_start(Wrap *w, TherapyMode mode, RequestSource source, uint64_t press_usec,
                       SessionRecord *ret_record, const char **ret_error);
int wrap_request_stop(Wrap *w, RequestSource source, const char **ret_error);

/* A value the wire codec rejected: counted always, logged once per wrap and kind. */
void wrap_on_malformed(Wrap *w, WrapValueKind kind, const char *why);

/* Measured latency from a button notification's arrival to its START/DENY being sent. */
typedef struct WrapLatency {
        uint64_t n;
        uint64_t max_usec;
        uint64_t sum_usec;
        uint32_t hist[16];            /* bucket i: [2^i, 2^(i+1)) µs, the last open-ended */
} WrapLatency;
const WrapLatency *wrap_get_latency(const Wrap *w);
