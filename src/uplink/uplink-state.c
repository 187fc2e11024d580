/* uplink-state: the clinic uplink's durable cursor and last outcome, in its own SQLite file. */
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <sqlite3.h>

#include "uplink-state.h"
#include "util.h"

struct UplinkState {
        sqlite3 *db;
};

#define STATE_SCHEMA \
        "CREATE TABLE IF NOT EXISTS uplink (\n" \
        "        id INTEGER PRIMARY KEY CHECK (id = 1),\n" \
        "        store_created_at INTEGER NOT NULL DEFAULT 0,\n" \
        "        cursor INTEGER NOT NULL DEFAULT 0 CHECK (cursor >= 0),\n" \
        "        sent INTEGER NOT NULL DEFAULT 0,\n" \
        "        last_attempt_at INTEGER NOT NULL DEFAULT 0,\n" \
        "        last_success_at INTEGER NOT NULL DEFAULT 0,\n" \
        "        last_error_at INTEGER NOT NULL DEFAULT 0,\n" \
        "        last_error TEXT NOT NULL DEFAULT ''\n" \
        ");\n" \
        "INSERT OR IGNORE INTO uplink (id) VALUES (1);\n"

static int errno_of(int rc) {
        switch (rc & 0xff) {
        case SQLITE_OK: case SQLITE_ROW: case SQLITE_DONE: return 0;
        case SQLITE_FULL: return -ENOSPC;
        case SQLITE_PERM: case SQLITE_AUTH: return -EACCES;
        case SQLITE_READONLY: return -EROFS;
        case SQLITE_BUSY: case SQLITE_LOCKED: return -EBUSY;
        case SQLITE_NOMEM: return -ENOMEM;
        case SQLITE_CANTOPEN: return -ENOENT;
        default: return -EIO;
        }
}

int uplink_state_open(const char *path, bool readonly, UplinkState **ret, char **ret_errmsg) {
        UplinkState *u;
        int rc, r;

        *ret = NULL;
        if (ret_errmsg)
                *ret_errmsg = NULL;
        u = calloc(1, sizeof(*u));
        if (!u)
                return -ENOMEM;
        if (!readonly) {
                /* Only counts and times: anyone may read them (kneewrapd is another user). */
                int fd = open(path, O_RDWR | O_CREAT | O_CLOEXEC | O_NOCTTY, 0644);
                if (fd < 0) {
                        r = -errno;
                        if (ret_errmsg)
                                (void) asprintf(ret_errmsg, "cannot open %s: %s", path, strerror(-r));
                        free(u);
                        return r;
                }
                close(fd);
        } else if (access(path, R_OK) < 0) {
                r = -errno;
                if (ret_errmsg)
                        (void) asprintf(ret_errmsg, "cannot read %s: %s", path, strerror(-r));
                free(u);
                return r;
        }
        rc = sqlite3_open_v2(path, &u->db, (readonly ? SQLITE_OPEN_READONLY : SQLITE_OPEN_READWRITE) |
                             SQLITE_OPEN_NOMUTEX, NULL);
        if (rc == SQLITE_OK) {
                sqlite3_extended_result_codes(u->db, 1);
                sqlite3_busy_timeout(u->db, 1000);
                if (!readonly)
                        rc = sqlite3_exec(u->db, "PRAGMA journal_mode = TRUNCATE; PRAGMA synchronous = FULL; "
                                          "BEGIN IMMEDIATE; " STATE_SCHEMA "COMMIT;", NULL, NULL, NULL);
        }
        if (rc != SQLITE_OK) {
                r = errno_of(rc);
                if (ret_errmsg)
                        (void) asprintf(ret_errmsg, "%s: %s", path, u->db ? sqlite3_errmsg(u->db) : "out of memory");
                uplink_state_close(u);
                return r < 0 ? r : -EIO;
        }
        *ret = u;
        return 0;
}

UplinkState *uplink_state_close(UplinkState *u) {
        if (!u)
                return NULL;
        sqlite3_close(u->db);
        free(u);
        return NULL;
}

int uplink_state_get(UplinkState *u, UplinkStatus *ret) {
        sqlite3_stmt *st = NULL;
        int rc;

        rc = sqlite3_prepare_v2(u->db, "SELECT store_created_at, cursor, sent, last_attempt_at, last_success_at, "
                                "last_error_at, last_error FROM uplink WHERE id = 1", -1, &st, NULL);
        if (rc != SQLITE_OK)
                return errno_of(rc);
        rc = sqlite3_step(st);
        if (rc == SQLITE_ROW) {
                *ret = (UplinkStatus) {
                        .store_created_at = sqlite3_column_int64(st, 0),
                        .cursor = sqlite3_column_int64(st, 1),
                        .sent = (uint64_t) sqlite3_column_int64(st, 2),
                        .last_attempt_at = sqlite3_column_int64(st, 3),
                        .last_success_at = sqlite3_column_int64(st, 4),
                        .last_error_at = sqlite3_column_int64(st, 5),
                };
                snprintf(ret->last_error, sizeof ret->last_error, "%s", (const char *) sqlite3_column_text(st, 6));
        }
        sqlite3_finalize(st);
        return rc == SQLITE_ROW ? 0 : rc == SQLITE_DONE ? -ENOENT : errno_of(rc);
}

/* Binds ?1..?5; a statement that has fewer ignores the rest (SQLITE_RANGE). */
static int update(UplinkState *u, const char *sql, int64_t a, int64_t b, int64_t c, int64_t d, const char *text) {
        sqlite3_stmt *st = NULL;
        int rc;

        rc = sqlite3_prepare_v2(u->db, sql, -1, &st, NULL);
        if (rc != SQLITE_OK)
                return errno_of(rc);
        sqlite3_bind_int64(st, 1, a);
        sqlite3_bind_int64(st, 2, b);
        sqlite3_bind_int64(st, 3, c);
        sqlite3_bind_int64(st, 4, d);
        sqlite3_bind_text(st, 5, text ? text : "", -1, SQLITE_TRANSIENT);
        rc = sqlite3_step(st);
        sqlite3_finalize(st);
        return rc == SQLITE_DONE ? 0 : errno_of(rc);
}

int uplink_state_confirm(UplinkState *u, int64_t store_created_at, int64_t cursor, uint64_t n, int64_t now) {
        /* The cursor only moves forward within one store; reset() is the way back. */
        return update(u, "UPDATE uplink SET store_created_at = ?1, cursor = max(cursor, ?2), sent = sent + ?3, "
                      "last_success_at = ?4, last_attempt_at = ?4, last_error = ?5 WHERE id = 1",
                      store_created_at, cursor, (int64_t) n, now, "");
}

int uplink_state_reset(UplinkState *u, int64_t store_created_at) {
        return update(u, "UPDATE uplink SET store_created_at = ?1, cursor = 0 WHERE id = 1",
                      store_created_at, 0, 0, 0, "");
}

int uplink_state_error(UplinkState *u, const char *error, int64_t now) {
        return update(u, "UPDATE uplink SET last_error_at = ?1, last_attempt_at = ?1, last_error = ?5 "
                      "WHERE id = 1", now, 0, 0, 0, error);
}

int uplink_state_attempt(UplinkState *u, int64_t now) {
        return update(u, "UPDATE uplink SET last_attempt_at = ?1 WHERE id = 1",
                      now, 0, 0, 0, "");
}

int uplink_report(Store *store, const char *state_path, UplinkReport *ret) {
        UplinkState *u = NULL;
        int64_t created = 0, cursor = 0;
        int r;

        *ret = (UplinkReport) { 0 };
        r = uplink_state_open(state_path, true, &u, NULL);
        if (r >= 0) {
                r = uplink_state_get(u, &ret->status);
                uplink_state_close(u);
                if (r < 0)
                        return r;
                ret->configured = true;
        } else if (r != -ENOENT)
                return r;   /* -ENOENT: the uplink never ran here, and everything is pending */
        if (!store)
                return 0;
        /* A cursor of another store counts for nothing: all of this one is pending. */
        if (ret->configured && store_identity(store, &created) >= 0 && created == ret->status.store_created_at)
                cursor = ret->status.cursor;
        if (store_changes_pending(store, cursor, &ret->pending, NULL) >= 0)
                ret->has_pending = true;
        return 0;
}
