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
        uint64_t rejected;            /* records the server refused for good, not delivered since */
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

/* A record the clinic's server refused for good, as kept in the state (see uplink-state.c). */
typedef struct UplinkRejected {
        int64_t id;
        int64_t store_created_at;
        StoreChange change;           /* the change refused: seq, rev, kind, key */
        int64_t at;                   /* first refused */
        int64_t last_at;              /* last refused */
        unsigned attempts;
        long http_status;
        char diagnostics[256];        /* the OperationOutcome's words */
        char *outcome;                /* the OperationOutcome as the server sent it (JSON), or NULL */
        char *payload;                /* the Bundle entries sent for the record (JSON) */
        bool retry;                   /* asked to be sent again (--retry-rejected) */
        int64_t delivered_at;         /* 0: still refused */
} UplinkRejected;

void uplink_rejected_free(UplinkRejected *r, size_t n);
/* Keeps a refusal of change `c` (or counts one more of it, when it was refused before). */
int uplink_state_reject(UplinkState *u, int64_t store_created_at, const StoreChange *c, long http_status,
                        const char *diagnostics, const char *outcome, const char *payload, int64_t now);
/* 1 when change `seq` of that store was refused (delivered since or not), 0 when not. */
int uplink_state_is_rejected(UplinkState *u, int64_t store_created_at, int64_t seq);
/* Every refused record, oldest first; open_only: those not delivered since. */
int uplink_state_rejected_list(UplinkState *u, bool open_only, UplinkRejected **ret, size_t *ret_n);
/* Marks every refused record not delivered since to be sent again; *ret_n how many. */
int uplink_state_retry_rejected(UplinkState *u, unsigned *ret_n);
/* The oldest record marked to be sent again, or -ENOENT. */
int uplink_state_next_retry(UplinkState *u, UplinkRejected *ret);
/* The record (kind, key) reached the server: its refusals are delivered. */
int uplink_state_delivered(UplinkState *u, int64_t store_created_at, ChangeKind kind, const char *key, int64_t now);
/* A retried record was refused again: no longer marked, one more attempt. */
int uplink_state_retry_refused(UplinkState *u, int64_t id, long http_status, const char *diagnostics,
                               const char *outcome, int64_t now);

/* The figures `kneewrapctl uplink`, bridge/health and STATUS= show. */
typedef struct UplinkReport {
        bool configured;              /* the state file exists: the uplink has run */
        bool has_pending;
        uint64_t pending;             /* records the server has not confirmed */
        UplinkStatus status;
} UplinkReport;

/* Reads the state at state_path (read-only) and counts, in `store`, what is past its cursor. */
int uplink_report(Store *store, const char *state_path, UplinkReport *ret);
