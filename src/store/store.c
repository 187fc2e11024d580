/* store: every durable fact (wraps, injuries, sessions, diary, alerts, MQTT outbox) in one SQLite file. */
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>
#include <sqlite3.h>

#include "clock.h"
#include "record.h"
#include "rules.h"
#include "schema.h"
#include "store.h"
#include "util.h"

/*
 * The daemon is one thread on one sd-event loop, and kneewrapctl may hold the write lock
 * for a moment: wait a little for it rather than fail a button press, but never long
 * enough to stall the loop noticeably.
 */
#define STORE_BUSY_TIMEOUT_MS 1000

static int tx_finish(Store *s, int r, OutboxMsg *msg);
static int tx_with_audit(Store *s, const AuditRecord *a, int (*change)(Store *s, void *userdata), void *userdata);
static int sessions_collect(Store *s, sqlite3_stmt *st, SessionRecord **ret, size_t *ret_n);
static int session_from_row(Store *s, sqlite3_stmt *st, SessionRecord *rec);

typedef enum StmtId {
        STMT_BEGIN,
        STMT_COMMIT,
        STMT_ROLLBACK,
        STMT_PROBE,
        STMT_WRAP_ADD,
        STMT_WRAP_REMOVE,
        STMT_WRAP_GET,
        STMT_WRAP_LIST,
        STMT_WRAP_GET_ANY,
        STMT_INJURY_ADD,
        STMT_INJURY_RESOLVE,
        STMT_INJURY_OPEN,
        STMT_RX_SET,
        STMT_RX_CLEAR,
        STMT_RX_GET,
        STMT_LAST_COLD_END,
        STMT_SESSION_PUT,
        STMT_SESSION_GET,
        STMT_SESSIONS_OPEN,
        STMT_SESSIONS_LIST,
        STMT_LAST_SESSION,
        STMT_DIARY_ADD,
        STMT_DIARY_LIST,
        STMT_ALERT_ADD,
        STMT_ALERTS_RAISED,
        STMT_OUTBOX_ADD,
        STMT_OUTBOX_PEEK,
        STMT_OUTBOX_ACK,
        STMT_OUTBOX_DEPTH,
        STMT_COMPLIANCE,
        STMT_ALERTS_LIST,
        STMT_INJURIES_LIST,
        STMT_ALERT_GET,
        STMT_ALERT_ACK,
        STMT_ALERT_LATEST,
        STMT_RUN_ADD,
        STMT_RUNS_LIST,
        STMT_RUN_GET,
        STMT_PROFILE_SET,
        STMT_PROFILE_GET,
        STMT_DEVICE_INFO_SET,
        STMT_DEVICE_INFO_GET,
        STMT_INJURY_ADD_STAMPED,
        STMT_LAST_COLD_RAN,
        STMT_LAST_HEAT_RAN,
        STMT_SESSIONS_UNSYNCED,
        STMT_INJURIES_PENDING,
        STMT_INJURY_DATED,
        STMT_NEWEST_TIME,
        STMT_CHANGES_AFTER,
        STMT_CHANGES_PENDING,
        STMT_IDENTITY,
        STMT_DIARY_GET,
        STMT_AUDIT_ADD,
        STMT_AUDIT_LIST,
        _STMT_MAX,
} StmtId;

#define SESSION_COLUMNS \
        "session_id, wrap, mode, source, requested_at, started_at, ended_at, prescribed_s, " \
        "duration_s, outcome, compliant, refusal, minutes_left, skin_n, skin_min, skin_max, " \
        "skin_sum, days_since_injury, setpoint, start_result, clock_synced, boot_id, requested_boot, " \
        "started_boot, ended_boot"

#define NOW_SQL "CAST(strftime('%s', 'now') AS INTEGER)"

/* A cold session in the window after run r (RUN_FOLLOW_WINDOW_S = 3600), as a subquery. */
#define RUN_WINDOW_SQL(what, cond) \
        "(SELECT " what " FROM sessions s WHERE s.wrap = r.wrap AND s.mode = 'cold' AND " cond \
        " AND s.requested_at >= r.ended_at AND s.requested_at <= r.ended_at + 3600 " \
        "ORDER BY s.requested_at, s.rowid LIMIT 1)"
/* The one definition of "followed" (store.h, RunRecord). */
#define RUN_FOLLOWED_BY_SQL \
        RUN_WINDOW_SQL("s.session_id", "s.compliant = 1 AND s.started_at IS NOT NULL " \
                       "AND s.outcome NOT IN ('refused', 'not_started') " \
                       "AND s.started_at >= r.ended_at AND s.started_at <= r.ended_at + 3600")

#define ALERT_COLUMNS "id, wrap, kind, at, text, acked_at, session_id"

#define RUN_COLUMNS \
        "r.id, r.wrap, r.ended_at, r.minutes, r.meters, r.source, r.recorded_at, " \
        RUN_FOLLOWED_BY_SQL ", " RUN_WINDOW_SQL("s.session_id", "1")

/* A session "ran" when the wrap started it; refused and not_started ones never did. */
#define RAN_SQL "(started_at IS NOT NULL AND outcome NOT IN ('refused', 'not_started'))"

static const char *const stmt_sql[_STMT_MAX] = {
        /* IMMEDIATE: take the write lock up front, so a reader never has to upgrade and
         * deadlock against kneewrapctl. */
        [STMT_BEGIN] = "BEGIN IMMEDIATE",
        [STMT_COMMIT] = "COMMIT",
        [STMT_ROLLBACK] = "ROLLBACK",
        [STMT_PROBE] = "UPDATE meta SET probe = probe + 1 WHERE id = 1",
        /* Adopting a removed wrap again brings its row (and history) back. */
        [STMT_WRAP_ADD] =
                "INSERT INTO wraps (id, address, name, adopted_at) VALUES (?1, ?2, ?3, ?4) "
                "ON CONFLICT (id) DO UPDATE SET name = excluded.name, adopted_at = excluded.adopted_at, "
                "removed_at = NULL WHERE wraps.removed_at IS NOT NULL",
        [STMT_WRAP_REMOVE] =
                "UPDATE wraps SET removed_at = " NOW_SQL " WHERE id = ?1 AND removed_at IS NULL",
        [STMT_WRAP_GET] =
                "SELECT id, address, name, adopted_at FROM wraps WHERE id = ?1 AND removed_at IS NULL",
        [STMT_WRAP_GET_ANY] = "SELECT id, address, name, adopted_at FROM wraps WHERE id = ?1",
        [STMT_WRAP_LIST] =
                "SELECT id, address, name, adopted_at FROM wraps WHERE removed_at IS NULL "
                "ORDER BY adopted_at, id",
        [STMT_INJURY_ADD] =
                "INSERT INTO injuries (wrap, at, date, recorded_at) VALUES (?1, ?2, ?3, ?4)",
        [STMT_INJURY_RESOLVE] =
                "UPDATE injuries SET resolved_at = ?2 WHERE wrap = ?1 AND resolved_at IS NULL",
        [STMT_INJURY_OPEN] =
                "SELECT at, date, recorded_at, boot_id, recorded_boot, pending FROM injuries "
                "WHERE wrap = ?1 AND resolved_at IS NULL",
        [STMT_INJURY_ADD_STAMPED] =
                "INSERT INTO injuries (wrap, at, date, recorded_at, clock_synced, boot_id, recorded_boot, pending) "
                "VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)",
        /* R10: the order of rows is the order things happened, whatever the clock said. */
        [STMT_LAST_COLD_RAN] =
                "SELECT " SESSION_COLUMNS " FROM sessions WHERE wrap = ?1 AND mode = 'cold' "
                "AND ended_at IS NOT NULL AND " RAN_SQL " ORDER BY rowid DESC LIMIT 4",
        [STMT_LAST_HEAT_RAN] =
                "SELECT " SESSION_COLUMNS " FROM sessions WHERE wrap = ?1 AND mode = 'heat' "
                "AND ended_at IS NOT NULL AND " RAN_SQL " ORDER BY rowid DESC LIMIT ?2",
        [STMT_SESSIONS_UNSYNCED] =
                "SELECT " SESSION_COLUMNS " FROM sessions WHERE clock_synced = 0 AND boot_id = ?1 "
                "ORDER BY rowid",
        [STMT_INJURIES_PENDING] =
                "SELECT id, recorded_boot, pending, boot_id IS ?1 FROM injuries WHERE pending IS NOT NULL",
        [STMT_INJURY_DATED] =
                "UPDATE injuries SET at = ?2, date = ?3, recorded_at = ?4, clock_synced = 1, pending = NULL "
                "WHERE id = ?1",
        [STMT_NEWEST_TIME] =
                "SELECT max(coalesce((SELECT max(max(requested_at, coalesce(ended_at, 0))) FROM sessions "
                "WHERE clock_synced = 1), 0), coalesce((SELECT max(recorded_at) FROM injuries "
                "WHERE clock_synced = 1), 0))",
        [STMT_RX_SET] =
                "INSERT INTO prescriptions (wrap, cold_s, cold_setpoint, heat_s, heat_setpoint, "
                "heat_wait_s, cold_rest_s, set_at) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8) "
                "ON CONFLICT (wrap) DO UPDATE SET cold_s = excluded.cold_s, "
                "cold_setpoint = excluded.cold_setpoint, heat_s = excluded.heat_s, "
                "heat_setpoint = excluded.heat_setpoint, heat_wait_s = excluded.heat_wait_s, "
                "cold_rest_s = excluded.cold_rest_s, set_at = excluded.set_at",
        [STMT_RX_CLEAR] = "DELETE FROM prescriptions WHERE wrap = ?1",
        [STMT_RX_GET] =
                "SELECT cold_s, cold_setpoint, heat_s, heat_setpoint, heat_wait_s, cold_rest_s "
                "FROM prescriptions WHERE wrap = ?1",
        /* An interrupted session may have gone on on the wrap (its fail-safe runs to the
         * duration): R6 rests from that end, cautiously. */
        [STMT_LAST_COLD_END] =
                "SELECT max(CASE WHEN outcome = 'interrupted' THEN max(ended_at, started_at + prescribed_s) "
                "ELSE ended_at END) FROM sessions WHERE wrap = ?1 AND mode = 'cold' "
                "AND ended_at IS NOT NULL AND " RAN_SQL,
        [STMT_SESSION_PUT] =
                "INSERT INTO sessions (" SESSION_COLUMNS ") VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, "
                "?9, ?10, ?11, ?12, ?13, ?14, ?15, ?16, ?17, ?18, ?19, ?20, ?21, ?22, ?23, ?24, ?25) "
                "ON CONFLICT (session_id) DO UPDATE SET wrap = excluded.wrap, mode = excluded.mode, "
                "source = excluded.source, requested_at = excluded.requested_at, "
                "started_at = excluded.started_at, ended_at = excluded.ended_at, "
                "prescribed_s = excluded.prescribed_s, duration_s = excluded.duration_s, "
                "outcome = excluded.outcome, compliant = excluded.compliant, "
                "refusal = excluded.refusal, minutes_left = excluded.minutes_left, "
                "skin_n = excluded.skin_n, skin_min = excluded.skin_min, skin_max = excluded.skin_max, "
                "skin_sum = excluded.skin_sum, days_since_injury = excluded.days_since_injury, "
                "setpoint = excluded.setpoint, start_result = excluded.start_result, "
                "clock_synced = excluded.clock_synced, boot_id = excluded.boot_id, "
                "requested_boot = excluded.requested_boot, started_boot = excluded.started_boot, "
                "ended_boot = excluded.ended_boot",
        [STMT_SESSION_GET] =
                "SELECT " SESSION_COLUMNS " FROM sessions WHERE session_id = ?1",
        [STMT_SESSIONS_OPEN] =
                "SELECT " SESSION_COLUMNS " FROM sessions WHERE outcome = 'open' "
                "ORDER BY requested_at, rowid",
        [STMT_SESSIONS_LIST] =
                "SELECT " SESSION_COLUMNS " FROM sessions WHERE (?1 IS NULL OR wrap = ?1) "
                "AND requested_at >= ?2 AND requested_at < ?3 ORDER BY requested_at, rowid",
        [STMT_LAST_SESSION] =
                "SELECT " SESSION_COLUMNS " FROM sessions WHERE wrap = ?1 "
                "ORDER BY requested_at DESC, rowid DESC LIMIT 1",
        [STMT_DIARY_ADD] =
                "INSERT INTO diary (wrap, at, score, location, flags) VALUES (?1, ?2, ?3, ?4, ?5)",
        [STMT_DIARY_LIST] =
                "SELECT at, score, location, flags, id FROM diary WHERE wrap = ?1 AND at >= ?2 "
                "ORDER BY at, id",
        [STMT_ALERT_ADD] = "INSERT INTO alerts (wrap, kind, at, text, session_id) VALUES (?1, ?2, ?3, ?4, ?5)",
        [STMT_ALERTS_LIST] =
                "SELECT " ALERT_COLUMNS " FROM alerts WHERE (?1 IS NULL OR wrap = ?1) "
                "AND at >= ?2 AND at < ?3 AND (?4 = 0 OR acked_at IS NULL) ORDER BY at, id",
        [STMT_INJURIES_LIST] =
                "SELECT id, at, date, recorded_at, resolved_at FROM injuries WHERE wrap = ?1 ORDER BY at, id",
        [STMT_ALERT_GET] = "SELECT " ALERT_COLUMNS " FROM alerts WHERE id = ?1",
        [STMT_ALERT_ACK] = "UPDATE alerts SET acked_at = ?2 WHERE id = ?1 AND acked_at IS NULL",
        [STMT_ALERT_LATEST] = "SELECT max(id) FROM alerts WHERE wrap = ?1",
        [STMT_AUDIT_ADD] =
                "INSERT INTO audit (at, wrap, what, detail, source, uid, claimed_client, topic) "
                "VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)",
        [STMT_AUDIT_LIST] =
                "SELECT id, at, wrap, what, detail, source, uid, claimed_client, topic FROM audit "
                "WHERE ?1 IS NULL OR wrap = ?1 OR wrap IS NULL ORDER BY id",
        [STMT_RUN_ADD] =
                "INSERT INTO runs (wrap, ended_at, minutes, meters, source, recorded_at) "
                "VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
        [STMT_RUNS_LIST] =
                "SELECT " RUN_COLUMNS " FROM runs r "
                "WHERE (?1 IS NULL OR r.wrap = ?1) AND r.ended_at >= ?2 AND r.ended_at < ?3 "
                "ORDER BY r.ended_at, r.id",
        [STMT_RUN_GET] = "SELECT " RUN_COLUMNS " FROM runs r WHERE r.id = ?1",
        [STMT_PROFILE_SET] =
                "INSERT INTO patients (wrap, label, knee, clinic_ref, set_at) VALUES (?1, ?2, ?3, ?4, ?5) "
                "ON CONFLICT (wrap) DO UPDATE SET label = excluded.label, knee = excluded.knee, "
                "clinic_ref = excluded.clinic_ref, set_at = excluded.set_at",
        [STMT_PROFILE_GET] = "SELECT label, knee, clinic_ref, set_at FROM patients WHERE wrap = ?1",
        [STMT_DEVICE_INFO_SET] =
                "INSERT INTO device_info (wrap, manufacturer, model, serial, firmware, read_at) "
                "VALUES (?1, ?2, ?3, ?4, ?5, ?6) ON CONFLICT (wrap) DO UPDATE SET "
                "manufacturer = excluded.manufacturer, model = excluded.model, serial = excluded.serial, "
                "firmware = excluded.firmware, read_at = excluded.read_at",
        [STMT_DEVICE_INFO_GET] = "SELECT manufacturer, model, serial, firmware FROM device_info WHERE wrap = ?1",
        [STMT_ALERTS_RAISED] =
                "SELECT DISTINCT kind FROM alerts WHERE wrap = ?1 AND at >= ?2 "
                "AND kind IN ('see_physio', 'see_physio_overdue')",
        [STMT_OUTBOX_ADD] =
                "INSERT INTO outbox (topic, payload, qos, retain, created_at) "
                "VALUES (?1, ?2, ?3, ?4, " NOW_SQL ")",
        [STMT_OUTBOX_PEEK] =
                "SELECT id, topic, payload, qos, retain FROM outbox WHERE id > ?1 ORDER BY id LIMIT ?2",
        [STMT_OUTBOX_ACK] = "DELETE FROM outbox WHERE id = ?1",
        [STMT_OUTBOX_DEPTH] = "SELECT count(*) FROM outbox",
        [STMT_COMPLIANCE] =
                "SELECT "
                "coalesce(sum(mode = 'cold' AND compliant = 1 AND " RAN_SQL "), 0), "
                "coalesce(sum(mode = 'cold' AND compliant = 0 AND ended_at IS NOT NULL AND " RAN_SQL "), 0), "
                "coalesce(sum(mode = 'cold' AND outcome = 'refused'), 0), "
                "coalesce(sum(mode = 'heat' AND outcome = 'refused'), 0), "
                "coalesce(sum(CASE WHEN " RAN_SQL " THEN duration_s ELSE 0 END), 0) / 60, "
                "count(DISTINCT CASE WHEN mode = 'cold' AND compliant = 1 AND " RAN_SQL
                " THEN date(started_at, 'unixepoch', 'localtime') END), "
                "coalesce(sum(mode = 'heat' AND outcome = 'refused' AND days_since_injury < 70), 0), "
                "(SELECT count(*) FROM runs r WHERE (?1 IS NULL OR r.wrap = ?1) AND r.ended_at >= ?2 AND r.ended_at < ?3), "
                "(SELECT count(*) FROM runs r WHERE (?1 IS NULL OR r.wrap = ?1) AND r.ended_at >= ?2 AND r.ended_at < ?3 "
                "AND " RUN_FOLLOWED_BY_SQL " IS NOT NULL) "
                "FROM sessions WHERE (?1 IS NULL OR wrap = ?1) AND requested_at >= ?2 AND requested_at < ?3",
        [STMT_CHANGES_AFTER] =
                "SELECT seq, rev, kind, key FROM uplink_changes WHERE seq > ?1 ORDER BY seq LIMIT ?2",
        [STMT_CHANGES_PENDING] =
                "SELECT count(*), (SELECT coalesce(max(seq), 0) FROM uplink_changes) "
                "FROM uplink_changes WHERE seq > ?1",
        [STMT_IDENTITY] = "SELECT created_at FROM meta WHERE id = 1",
        [STMT_DIARY_GET] = "SELECT wrap, at, score, location, flags FROM diary WHERE id = ?1",
};

struct Store {
        sqlite3 *db;
        sqlite3_stmt *stmts[_STMT_MAX];
        char errmsg[256];
};

/*
 * Can the store's files grow? 0, or why not: -EROFS (a read-only file system), -ENOSPC or
 * -EDQUOT (no free blocks: a new file in the store's directory cannot take one block),
 * -EFBIG (the process's file-size limit, RLIMIT_FSIZE as LimitFSIZE= sets, is within reach of
 * the database and its WAL). SQLite keeps no reliable errno for a failed write (its
 * sqlite3_system_errno() is read after other calls): this asks the system instead.
 */
static int fs_room_probe(const char *db_path) {
        static const char block[4096];
        char path[PATH_MAX], wal[PATH_MAX];
        struct rlimit lim;
        struct stat st;
        off_t db = 0, w = 0;
        ssize_t n;
        int fd, r = 0;

        if (!db_path || !*db_path || snprintf(path, sizeof path, "%s-probe-XXXXXX", db_path) >= (int) sizeof path ||
            snprintf(wal, sizeof wal, "%s-wal", db_path) >= (int) sizeof wal)
                return -EINVAL;
        fd = mkstemp(path);
        if (fd < 0)
                return -errno;
        (void) unlink(path);
        n = write(fd, block, sizeof block);
        if (n < 0)
                r = -errno;
        else if (n < (ssize_t) sizeof block)
                r = -ENOSPC;
        (void) close(fd);
        if (r < 0)
                return r;

        /* A write that fails at the limit fails at an offset below the file's end plus what
         * it writes: at most the WAL's content again (a checkpoint), plus a little. */
        if (getrlimit(RLIMIT_FSIZE, &lim) < 0 || lim.rlim_cur == RLIM_INFINITY)
                return 0;
        if (stat(db_path, &st) == 0)
                db = st.st_size;
        if (stat(wal, &st) == 0)
                w = st.st_size;
        if ((uint64_t) (db > w ? db : w) + (uint64_t) w + 65536 >= (uint64_t) lim.rlim_cur)
                return -EFBIG;
        return 0;
}

/* The IOERR sub-codes of a write that may mean "no room": extending, syncing, truncating a
 * file or the shared-memory file. A failed read means an unreadable file, never a full one. */
static bool ioerr_may_be_full(int rc) {
        return rc == SQLITE_IOERR || rc == SQLITE_IOERR_WRITE || rc == SQLITE_IOERR_FSYNC ||
               rc == SQLITE_IOERR_TRUNCATE || rc == SQLITE_IOERR_SHMSIZE || rc == SQLITE_IOERR_SHMMAP ||
               rc == SQLITE_IOERR_DIR_FSYNC || rc == SQLITE_IOERR_MMAP;
}

static int errno_from_sqlite(sqlite3 *db, int rc) {
        int e;

        switch (rc & 0xff) {
        case SQLITE_OK:
        case SQLITE_ROW:
        case SQLITE_DONE:
                return 0;
        case SQLITE_FULL:
                return -ENOSPC;
        case SQLITE_CORRUPT:
        case SQLITE_NOTADB:
                return -EUCLEAN;
        case SQLITE_CONSTRAINT:
                if (rc == SQLITE_CONSTRAINT_UNIQUE || rc == SQLITE_CONSTRAINT_PRIMARYKEY)
                        return -EEXIST;
                /* The row it refers to (a wrap) is not there. */
                if (rc == SQLITE_CONSTRAINT_FOREIGNKEY)
                        return -ENOENT;
                return -EINVAL;
        case SQLITE_BUSY:
        case SQLITE_LOCKED:
                return -EBUSY;
        case SQLITE_READONLY:
                return -EROFS;
        case SQLITE_NOMEM:
                return -ENOMEM;
        case SQLITE_TOOBIG:
                return -E2BIG;
        case SQLITE_RANGE:
        case SQLITE_MISUSE:
                return -EINVAL;
        case SQLITE_IOERR:
        case SQLITE_CANTOPEN:
        case SQLITE_PERM:
                /* Where the OS said why, keep its reason: a full disk can surface as an I/O
                 * error (a failed write of the -shm file, say). */
                e = db ? sqlite3_system_errno(db) : 0;
                if (e == ENOSPC || e == EDQUOT || e == EFBIG)
                        return -ENOSPC;
                if (e == EACCES || e == EPERM || e == EROFS || e == ENOENT || e == EISDIR)
                        return -e;
                /* SQLite keeps no errno for a failed write of the WAL: a file system gone
                 * read-only under the open store (ext4's errors=remount-ro), a full one or a
                 * file-size limit would read as a corrupt file. Ask the system. */
                if (db && (rc & 0xff) == SQLITE_IOERR) {
                        int p = fs_room_probe(sqlite3_db_filename(db, "main"));

                        if (p == -EROFS)
                                return -EROFS;
                        if (ioerr_may_be_full(rc) && (p == -ENOSPC || p == -EDQUOT || p == -EFBIG))
                                return -ENOSPC;
                }
                return (rc & 0xff) == SQLITE_PERM ? -EACCES : -EIO;
        default:
                return -EIO;
        }
}

static int store_errorf(Store *s, int r, const char *fmt, ...) __attribute__((format(printf, 3, 4)));
static int store_errorf(Store *s, int r, const char *fmt, ...) {
        va_list ap;

        errno = r < 0 ? -r : r; /* for %m */
        va_start(ap, fmt);
        vsnprintf(s->errmsg, sizeof(s->errmsg), fmt, ap);
        va_end(ap);
        return r;
}

/* Keeps SQLite's words for store_errmsg() before a ROLLBACK can replace them. */
static int store_fail(Store *s, int rc) {
        int r = errno_from_sqlite(s->db, rc);

        if (r == 0)
                r = -EIO;
        snprintf(s->errmsg, sizeof(s->errmsg), "%s", sqlite3_errmsg(s->db));
        return r;
}

static void stmt_resetp(sqlite3_stmt **st) {
        if (*st) {
                sqlite3_reset(*st);
                sqlite3_clear_bindings(*st);
        }
}
#define _cleanup_reset_ _cleanup_(stmt_resetp)

static int stmt_get(Store *s, StmtId id, sqlite3_stmt **ret) {
        int rc;

        if (!s->stmts[id]) {
                rc = sqlite3_prepare_v3(s->db, stmt_sql[id], -1, SQLITE_PREPARE_PERSISTENT, &s->stmts[id], NULL);
                if (rc != SQLITE_OK)
                        return store_fail(s, rc);
        }
        *ret = s->stmts[id];
        return 0;
}

/* Steps a statement that returns no rows, and resets it. */
static int stmt_exec(Store *s, sqlite3_stmt *st) {
        int rc = sqlite3_step(st), r = 0;

        if (rc != SQLITE_DONE && rc != SQLITE_ROW)
                r = store_fail(s, rc);
        sqlite3_reset(st);
        sqlite3_clear_bindings(st);
        return r;
}

static int run(Store *s, StmtId id) {
        sqlite3_stmt *st = NULL;
        int r;

        r = stmt_get(s, id, &st);
        if (r < 0)
                return r;
        return stmt_exec(s, st);
}

static int tx_begin(Store *s) {
        return run(s, STMT_BEGIN);
}

static void tx_rollback(Store *s) {
        /* SQLite may already have rolled back by itself (after SQLITE_FULL, say). */
        if (!sqlite3_get_autocommit(s->db)) {
                char keep[sizeof(s->errmsg)];

                memcpy(keep, s->errmsg, sizeof(keep));
                (void) run(s, STMT_ROLLBACK);
                memcpy(s->errmsg, keep, sizeof(keep));
        }
}

static int tx_commit(Store *s) {
        int r = run(s, STMT_COMMIT);

        if (r < 0)
                tx_rollback(s);
        return r;
}

static void bind_text(sqlite3_stmt *st, int i, const char *v) {
        if (v)
                sqlite3_bind_text(st, i, v, -1, SQLITE_STATIC);
        else
                sqlite3_bind_null(st, i);
}

static void bind_opt_int64(sqlite3_stmt *st, int i, bool has, int64_t v) {
        if (has)
                sqlite3_bind_int64(st, i, v);
        else
                sqlite3_bind_null(st, i);
}

static void copy_text(char *dst, size_t size, sqlite3_stmt *st, int col) {
        const unsigned char *t = sqlite3_column_text(st, col);

        snprintf(dst, size, "%s", t ? (const char *) t : "");
}

static char *dup_text(sqlite3_stmt *st, int col) {
        const unsigned char *t = sqlite3_column_text(st, col);

        return strdup(t ? (const char *) t : "");
}

/* Makes room for one more element in a list grown by doubling. */
static int list_grow(void **list, size_t *allocated, size_t n, size_t size) {
        void *l;
        size_t a;

        if (n < *allocated)
                return 0;
        a = *allocated ? *allocated * 2 : 16;
        l = reallocarray(*list, a, size);
        if (!l)
                return -ENOMEM;
        *list = l;
        *allocated = a;
        return 0;
}

/* Steps `st` to the end, each row read by `row` into a new element of size `size`. */
static int collect_rows(Store *s, sqlite3_stmt *st, size_t size, int (*row)(Store *s, sqlite3_stmt *st, void *elem),
                        void **ret, size_t *ret_n) {
        void *list = NULL;
        size_t n = 0, allocated = 0;
        int r, rc;

        while ((rc = sqlite3_step(st)) == SQLITE_ROW) {
                if (list_grow(&list, &allocated, n, size) < 0) {
                        free(list);
                        return -ENOMEM;
                }
                memset((char *) list + n * size, 0, size);
                r = row(s, st, (char *) list + n * size);
                if (r < 0) {
                        free(list);
                        return r;
                }
                n++;
        }
        if (rc != SQLITE_DONE) {
                free(list);
                return store_fail(s, rc);
        }
        *ret = list;
        *ret_n = n;
        return 0;
}

static int check_wrap_arg(Store *s, const char *wrap) {
        if (!wrap || !*wrap || strlen(wrap) >= WRAP_ID_MAX)
                return store_errorf(s, -EINVAL, "invalid wrap id");
        return 0;
}

/* ---- open, close, check ---- */

static int pragma_int(Store *s, const char *sql, int64_t *ret) {
        sqlite3_stmt *st = NULL;
        int rc;

        rc = sqlite3_prepare_v2(s->db, sql, -1, &st, NULL);
        if (rc != SQLITE_OK)
                return store_fail(s, rc);
        rc = sqlite3_step(st);
        if (rc != SQLITE_ROW) {
                int r = store_fail(s, rc);
                sqlite3_finalize(st);
                return r;
        }
        *ret = sqlite3_column_int64(st, 0);
        sqlite3_finalize(st);
        return 0;
}

static int exec_sql(Store *s, const char *sql) {
        int rc = sqlite3_exec(s->db, sql, NULL, NULL, NULL);

        return rc == SQLITE_OK ? 0 : store_fail(s, rc);
}

static int store_set_wal(Store *s) {
        sqlite3_stmt *st = NULL;
        int rc, r = 0;

        rc = sqlite3_prepare_v2(s->db, "PRAGMA journal_mode = WAL", -1, &st, NULL);
        if (rc != SQLITE_OK)
                return store_fail(s, rc);
        rc = sqlite3_step(st);
        if (rc != SQLITE_ROW)
                r = store_fail(s, rc);
        else if (!sqlite3_column_text(st, 0) || strcmp((const char *) sqlite3_column_text(st, 0), "wal") != 0)
                /* WAL needs shared memory; a file system without it leaves another mode. */
                r = store_errorf(s, -EIO, "cannot use WAL mode (journal mode stays %s)",
                                 sqlite3_column_text(st, 0) ? (const char *) sqlite3_column_text(st, 0) : "unknown");
        sqlite3_finalize(st);
        return r;
}

static int store_migrate(Store *s) {
        int64_t version, app_id, objects;
        size_t latest = schema_version_latest();
        int r;

        r = exec_sql(s, "BEGIN IMMEDIATE");
        if (r < 0)
                return r;

        r = pragma_int(s, "PRAGMA user_version", &version);
        if (r < 0)
                goto fail;
        r = pragma_int(s, "PRAGMA application_id", &app_id);
        if (r < 0)
                goto fail;
        if (version > (int64_t) latest) {
                r = store_errorf(s, -EPROTO,
                                 "the store's schema version %lld is newer than this build knows (%zu): "
                                 "written by a newer kneewrap",
                                 (long long) version, latest);
                goto fail;
        }
        if (version > 0 && app_id != SCHEMA_APPLICATION_ID) {
                r = store_errorf(s, -EBADMSG, "not a kneewrap store (application_id 0x%llx)",
                                 (unsigned long long) app_id);
                goto fail;
        }
        if (version == 0) {
                /* A fresh file has no tables; anything else is another program's database. */
                r = pragma_int(s, "SELECT count(*) FROM sqlite_master", &objects);
                if (r < 0)
                        goto fail;
                if (objects > 0 || (app_id != 0 && app_id != SCHEMA_APPLICATION_ID)) {
                        r = store_errorf(s, -EBADMSG, "not a kneewrap store (it holds another schema)");
                        goto fail;
                }
        }

        for (size_t v = (size_t) version + 1; v <= latest; v++) {
                char pragma[64];

                for (const char *const *sql = schema_step(v); *sql && r >= 0; sql++)
                        r = exec_sql(s, *sql);
                if (r < 0) {
                        char keep[sizeof(s->errmsg)];
                        memcpy(keep, s->errmsg, sizeof(keep));
                        snprintf(s->errmsg, sizeof(s->errmsg), "schema step %zu: %.200s", v, keep);
                        goto fail;
                }
                snprintf(pragma, sizeof(pragma), "PRAGMA user_version = %zu", v);
                r = exec_sql(s, pragma);
                if (r < 0)
                        goto fail;
        }
        if ((size_t) version < latest) {
                char pragma[64];
                snprintf(pragma, sizeof(pragma), "PRAGMA application_id = %d", SCHEMA_APPLICATION_ID);
                r = exec_sql(s, pragma);
                if (r < 0)
                        goto fail;
        }

        r = exec_sql(s, "COMMIT");
        if (r < 0)
                goto fail;
        return 0;

fail:
        if (!sqlite3_get_autocommit(s->db)) {
                char keep[sizeof(s->errmsg)];
                memcpy(keep, s->errmsg, sizeof(keep));
                (void) sqlite3_exec(s->db, "ROLLBACK", NULL, NULL, NULL);
                memcpy(s->errmsg, keep, sizeof(keep));
        }
        return r;
}

int store_open_err(const char *path, Store **ret, char **ret_errmsg) {
        Store *s;
        int fd, rc, r;

        if (ret_errmsg)
                *ret_errmsg = NULL;
        *ret = NULL;
        if (!path || !*path)
                return -EINVAL;

        s = calloc(1, sizeof(*s));
        if (!s)
                return -ENOMEM;

        /*
         * Create the file ourselves: the OS's errno (EACCES, ENOENT for a missing directory,
         * EROFS) is clearer than SQLite's "unable to open". Health records are for no other
         * user, but the daemon's own group may read them: the clinic uplink (its own user in
         * group kneewrap) reads what to send. SQLite gives the -wal and -shm files this mode.
         */
        fd = open(path, O_RDWR | O_CREAT | O_CLOEXEC | O_NOCTTY, 0640);
        if (fd < 0) {
                r = -errno;
                store_errorf(s, r, "cannot open %s: %m", path);
                goto fail;
        }
        (void) fchmod(fd, 0640);   /* a store made 0600 by an older build */
        close(fd);

        rc = sqlite3_open_v2(path, &s->db, SQLITE_OPEN_READWRITE | SQLITE_OPEN_NOMUTEX, NULL);
        if (rc != SQLITE_OK) {
                if (s->db)
                        r = store_fail(s, rc);
                else {
                        r = -ENOMEM;
                        store_errorf(s, r, "out of memory");
                }
                goto fail;
        }
        sqlite3_extended_result_codes(s->db, 1);
        sqlite3_busy_timeout(s->db, STORE_BUSY_TIMEOUT_MS);

        r = store_set_wal(s);
        if (r < 0)
                goto fail;
        /* FULL: in WAL mode, NORMAL may lose the last commits on power loss; every record
         * here is one a clinic or the rules rely on. */
        r = exec_sql(s, "PRAGMA synchronous = FULL; PRAGMA foreign_keys = ON");
        if (r < 0)
                goto fail;
        r = store_migrate(s);
        if (r < 0)
                goto fail;

        *ret = s;
        return 0;

fail:
        if (ret_errmsg)
                *ret_errmsg = strdup(s->errmsg[0] ? s->errmsg : strerror(-r));
        store_close(s);
        return r;
}

int store_open(const char *path, Store **ret) {
        return store_open_err(path, ret, NULL);
}

int store_open_readonly(const char *path, Store **ret, char **ret_errmsg) {
        int64_t version = 0, app_id = 0;
        Store *s;
        int rc, r;

        if (ret_errmsg)
                *ret_errmsg = NULL;
        *ret = NULL;
        if (!path || !*path)
                return -EINVAL;
        s = calloc(1, sizeof(*s));
        if (!s)
                return -ENOMEM;

        /* The file must exist: a reader never creates the daemon's store. */
        if (access(path, R_OK) < 0) {
                r = -errno;
                store_errorf(s, r, "cannot read %s: %m", path);
                goto fail;
        }
        rc = sqlite3_open_v2(path, &s->db, SQLITE_OPEN_READONLY | SQLITE_OPEN_NOMUTEX, NULL);
        if (rc != SQLITE_OK) {
                r = s->db ? store_fail(s, rc) : store_errorf(s, -ENOMEM, "out of memory");
                goto fail;
        }
        sqlite3_extended_result_codes(s->db, 1);
        sqlite3_busy_timeout(s->db, STORE_BUSY_TIMEOUT_MS);

        r = pragma_int(s, "PRAGMA application_id", &app_id);
        if (r >= 0)
                r = pragma_int(s, "PRAGMA user_version", &version);
        if (r < 0)
                goto fail;
        if (app_id != SCHEMA_APPLICATION_ID) {
                r = store_errorf(s, -EBADMSG, "%s is not a kneewrap store (yet)", path);
                goto fail;
        }
        /* Steps only append: a newer schema still has what an older reader reads. */
        if (version < (int64_t) schema_version_latest()) {
                r = store_errorf(s, -EPROTO, "the store's schema version %lld is older than this build's (%zu): "
                                 "kneewrapd has not migrated it yet", (long long) version, schema_version_latest());
                goto fail;
        }
        *ret = s;
        return 0;

fail:
        if (ret_errmsg)
                *ret_errmsg = strdup(s->errmsg[0] ? s->errmsg : strerror(-r));
        store_close(s);
        return r;
}

Store *store_close(Store *s) {
        if (!s)
                return NULL;
        for (size_t i = 0; i < _STMT_MAX; i++)
                sqlite3_finalize(s->stmts[i]);
        sqlite3_close(s->db);
        free(s);
        return NULL;
}

const char *store_errmsg(Store *s) {
        if (!s)
                return "no store";
        return s->errmsg[0] ? s->errmsg : "no error";
}

int store_check(Store *s) {
        int r;

        r = tx_begin(s);
        if (r < 0)
                return r;
        r = run(s, STMT_PROBE);
        if (r < 0) {
                tx_rollback(s);
                return r;
        }
        if (sqlite3_changes(s->db) != 1) {
                tx_rollback(s);
                return store_errorf(s, -EUCLEAN, "the store's meta row is missing");
        }
        return tx_commit(s);
}

/* ---- wraps ---- */

static void wrap_from_row(sqlite3_stmt *st, StoredWrap *w) {
        memset(w, 0, sizeof(*w));
        copy_text(w->wrap, sizeof(w->wrap), st, 0);
        copy_text(w->address, sizeof(w->address), st, 1);
        copy_text(w->name, sizeof(w->name), st, 2);
        w->adopted_at = sqlite3_column_int64(st, 3);
}

int store_wrap_add(Store *s, const char *address, const char *name, int64_t now) {
        _cleanup_reset_ sqlite3_stmt *st = NULL;
        char addr[BDADDR_STR_MAX], id[WRAP_ID_MAX], nm[64];
        size_t len;
        int r;

        if (!address || bdaddr_normalize(address, addr) < 0 || wrap_id_from_address(addr, id) < 0)
                return store_errorf(s, -EINVAL, "invalid Bluetooth address");

        /* A display name from the radio can be long: keep whole UTF-8 characters only. */
        len = name ? strlen(name) : 0;
        if (len >= sizeof(nm)) {
                len = sizeof(nm) - 1;
                while (len > 0 && ((unsigned char) name[len] & 0xc0) == 0x80)
                        len--;
        }
        if (len > 0)
                memcpy(nm, name, len);
        nm[len] = '\0';

        r = stmt_get(s, STMT_WRAP_ADD, &st);
        if (r < 0)
                return r;
        bind_text(st, 1, id);
        bind_text(st, 2, addr);
        bind_text(st, 3, nm);
        sqlite3_bind_int64(st, 4, now);
        r = stmt_exec(s, st);
        if (r < 0)
                return r;
        if (sqlite3_changes(s->db) == 0)
                return store_errorf(s, -EEXIST, "wrap %s is already adopted", id);
        return 0;
}

/*
 * A change to a wrap's rows that must change one (an UPDATE or DELETE whose ?1 is the wrap and
 * ?2, when the statement has one, `now`): -ENOENT, with `none` said of the wrap, when nothing
 * was there to change. Run inside tx_with_audit().
 */
typedef struct WrapChange {
        StmtId id;
        const char *wrap;
        int64_t now;
        const char *none;             /* "not adopted", "no prescription", ... */
} WrapChange;

static int wrap_change(Store *s, void *userdata) {
        _cleanup_reset_ sqlite3_stmt *st = NULL;
        const WrapChange *c = userdata;
        int r;

        r = stmt_get(s, c->id, &st);
        if (r < 0)
                return r;
        bind_text(st, 1, c->wrap);
        if (sqlite3_bind_parameter_count(st) >= 2)
                sqlite3_bind_int64(st, 2, c->now);
        r = stmt_exec(s, st);
        if (r < 0)
                return r;
        if (sqlite3_changes(s->db) == 0)
                return store_errorf(s, -ENOENT, "wrap %s: %s", c->wrap, c->none);
        return 0;
}

/* wrap_change() with its history row, in one transaction. */
static int wrap_change_audited(Store *s, const AuditRecord *audit, StmtId id, const char *wrap, int64_t now,
                               const char *none) {
        int r;

        r = check_wrap_arg(s, wrap);
        if (r < 0)
                return r;
        return tx_with_audit(s, audit, wrap_change, &(WrapChange) { id, wrap, now, none });
}

int store_wrap_remove(Store *s, const char *wrap, const AuditRecord *audit) {
        return wrap_change_audited(s, audit, STMT_WRAP_REMOVE, wrap, 0, "not adopted");
}

static int wrap_get(Store *s, StmtId id, const char *wrap, StoredWrap *ret) {
        _cleanup_reset_ sqlite3_stmt *st = NULL;
        int r, rc;

        r = check_wrap_arg(s, wrap);
        if (r < 0)
                return r;
        r = stmt_get(s, id, &st);
        if (r < 0)
                return r;
        bind_text(st, 1, wrap);
        rc = sqlite3_step(st);
        if (rc == SQLITE_DONE)
                return store_errorf(s, -ENOENT, "no adopted wrap %s", wrap);
        if (rc != SQLITE_ROW)
                return store_fail(s, rc);
        wrap_from_row(st, ret);
        return 0;
}

int store_wrap_get(Store *s, const char *wrap, StoredWrap *ret) {
        return wrap_get(s, STMT_WRAP_GET, wrap, ret);
}

int store_wrap_get_any(Store *s, const char *wrap, StoredWrap *ret) {
        return wrap_get(s, STMT_WRAP_GET_ANY, wrap, ret);
}

int store_wrap_list(Store *s, StoredWrap **ret, size_t *ret_n) {
        _cleanup_reset_ sqlite3_stmt *st = NULL;
        StoredWrap *list = NULL;
        size_t n = 0, allocated = 0;
        int r, rc;

        r = stmt_get(s, STMT_WRAP_LIST, &st);
        if (r < 0)
                return r;
        while ((rc = sqlite3_step(st)) == SQLITE_ROW) {
                if (n == allocated) {
                        size_t a = allocated ? allocated * 2 : 4;
                        StoredWrap *l = realloc(list, a * sizeof(*l));
                        if (!l) {
                                free(list);
                                return -ENOMEM;
                        }
                        list = l;
                        allocated = a;
                }
                wrap_from_row(st, &list[n++]);
        }
        if (rc != SQLITE_DONE) {
                free(list);
                return store_fail(s, rc);
        }
        *ret = list;
        *ret_n = n;
        return 0;
}

/* ---- injuries and prescriptions ---- */

static int parse_date(const char *date, int *y, int *m, int *d) {
        int64_t t;
        bool date_only = false;
        int n = 0;

        if (!date || strlen(date) != 10 || clock_parse_iso(date, &t, &date_only) < 0 || !date_only)
                return -EINVAL;
        if (sscanf(date, "%4d-%2d-%2d%n", y, m, d, &n) != 3 || n != 10)
                return -EINVAL;
        return 0;
}

int store_injury_add(Store *s, const char *wrap, int64_t at, const char *date, int64_t now) {
        _cleanup_reset_ sqlite3_stmt *st = NULL;
        int y, m, d, r;

        r = check_wrap_arg(s, wrap);
        if (r < 0)
                return r;
        if (date) {
                if (parse_date(date, &y, &m, &d) < 0)
                        return store_errorf(s, -EINVAL, "invalid injury date \"%s\" (want YYYY-MM-DD)", date);
                /* The end of that day where it was recorded; store_rules_state() resolves the
                 * date anew too and takes the later of the two. */
                if (at == 0 && clock_local_day_end(y, m, d, &at) < 0)
                        return store_errorf(s, -EINVAL, "invalid injury date \"%s\"", date);
        }

        r = stmt_get(s, STMT_INJURY_ADD, &st);
        if (r < 0)
                return r;
        bind_text(st, 1, wrap);
        sqlite3_bind_int64(st, 2, at);
        bind_text(st, 3, date);
        sqlite3_bind_int64(st, 4, now);
        return stmt_exec(s, st);
}

typedef struct InjuryAdd {
        const char *wrap, *date, *pending;
        int64_t at;
        const RulesTime *recorded;
        bool boot;
} InjuryAdd;

static int injury_add_stamped(Store *s, void *userdata) {
        _cleanup_reset_ sqlite3_stmt *st = NULL;
        const InjuryAdd *i = userdata;
        int r;

        r = stmt_get(s, STMT_INJURY_ADD_STAMPED, &st);
        if (r < 0)
                return r;
        bind_text(st, 1, i->wrap);
        sqlite3_bind_int64(st, 2, i->pending ? i->recorded->wall : i->at);
        bind_text(st, 3, i->date);
        sqlite3_bind_int64(st, 4, i->recorded->wall);
        sqlite3_bind_int(st, 5, i->recorded->wall_ok);
        bind_text(st, 6, i->boot ? i->recorded->boot_id : NULL);
        bind_opt_int64(st, 7, i->boot, i->recorded->boot_s);
        bind_text(st, 8, i->pending);
        return stmt_exec(s, st);
}

int store_injury_add_stamped(Store *s, const char *wrap, int64_t at, const char *date,
                             const RulesTime *recorded, const char *pending, const AuditRecord *audit) {
        bool boot = recorded && strlen(recorded->boot_id) == RULES_BOOT_ID_MAX - 1 && recorded->boot_s >= 0;
        int y, m, d, r;

        r = check_wrap_arg(s, wrap);
        if (r < 0)
                return r;
        if (!recorded)
                return store_errorf(s, -EINVAL, "no time for the injury's record");
        if (pending && ((!streq(pending, "today") && !streq(pending, "now")) || date || !boot))
                return store_errorf(s, -EINVAL, "a pending injury is \"today\" or \"now\", with a boot stamp");
        if (date) {
                if (parse_date(date, &y, &m, &d) < 0)
                        return store_errorf(s, -EINVAL, "invalid injury date \"%s\" (want YYYY-MM-DD)", date);
                if (at == 0 && clock_local_day_end(y, m, d, &at) < 0)
                        return store_errorf(s, -EINVAL, "invalid injury date \"%s\"", date);
        }
        return tx_with_audit(s, audit, injury_add_stamped, &(InjuryAdd) {
                .wrap = wrap, .date = date, .pending = pending, .at = at, .recorded = recorded, .boot = boot });
}

int store_injuries_date(Store *s, const char *boot_id, int64_t boot_wall0, unsigned *ret_n) {
        _cleanup_reset_ sqlite3_stmt *st = NULL;
        struct { int64_t id, at; char date[11]; int64_t recorded; } rows[64];
        unsigned n = 0;
        int r, rc;

        if (!boot_id)
                return store_errorf(s, -EINVAL, "no boot id");
        r = stmt_get(s, STMT_INJURIES_PENDING, &st);
        if (r < 0)
                return r;
        bind_text(st, 1, boot_id);
        while (n < ELEMENTSOF(rows) && (rc = sqlite3_step(st)) == SQLITE_ROW) {
                const char *pending = (const char *) sqlite3_column_text(st, 2);
                bool this_boot = sqlite3_column_int(st, 3) && sqlite3_column_type(st, 1) != SQLITE_NULL;
                /* One of an earlier boot that ended before the clock was trusted happened before
                 * this boot began, and that is all anyone knows: it is dated at the latest it can
                 * have been, this boot's start (R2's cautious reading). Left pending, it would
                 * count from each new boot's start again, and never be dated. */
                int64_t at = boot_wall0 + (this_boot ? sqlite3_column_int64(st, 1) : 0);
                int y, m, d;

                rows[n].id = sqlite3_column_int64(st, 0);
                rows[n].recorded = at;
                rows[n].date[0] = '\0';
                rows[n].at = at;
                /* "today" becomes that local date, and R2 reads it as the end of that day. */
                if (pending && streq(pending, "today")) {
                        clock_format_date(at, rows[n].date);
                        if (parse_date(rows[n].date, &y, &m, &d) < 0 || clock_local_day_end(y, m, d, &rows[n].at) < 0)
                                return store_errorf(s, -EINVAL, "cannot date the injury entered as today");
                }
                n++;
        }
        sqlite3_reset(st);
        if (n == 0) {
                if (ret_n)
                        *ret_n = 0;
                return 0;
        }
        r = tx_begin(s);
        if (r < 0)
                return r;
        for (unsigned i = 0; i < n && r >= 0; i++) {
                _cleanup_reset_ sqlite3_stmt *up = NULL;

                r = stmt_get(s, STMT_INJURY_DATED, &up);
                if (r < 0)
                        break;
                sqlite3_bind_int64(up, 1, rows[i].id);
                sqlite3_bind_int64(up, 2, rows[i].at);
                bind_text(up, 3, rows[i].date[0] ? rows[i].date : NULL);
                sqlite3_bind_int64(up, 4, rows[i].recorded);
                r = stmt_exec(s, up);
        }
        r = tx_finish(s, r, NULL);
        if (r >= 0 && ret_n)
                *ret_n = n;
        return r;
}

int store_sessions_unsynced(Store *s, const char *boot_id, SessionRecord **ret, size_t *ret_n) {
        _cleanup_reset_ sqlite3_stmt *st = NULL;
        int r;

        if (!boot_id)
                return store_errorf(s, -EINVAL, "no boot id");
        r = stmt_get(s, STMT_SESSIONS_UNSYNCED, &st);
        if (r < 0)
                return r;
        bind_text(st, 1, boot_id);
        return sessions_collect(s, st, ret, ret_n);
}

/* A statement without parameters that answers one number. */
static int stmt_int64(Store *s, StmtId id, int64_t *ret) {
        _cleanup_reset_ sqlite3_stmt *st = NULL;
        int r, rc;

        r = stmt_get(s, id, &st);
        if (r < 0)
                return r;
        rc = sqlite3_step(st);
        if (rc != SQLITE_ROW)
                return store_fail(s, rc);
        *ret = sqlite3_column_int64(st, 0);
        return 0;
}

int store_newest_time(Store *s, int64_t *ret) {
        return stmt_int64(s, STMT_NEWEST_TIME, ret);
}

int store_injury_resolve(Store *s, const char *wrap, int64_t now, const AuditRecord *audit) {
        return wrap_change_audited(s, audit, STMT_INJURY_RESOLVE, wrap, now, "no unresolved injury");
}

typedef struct PrescriptionSet {
        const char *wrap;
        int64_t now;
        const RulesPrescription *rx;
} PrescriptionSet;

static int prescription_set(Store *s, void *userdata) {
        _cleanup_reset_ sqlite3_stmt *st = NULL;
        const PrescriptionSet *w = userdata;
        int r;

        r = stmt_get(s, STMT_RX_SET, &st);
        if (r < 0)
                return r;
        bind_text(st, 1, w->wrap);
        sqlite3_bind_int64(st, 2, w->rx->cold_s);
        sqlite3_bind_int64(st, 3, w->rx->cold_setpoint);
        sqlite3_bind_int64(st, 4, w->rx->heat_s);
        sqlite3_bind_int64(st, 5, w->rx->heat_setpoint);
        sqlite3_bind_int64(st, 6, w->rx->heat_wait_s);
        sqlite3_bind_int64(st, 7, w->rx->cold_rest_s);
        sqlite3_bind_int64(st, 8, w->now);
        return stmt_exec(s, st);
}

int store_prescription_set(Store *s, const char *wrap, const RulesPrescription *rx, int64_t now,
                           const AuditRecord *audit) {
        int r;

        r = check_wrap_arg(s, wrap);
        if (r < 0)
                return r;
        if (!rx)
                return store_errorf(s, -EINVAL, "no prescription");
        return tx_with_audit(s, audit, prescription_set, &(PrescriptionSet) { .wrap = wrap, .now = now, .rx = rx });
}

int store_prescription_clear(Store *s, const char *wrap, const AuditRecord *audit) {
        return wrap_change_audited(s, audit, STMT_RX_CLEAR, wrap, 0, "no prescription");
}

int store_prescription_get(Store *s, const char *wrap, const RulesPrescription *defaults,
                           RulesPrescription *ret, bool *ret_prescribed) {
        _cleanup_reset_ sqlite3_stmt *st = NULL;
        int r, rc;

        r = check_wrap_arg(s, wrap);
        if (r < 0)
                return r;
        r = stmt_get(s, STMT_RX_GET, &st);
        if (r < 0)
                return r;
        bind_text(st, 1, wrap);
        rc = sqlite3_step(st);
        if (rc == SQLITE_ROW) {
                *ret = (RulesPrescription) {
                        .cold_s = (uint32_t) sqlite3_column_int64(st, 0),
                        .cold_setpoint = (int32_t) sqlite3_column_int64(st, 1),
                        .heat_s = (uint32_t) sqlite3_column_int64(st, 2),
                        .heat_setpoint = (int32_t) sqlite3_column_int64(st, 3),
                        .heat_wait_s = (uint32_t) sqlite3_column_int64(st, 4),
                        .cold_rest_s = (uint32_t) sqlite3_column_int64(st, 5),
                };
                if (ret_prescribed)
                        *ret_prescribed = true;
                return 0;
        }
        if (rc != SQLITE_DONE)
                return store_fail(s, rc);
        if (defaults)
                *ret = *defaults;
        else
                rules_prescription_default(ret);
        if (ret_prescribed)
                *ret_prescribed = false;
        return 0;
}

/*
 * A date-only injury is resolved in the time zone in force now: R2's instant is the end of
 * that local day, and it began at the end of the day before. The caller keeps the end
 * resolved when it was recorded if that is later.
 */
static int injury_date_bounds(const char *date, int64_t *ret_at, int64_t *ret_from) {
        struct tm tm;
        time_t t;
        int y, m, d, r;

        r = parse_date(date, &y, &m, &d);
        if (r < 0)
                return r;
        r = clock_local_day_end(y, m, d, ret_at);
        if (r < 0)
                return r;
        tm = (struct tm) { .tm_year = y - 1900, .tm_mon = m - 1, .tm_mday = d - 1, .tm_hour = 12 };
        t = timegm(&tm);
        if (t == (time_t) -1 || !gmtime_r(&t, &tm))
                return -EINVAL;
        return clock_local_day_end(tm.tm_year + 1900, tm.tm_mon + 1, tm.tm_mday, ret_from);
}

/* R10: a stamp as the rules read it. */
static RulesTime session_stamp(const SessionRecord *rec, int64_t wall, int64_t boot_s) {
        RulesTime t = { .wall = wall, .wall_ok = rec->clock_synced, .boot_s = boot_s };

        if (boot_s >= 0)
                snprintf(t.boot_id, sizeof t.boot_id, "%s", rec->boot_id);
        return t;
}

static int64_t place(const RulesTime *t, const RulesClock *now, bool *bound) {
        bool b = false;
        int64_t v;

        if (!now)
                return t->wall;
        v = rules_time_place(t, now, &b);
        if (b)
                *bound = true;
        return v;
}

static int64_t sat_add64(int64_t a, int64_t b) {
        int64_t r;

        return __builtin_add_overflow(a, b, &r) ? (b > 0 ? INT64_MAX : INT64_MIN) : r;
}

/* R6: when the session ended, cautiously (an interrupted one may have run to its duration). */
static int64_t cold_end_placed(const SessionRecord *rec, const RulesClock *now, bool *bound) {
        RulesTime end = session_stamp(rec, rec->ended_at, rec->ended_boot);
        int64_t e = place(&end, now, bound);

        if (rec->outcome == OUTCOME_INTERRUPTED && rec->started_at) {
                RulesTime start = session_stamp(rec, rec->started_at, rec->started_boot);
                int64_t f = sat_add64(place(&start, now, bound), rec->prescribed_s);
                if (f > e)
                        e = f;
        }
        return e;
}

int store_rules_state_at(Store *s, const char *wrap, const RulesPrescription *defaults,
                         const RulesClock *now, RulesState *ret) {
        RulesState state = { .has_injury = false };
        int r, rc;

        r = store_prescription_get(s, wrap, defaults, &state.rx, NULL);
        if (r < 0)
                return r;

        {
                _cleanup_reset_ sqlite3_stmt *st = NULL;

                r = stmt_get(s, STMT_INJURY_OPEN, &st);
                if (r < 0)
                        return r;
                bind_text(st, 1, wrap);
                while ((rc = sqlite3_step(st)) == SQLITE_ROW) {
                        int64_t at = sqlite3_column_int64(st, 0), from = at;
                        const char *date = (const char *) sqlite3_column_text(st, 1);
                        bool pending = sqlite3_column_type(st, 5) != SQLITE_NULL, bound = false;
                        RulesTime t = { .wall_ok = true, .stated = true };

                        if (pending) {
                                /* R10: entered as today or now with no trusted clock: it counts
                                 * from that moment, which only the boot clock knows. */
                                t = (RulesTime) { .wall = sqlite3_column_int64(st, 2), .wall_ok = false,
                                                  .boot_s = sqlite3_column_int64(st, 4) };
                                copy_text(t.boot_id, sizeof t.boot_id, st, 3);
                        } else if (date) {
                                int64_t recorded = at;

                                if (injury_date_bounds(date, &at, &from) < 0)
                                        return store_errorf(s, -EBADMSG, "stored injury date \"%s\" is invalid", date);
                                /* A time zone moved since never shortens R2's wait: the later end stands. */
                                if (recorded > at)
                                        at = recorded;
                        }
                        if (pending)
                                at = from = place(&t, now, &bound);
                        else {
                                int64_t lead = at - from;

                                t.wall = at;
                                at = place(&t, now, &bound);
                                from = at - lead;
                        }
                        if (!state.has_injury || at > state.injury_at) {
                                state.has_injury = true;
                                state.injury_at = at;
                                state.injury_from = from;
                                state.injury_bound = bound;
                        }
                }
                if (rc != SQLITE_DONE)
                        return store_fail(s, rc);
        }

        if (!now) {
                _cleanup_reset_ sqlite3_stmt *st = NULL;

                r = stmt_get(s, STMT_LAST_COLD_END, &st);
                if (r < 0)
                        return r;
                bind_text(st, 1, wrap);
                rc = sqlite3_step(st);
                if (rc != SQLITE_ROW)
                        return store_fail(s, rc);
                if (sqlite3_column_type(st, 0) != SQLITE_NULL) {
                        state.has_last_cold = true;
                        state.last_cold_end = sqlite3_column_int64(st, 0);
                }
                *ret = state;
                return 0;
        }

        /* R6 and R4 on R10's clock: the last sessions that ran, by the order they were recorded. */
        for (int mode = 0; mode < 2; mode++) {
                _cleanup_reset_ sqlite3_stmt *st = NULL;
                SessionRecord rec;

                r = stmt_get(s, mode == 0 ? STMT_LAST_COLD_RAN : STMT_LAST_HEAT_RAN, &st);
                if (r < 0)
                        return r;
                bind_text(st, 1, wrap);
                if (mode == 1)
                        sqlite3_bind_int(st, 2, RULES_HEAT_HISTORY);
                while ((rc = sqlite3_step(st)) == SQLITE_ROW) {
                        bool bound = false;

                        r = session_from_row(s, st, &rec);
                        if (r < 0)
                                return r;
                        if (mode == 0) {
                                int64_t end = cold_end_placed(&rec, now, &bound);

                                if (!state.has_last_cold || end > state.last_cold_end) {
                                        state.has_last_cold = true;
                                        state.last_cold_end = end;
                                        state.last_cold_bound = bound;
                                }
                        } else if (state.n_heat < RULES_HEAT_HISTORY) {
                                RulesTime start = session_stamp(&rec, rec.started_at, rec.started_boot);
                                RulesHeat *h = &state.heat[state.n_heat++];

                                h->start = place(&start, now, &bound);
                                h->bound = bound;
                                /* An interrupted session may have heated to its duration. */
                                h->s = rec.outcome == OUTCOME_INTERRUPTED ? rec.prescribed_s : rec.duration_s;
                        }
                }
                if (rc != SQLITE_DONE)
                        return store_fail(s, rc);
        }
        /* The list is full: there may be more (R4 refuses when they could matter). */
        state.heat_more = state.n_heat == RULES_HEAT_HISTORY;

        *ret = state;
        return 0;
}

int store_rules_state(Store *s, const char *wrap, const RulesPrescription *defaults, RulesState *ret) {
        return store_rules_state_at(s, wrap, defaults, NULL, ret);
}

/* ---- outbox ---- */

static int outbox_insert(Store *s, const OutboxMsg *msg, int64_t *ret_id) {
        _cleanup_reset_ sqlite3_stmt *st = NULL;
        int r;

        if (!msg->topic || !*msg->topic || msg->qos > 2)
                return store_errorf(s, -EINVAL, "invalid outbox message (topic or QoS)");
        r = stmt_get(s, STMT_OUTBOX_ADD, &st);
        if (r < 0)
                return r;
        bind_text(st, 1, msg->topic);
        bind_text(st, 2, msg->payload ? msg->payload : "");
        sqlite3_bind_int(st, 3, msg->qos);
        sqlite3_bind_int(st, 4, msg->retain);
        r = stmt_exec(s, st);
        if (r < 0)
                return r;
        *ret_id = sqlite3_last_insert_rowid(s->db);
        return 0;
}

/*
 * Ends a write begun with tx_begin(), r being how it went so far: msg's outbox row (if any)
 * joins it, and all of it commits or none of it does. msg->id is set only once committed,
 * so a caller never publishes a row that was rolled back.
 */
static int tx_finish(Store *s, int r, OutboxMsg *msg) {
        int64_t id = 0;

        if (r >= 0 && msg)
                r = outbox_insert(s, msg, &id);
        if (r < 0) {
                tx_rollback(s);
                return r;
        }
        r = tx_commit(s);
        if (r < 0)
                return r;
        if (msg)
                msg->id = id;
        return 0;
}

int store_outbox_add(Store *s, OutboxMsg *msg) {
        int r;

        if (!msg)
                return store_errorf(s, -EINVAL, "no message");
        r = tx_begin(s);
        if (r < 0)
                return r;
        return tx_finish(s, 0, msg);
}

void outbox_msgs_free(OutboxMsg *m, size_t n) {
        if (!m)
                return;
        for (size_t i = 0; i < n; i++) {
                free(m[i].topic);
                free(m[i].payload);
        }
        free(m);
}

int store_outbox_peek(Store *s, int64_t after_id, size_t max, OutboxMsg **ret, size_t *ret_n) {
        _cleanup_reset_ sqlite3_stmt *st = NULL;
        OutboxMsg *list = NULL;
        size_t n = 0, allocated = 0;
        int r, rc;

        *ret = NULL;
        *ret_n = 0;
        if (max == 0)
                return 0;
        if (max > INT32_MAX)
                max = INT32_MAX;
        r = stmt_get(s, STMT_OUTBOX_PEEK, &st);
        if (r < 0)
                return r;
        sqlite3_bind_int64(st, 1, after_id);
        sqlite3_bind_int64(st, 2, (int64_t) max);
        while ((rc = sqlite3_step(st)) == SQLITE_ROW) {
                OutboxMsg *m;

                if (n == allocated) {
                        size_t a = allocated ? allocated * 2 : 16;
                        OutboxMsg *l = realloc(list, a * sizeof(*l));
                        if (!l) {
                                outbox_msgs_free(list, n);
                                return -ENOMEM;
                        }
                        list = l;
                        allocated = a;
                }
                m = &list[n];
                m->id = sqlite3_column_int64(st, 0);
                m->topic = dup_text(st, 1);
                m->payload = dup_text(st, 2);
                m->qos = (uint8_t) sqlite3_column_int(st, 3);
                m->retain = sqlite3_column_int(st, 4) != 0;
                n++;
                if (!m->topic || !m->payload) {
                        outbox_msgs_free(list, n);
                        return -ENOMEM;
                }
        }
        if (rc != SQLITE_DONE) {
                outbox_msgs_free(list, n);
                return store_fail(s, rc);
        }
        *ret = list;
        *ret_n = n;
        return 0;
}

int store_outbox_ack(Store *s, int64_t id) {
        _cleanup_reset_ sqlite3_stmt *st = NULL;
        int r;

        r = stmt_get(s, STMT_OUTBOX_ACK, &st);
        if (r < 0)
                return r;
        sqlite3_bind_int64(st, 1, id);
        r = stmt_exec(s, st);
        if (r < 0)
                return r;
        if (sqlite3_changes(s->db) == 0)
                return store_errorf(s, -ENOENT, "no outbox message %lld", (long long) id);
        return 0;
}

int store_outbox_depth(Store *s, uint64_t *ret) {
        int64_t n = 0;
        int r = stmt_int64(s, STMT_OUTBOX_DEPTH, &n);

        if (r >= 0)
                *ret = (uint64_t) n;
        return r;
}

/* ---- sessions ---- */

static int request_source_from_string(const char *v) {
        for (int i = SOURCE_BUTTON; i <= SOURCE_DBUS; i++)
                if (v && request_source_to_string((RequestSource) i) &&
                    streq(request_source_to_string((RequestSource) i), v))
                        return i;
        return -EINVAL;
}

static int session_from_row(Store *s, sqlite3_stmt *st, SessionRecord *rec) {
        int mode, source, outcome, refusal = REFUSAL_NONE;

        memset(rec, 0, sizeof(*rec));
        copy_text(rec->session_id, sizeof(rec->session_id), st, 0);
        copy_text(rec->wrap, sizeof(rec->wrap), st, 1);
        mode = therapy_mode_from_string((const char *) sqlite3_column_text(st, 2));
        source = request_source_from_string((const char *) sqlite3_column_text(st, 3));
        outcome = session_outcome_from_string((const char *) sqlite3_column_text(st, 9));
        if (sqlite3_column_type(st, 11) != SQLITE_NULL)
                refusal = refusal_reason_from_string((const char *) sqlite3_column_text(st, 11));
        if (mode < 0 || source < 0 || outcome < 0 || refusal < 0)
                return store_errorf(s, -EBADMSG, "session %s has a value this build cannot read",
                                    rec->session_id);
        rec->mode = (TherapyMode) mode;
        rec->source = (RequestSource) source;
        rec->requested_at = sqlite3_column_int64(st, 4);
        rec->started_at = sqlite3_column_int64(st, 5);    /* NULL reads as 0: "did not happen" */
        rec->ended_at = sqlite3_column_int64(st, 6);
        rec->prescribed_s = (uint32_t) sqlite3_column_int64(st, 7);
        rec->duration_s = (uint32_t) sqlite3_column_int64(st, 8);
        rec->outcome = (SessionOutcome) outcome;
        rec->compliant = sqlite3_column_int(st, 10) != 0;
        rec->refusal = (RefusalReason) refusal;
        rec->minutes_left = (uint16_t) sqlite3_column_int(st, 12);
        rec->skin.n = (uint32_t) sqlite3_column_int64(st, 13);
        rec->skin.min = (int32_t) sqlite3_column_int64(st, 14);
        rec->skin.max = (int32_t) sqlite3_column_int64(st, 15);
        rec->skin.sum = sqlite3_column_int64(st, 16);
        rec->has_days_since_injury = sqlite3_column_type(st, 17) != SQLITE_NULL;
        rec->days_since_injury = (int32_t) sqlite3_column_int64(st, 17);
        rec->setpoint = (int32_t) sqlite3_column_int64(st, 18);
        rec->start_result = (uint8_t) sqlite3_column_int(st, 19);
        rec->clock_synced = sqlite3_column_int(st, 20) != 0;
        copy_text(rec->boot_id, sizeof(rec->boot_id), st, 21);
        /* NULL: not taken in that boot (or did not happen). */
        rec->requested_boot = sqlite3_column_type(st, 22) == SQLITE_NULL ? -1 : sqlite3_column_int64(st, 22);
        rec->started_boot = sqlite3_column_type(st, 23) == SQLITE_NULL ? -1 : sqlite3_column_int64(st, 23);
        rec->ended_boot = sqlite3_column_type(st, 24) == SQLITE_NULL ? -1 : sqlite3_column_int64(st, 24);
        return 0;
}

static int session_bind(Store *s, sqlite3_stmt *st, const SessionRecord *rec) {
        const char *mode = therapy_mode_to_string(rec->mode);
        const char *source = request_source_to_string(rec->source);
        const char *outcome = session_outcome_to_string(rec->outcome);
        const char *refusal = refusal_reason_to_string(rec->refusal);

        if (!rec->session_id[0] || !memchr(rec->session_id, 0, sizeof(rec->session_id)) ||
            !memchr(rec->wrap, 0, sizeof(rec->wrap)))
                return store_errorf(s, -EINVAL, "session record without a valid id or wrap");
        if (!mode || !source || !outcome || (rec->refusal != REFUSAL_NONE && !refusal))
                return store_errorf(s, -EINVAL, "session %s has an unknown mode, source, outcome or refusal",
                                    rec->session_id);

        bind_text(st, 1, rec->session_id);
        bind_text(st, 2, rec->wrap);
        bind_text(st, 3, mode);
        bind_text(st, 4, source);
        sqlite3_bind_int64(st, 5, rec->requested_at);
        bind_opt_int64(st, 6, rec->started_at != 0, rec->started_at);
        bind_opt_int64(st, 7, rec->ended_at != 0, rec->ended_at);
        sqlite3_bind_int64(st, 8, rec->prescribed_s);
        sqlite3_bind_int64(st, 9, rec->duration_s);
        bind_text(st, 10, outcome);
        sqlite3_bind_int(st, 11, rec->compliant);
        bind_text(st, 12, refusal);
        sqlite3_bind_int(st, 13, rec->minutes_left);
        sqlite3_bind_int64(st, 14, rec->skin.n);
        bind_opt_int64(st, 15, rec->skin.n > 0, rec->skin.min);
        bind_opt_int64(st, 16, rec->skin.n > 0, rec->skin.max);
        sqlite3_bind_int64(st, 17, rec->skin.n > 0 ? rec->skin.sum : 0);
        bind_opt_int64(st, 18, rec->has_days_since_injury, rec->days_since_injury);
        sqlite3_bind_int64(st, 19, rec->setpoint);
        sqlite3_bind_int(st, 20, rec->start_result);
        sqlite3_bind_int(st, 21, rec->clock_synced);
        /* Stamps mean something only with their boot's id. */
        bool boot = strlen(rec->boot_id) == RULES_BOOT_ID_MAX - 1;
        bind_text(st, 22, boot ? rec->boot_id : NULL);
        bind_opt_int64(st, 23, boot && rec->requested_boot >= 0, rec->requested_boot);
        bind_opt_int64(st, 24, boot && rec->started_at && rec->started_boot >= 0, rec->started_boot);
        bind_opt_int64(st, 25, boot && rec->ended_at && rec->ended_boot >= 0, rec->ended_boot);
        return 0;
}

static int session_insert(Store *s, const SessionRecord *rec) {
        _cleanup_reset_ sqlite3_stmt *st = NULL;
        int r;

        r = stmt_get(s, STMT_SESSION_PUT, &st);
        if (r < 0)
                return r;
        r = session_bind(s, st, rec);
        if (r < 0)
                return r;
        return stmt_exec(s, st);
}

int store_session_put(Store *s, const SessionRecord *rec, OutboxMsg *msg) {
        int r;

        if (!rec)
                return store_errorf(s, -EINVAL, "no session record");
        r = tx_begin(s);
        if (r < 0)
                return r;
        return tx_finish(s, session_insert(s, rec), msg);
}

int store_session_get(Store *s, const char *session_id, SessionRecord *ret) {
        _cleanup_reset_ sqlite3_stmt *st = NULL;
        int r, rc;

        if (!session_id)
                return store_errorf(s, -EINVAL, "no session id");
        r = stmt_get(s, STMT_SESSION_GET, &st);
        if (r < 0)
                return r;
        bind_text(st, 1, session_id);
        rc = sqlite3_step(st);
        if (rc == SQLITE_DONE)
                return store_errorf(s, -ENOENT, "no session %s", session_id);
        if (rc != SQLITE_ROW)
                return store_fail(s, rc);
        return session_from_row(s, st, ret);
}

static int session_row(Store *s, sqlite3_stmt *st, void *elem) {
        return session_from_row(s, st, elem);
}

static int sessions_collect(Store *s, sqlite3_stmt *st, SessionRecord **ret, size_t *ret_n) {
        return collect_rows(s, st, sizeof(SessionRecord), session_row, (void **) ret, ret_n);
}

int store_sessions_open(Store *s, SessionRecord **ret, size_t *ret_n) {
        _cleanup_reset_ sqlite3_stmt *st = NULL;
        int r;

        r = stmt_get(s, STMT_SESSIONS_OPEN, &st);
        if (r < 0)
                return r;
        return sessions_collect(s, st, ret, ret_n);
}

int store_sessions_list(Store *s, const char *wrap, int64_t since, int64_t until,
                        SessionRecord **ret, size_t *ret_n) {
        _cleanup_reset_ sqlite3_stmt *st = NULL;
        int r;

        r = stmt_get(s, STMT_SESSIONS_LIST, &st);
        if (r < 0)
                return r;
        bind_text(st, 1, wrap);
        sqlite3_bind_int64(st, 2, since);
        sqlite3_bind_int64(st, 3, until);
        return sessions_collect(s, st, ret, ret_n);
}

int store_last_session(Store *s, const char *wrap, SessionRecord *ret) {
        _cleanup_reset_ sqlite3_stmt *st = NULL;
        int r, rc;

        r = check_wrap_arg(s, wrap);
        if (r < 0)
                return r;
        r = stmt_get(s, STMT_LAST_SESSION, &st);
        if (r < 0)
                return r;
        bind_text(st, 1, wrap);
        rc = sqlite3_step(st);
        if (rc == SQLITE_DONE)
                return store_errorf(s, -ENOENT, "wrap %s has no session", wrap);
        if (rc != SQLITE_ROW)
                return store_fail(s, rc);
        return session_from_row(s, st, ret);
}

/* ---- diary and alerts ---- */

static int alert_insert(Store *s, AlertRecord *a) {
        _cleanup_reset_ sqlite3_stmt *st = NULL;
        const char *name = alert_kind_to_string(a->kind);
        int r;

        if (!name)
                return store_errorf(s, -EINVAL, "invalid alert kind %u", (unsigned) a->kind);
        if (strnlen(a->text, sizeof(a->text)) >= sizeof(a->text))
                return store_errorf(s, -EINVAL, "alert text longer than %d bytes", ALERT_TEXT_MAX - 1);
        r = stmt_get(s, STMT_ALERT_ADD, &st);
        if (r < 0)
                return r;
        bind_text(st, 1, a->wrap);
        bind_text(st, 2, name);
        sqlite3_bind_int64(st, 3, a->at);
        bind_text(st, 4, a->text);
        bind_text(st, 5, a->session_id[0] ? a->session_id : NULL);
        r = stmt_exec(s, st);
        if (r >= 0)
                a->id = sqlite3_last_insert_rowid(s->db);
        return r;
}

/* Ends an alert's transaction with the message msg_fn builds for it (see store.h). */
static int alert_tx_finish(Store *s, int r, const AlertRecord *a, bool latest, AlertMsgFn msg_fn, void *userdata) {
        OutboxMsg msg = { 0 };

        if (r >= 0 && msg_fn) {
                r = msg_fn(a, latest, userdata, &msg);
                if (r < 0)
                        store_errorf(s, r, "cannot build the alert's message");
        }
        r = tx_finish(s, r, msg_fn && r >= 0 ? &msg : NULL);
        free(msg.topic);
        free(msg.payload);
        return r;
}

static int diary_insert(Store *s, const char *wrap, const DiaryEntry *e, const char *where) {
        _cleanup_reset_ sqlite3_stmt *st = NULL;
        int r;

        r = stmt_get(s, STMT_DIARY_ADD, &st);
        if (r < 0)
                return r;
        bind_text(st, 1, wrap);
        sqlite3_bind_int64(st, 2, e->at);
        sqlite3_bind_int(st, 3, e->score);
        bind_text(st, 4, where);
        sqlite3_bind_int(st, 5, e->flags);
        return stmt_exec(s, st);
}

int store_diary_add(Store *s, const char *wrap, const DiaryEntry *e, AlertRecord *alert,
                    AlertMsgFn msg_fn, void *userdata) {
        const char *where;
        int r;

        r = check_wrap_arg(s, wrap);
        if (r < 0)
                return r;
        if (!e)
                return store_errorf(s, -EINVAL, "no diary entry");
        where = diary_where_to_string(e->where);
        if (!where || e->score > 10)
                return store_errorf(s, -EINVAL, "invalid diary entry (score 0..10, a known place)");
        if (alert && !streq(alert->wrap, wrap))
                return store_errorf(s, -EINVAL, "the alert is for another wrap");

        r = tx_begin(s);
        if (r < 0)
                return r;
        r = diary_insert(s, wrap, e, where);
        if (!alert)
                return tx_finish(s, r, NULL);
        if (r >= 0)
                r = alert_insert(s, alert);
        return alert_tx_finish(s, r, alert, true, msg_fn, userdata);
}

int store_diary_list(Store *s, const char *wrap, int64_t since, DiaryEntry **ret, size_t *ret_n) {
        _cleanup_reset_ sqlite3_stmt *st = NULL;
        DiaryEntry *list = NULL;
        size_t n = 0, allocated = 0;
        int r, rc;

        r = check_wrap_arg(s, wrap);
        if (r < 0)
                return r;
        r = stmt_get(s, STMT_DIARY_LIST, &st);
        if (r < 0)
                return r;
        bind_text(st, 1, wrap);
        sqlite3_bind_int64(st, 2, since);
        while ((rc = sqlite3_step(st)) == SQLITE_ROW) {
                int where;

                if (n == allocated) {
                        size_t a = allocated ? allocated * 2 : 16;
                        DiaryEntry *l = realloc(list, a * sizeof(*l));
                        if (!l) {
                                free(list);
                                return -ENOMEM;
                        }
                        list = l;
                        allocated = a;
                }
                where = diary_where_from_string((const char *) sqlite3_column_text(st, 2));
                if (where < 0) {
                        free(list);
                        return store_errorf(s, -EBADMSG, "a diary entry has a place this build cannot read");
                }
                list[n++] = (DiaryEntry) {
                        .id = sqlite3_column_int64(st, 4),
                        .at = sqlite3_column_int64(st, 0),
                        .score = (uint8_t) sqlite3_column_int(st, 1),
                        .where = (DiaryWhere) where,
                        .flags = (uint8_t) sqlite3_column_int(st, 3),
                };
        }
        if (rc != SQLITE_DONE) {
                free(list);
                return store_fail(s, rc);
        }
        *ret = list;
        *ret_n = n;
        return 0;
}

int store_alert_add(Store *s, AlertRecord *a, AlertMsgFn msg_fn, void *userdata) {
        int r;

        if (!a)
                return store_errorf(s, -EINVAL, "no alert");
        r = check_wrap_arg(s, a->wrap);
        if (r < 0)
                return r;
        r = tx_begin(s);
        if (r < 0)
                return r;
        return alert_tx_finish(s, alert_insert(s, a), a, true, msg_fn, userdata);
}

static int alert_from_row(Store *s, sqlite3_stmt *st, AlertRecord *a) {
        int kind = alert_kind_from_string((const char *) sqlite3_column_text(st, 2));

        if (kind < 0)
                return store_errorf(s, -EBADMSG, "an alert has a kind this build cannot read");
        *a = (AlertRecord) {
                .id = sqlite3_column_int64(st, 0),
                .kind = (AlertKind) kind,
                .at = sqlite3_column_int64(st, 3),
                .acked_at = sqlite3_column_type(st, 5) == SQLITE_NULL ? 0 : sqlite3_column_int64(st, 5),
        };
        copy_text(a->wrap, sizeof(a->wrap), st, 1);
        copy_text(a->text, sizeof(a->text), st, 4);
        copy_text(a->session_id, sizeof(a->session_id), st, 6);
        return 0;
}

static int alert_row(Store *s, sqlite3_stmt *st, void *elem) {
        return alert_from_row(s, st, elem);
}

int store_alerts_list(Store *s, const char *wrap, int64_t since, int64_t until, bool open_only,
                      AlertRecord **ret, size_t *ret_n) {
        _cleanup_reset_ sqlite3_stmt *st = NULL;
        int r;

        if (wrap && (r = check_wrap_arg(s, wrap)) < 0)
                return r;
        r = stmt_get(s, STMT_ALERTS_LIST, &st);
        if (r < 0)
                return r;
        bind_text(st, 1, wrap);
        sqlite3_bind_int64(st, 2, since);
        sqlite3_bind_int64(st, 3, until);
        sqlite3_bind_int(st, 4, open_only);
        return collect_rows(s, st, sizeof(AlertRecord), alert_row, (void **) ret, ret_n);
}

/* One row by its id (?1) through `row`, as collect_rows() reads them; -ENOENT: "no <what> <id>". */
static int row_by_id(Store *s, StmtId stmt, int64_t id, const char *what,
                     int (*row)(Store *s, sqlite3_stmt *st, void *elem), void *ret) {
        _cleanup_reset_ sqlite3_stmt *st = NULL;
        int r, rc;

        r = stmt_get(s, stmt, &st);
        if (r < 0)
                return r;
        sqlite3_bind_int64(st, 1, id);
        rc = sqlite3_step(st);
        if (rc == SQLITE_DONE)
                return store_errorf(s, -ENOENT, "no %s %lld", what, (long long) id);
        if (rc != SQLITE_ROW)
                return store_fail(s, rc);
        return row(s, st, ret);
}

int store_alert_get(Store *s, int64_t id, AlertRecord *ret) {
        return row_by_id(s, STMT_ALERT_GET, id, "alert", alert_row, ret);
}

int store_alert_ack(Store *s, int64_t id, int64_t now, AlertMsgFn msg_fn, void *userdata, AlertRecord *ret) {
        _cleanup_reset_ sqlite3_stmt *st = NULL, *latest = NULL;
        AlertRecord a;
        bool is_latest = false;
        int r;

        r = tx_begin(s);
        if (r < 0)
                return r;
        r = store_alert_get(s, id, &a);
        if (r >= 0 && a.acked_at > 0)
                r = store_errorf(s, -EALREADY, "alert %lld was acknowledged before", (long long) id);
        if (r >= 0)
                r = stmt_get(s, STMT_ALERT_ACK, &st);
        if (r >= 0) {
                sqlite3_bind_int64(st, 1, id);
                sqlite3_bind_int64(st, 2, now);
                r = stmt_exec(s, st);
                a.acked_at = now;
        }
        if (r >= 0)
                r = stmt_get(s, STMT_ALERT_LATEST, &latest);
        if (r >= 0) {
                bind_text(latest, 1, a.wrap);
                if (sqlite3_step(latest) == SQLITE_ROW)
                        is_latest = sqlite3_column_int64(latest, 0) == id;
        }
        r = alert_tx_finish(s, r, &a, is_latest, msg_fn, userdata);
        if (r >= 0 && ret)
                *ret = a;
        return r;
}

/* ---- injuries, for people ---- */

static int injury_row(Store *s, sqlite3_stmt *st, void *elem) {
        InjuryRecord *i = elem;

        *i = (InjuryRecord) {
                .id = sqlite3_column_int64(st, 0),
                .at = sqlite3_column_int64(st, 1),
                .recorded_at = sqlite3_column_int64(st, 3),
                .resolved_at = sqlite3_column_type(st, 4) == SQLITE_NULL ? 0 : sqlite3_column_int64(st, 4),
        };
        copy_text(i->date, sizeof(i->date), st, 2);
        return 0;
}

int store_injuries_list(Store *s, const char *wrap, InjuryRecord **ret, size_t *ret_n) {
        _cleanup_reset_ sqlite3_stmt *st = NULL;
        int r;

        r = check_wrap_arg(s, wrap);
        if (r < 0)
                return r;
        r = stmt_get(s, STMT_INJURIES_LIST, &st);
        if (r < 0)
                return r;
        bind_text(st, 1, wrap);
        return collect_rows(s, st, sizeof(InjuryRecord), injury_row, (void **) ret, ret_n);
}

/* ---- runs ---- */

int store_run_add(Store *s, const RunRecord *run, OutboxMsg *msg, int64_t *ret_id) {
        _cleanup_reset_ sqlite3_stmt *st = NULL;
        const char *source;
        int64_t id = 0;
        int r;

        if (!run)
                return store_errorf(s, -EINVAL, "no run");
        r = check_wrap_arg(s, run->wrap);
        if (r < 0)
                return r;
        source = request_source_to_string(run->source);
        if (!source || run->minutes > 1440 || run->meters > 1000000)
                return store_errorf(s, -EINVAL, "invalid run (minutes 0..1440, up to 1000 km)");
        r = tx_begin(s);
        if (r < 0)
                return r;
        r = stmt_get(s, STMT_RUN_ADD, &st);
        if (r >= 0) {
                bind_text(st, 1, run->wrap);
                sqlite3_bind_int64(st, 2, run->ended_at);
                sqlite3_bind_int(st, 3, (int) run->minutes);
                sqlite3_bind_int(st, 4, (int) run->meters);
                bind_text(st, 5, source);
                sqlite3_bind_int64(st, 6, run->recorded_at);
                r = stmt_exec(s, st);
                id = sqlite3_last_insert_rowid(s->db);
        }
        r = tx_finish(s, r, msg);
        if (r >= 0 && ret_id)
                *ret_id = id;
        return r;
}

static int run_row(Store *s, sqlite3_stmt *st, void *elem) {
        int source = request_source_from_string((const char *) sqlite3_column_text(st, 5));
        RunRecord *run = elem;

        if (source < 0)
                return store_errorf(s, -EBADMSG, "a run has a source this build cannot read");
        *run = (RunRecord) {
                .id = sqlite3_column_int64(st, 0),
                .ended_at = sqlite3_column_int64(st, 2),
                .minutes = (uint32_t) sqlite3_column_int(st, 3),
                .meters = (uint32_t) sqlite3_column_int(st, 4),
                .source = (RequestSource) source,
                .recorded_at = sqlite3_column_int64(st, 6),
        };
        copy_text(run->wrap, sizeof(run->wrap), st, 1);
        copy_text(run->followed_by, sizeof(run->followed_by), st, 7);
        copy_text(run->cold_press, sizeof(run->cold_press), st, 8);
        if (*run->followed_by)
                run->cold_press[0] = '\0';
        return 0;
}

int store_run_get(Store *s, int64_t id, RunRecord *ret) {
        return row_by_id(s, STMT_RUN_GET, id, "run", run_row, ret);
}

int store_runs_list(Store *s, const char *wrap, int64_t since, int64_t until, RunRecord **ret, size_t *ret_n) {
        _cleanup_reset_ sqlite3_stmt *st = NULL;
        int r;

        if (wrap && (r = check_wrap_arg(s, wrap)) < 0)
                return r;
        r = stmt_get(s, STMT_RUNS_LIST, &st);
        if (r < 0)
                return r;
        bind_text(st, 1, wrap);
        sqlite3_bind_int64(st, 2, since);
        sqlite3_bind_int64(st, 3, until);
        return collect_rows(s, st, sizeof(RunRecord), run_row, (void **) ret, ret_n);
}

/* ---- the change history (append-only: the schema's triggers refuse UPDATE and DELETE) ---- */

static int audit_check(Store *s, const AuditRecord *a) {
        if (!a || !a->what[0])
                return store_errorf(s, -EINVAL, "no change to record");
        if (!request_source_to_string(a->source))
                return store_errorf(s, -EINVAL, "a change needs its source");
        return 0;
}

/* The history row, inside the caller's transaction. */
static int audit_insert(Store *s, const AuditRecord *a) {
        _cleanup_reset_ sqlite3_stmt *st = NULL;
        int r;

        r = stmt_get(s, STMT_AUDIT_ADD, &st);
        if (r < 0)
                return r;
        sqlite3_bind_int64(st, 1, a->at);
        bind_text(st, 2, a->wrap[0] ? a->wrap : NULL);
        bind_text(st, 3, a->what);
        bind_text(st, 4, a->detail);
        bind_text(st, 5, request_source_to_string(a->source));
        if (a->uid >= 0)
                sqlite3_bind_int64(st, 6, a->uid);
        bind_text(st, 7, a->claimed_client[0] ? a->claimed_client : NULL);
        bind_text(st, 8, a->topic[0] ? a->topic : NULL);
        return stmt_exec(s, st);
}

/*
 * A change and its history row in one transaction: `change` runs inside it, then the row
 * (when `a` is not NULL). Either fails: neither is kept.
 */
static int tx_with_audit(Store *s, const AuditRecord *a, int (*change)(Store *s, void *userdata), void *userdata) {
        int r;

        if (a) {
                r = audit_check(s, a);
                if (r < 0)
                        return r;
        }
        r = tx_begin(s);
        if (r < 0)
                return r;
        r = change(s, userdata);
        if (r >= 0 && a)
                r = audit_insert(s, a);
        return tx_finish(s, r, NULL);
}

int store_audit_add(Store *s, const AuditRecord *a) {
        int r;

        r = audit_check(s, a);
        if (r < 0)
                return r;
        r = tx_begin(s);
        if (r < 0)
                return r;
        return tx_finish(s, audit_insert(s, a), NULL);
}

static int audit_row(Store *s, sqlite3_stmt *st, void *elem) {
        int source = request_source_from_string((const char *) sqlite3_column_text(st, 5));
        AuditRecord *a = elem;

        if (source < 0)
                return store_errorf(s, -EBADMSG, "a change has a source this build cannot read");
        *a = (AuditRecord) {
                .id = sqlite3_column_int64(st, 0),
                .at = sqlite3_column_int64(st, 1),
                .source = (RequestSource) source,
                .uid = sqlite3_column_type(st, 6) == SQLITE_NULL ? -1 : sqlite3_column_int64(st, 6),
        };
        copy_text(a->wrap, sizeof(a->wrap), st, 2);
        copy_text(a->what, sizeof(a->what), st, 3);
        copy_text(a->detail, sizeof(a->detail), st, 4);
        copy_text(a->claimed_client, sizeof(a->claimed_client), st, 7);
        copy_text(a->topic, sizeof(a->topic), st, 8);
        return 0;
}

int store_audit_list(Store *s, const char *wrap, AuditRecord **ret, size_t *ret_n) {
        _cleanup_reset_ sqlite3_stmt *st = NULL;
        int r;

        r = stmt_get(s, STMT_AUDIT_LIST, &st);
        if (r < 0)
                return r;
        bind_text(st, 1, wrap);
        return collect_rows(s, st, sizeof(AuditRecord), audit_row, (void **) ret, ret_n);
}

/* ---- the patient profile and the wrap's Device Information ---- */

static const char *const knee_table[_KNEE_MAX] = {
        [KNEE_LEFT] = "left",
        [KNEE_RIGHT] = "right",
};

const char *knee_to_string(Knee k) {
        return k >= 0 && k < _KNEE_MAX ? knee_table[k] : NULL;
}

int knee_from_string(const char *v) {
        for (int i = 0; i < _KNEE_MAX; i++)
                if (v && knee_table[i] && streq(knee_table[i], v))
                        return i;
        return -EINVAL;
}

static const char *const change_kind_table[_CHANGE_KIND_MAX] = {
        [CHANGE_WRAP] = "wrap",
        [CHANGE_SESSION] = "session",
        [CHANGE_DIARY] = "diary",
        [CHANGE_ALERT] = "alert",
        [CHANGE_RUN] = "run",
};

const char *change_kind_to_string(ChangeKind k) {
        return k > CHANGE_UNKNOWN && k < _CHANGE_KIND_MAX ? change_kind_table[k] : NULL;
}

ChangeKind change_kind_from_string(const char *v) {
        for (int i = CHANGE_UNKNOWN + 1; i < _CHANGE_KIND_MAX; i++)
                if (v && streq(change_kind_table[i], v))
                        return (ChangeKind) i;
        return CHANGE_UNKNOWN;
}

int store_profile_set(Store *s, const PatientProfile *p, int64_t now) {
        _cleanup_reset_ sqlite3_stmt *st = NULL;
        int r;

        if (!p)
                return store_errorf(s, -EINVAL, "no profile");
        r = check_wrap_arg(s, p->wrap);
        if (r < 0)
                return r;
        if (p->knee < 0 || p->knee >= _KNEE_MAX ||
            strnlen(p->label, sizeof(p->label)) >= sizeof(p->label) ||
            strnlen(p->clinic_ref, sizeof(p->clinic_ref)) >= sizeof(p->clinic_ref))
                return store_errorf(s, -EINVAL, "invalid profile");
        r = tx_begin(s);
        if (r < 0)
                return r;
        r = stmt_get(s, STMT_PROFILE_SET, &st);
        if (r >= 0) {
                bind_text(st, 1, p->wrap);
                bind_text(st, 2, p->label);
                bind_text(st, 3, knee_to_string(p->knee));
                bind_text(st, 4, p->clinic_ref);
                sqlite3_bind_int64(st, 5, now);
                r = stmt_exec(s, st);
        }
        return tx_finish(s, r, NULL);
}

int store_profile_get(Store *s, const char *wrap, PatientProfile *ret) {
        _cleanup_reset_ sqlite3_stmt *st = NULL;
        int r, rc, knee;

        r = check_wrap_arg(s, wrap);
        if (r < 0)
                return r;
        *ret = (PatientProfile) { .knee = KNEE_UNSET };
        snprintf(ret->wrap, sizeof(ret->wrap), "%s", wrap);
        r = stmt_get(s, STMT_PROFILE_GET, &st);
        if (r < 0)
                return r;
        bind_text(st, 1, wrap);
        rc = sqlite3_step(st);
        if (rc == SQLITE_DONE)
                return 0;
        if (rc != SQLITE_ROW)
                return store_fail(s, rc);
        copy_text(ret->label, sizeof(ret->label), st, 0);
        knee = sqlite3_column_type(st, 1) == SQLITE_NULL ? KNEE_UNSET
                : knee_from_string((const char *) sqlite3_column_text(st, 1));
        ret->knee = knee < 0 ? KNEE_UNSET : (Knee) knee;
        copy_text(ret->clinic_ref, sizeof(ret->clinic_ref), st, 2);
        ret->set_at = sqlite3_column_int64(st, 3);
        return 0;
}

int store_device_info_set(Store *s, const char *wrap, const WrapDeviceInfo *info, int64_t now) {
        _cleanup_reset_ sqlite3_stmt *st = NULL;
        int r;

        r = check_wrap_arg(s, wrap);
        if (r < 0)
                return r;
        if (!info)
                return store_errorf(s, -EINVAL, "no device information");
        r = tx_begin(s);
        if (r < 0)
                return r;
        r = stmt_get(s, STMT_DEVICE_INFO_SET, &st);
        if (r >= 0) {
                bind_text(st, 1, wrap);
                bind_text(st, 2, info->manufacturer);
                bind_text(st, 3, info->model);
                bind_text(st, 4, info->serial);
                bind_text(st, 5, info->firmware);
                sqlite3_bind_int64(st, 6, now);
                r = stmt_exec(s, st);
        }
        return tx_finish(s, r, NULL);
}

int store_device_info_get(Store *s, const char *wrap, WrapDeviceInfo *ret) {
        _cleanup_reset_ sqlite3_stmt *st = NULL;
        int r, rc;

        r = check_wrap_arg(s, wrap);
        if (r < 0)
                return r;
        *ret = (WrapDeviceInfo) { .manufacturer = "" };
        r = stmt_get(s, STMT_DEVICE_INFO_GET, &st);
        if (r < 0)
                return r;
        bind_text(st, 1, wrap);
        rc = sqlite3_step(st);
        if (rc == SQLITE_DONE)
                return 0;
        if (rc != SQLITE_ROW)
                return store_fail(s, rc);
        copy_text(ret->manufacturer, sizeof(ret->manufacturer), st, 0);
        copy_text(ret->model, sizeof(ret->model), st, 1);
        copy_text(ret->serial, sizeof(ret->serial), st, 2);
        copy_text(ret->firmware, sizeof(ret->firmware), st, 3);
        return 0;
}

int store_alerts_raised(Store *s, const char *wrap, int64_t since, unsigned *ret_mask) {
        _cleanup_reset_ sqlite3_stmt *st = NULL;
        unsigned mask = 0;
        int r, rc;

        r = check_wrap_arg(s, wrap);
        if (r < 0)
                return r;
        r = stmt_get(s, STMT_ALERTS_RAISED, &st);
        if (r < 0)
                return r;
        bind_text(st, 1, wrap);
        sqlite3_bind_int64(st, 2, since);
        while ((rc = sqlite3_step(st)) == SQLITE_ROW) {
                const char *kind = (const char *) sqlite3_column_text(st, 0);

                if (kind && streq(kind, alert_kind_to_string(ALERT_SEE_PHYSIO)))
                        mask |= ALERT_SEE_PHYSIO;
                else if (kind && streq(kind, alert_kind_to_string(ALERT_SEE_PHYSIO_OVERDUE)))
                        mask |= ALERT_SEE_PHYSIO_OVERDUE;
        }
        if (rc != SQLITE_DONE)
                return store_fail(s, rc);
        *ret_mask = mask;
        return 0;
}

/* ---- compliance ---- */

int store_compliance(Store *s, const char *wrap, int64_t since, int64_t until, Compliance *ret) {
        _cleanup_reset_ sqlite3_stmt *st = NULL;
        int r, rc;

        r = stmt_get(s, STMT_COMPLIANCE, &st);
        if (r < 0)
                return r;
        bind_text(st, 1, wrap);
        sqlite3_bind_int64(st, 2, since);
        sqlite3_bind_int64(st, 3, until);
        rc = sqlite3_step(st);
        if (rc != SQLITE_ROW)
                return store_fail(s, rc);
        *ret = (Compliance) {
                .cold_completed = (uint32_t) sqlite3_column_int64(st, 0),
                .cold_incomplete = (uint32_t) sqlite3_column_int64(st, 1),
                .cold_refused = (uint32_t) sqlite3_column_int64(st, 2),
                .heat_refused = (uint32_t) sqlite3_column_int64(st, 3),
                .minutes = (uint32_t) sqlite3_column_int64(st, 4),
                .days_with_cold = (uint32_t) sqlite3_column_int64(st, 5),
                .heat_refused_first_week = (uint32_t) sqlite3_column_int64(st, 6),
                .runs = (uint32_t) sqlite3_column_int64(st, 7),
                .runs_followed = (uint32_t) sqlite3_column_int64(st, 8),
        };
        return 0;
}

/* ---- the clinic uplink's change sequence (schema step 2) ---- */

int store_changes_after(Store *s, int64_t after, size_t max, StoreChange **ret, size_t *ret_n) {
        _cleanup_reset_ sqlite3_stmt *st = NULL;
        StoreChange *list;
        size_t n = 0;
        int r, rc;

        if (max == 0 || max > 100000)
                return store_errorf(s, -EINVAL, "bad batch size %zu", max);
        list = calloc(max, sizeof(*list));
        if (!list)
                return -ENOMEM;
        r = stmt_get(s, STMT_CHANGES_AFTER, &st);
        if (r < 0) {
                free(list);
                return r;
        }
        sqlite3_bind_int64(st, 1, after);
        sqlite3_bind_int64(st, 2, (sqlite3_int64) max);
        while ((rc = sqlite3_step(st)) == SQLITE_ROW && n < max) {
                StoreChange *c = &list[n];
                const char *kind = (const char *) sqlite3_column_text(st, 2);
                const char *key = (const char *) sqlite3_column_text(st, 3);

                c->seq = sqlite3_column_int64(st, 0);
                c->rev = sqlite3_column_int64(st, 1);
                /* A newer daemon's kind is CHANGE_UNKNOWN: skipped, not fatal. */
                c->kind = change_kind_from_string(kind);
                snprintf(c->key, sizeof c->key, "%s", key ? key : "");
                n++;
        }
        if (rc != SQLITE_ROW && rc != SQLITE_DONE) {
                free(list);
                return store_fail(s, rc);
        }
        *ret = list;
        *ret_n = n;
        return 0;
}

int store_changes_pending(Store *s, int64_t after, uint64_t *ret_n, int64_t *ret_latest) {
        _cleanup_reset_ sqlite3_stmt *st = NULL;
        int r, rc;

        r = stmt_get(s, STMT_CHANGES_PENDING, &st);
        if (r < 0)
                return r;
        sqlite3_bind_int64(st, 1, after);
        rc = sqlite3_step(st);
        if (rc != SQLITE_ROW)
                return store_fail(s, rc);
        if (ret_n)
                *ret_n = (uint64_t) sqlite3_column_int64(st, 0);
        if (ret_latest)
                *ret_latest = sqlite3_column_int64(st, 1);
        return 0;
}

int store_identity(Store *s, int64_t *ret) {
        _cleanup_reset_ sqlite3_stmt *st = NULL;
        int r, rc;

        r = stmt_get(s, STMT_IDENTITY, &st);
        if (r < 0)
                return r;
        rc = sqlite3_step(st);
        if (rc == SQLITE_DONE)
                return store_errorf(s, -ENOENT, "the store has no meta row");
        if (rc != SQLITE_ROW)
                return store_fail(s, rc);
        *ret = sqlite3_column_int64(st, 0);
        return 0;
}

int store_diary_get(Store *s, int64_t id, char wrap[static WRAP_ID_MAX], DiaryEntry *ret) {
        _cleanup_reset_ sqlite3_stmt *st = NULL;
        int r, rc, where;

        r = stmt_get(s, STMT_DIARY_GET, &st);
        if (r < 0)
                return r;
        sqlite3_bind_int64(st, 1, id);
        rc = sqlite3_step(st);
        if (rc == SQLITE_DONE)
                return store_errorf(s, -ENOENT, "no diary entry %lld", (long long) id);
        if (rc != SQLITE_ROW)
                return store_fail(s, rc);
        where = diary_where_from_string((const char *) sqlite3_column_text(st, 3));
        if (where < 0)
                return store_errorf(s, -EBADMSG, "diary entry %lld has a place this build cannot read", (long long) id);
        snprintf(wrap, WRAP_ID_MAX, "%s", (const char *) sqlite3_column_text(st, 0));
        *ret = (DiaryEntry) {
                .id = id,
                .at = sqlite3_column_int64(st, 1),
                .score = (uint8_t) sqlite3_column_int(st, 2),
                .where = (DiaryWhere) where,
                .flags = (uint8_t) sqlite3_column_int(st, 4),
        };
        return 0;
}
