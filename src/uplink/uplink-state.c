/* uplink-state: the clinic uplink's durable cursor and last outcome, in its own SQLite file. */
#include <errno.h>
#include <fcntl.h>
#include <libgen.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>
#include <sqlite3.h>

#include "uplink-state.h"
#include "util.h"

struct UplinkState {
        sqlite3 *db;
        int rejected;                 /* the refusals' file: 1 attached, 0 none yet, -EACCES not ours to read */
};

/*
 * Records the clinic's server refused for good (a 400, 412, 422... with an OperationOutcome):
 * kept with what was sent and what the server said, so nothing is lost and the queue moves
 * on. They are health data, so they live in a file of their own beside the state, 0600
 * (REJECTED_FILE, attached as "r"): kneewrapd and kneewrapctl read only the count, which
 * the uplink keeps in the state's `uplink` row. A row stays after the record is delivered (by --retry-rejected, or because a
 * correction went through): delivered_at says when. One row per (store, seq): a record
 * corrected later has a new seq, and is tried again like any change.
 */
#define REJECTED_SCHEMA \
        "CREATE TABLE IF NOT EXISTS r.rejected (\n" \
        "        id INTEGER PRIMARY KEY AUTOINCREMENT,\n" \
        "        store_created_at INTEGER NOT NULL,\n" \
        "        seq INTEGER NOT NULL,\n" \
        "        kind TEXT NOT NULL,\n" \
        "        key TEXT NOT NULL,\n" \
        "        rev INTEGER NOT NULL,\n" \
        "        at INTEGER NOT NULL,\n" \
        "        last_at INTEGER NOT NULL,\n" \
        "        attempts INTEGER NOT NULL DEFAULT 1,\n" \
        "        http_status INTEGER NOT NULL,\n" \
        "        diagnostics TEXT NOT NULL DEFAULT '',\n" \
        "        outcome TEXT,\n" \
        "        payload TEXT NOT NULL,\n" \
        "        retry INTEGER NOT NULL DEFAULT 0 CHECK (retry IN (0, 1)),\n" \
        "        delivered_at INTEGER,\n" \
        "        UNIQUE (store_created_at, seq)\n" \
        ");\n"

#define REJECTED_FILE "rejected.db"

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

/*
 * Makes sure `path` exists (mode for a new one). Made by root (kneewrap-uplink --retry-rejected
 * run with sudo, before the service ever ran), it goes to the owner of its directory, the
 * service's StateDirectory: a file root kept would lock the service out of its own state.
 */
static int file_ensure(const char *path, mode_t mode) {
        _cleanup_free_ char *copy = strdup(path);
        struct stat dir;
        int fd, r = 0;

        if (!copy)
                return -ENOMEM;
        fd = open(path, O_RDWR | O_CREAT | O_EXCL | O_CLOEXEC | O_NOCTTY, mode);
        if (fd < 0 && errno == EEXIST)
                fd = open(path, O_RDWR | O_CLOEXEC | O_NOCTTY);
        else if (fd >= 0 && geteuid() == 0 && stat(dirname(copy), &dir) == 0 && fchown(fd, dir.st_uid, dir.st_gid) < 0)
                r = -errno;
        if (fd < 0)
                return -errno;
        close(fd);
        return r;
}

/* The open refusals, counted where kneewrapd and kneewrapctl can read them. */
static int rejected_count_sync(UplinkState *u) {
        int rc = sqlite3_exec(u->db, "UPDATE main.uplink SET rejected = "
                              "(SELECT count(*) FROM r.rejected WHERE delivered_at IS NULL) WHERE id = 1",
                              NULL, NULL, NULL);
        return errno_of(rc);
}

/*
 * The refusals' file, beside the state: made 0600 and attached by the uplink; attached by a
 * reader only when it may read it (root, the uplink's user): kneewrapd cannot, and needs not.
 */
static int rejected_attach(UplinkState *u, const char *state_path, bool readonly) {
        _cleanup_free_ char *copy = strdup(state_path), *file = NULL;
        sqlite3_stmt *st = NULL;
        int rc;

        if (!copy || asprintf(&file, "%s/" REJECTED_FILE, dirname(copy)) < 0)
                return SQLITE_NOMEM;
        if (!readonly) {
                if (file_ensure(file, 0600) < 0)
                        return SQLITE_CANTOPEN;
        } else if (access(file, R_OK) < 0) {
                u->rejected = errno == ENOENT ? 0 : -EACCES;
                return SQLITE_OK;
        }
        rc = sqlite3_prepare_v2(u->db, "ATTACH DATABASE ?1 AS r", -1, &st, NULL);
        if (rc != SQLITE_OK)
                return rc;
        sqlite3_bind_text(st, 1, file, -1, SQLITE_STATIC);
        rc = sqlite3_step(st);
        sqlite3_finalize(st);
        if (rc != SQLITE_DONE)
                return rc;
        u->rejected = 1;
        if (readonly)
                return SQLITE_OK;
        /* A state file from before refusals were kept has no count: add it (once). */
        if (sqlite3_exec(u->db, "SELECT rejected FROM main.uplink", NULL, NULL, NULL) != SQLITE_OK) {
                rc = sqlite3_exec(u->db, "ALTER TABLE main.uplink ADD COLUMN rejected INTEGER NOT NULL DEFAULT 0",
                                  NULL, NULL, NULL);
                if (rc != SQLITE_OK)
                        return rc;
        }
        rc = sqlite3_exec(u->db, "PRAGMA r.journal_mode = TRUNCATE; " REJECTED_SCHEMA, NULL, NULL, NULL);
        return rc != SQLITE_OK ? rc : rejected_count_sync(u) < 0 ? SQLITE_IOERR : SQLITE_OK;
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
                r = file_ensure(path, 0644);
                if (r < 0) {
                        if (ret_errmsg)
                                (void) asprintf(ret_errmsg, "cannot open %s: %s", path, strerror(-r));
                        free(u);
                        return r;
                }
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
        if (rc == SQLITE_OK)
                rc = rejected_attach(u, path, readonly);
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
        if (rc != SQLITE_ROW)
                return rc == SQLITE_DONE ? -ENOENT : errno_of(rc);
        /* A state file an older uplink wrote has no count: nothing was refused there. */
        if (sqlite3_prepare_v2(u->db, "SELECT rejected FROM main.uplink WHERE id = 1", -1, &st, NULL) == SQLITE_OK) {
                if (sqlite3_step(st) == SQLITE_ROW)
                        ret->rejected = (uint64_t) sqlite3_column_int64(st, 0);
                sqlite3_finalize(st);
        }
        return 0;
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

void uplink_rejected_free(UplinkRejected *r, size_t n) {
        for (size_t i = 0; r && i < n; i++) {
                free(r[i].outcome);
                free(r[i].payload);
        }
        free(r);
}

int uplink_state_reject(UplinkState *u, int64_t store_created_at, const StoreChange *c, long http_status,
                        const char *diagnostics, const char *outcome, const char *payload, int64_t now) {
        sqlite3_stmt *st = NULL;
        int rc;

        rc = sqlite3_prepare_v2(u->db,
                                "INSERT INTO rejected (store_created_at, seq, kind, key, rev, at, last_at, http_status, "
                                "diagnostics, outcome, payload) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?6, ?7, ?8, ?9, ?10) "
                                "ON CONFLICT (store_created_at, seq) DO UPDATE SET last_at = ?6, attempts = attempts + 1, "
                                "http_status = ?7, diagnostics = ?8, outcome = ?9, payload = ?10, retry = 0, "
                                "delivered_at = NULL",
                                -1, &st, NULL);
        if (rc != SQLITE_OK)
                return errno_of(rc);
        sqlite3_bind_int64(st, 1, store_created_at);
        sqlite3_bind_int64(st, 2, c->seq);
        sqlite3_bind_text(st, 3, change_kind_to_string(c->kind) ?: "unknown", -1, SQLITE_STATIC);
        sqlite3_bind_text(st, 4, c->key, -1, SQLITE_TRANSIENT);
        sqlite3_bind_int64(st, 5, c->rev);
        sqlite3_bind_int64(st, 6, now);
        sqlite3_bind_int64(st, 7, http_status);
        sqlite3_bind_text(st, 8, diagnostics ? diagnostics : "", -1, SQLITE_TRANSIENT);
        if (outcome)
                sqlite3_bind_text(st, 9, outcome, -1, SQLITE_TRANSIENT);
        sqlite3_bind_text(st, 10, payload ? payload : "[]", -1, SQLITE_TRANSIENT);
        rc = sqlite3_step(st);
        sqlite3_finalize(st);
        return rc == SQLITE_DONE ? rejected_count_sync(u) : errno_of(rc);
}

int uplink_state_is_rejected(UplinkState *u, int64_t store_created_at, int64_t seq) {
        sqlite3_stmt *st = NULL;
        int rc;

        rc = sqlite3_prepare_v2(u->db, "SELECT 1 FROM rejected WHERE store_created_at = ?1 AND seq = ?2", -1, &st, NULL);
        if (rc != SQLITE_OK)
                return errno_of(rc);
        sqlite3_bind_int64(st, 1, store_created_at);
        sqlite3_bind_int64(st, 2, seq);
        rc = sqlite3_step(st);
        sqlite3_finalize(st);
        return rc == SQLITE_ROW ? 1 : rc == SQLITE_DONE ? 0 : errno_of(rc);
}

#define REJECTED_COLUMNS "id, store_created_at, seq, rev, kind, key, at, last_at, attempts, http_status, " \
        "diagnostics, outcome, payload, retry, coalesce(delivered_at, 0) FROM rejected "

static int rejected_read(sqlite3_stmt *st, UplinkRejected *r) {
        const char *outcome = (const char *) sqlite3_column_text(st, 11);
        const char *payload = (const char *) sqlite3_column_text(st, 12);

        *r = (UplinkRejected) {
                .id = sqlite3_column_int64(st, 0),
                .store_created_at = sqlite3_column_int64(st, 1),
                .change = {
                        .seq = sqlite3_column_int64(st, 2),
                        .rev = sqlite3_column_int64(st, 3),
                        .kind = change_kind_from_string((const char *) sqlite3_column_text(st, 4)),
                },
                .at = sqlite3_column_int64(st, 6),
                .last_at = sqlite3_column_int64(st, 7),
                .attempts = (unsigned) sqlite3_column_int64(st, 8),
                .http_status = (long) sqlite3_column_int64(st, 9),
                .retry = sqlite3_column_int(st, 13) != 0,
                .delivered_at = sqlite3_column_int64(st, 14),
        };
        snprintf(r->change.key, sizeof r->change.key, "%s", (const char *) sqlite3_column_text(st, 5));
        snprintf(r->diagnostics, sizeof r->diagnostics, "%s", (const char *) sqlite3_column_text(st, 10));
        r->outcome = outcome ? strdup(outcome) : NULL;
        r->payload = strdup(payload ? payload : "[]");
        if ((outcome && !r->outcome) || !r->payload) {
                free(r->outcome);
                free(r->payload);
                return -ENOMEM;
        }
        return 0;
}

int uplink_state_rejected_list(UplinkState *u, bool open_only, UplinkRejected **ret, size_t *ret_n) {
        UplinkRejected *list = NULL;
        sqlite3_stmt *st = NULL;
        size_t n = 0;
        int rc, r = 0;

        *ret = NULL;
        *ret_n = 0;
        if (u->rejected <= 0)
                return u->rejected;
        rc = sqlite3_prepare_v2(u->db, open_only ? "SELECT " REJECTED_COLUMNS "WHERE delivered_at IS NULL ORDER BY id"
                                                 : "SELECT " REJECTED_COLUMNS "ORDER BY id", -1, &st, NULL);
        if (rc != SQLITE_OK)
                return errno_of(rc);
        while ((rc = sqlite3_step(st)) == SQLITE_ROW) {
                UplinkRejected *more = realloc(list, (n + 1) * sizeof(*list));
                if (!more) {
                        r = -ENOMEM;
                        break;
                }
                list = more;
                r = rejected_read(st, &list[n]);
                if (r < 0)
                        break;
                n++;
        }
        sqlite3_finalize(st);
        if (r >= 0 && rc != SQLITE_DONE)
                r = errno_of(rc);
        if (r < 0) {
                uplink_rejected_free(list, n);
                return r;
        }
        *ret = list;
        *ret_n = n;
        return 0;
}

int uplink_state_retry_rejected(UplinkState *u, unsigned *ret_n) {
        int r = update(u, "UPDATE rejected SET retry = 1 WHERE delivered_at IS NULL", 0, 0, 0, 0, NULL);

        if (r >= 0 && ret_n)
                *ret_n = (unsigned) sqlite3_changes(u->db);
        return r;
}

int uplink_state_next_retry(UplinkState *u, UplinkRejected *ret) {
        sqlite3_stmt *st = NULL;
        int rc, r;

        rc = sqlite3_prepare_v2(u->db, "SELECT " REJECTED_COLUMNS "WHERE retry = 1 AND delivered_at IS NULL "
                                "ORDER BY id LIMIT 1", -1, &st, NULL);
        if (rc != SQLITE_OK)
                return errno_of(rc);
        rc = sqlite3_step(st);
        r = rc == SQLITE_ROW ? rejected_read(st, ret) : rc == SQLITE_DONE ? -ENOENT : errno_of(rc);
        sqlite3_finalize(st);
        return r;
}

int uplink_state_delivered(UplinkState *u, int64_t store_created_at, ChangeKind kind, const char *key, int64_t now) {
        sqlite3_stmt *st = NULL;
        int rc;

        rc = sqlite3_prepare_v2(u->db, "UPDATE rejected SET delivered_at = ?1, retry = 0 WHERE delivered_at IS NULL "
                                "AND store_created_at = ?2 AND kind = ?3 AND key = ?4", -1, &st, NULL);
        if (rc != SQLITE_OK)
                return errno_of(rc);
        sqlite3_bind_int64(st, 1, now);
        sqlite3_bind_int64(st, 2, store_created_at);
        sqlite3_bind_text(st, 3, change_kind_to_string(kind) ?: "unknown", -1, SQLITE_STATIC);
        sqlite3_bind_text(st, 4, key, -1, SQLITE_TRANSIENT);
        rc = sqlite3_step(st);
        sqlite3_finalize(st);
        if (rc != SQLITE_DONE)
                return errno_of(rc);
        /* Asked for every record confirmed while any is refused: a write only when one was. */
        return sqlite3_changes(u->db) > 0 ? rejected_count_sync(u) : 0;
}

int uplink_state_retry_refused(UplinkState *u, int64_t id, long http_status, const char *diagnostics,
                               const char *outcome, int64_t now) {
        sqlite3_stmt *st = NULL;
        int rc;

        rc = sqlite3_prepare_v2(u->db, "UPDATE rejected SET retry = 0, attempts = attempts + 1, last_at = ?2, "
                                "http_status = ?3, diagnostics = ?4, outcome = ?5 WHERE id = ?1", -1, &st, NULL);
        if (rc != SQLITE_OK)
                return errno_of(rc);
        sqlite3_bind_int64(st, 1, id);
        sqlite3_bind_int64(st, 2, now);
        sqlite3_bind_int64(st, 3, http_status);
        sqlite3_bind_text(st, 4, diagnostics ? diagnostics : "", -1, SQLITE_TRANSIENT);
        if (outcome)
                sqlite3_bind_text(st, 5, outcome, -1, SQLITE_TRANSIENT);
        rc = sqlite3_step(st);
        sqlite3_finalize(st);
        return rc == SQLITE_DONE ? rejected_count_sync(u) : errno_of(rc);
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
