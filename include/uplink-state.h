/* uplink-state: the clinic uplink's durable cursor and last outcome, in its own SQLite file. */
#pragma once

#include <stdbool.h>
#include <stdint.h>

#include "store.h"

/*
 * kneewrap-uplink owns this file (in its StateDirectory); kneewrapd and kneewrapctl only
 * read it. The daemon's store stays read-only to the uplink, so the cursor lives here: the
 * highest change seq (store.h) the clinic's server confirmed, for the store created at
 * store_created_at. A rollback journal, not WAL: readers of another user need no write
 * access to a -shm file.
 */
typedef struct UplinkState UplinkState;

typedef struct UplinkStatus {
        int64_t store_created_at;     /* the store the cursor belongs to; 0: none yet */
        int64_t cursor;               /* highest seq the server confirmed */
        uint64_t sent;                /* records confirmed, in all */
        int64_t last_attempt_at;      /* Unix seconds, 0: never */
        int64_t last_success_at;
        int64_t last_error_at;
        char last_error[256];         /* "" once a send succeeded after it */
} UplinkStatus;

int uplink_state_open(const char *path, bool readonly, UplinkState **ret, char **ret_errmsg);
UplinkState *uplink_state_close(UplinkState *u);
int uplink_state_get(UplinkState *u, UplinkStatus *ret);
/* The server confirmed every record up to seq `cursor` (n of them): one durable write. */
int uplink_state_confirm(UplinkState *u, int64_t store_created_at, int64_t cursor, uint64_t n, int64_t now);
/* The cursor starts over (another store file): what follows is sent again, conditionally. */
int uplink_state_reset(UplinkState *u, int64_t store_created_at);
int uplink_state_error(UplinkState *u, const char *error, int64_t now);
int uplink_state_attempt(UplinkState *u, int64_t now);

/* The figures `kneewrapctl uplink`, bridge/health and STATUS= show. */
typedef struct UplinkReport {
        bool configured;              /* the state file exists: the uplink has run */
        bool has_pending;
        uint64_t pending;             /* records the server has not confirmed */
        UplinkStatus status;
} UplinkReport;

/* Reads the state at state_path (read-only) and counts, in `store`, what is past its cursor. */
int uplink_report(Store *store, const char *state_path, UplinkReport *ret);
