/* Unit tests for store: schema and migrations, round trips, outbox order, compliance, full disk, corruption, SIGKILL. */
#include <errno.h>
#include <fcntl.h>
#include <ftw.h>
#include <sched.h>
#include <setjmp.h>
#include <signal.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mount.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>
#include <cmocka.h>
#include <sqlite3.h>

#include "clock.h"
#include "record.h"
#include "rules.h"
#include "src/store/schema.h"
#include "store.h"
#include "util.h"

#define ADDR_A "AA:BB:CC:00:11:22"
#define WRAP_A "wrap_aabbcc001122"
#define ADDR_B "AA:BB:CC:00:11:33"
#define WRAP_B "wrap_aabbcc001133"

typedef struct Fixture {
        char dir[64];
        char path[128];
        Store *s;
} Fixture;

static void set_tz(const char *tz) {
        setenv("TZ", tz, 1);
        tzset();
}

static int rm_entry(const char *p, const struct stat *st, int flag, struct FTW *ftw) {
        return remove(p);
}

static int setup(void **state) {
        Fixture *f = calloc(1, sizeof(*f));

        assert_non_null(f);
        snprintf(f->dir, sizeof(f->dir), "/tmp/kw-test-store-XXXXXX");
        assert_non_null(mkdtemp(f->dir));
        snprintf(f->path, sizeof(f->path), "%s/kneewrap.db", f->dir);
        set_tz("UTC");
        *state = f;
        return 0;
}

static int setup_open(void **state) {
        Fixture *f;

        setup(state);
        f = *state;
        assert_int_equal(store_open(f->path, &f->s), 0);
        assert_int_equal(store_wrap_add(f->s, ADDR_A, "Left knee", 1000), 0);
        return 0;
}

static int teardown(void **state) {
        Fixture *f = *state;

        store_close(f->s);
        nftw(f->dir, rm_entry, 16, FTW_DEPTH | FTW_PHYS);
        free(f);
        return 0;
}

/* Reads one integer with a separate, plain SQLite connection: what another process sees. */
static int64_t raw_int(const char *path, const char *sql) {
        sqlite3 *db = NULL;
        sqlite3_stmt *st = NULL;
        int64_t v;

        assert_int_equal(sqlite3_open_v2(path, &db, SQLITE_OPEN_READWRITE, NULL), SQLITE_OK);
        assert_int_equal(sqlite3_prepare_v2(db, sql, -1, &st, NULL), SQLITE_OK);
        assert_int_equal(sqlite3_step(st), SQLITE_ROW);
        v = sqlite3_column_int64(st, 0);
        sqlite3_finalize(st);
        sqlite3_close(db);
        return v;
}

static char *raw_text(const char *path, const char *sql, char *buf, size_t size) {
        sqlite3 *db = NULL;
        sqlite3_stmt *st = NULL;

        assert_int_equal(sqlite3_open_v2(path, &db, SQLITE_OPEN_READWRITE, NULL), SQLITE_OK);
        assert_int_equal(sqlite3_prepare_v2(db, sql, -1, &st, NULL), SQLITE_OK);
        assert_int_equal(sqlite3_step(st), SQLITE_ROW);
        snprintf(buf, size, "%s", (const char *) sqlite3_column_text(st, 0));
        sqlite3_finalize(st);
        sqlite3_close(db);
        return buf;
}

static void raw_exec(const char *path, const char *sql) {
        sqlite3 *db = NULL;

        assert_int_equal(sqlite3_open_v2(path, &db, SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE, NULL), SQLITE_OK);
        assert_int_equal(sqlite3_exec(db, sql, NULL, NULL, NULL), SQLITE_OK);
        sqlite3_close(db);
}

static int64_t local_time(const char *iso) {
        int64_t t;

        assert_int_equal(clock_parse_iso(iso, &t, NULL), 0);
        return t;
}

static SessionRecord session(const char *id, const char *wrap, TherapyMode mode, int64_t requested,
                             uint32_t ran_s, SessionOutcome outcome) {
        SessionRecord r = {
                .mode = mode,
                .source = SOURCE_BUTTON,
                .requested_at = requested,
                .prescribed_s = mode == THERAPY_COLD ? 900 : 1200,
                .outcome = outcome,
                .setpoint = mode == THERAPY_COLD ? 1000 : 4000,
        };

        snprintf(r.session_id, sizeof(r.session_id), "%s", id);
        snprintf(r.wrap, sizeof(r.wrap), "%s", wrap);
        if (outcome == OUTCOME_REFUSED) {
                r.refusal = mode == THERAPY_COLD ? REFUSAL_REST_INTERVAL : REFUSAL_HEAT_TOO_SOON;
                r.minutes_left = 42;
        } else if (outcome != OUTCOME_NOT_STARTED) {
                r.started_at = requested + 2;
                r.duration_s = ran_s;
                if (outcome != OUTCOME_OPEN)
                        r.ended_at = r.started_at + ran_s;
                r.compliant = rules_compliant(mode, ran_s);
        } else
                r.start_result = 3;
        return r;
}

static void assert_session_equal(const SessionRecord *a, const SessionRecord *b) {
        assert_string_equal(a->session_id, b->session_id);
        assert_string_equal(a->wrap, b->wrap);
        assert_int_equal(a->mode, b->mode);
        assert_int_equal(a->source, b->source);
        assert_int_equal(a->requested_at, b->requested_at);
        assert_int_equal(a->started_at, b->started_at);
        assert_int_equal(a->ended_at, b->ended_at);
        assert_int_equal(a->prescribed_s, b->prescribed_s);
        assert_int_equal(a->duration_s, b->duration_s);
        assert_int_equal(a->outcome, b->outcome);
        assert_int_equal(a->compliant, b->compliant);
        assert_int_equal(a->refusal, b->refusal);
        assert_int_equal(a->minutes_left, b->minutes_left);
        assert_int_equal(a->skin.n, b->skin.n);
        if (a->skin.n > 0) {
                assert_int_equal(a->skin.min, b->skin.min);
                assert_int_equal(a->skin.max, b->skin.max);
                assert_int_equal(a->skin.sum, b->skin.sum);
        }
        assert_int_equal(a->has_days_since_injury, b->has_days_since_injury);
        if (a->has_days_since_injury)
                assert_int_equal(a->days_since_injury, b->days_since_injury);
        assert_int_equal(a->setpoint, b->setpoint);
        assert_int_equal(a->start_result, b->start_result);
}

/* ---- open, schema, errors ---- */

static void test_open_migrate_reopen(void **state) {
        Fixture *f = *state;
        char buf[32];
        int64_t version;

        assert_int_equal(store_open(f->path, &f->s), 0);
        assert_int_equal(store_wrap_add(f->s, ADDR_A, "Left knee", 1000), 0);
        assert_int_equal(store_check(f->s), 0);

        /* What kneewrapctl sees while the daemon holds the store open. */
        assert_string_equal(raw_text(f->path, "PRAGMA journal_mode", buf, sizeof(buf)), "wal");
        version = raw_int(f->path, "PRAGMA user_version");
        assert_true(version >= 1);
        assert_int_equal(raw_int(f->path, "PRAGMA application_id"), 0x4b4e5750);
        assert_int_equal(raw_int(f->path, "SELECT count(*) FROM wraps"), 1);
        f->s = store_close(f->s);

        /* Opening again migrates nothing and loses nothing. */
        for (int i = 0; i < 2; i++) {
                StoredWrap w;

                assert_int_equal(store_open(f->path, &f->s), 0);
                assert_int_equal(raw_int(f->path, "PRAGMA user_version"), version);
                assert_int_equal(store_wrap_get(f->s, WRAP_A, &w), 0);
                assert_string_equal(w.name, "Left knee");
                f->s = store_close(f->s);
        }
        assert_int_equal(raw_int(f->path, "SELECT count(*) FROM meta"), 1);

        /* Two connections at once, as the daemon and kneewrapctl. */
        Store *other = NULL;
        StoredWrap w;
        assert_int_equal(store_open(f->path, &f->s), 0);
        assert_int_equal(store_open(f->path, &other), 0);
        assert_int_equal(store_wrap_add(other, ADDR_B, "Right knee", 2000), 0);
        assert_int_equal(store_wrap_get(f->s, WRAP_B, &w), 0);
        assert_string_equal(w.address, ADDR_B);
        store_close(other);
}

static void test_newer_schema_refused(void **state) {
        Fixture *f = *state;
        char *msg = NULL;

        assert_int_equal(store_open(f->path, &f->s), 0);
        f->s = store_close(f->s);
        raw_exec(f->path, "PRAGMA user_version = 999");

        assert_int_equal(store_open_err(f->path, &f->s, &msg), -EPROTO);
        assert_null(f->s);
        assert_non_null(msg);
        assert_non_null(strstr(msg, "newer"));
        free(msg);
        /* Refused without touching it. */
        assert_int_equal(raw_int(f->path, "PRAGMA user_version"), 999);
}

static void test_not_a_store(void **state) {
        Fixture *f = *state;
        char path[160], *msg = NULL;
        int fd;

        /* A text file. */
        snprintf(path, sizeof(path), "%s/text", f->dir);
        fd = open(path, O_WRONLY | O_CREAT | O_TRUNC, 0600);
        assert_true(fd >= 0);
        for (int i = 0; i < 100; i++)
                assert_int_equal(write(fd, "not a database, just some words\n", 32), 32);
        close(fd);
        assert_int_equal(store_open_err(path, &f->s, &msg), -EUCLEAN);
        assert_null(f->s);
        assert_non_null(msg);
        assert_non_null(strstr(msg, "not a database"));
        free(msg);

        /* Another program's SQLite database. */
        snprintf(path, sizeof(path), "%s/other.db", f->dir);
        raw_exec(path, "CREATE TABLE things (x); INSERT INTO things VALUES (1)");
        assert_int_equal(store_open_err(path, &f->s, &msg), -EBADMSG);
        assert_non_null(strstr(msg, "not a kneewrap store"));
        free(msg);
        assert_int_equal(raw_int(path, "SELECT count(*) FROM sqlite_master"), 1);

        /* A missing directory: the store creates its file, never its parents. */
        snprintf(path, sizeof(path), "%s/missing/kneewrap.db", f->dir);
        assert_int_equal(store_open_err(path, &f->s, &msg), -ENOENT);
        free(msg);
        /* A directory. */
        assert_int_equal(store_open(f->dir, &f->s), -EISDIR);
}

static void test_unreadable(void **state) {
        Fixture *f = *state;
        char *msg = NULL;
        int status;
        pid_t pid;

        assert_int_equal(store_open(f->path, &f->s), 0);
        f->s = store_close(f->s);
        assert_int_equal(chmod(f->path, 0600), 0);

        if (geteuid() != 0) {
                assert_int_equal(chmod(f->path, 0), 0);
                assert_int_equal(store_open_err(f->path, &f->s, &msg), -EACCES);
                assert_non_null(strstr(msg, "Permission denied"));
                free(msg);
                return;
        }
        /* Root reads anything: ask as another user, from a child. */
        assert_int_equal(chmod(f->dir, 0755), 0);
        pid = fork();
        assert_true(pid >= 0);
        if (pid == 0) {
                Store *s = NULL;
                int r;

                if (setgid(65534) < 0 || setuid(65534) < 0)
                        _exit(2);
                r = store_open_err(f->path, &s, &msg);
                _exit(r == -EACCES && !s && msg && strstr(msg, "Permission denied") ? 0 : 1);
        }
        assert_int_equal(waitpid(pid, &status, 0), pid);
        assert_true(WIFEXITED(status));
        assert_int_equal(WEXITSTATUS(status), 0);
}

static double mono_s(void) {
        struct timespec ts;

        clock_gettime(CLOCK_MONOTONIC, &ts);
        return (double) ts.tv_sec + (double) ts.tv_nsec / 1e9;
}

static void test_busy(void **state) {
        Fixture *f = *state;
        SessionRecord r = session("d0000000-0000-4000-8000-000000000001", WRAP_A, THERAPY_COLD, 5000, 900,
                                  OUTCOME_COMPLETED), got;
        sqlite3 *other = NULL;
        double t0, waited;

        /* kneewrapctl holds the write lock: the store waits its busy timeout, then says so. */
        assert_int_equal(sqlite3_open_v2(f->path, &other, SQLITE_OPEN_READWRITE, NULL), SQLITE_OK);
        assert_int_equal(sqlite3_exec(other, "BEGIN IMMEDIATE", NULL, NULL, NULL), SQLITE_OK);
        t0 = mono_s();
        assert_int_equal(store_session_put(f->s, &r, NULL), -EBUSY);
        waited = mono_s() - t0;
        assert_true(waited >= 0.5 && waited < 5);
        /* Readers are not blocked by a writer in WAL mode. */
        assert_int_equal(store_session_get(f->s, r.session_id, &got), -ENOENT);
        assert_int_equal(sqlite3_exec(other, "COMMIT", NULL, NULL, NULL), SQLITE_OK);
        sqlite3_close(other);
        assert_int_equal(store_session_put(f->s, &r, NULL), 0);
        assert_int_equal(store_session_get(f->s, r.session_id, &got), 0);
}

static void overwrite(const char *path, off_t at, size_t len) {
        char junk[4096];
        int fd;

        assert_true(len <= sizeof(junk));
        for (size_t i = 0; i < len; i++)
                junk[i] = (char) (0x5a ^ (i * 37));
        fd = open(path, O_WRONLY);
        assert_true(fd >= 0);
        assert_int_equal(pwrite(fd, junk, len, at), (ssize_t) len);
        close(fd);
}

static void test_corrupt_file(void **state) {
        Fixture *f = *state;
        SessionRecord r = session("11111111-1111-4111-8111-111111111111", WRAP_A, THERAPY_COLD, 5000, 900,
                                  OUTCOME_COMPLETED), got;
        StoredWrap *wl = NULL;
        size_t n = 0;
        char *msg = NULL;
        int k;

        assert_int_equal(store_open(f->path, &f->s), 0);
        assert_int_equal(store_wrap_add(f->s, ADDR_A, "Left knee", 1000), 0);
        for (int i = 0; i < 50; i++) {
                snprintf(r.session_id, sizeof(r.session_id), "11111111-1111-4111-8111-%012d", i);
                assert_int_equal(store_session_put(f->s, &r, NULL), 0);
        }
        f->s = store_close(f->s);

        /* Garbage over the pages after the first: open may work, reads must fail cleanly. */
        overwrite(f->path, 4096, 4096);
        overwrite(f->path, 3 * 4096, 4096);
        overwrite(f->path, 6 * 4096, 4096);
        k = store_open_err(f->path, &f->s, &msg);
        assert_true(k == 0 || k == -EUCLEAN);
        free(msg);
        if (k == 0) {
                int a = store_wrap_list(f->s, &wl, &n);
                int b = store_session_get(f->s, r.session_id, &got);
                int c = store_check(f->s);

                free(wl);
                assert_true(a == 0 || a == -EUCLEAN);
                assert_true(b == 0 || b == -ENOENT || b == -EUCLEAN);
                assert_true(c == 0 || c == -EUCLEAN);
                /* At least one of them met the damage, and said so. */
                assert_true(a == -EUCLEAN || b == -EUCLEAN || c == -EUCLEAN);
                assert_non_null(store_errmsg(f->s));
                f->s = store_close(f->s);
        }

        /* Garbage over the header. */
        overwrite(f->path, 0, 100);
        assert_int_equal(store_open_err(f->path, &f->s, &msg), -EUCLEAN);
        assert_null(f->s);
        assert_non_null(msg);
        assert_true(strlen(msg) > 0);
        free(msg);
}

/* ---- wraps, injuries, prescriptions ---- */

static void test_wraps(void **state) {
        Fixture *f = *state;
        StoredWrap w, *list = NULL;
        size_t n = 0;
        char longname[100];

        assert_int_equal(store_open(f->path, &f->s), 0);
        assert_int_equal(store_wrap_list(f->s, &list, &n), 0);
        assert_int_equal(n, 0);
        free(list);

        assert_int_equal(store_wrap_add(f->s, "aa:bb:cc:00:11:22", "Left knee", 1000), 0);
        assert_int_equal(store_wrap_add(f->s, ADDR_A, "Again", 1001), -EEXIST);
        assert_int_equal(store_wrap_add(f->s, "not an address", "x", 1001), -EINVAL);
        memset(longname, 'n', sizeof(longname));
        memcpy(longname + 60, "\xc3\xa9\xc3\xa9", 4);   /* a 2-byte character across the limit */
        longname[sizeof(longname) - 1] = '\0';
        assert_int_equal(store_wrap_add(f->s, ADDR_B, longname, 2000), 0);

        assert_int_equal(store_wrap_get(f->s, WRAP_A, &w), 0);
        assert_string_equal(w.wrap, WRAP_A);
        assert_string_equal(w.address, ADDR_A);
        assert_string_equal(w.name, "Left knee");
        assert_int_equal(w.adopted_at, 1000);
        assert_int_equal(store_wrap_get(f->s, WRAP_B, &w), 0);
        assert_int_equal(strlen(w.name), 62);          /* whole characters only */
        assert_memory_equal(w.name + 60, "\xc3\xa9", 2);

        assert_int_equal(store_wrap_list(f->s, &list, &n), 0);
        assert_int_equal(n, 2);
        assert_string_equal(list[0].wrap, WRAP_A);
        assert_string_equal(list[1].wrap, WRAP_B);
        free(list);

        assert_int_equal(store_wrap_remove(f->s, WRAP_A, NULL), 0);
        assert_int_equal(store_wrap_remove(f->s, WRAP_A, NULL), -ENOENT);
        assert_int_equal(store_wrap_get(f->s, WRAP_A, &w), -ENOENT);
        assert_int_equal(store_wrap_list(f->s, &list, &n), 0);
        assert_int_equal(n, 1);
        free(list);
        /* Adopted again: the same id, its history kept. */
        assert_int_equal(store_wrap_add(f->s, ADDR_A, "Left again", 3000), 0);
        assert_int_equal(store_wrap_get(f->s, WRAP_A, &w), 0);
        assert_string_equal(w.name, "Left again");
        assert_int_equal(w.adopted_at, 3000);
        assert_int_equal(store_wrap_get(f->s, "wrap_000000000000", &w), -ENOENT);
}

static void test_prescription(void **state) {
        Fixture *f = *state;
        RulesPrescription def, rx, got;
        bool prescribed = true;

        rules_prescription_default(&def);
        assert_int_equal(store_prescription_get(f->s, WRAP_A, NULL, &got, &prescribed), 0);
        assert_false(prescribed);
        assert_memory_equal(&got, &def, sizeof(def));
        assert_int_equal(store_prescription_clear(f->s, WRAP_A, NULL), -ENOENT);

        rx = def;
        rx.cold_s = 720;
        rx.heat_wait_s = 10 * 86400;
        rx.cold_rest_s = 7200;
        rx.cold_setpoint = 1200;
        assert_int_equal(store_prescription_set(f->s, WRAP_A, &rx, 5000, NULL), 0);
        assert_int_equal(store_prescription_get(f->s, WRAP_A, &def, &got, &prescribed), 0);
        assert_true(prescribed);
        assert_memory_equal(&got, &rx, sizeof(rx));

        /* The schema refuses what the rules refuse, as a second line. */
        RulesPrescription bad = rx;
        bad.cold_s = 1000;
        assert_int_equal(store_prescription_set(f->s, WRAP_A, &bad, 5001, NULL), -EINVAL);
        assert_non_null(strstr(store_errmsg(f->s), "CHECK"));
        bad = rx;
        bad.heat_wait_s = 3 * 86400;
        assert_int_equal(store_prescription_set(f->s, WRAP_A, &bad, 5001, NULL), -EINVAL);
        assert_int_equal(store_prescription_get(f->s, WRAP_A, &def, &got, NULL), 0);
        assert_memory_equal(&got, &rx, sizeof(rx));
        /* A wrap never adopted. */
        assert_int_equal(store_prescription_set(f->s, WRAP_B, &rx, 5001, NULL), -ENOENT);

        assert_int_equal(store_prescription_clear(f->s, WRAP_A, NULL), 0);
        assert_int_equal(store_prescription_get(f->s, WRAP_A, &def, &got, &prescribed), 0);
        assert_false(prescribed);
}

static void test_rules_state(void **state) {
        Fixture *f = *state;
        RulesPrescription def;
        RulesState rs;
        SessionRecord r;

        rules_prescription_default(&def);
        memset(&rs, 0x55, sizeof(rs));
        assert_int_equal(store_rules_state(f->s, WRAP_A, &def, &rs), 0);
        assert_memory_equal(&rs.rx, &def, sizeof(def));
        assert_false(rs.has_injury);
        assert_false(rs.has_last_cold);
        assert_false(rs.active);
        assert_int_equal(rs.active_started, 0);

        /* Two exact injuries: the later one counts. */
        assert_int_equal(store_injury_add(f->s, WRAP_A, 100000, NULL, 100100), 0);
        assert_int_equal(store_injury_add(f->s, WRAP_A, 200000, NULL, 200100), 0);
        assert_int_equal(store_injury_add(f->s, WRAP_A, 0, "2026-02-30", 200100), -EINVAL);
        assert_int_equal(store_injury_add(f->s, WRAP_A, 0, "20260201", 200100), -EINVAL);
        assert_int_equal(store_rules_state(f->s, WRAP_A, &def, &rs), 0);
        assert_true(rs.has_injury);
        assert_int_equal(rs.injury_at, 200000);
        assert_int_equal(rs.injury_from, 200000);
        assert_int_equal(store_injury_resolve(f->s, WRAP_A, 300000, NULL), 0);
        assert_int_equal(store_injury_resolve(f->s, WRAP_A, 300001, NULL), -ENOENT);
        assert_int_equal(store_rules_state(f->s, WRAP_A, &def, &rs), 0);
        assert_false(rs.has_injury);

        /* The last cold session that ran: not refused, not not_started, not heat, not open. */
        r = session("c0000000-0000-4000-8000-000000000001", WRAP_A, THERAPY_COLD, 400000, 900, OUTCOME_COMPLETED);
        assert_int_equal(store_session_put(f->s, &r, NULL), 0);
        int64_t cold_end = r.ended_at;
        r = session("c0000000-0000-4000-8000-000000000002", WRAP_A, THERAPY_COLD, 401000, 0, OUTCOME_REFUSED);
        assert_int_equal(store_session_put(f->s, &r, NULL), 0);
        r = session("c0000000-0000-4000-8000-000000000003", WRAP_A, THERAPY_COLD, 402000, 0, OUTCOME_NOT_STARTED);
        r.ended_at = 402001;   /* even with an end noted, it never ran */
        assert_int_equal(store_session_put(f->s, &r, NULL), 0);
        r = session("c0000000-0000-4000-8000-000000000004", WRAP_A, THERAPY_HEAT, 403000, 600, OUTCOME_COMPLETED);
        assert_int_equal(store_session_put(f->s, &r, NULL), 0);
        r = session("c0000000-0000-4000-8000-000000000005", WRAP_A, THERAPY_COLD, 404000, 60, OUTCOME_OPEN);
        assert_int_equal(store_session_put(f->s, &r, NULL), 0);
        assert_int_equal(store_rules_state(f->s, WRAP_A, &def, &rs), 0);
        assert_true(rs.has_last_cold);
        assert_int_equal(rs.last_cold_end, cold_end);
        /* A session stopped early still ended: the rest interval counts from it. */
        r = session("c0000000-0000-4000-8000-000000000006", WRAP_A, THERAPY_COLD, 405000, 120, OUTCOME_STOPPED_BY_USER);
        assert_int_equal(store_session_put(f->s, &r, NULL), 0);
        assert_int_equal(store_rules_state(f->s, WRAP_A, &def, &rs), 0);
        assert_int_equal(rs.last_cold_end, r.ended_at);
        assert_false(rs.active);
        /* An interrupted one (the link was lost) may have run on to its duration on the wrap. */
        r = session("c0000000-0000-4000-8000-000000000007", WRAP_A, THERAPY_COLD, 406000, 100, OUTCOME_INTERRUPTED);
        assert_int_equal(store_session_put(f->s, &r, NULL), 0);
        assert_int_equal(store_rules_state(f->s, WRAP_A, &def, &rs), 0);
        assert_int_equal(rs.last_cold_end, r.started_at + 900);
}

static void test_date_only_injury_berlin(void **state) {
        Fixture *f = *state;
        RulesPrescription def;
        RulesState rs, rs2;
        struct tm tm;
        int64_t from;

        rules_prescription_default(&def);
        /* Recorded and read in Berlin, on the day summer time begins (23 hours long): the end
         * of that local day is 2026-03-30 00:00 CEST = 2026-03-29 22:00 UTC, its start
         * 2026-03-29 00:00 CET = 2026-03-28 23:00 UTC. */
        set_tz("Europe/Berlin");
        assert_int_equal(store_injury_add(f->s, WRAP_A, 0, "2026-03-29", 1774800000), 0);
        assert_int_equal(store_rules_state(f->s, WRAP_A, &def, &rs), 0);
        assert_true(rs.has_injury);
        tm = (struct tm) { .tm_year = 126, .tm_mon = 2, .tm_mday = 29, .tm_hour = 22 };
        assert_int_equal(rs.injury_at, (int64_t) timegm(&tm));
        tm = (struct tm) { .tm_year = 126, .tm_mon = 2, .tm_mday = 28, .tm_hour = 23 };
        assert_int_equal(rs.injury_from, (int64_t) timegm(&tm));
        assert_int_equal(rs.injury_at - rs.injury_from, 23 * 3600);

        /* R2 then counts 7 days from the cautious instant. */
        assert_false(rules_heat_allowed(&rs, rs.injury_at + 7 * RULES_DAY_S - 1, &from));
        assert_true(rules_heat_allowed(&rs, rs.injury_at + 7 * RULES_DAY_S, &from));

        /* Read after the gateway moved to UTC, that day ends later (00:00 UTC): the later end
         * is used. */
        set_tz("UTC");
        assert_int_equal(store_rules_state(f->s, WRAP_A, &def, &rs2), 0);
        tm = (struct tm) { .tm_year = 126, .tm_mon = 2, .tm_mday = 30 };
        assert_int_equal(rs2.injury_at, (int64_t) timegm(&tm));
        set_tz("Europe/Berlin");

        /* An exact injury later than that day wins; an earlier one does not. */
        assert_int_equal(store_injury_add(f->s, WRAP_A, rs.injury_at - 3600, NULL, 1774900000), 0);
        assert_int_equal(store_rules_state(f->s, WRAP_A, &def, &rs2), 0);
        assert_int_equal(rs2.injury_at, rs.injury_at);
        assert_int_equal(store_injury_add(f->s, WRAP_A, rs.injury_at + 3600, NULL, 1774900000), 0);
        assert_int_equal(store_rules_state(f->s, WRAP_A, &def, &rs2), 0);
        assert_int_equal(rs2.injury_at, rs.injury_at + 3600);
        assert_int_equal(rs2.injury_from, rs.injury_at + 3600);

        /* The same date recorded while the gateway ran in UTC (its end: 00:00 UTC) and read in
         * Berlin (22:00 UTC): moving the time zone east never shortens R2's wait. */
        set_tz("UTC");
        assert_int_equal(store_injury_add(f->s, WRAP_A, 0, "2026-03-29", 1774900100), 0);
        set_tz("Europe/Berlin");
        assert_int_equal(store_rules_state(f->s, WRAP_A, &def, &rs2), 0);
        tm = (struct tm) { .tm_year = 126, .tm_mon = 2, .tm_mday = 30 };
        assert_int_equal(rs2.injury_at, (int64_t) timegm(&tm));
        set_tz("UTC");
}

/* Past 2038-01-19 03:14:07 UTC a 32-bit time_t wraps: on armhf (built with _TIME_BITS=64,
 * run under qemu-user in CI) the store keeps, reads back and decides on dates after it. */
static void test_after_2038(void **state) {
        Fixture *f = *state;
        RulesPrescription def;
        RulesState rs;
        RulesDecision d;
        SessionRecord r, got;
        struct tm tm;
        char iso[CLOCK_ISO_MAX];
        int64_t recorded, day_end, from;

        assert_int_equal(sizeof(time_t), 8);
        rules_prescription_default(&def);
        set_tz("UTC");
        tm = (struct tm) { .tm_year = 139, .tm_mon = 2, .tm_mday = 1, .tm_hour = 10 };    /* 2039-03-01 10:00 */
        recorded = (int64_t) timegm(&tm);
        assert_true(recorded > INT32_MAX);
        tm = (struct tm) { .tm_year = 139, .tm_mon = 2, .tm_mday = 2 };                   /* its day's end */
        day_end = (int64_t) timegm(&tm);

        /* A date-only injury that day: R2 waits 7 days from the day's end. */
        assert_int_equal(store_injury_add(f->s, WRAP_A, 0, "2039-03-01", recorded), 0);
        assert_int_equal(store_rules_state(f->s, WRAP_A, &def, &rs), 0);
        assert_true(rs.has_injury);
        assert_int_equal(rs.injury_at, day_end);
        d = rules_decide(&rs, &(RulesEvent) { .type = RULES_EVENT_START, .mode = THERAPY_HEAT }, day_end + 2 * RULES_DAY_S);
        assert_int_equal(d.action, RULES_DENY);
        assert_int_equal(d.deny, DENY_HEAT_TOO_SOON);
        assert_int_equal(d.minutes_left, 5 * 24 * 60);
        assert_false(rules_heat_allowed(&rs, day_end + 7 * RULES_DAY_S - 1, &from));
        assert_int_equal(from, day_end + 7 * RULES_DAY_S);
        d = rules_decide(&rs, &(RulesEvent) { .type = RULES_EVENT_START, .mode = THERAPY_HEAT }, day_end + 7 * RULES_DAY_S);
        assert_int_equal(d.action, RULES_START);
        assert_int_equal(d.deadline, day_end + 7 * RULES_DAY_S + d.duration_s);

        /* A cold session then: stored, read back to the second, and R6 rests from its end. */
        r = session("c0000000-0000-4000-8000-000000002039", WRAP_A, THERAPY_COLD, day_end + 8 * RULES_DAY_S, 900,
                    OUTCOME_COMPLETED);
        assert_int_equal(store_session_put(f->s, &r, NULL), 0);
        assert_int_equal(store_last_session(f->s, WRAP_A, &got), 0);
        assert_string_equal(got.session_id, r.session_id);
        assert_int_equal(got.started_at, r.started_at);
        assert_int_equal(got.ended_at, r.ended_at);
        assert_string_equal(clock_format_iso(got.started_at, iso), "2039-03-10T00:00:02+00:00");
        assert_int_equal(store_rules_state(f->s, WRAP_A, &def, &rs), 0);
        assert_int_equal(rs.last_cold_end, r.ended_at);
        d = rules_decide(&rs, &(RulesEvent) { .type = RULES_EVENT_START, .mode = THERAPY_COLD }, r.ended_at + 60);
        assert_int_equal(d.action, RULES_DENY);
        assert_int_equal(d.deny, DENY_REST_INTERVAL);
}

/* ---- sessions ---- */

static void test_sessions(void **state) {
        Fixture *f = *state;
        SessionRecord r, got, *list = NULL;
        OutboxMsg m1 = { .topic = (char *) "kneewrap/wrap_aabbcc001122/session", .payload = (char *) "{\"a\":1}", .qos = 1 };
        OutboxMsg m2 = { .topic = (char *) "kneewrap/wrap_aabbcc001122/session", .payload = (char *) "{\"a\":2}", .qos = 1 };
        size_t n = 0;
        uint64_t depth;

        assert_int_equal(store_wrap_add(f->s, ADDR_B, "Right knee", 1000), 0);

        /* An open session, as the daemon writes it when START is sent. */
        r = session("a0000000-0000-4000-8000-000000000001", WRAP_A, THERAPY_COLD, 10000, 0, OUTCOME_OPEN);
        r.source = SOURCE_MQTT;
        r.has_days_since_injury = true;
        r.days_since_injury = 35;
        r.setpoint = 1050;
        r.start_result = 0;
        assert_int_equal(store_session_put(f->s, &r, NULL), 0);
        assert_int_equal(store_session_get(f->s, r.session_id, &got), 0);
        assert_session_equal(&got, &r);
        assert_int_equal(got.ended_at, 0);
        assert_int_equal(store_sessions_open(f->s, &list, &n), 0);
        assert_int_equal(n, 1);
        assert_session_equal(&list[0], &r);
        free(list);

        /* It ends: the same row, updated, and its record into the outbox. */
        r.outcome = OUTCOME_STOPPED_FOR_SAFETY;
        r.duration_s = 733;
        r.ended_at = r.started_at + 733;
        r.compliant = true;
        skin_stats_add(&r.skin, 1210);
        skin_stats_add(&r.skin, 790);
        skin_stats_add(&r.skin, 1500);
        assert_int_equal(store_session_put(f->s, &r, &m1), 0);
        assert_true(m1.id > 0);
        assert_int_equal(store_session_get(f->s, r.session_id, &got), 0);
        assert_session_equal(&got, &r);
        assert_int_equal(got.skin.min, 790);
        assert_int_equal(got.skin.max, 1500);
        assert_int_equal(got.skin.sum, 3500);
        /* Delivered again (the daemon republishes after a restart): still one row. */
        assert_int_equal(store_session_put(f->s, &r, &m2), 0);
        assert_true(m2.id > m1.id);
        assert_int_equal(raw_int(f->path, "SELECT count(*) FROM sessions"), 1);
        assert_int_equal(store_sessions_open(f->s, &list, &n), 0);
        assert_int_equal(n, 0);
        free(list);
        assert_int_equal(store_outbox_depth(f->s, &depth), 0);
        assert_int_equal(depth, 2);

        /* A refused heat request: logged, with its reason. */
        SessionRecord h = session("a0000000-0000-4000-8000-000000000002", WRAP_A, THERAPY_HEAT, 20000, 0, OUTCOME_REFUSED);
        h.source = SOURCE_CLI;
        assert_int_equal(store_session_put(f->s, &h, NULL), 0);
        assert_int_equal(store_session_get(f->s, h.session_id, &got), 0);
        assert_session_equal(&got, &h);
        assert_int_equal(got.refusal, REFUSAL_HEAT_TOO_SOON);
        assert_int_equal(got.minutes_left, 42);
        assert_int_equal(got.started_at, 0);

        SessionRecord b = session("a0000000-0000-4000-8000-000000000003", WRAP_B, THERAPY_COLD, 15000, 900, OUTCOME_COMPLETED);
        b.source = SOURCE_DBUS;
        assert_int_equal(store_session_put(f->s, &b, NULL), 0);

        /* Lists: by wrap, by time, oldest first; [since, until). */
        assert_int_equal(store_sessions_list(f->s, NULL, 0, INT64_MAX, &list, &n), 0);
        assert_int_equal(n, 3);
        assert_string_equal(list[0].session_id, r.session_id);
        assert_string_equal(list[1].session_id, b.session_id);
        assert_string_equal(list[2].session_id, h.session_id);
        assert_session_equal(&list[1], &b);
        free(list);
        assert_int_equal(store_sessions_list(f->s, WRAP_A, 10000, 20000, &list, &n), 0);
        assert_int_equal(n, 1);
        assert_string_equal(list[0].session_id, r.session_id);
        free(list);
        assert_int_equal(store_last_session(f->s, WRAP_A, &got), 0);
        assert_string_equal(got.session_id, h.session_id);
        assert_int_equal(store_last_session(f->s, WRAP_B, &got), 0);
        assert_string_equal(got.session_id, b.session_id);
        assert_int_equal(store_session_get(f->s, "a0000000-0000-4000-8000-00000000ffff", &got), -ENOENT);

        /* A record the schema refuses leaves nothing behind, not even its outbox message. */
        SessionRecord bad = session("a0000000-0000-4000-8000-000000000004", WRAP_A, THERAPY_HEAT, 30000, 900, OUTCOME_COMPLETED);
        bad.compliant = true;   /* R7: only cold is compliant */
        OutboxMsg m3 = { .topic = (char *) "t", .payload = (char *) "p", .qos = 1 };
        assert_int_equal(store_session_put(f->s, &bad, &m3), -EINVAL);
        assert_int_equal(m3.id, 0);
        assert_int_equal(store_outbox_depth(f->s, &depth), 0);
        assert_int_equal(depth, 2);
        assert_int_equal(store_session_get(f->s, bad.session_id, &got), -ENOENT);
        /* A wrap never adopted. */
        bad = session("a0000000-0000-4000-8000-000000000005", "wrap_000000000000", THERAPY_COLD, 30000, 900, OUTCOME_COMPLETED);
        assert_int_equal(store_session_put(f->s, &bad, NULL), -ENOENT);
        bad.wrap[0] = '\0';
        bad.mode = THERAPY_NONE;
        assert_int_equal(store_session_put(f->s, &bad, NULL), -EINVAL);
}

/* ---- diary, alerts, outbox ---- */

static void assert_diary_equal(const DiaryEntry *a, const DiaryEntry *b) {
        assert_int_equal(a->at, b->at);
        assert_int_equal(a->score, b->score);
        assert_int_equal(a->where, b->where);
        assert_int_equal(a->flags, b->flags);
}

/* An AlertMsgFn for the tests: the message says which alert, and whether it is the latest. */
static int test_alert_msg(const AlertRecord *a, bool latest, void *userdata, OutboxMsg *ret) {
        int *calls = userdata;

        (*calls)++;
        if (a->kind == ALERT_LOW_BATTERY && a->at == 666)
                return -ENOMEM;   /* a builder that fails aborts the whole write */
        if (asprintf(&ret->topic, "kneewrap/%s/alert", a->wrap) < 0 ||
            asprintf(&ret->payload, "{\"id\":%lld,\"acked\":%s}", (long long) a->id, a->acked_at ? "true" : "false") < 0)
                return -ENOMEM;
        ret->qos = 1;
        ret->retain = latest;
        return 0;
}

static AlertRecord alert(const char *wrap, AlertKind kind, int64_t at, const char *text) {
        AlertRecord a = { .kind = kind, .at = at };

        snprintf(a.wrap, sizeof a.wrap, "%s", wrap);
        snprintf(a.text, sizeof a.text, "%s", text ? text : "");
        return a;
}

static void test_diary_alerts(void **state) {
        Fixture *f = *state;
        DiaryEntry e1 = { .at = 1000, .score = 6, .where = WHERE_FRONT, .flags = 0 };
        DiaryEntry e2 = { .at = 2000, .score = 8, .where = WHERE_BELOW, .flags = DIARY_SWELLING | DIARY_POP };
        DiaryEntry bad = { .at = 3000, .score = 11, .where = WHERE_BACK };
        DiaryEntry *list = NULL;
        AlertRecord red = alert(WRAP_A, rules_diary_alert(&e2), 2000, "red flag");
        unsigned mask = 99;
        size_t n = 0;
        uint64_t depth;
        int calls = 0;

        assert_int_equal(store_diary_add(f->s, WRAP_A, &e1, NULL, NULL, NULL), 0);
        assert_int_equal(store_diary_add(f->s, WRAP_A, &e2, &red, test_alert_msg, &calls), 0);
        assert_true(red.id > 0);
        assert_int_equal(calls, 1);
        assert_int_equal(store_diary_add(f->s, WRAP_A, &bad, NULL, NULL, NULL), -EINVAL);
        bad.score = 3;
        bad.where = _WHERE_MAX;
        assert_int_equal(store_diary_add(f->s, WRAP_A, &bad, NULL, NULL, NULL), -EINVAL);
        assert_int_equal(store_diary_add(f->s, WRAP_B, &e1, NULL, NULL, NULL), -ENOENT);
        /* The entry and its alert are one write: a builder that fails keeps both out. */
        bad = e1;
        bad.at = 2500;
        AlertRecord failing = alert(WRAP_A, ALERT_LOW_BATTERY, 666, NULL);
        assert_int_equal(store_diary_add(f->s, WRAP_A, &bad, &failing, test_alert_msg, &calls), -ENOMEM);
        assert_int_equal(raw_int(f->path, "SELECT count(*) FROM diary WHERE at = 2500"), 0);

        assert_int_equal(store_diary_list(f->s, WRAP_A, 0, &list, &n), 0);
        assert_int_equal(n, 2);
        assert_diary_equal(&list[0], &e1);
        assert_diary_equal(&list[1], &e2);
        /* Each carries its row id: what names it in FHIR (fhir.h). */
        assert_true(list[0].id > 0);
        assert_true(list[1].id > list[0].id);
        free(list);
        assert_int_equal(store_diary_list(f->s, WRAP_A, 1500, &list, &n), 0);
        assert_int_equal(n, 1);
        assert_int_equal(list[0].score, 8);
        free(list);
        assert_int_equal(raw_int(f->path, "SELECT count(*) FROM alerts WHERE kind = 'red_flag' AND at = 2000"), 1);

        /* R8 alerts: only those raised for this injury (since its start) count. */
        assert_int_equal(store_alerts_raised(f->s, WRAP_A, 0, &mask), 0);
        assert_int_equal(mask, 0);   /* the red flag is not an R8 alert */
        AlertRecord a1 = alert(WRAP_A, ALERT_SEE_PHYSIO, 5000, NULL), a2 = alert(WRAP_A, ALERT_SEE_PHYSIO_OVERDUE, 9000, NULL);
        AlertRecord two = alert(WRAP_A, ALERT_SEE_PHYSIO | ALERT_RED_FLAG, 9000, NULL), none = alert(WRAP_A, ALERT_NONE, 9000, NULL);
        assert_int_equal(store_alert_add(f->s, &a1, NULL, NULL), 0);
        assert_int_equal(store_alert_add(f->s, &a2, test_alert_msg, &calls), 0);
        assert_int_equal(store_alert_add(f->s, &two, NULL, NULL), -EINVAL);
        assert_int_equal(store_alert_add(f->s, &none, NULL, NULL), -EINVAL);
        assert_int_equal(store_alerts_raised(f->s, WRAP_A, 0, &mask), 0);
        assert_int_equal(mask, ALERT_SEE_PHYSIO | ALERT_SEE_PHYSIO_OVERDUE);
        assert_int_equal(store_alerts_raised(f->s, WRAP_A, 6000, &mask), 0);
        assert_int_equal(mask, ALERT_SEE_PHYSIO_OVERDUE);
        assert_int_equal(store_alerts_raised(f->s, WRAP_A, 9001, &mask), 0);
        assert_int_equal(mask, 0);
        assert_int_equal(store_outbox_depth(f->s, &depth), 0);
        assert_int_equal(depth, 2);
}

static void test_outbox(void **state) {
        Fixture *f = *state;
        OutboxMsg *got = NULL;
        size_t n = 0;
        uint64_t depth;
        int64_t ids[4], last;
        char topic[32];

        for (int i = 0; i < 4; i++) {
                OutboxMsg m = { .topic = topic, .payload = (char *) (i == 3 ? "" : "{\"n\":1}"),
                                .qos = (uint8_t) (i % 3), .retain = i == 3 };
                snprintf(topic, sizeof(topic), "kneewrap/t%d", i);
                assert_int_equal(store_outbox_add(f->s, &m), 0);
                ids[i] = m.id;
                if (i > 0)
                        assert_true(ids[i] > ids[i - 1]);
        }
        OutboxMsg badm = { .topic = (char *) "", .payload = (char *) "x" };
        assert_int_equal(store_outbox_add(f->s, &badm), -EINVAL);
        badm.topic = (char *) "t";
        badm.qos = 3;
        assert_int_equal(store_outbox_add(f->s, &badm), -EINVAL);

        assert_int_equal(store_outbox_peek(f->s, 0, 2, &got, &n), 0);
        assert_int_equal(n, 2);
        assert_int_equal(got[0].id, ids[0]);
        assert_string_equal(got[0].topic, "kneewrap/t0");
        assert_string_equal(got[0].payload, "{\"n\":1}");
        assert_int_equal(got[1].id, ids[1]);
        assert_int_equal(got[1].qos, 1);
        outbox_msgs_free(got, n);
        /* In flight: ask for what comes after the last one handed out. */
        assert_int_equal(store_outbox_peek(f->s, ids[1], 10, &got, &n), 0);
        assert_int_equal(n, 2);
        assert_int_equal(got[0].id, ids[2]);
        assert_int_equal(got[0].qos, 2);
        assert_int_equal(got[1].id, ids[3]);
        assert_string_equal(got[1].payload, "");
        assert_true(got[1].retain);
        outbox_msgs_free(got, n);

        /* PUBACKs come in any order; a message leaves only when acked. */
        assert_int_equal(store_outbox_ack(f->s, ids[1]), 0);
        assert_int_equal(store_outbox_ack(f->s, ids[1]), -ENOENT);
        assert_int_equal(store_outbox_depth(f->s, &depth), 0);
        assert_int_equal(depth, 3);
        assert_int_equal(store_outbox_peek(f->s, 0, 10, &got, &n), 0);
        assert_int_equal(n, 3);
        assert_int_equal(got[0].id, ids[0]);
        assert_int_equal(got[1].id, ids[2]);
        assert_int_equal(got[2].id, ids[3]);
        outbox_msgs_free(got, n);
        assert_int_equal(store_outbox_peek(f->s, 0, 0, &got, &n), 0);
        assert_int_equal(n, 0);
        assert_null(got);

        for (int i = 0; i < 4; i++)
                if (i != 1)
                        assert_int_equal(store_outbox_ack(f->s, ids[i]), 0);
        assert_int_equal(store_outbox_depth(f->s, &depth), 0);
        assert_int_equal(depth, 0);
        assert_int_equal(store_outbox_peek(f->s, 0, 10, &got, &n), 0);
        assert_int_equal(n, 0);

        /* Ids never repeat, even once the outbox is empty and the store reopened. */
        f->s = store_close(f->s);
        assert_int_equal(store_open(f->path, &f->s), 0);
        OutboxMsg m = { .topic = (char *) "kneewrap/next", .payload = (char *) "{}", .qos = 1 };
        last = ids[3];
        assert_int_equal(store_outbox_add(f->s, &m), 0);
        assert_true(m.id > last);
}

/* ---- compliance ---- */

static void put(Store *s, SessionRecord r) {
        assert_int_equal(store_session_put(s, &r, NULL), 0);
}

static void test_compliance(void **state) {
        Fixture *f = *state;
        Compliance c;
        int64_t since, now;

        assert_int_equal(store_wrap_add(f->s, ADDR_B, "Right knee", 1000), 0);
        set_tz("Europe/Berlin");
        since = local_time("2026-11-16T00:00");   /* Monday */
        now = local_time("2026-11-19T00:00");

        /* Monday 08:00, 15 min: compliant. */
        put(f->s, session("b0000000-0000-4000-8000-000000000001", WRAP_A, THERAPY_COLD,
                          local_time("2026-11-16T08:00"), 900, OUTCOME_COMPLETED));
        /* Monday 08:30: refused (rest interval). */
        put(f->s, session("b0000000-0000-4000-8000-000000000002", WRAP_A, THERAPY_COLD,
                          local_time("2026-11-16T08:30"), 0, OUTCOME_REFUSED));
        /* Monday 09:30, stopped at 9:59: incomplete (R7). */
        put(f->s, session("b0000000-0000-4000-8000-000000000003", WRAP_A, THERAPY_COLD,
                          local_time("2026-11-16T09:30"), 599, OUTCOME_STOPPED_BY_USER));
        /* Monday 10:00: heat refused (too soon). */
        put(f->s, session("b0000000-0000-4000-8000-000000000004", WRAP_A, THERAPY_HEAT,
                          local_time("2026-11-16T10:00"), 0, OUTCOME_REFUSED));
        /* Tuesday 00:15 local (Monday 23:15 UTC), 11:40: compliant, a Tuesday. */
        put(f->s, session("b0000000-0000-4000-8000-000000000005", WRAP_A, THERAPY_COLD,
                          local_time("2026-11-17T00:15"), 700, OUTCOME_COMPLETED));
        /* Tuesday 07:00: the wrap answered START with an error. */
        put(f->s, session("b0000000-0000-4000-8000-000000000006", WRAP_A, THERAPY_COLD,
                          local_time("2026-11-17T07:00"), 0, OUTCOME_NOT_STARTED));
        /* Tuesday 08:00: interrupted after 5 minutes: incomplete. */
        put(f->s, session("b0000000-0000-4000-8000-000000000007", WRAP_A, THERAPY_COLD,
                          local_time("2026-11-17T08:00"), 300, OUTCOME_INTERRUPTED));
        /* Tuesday 18:00: 20 minutes of heat. */
        put(f->s, session("b0000000-0000-4000-8000-000000000008", WRAP_A, THERAPY_HEAT,
                          local_time("2026-11-17T18:00"), 1200, OUTCOME_COMPLETED));
        /* Wednesday 00:30 local (Tuesday 23:30 UTC), exactly 10 minutes: compliant, a Wednesday. */
        put(f->s, session("b0000000-0000-4000-8000-000000000009", WRAP_A, THERAPY_COLD,
                          local_time("2026-11-18T00:30"), 600, OUTCOME_COMPLETED));
        /* Wednesday 12:00: still running: not counted as incomplete. */
        put(f->s, session("b0000000-0000-4000-8000-00000000000a", WRAP_A, THERAPY_COLD,
                          local_time("2026-11-18T12:00"), 0, OUTCOME_OPEN));
        /* Outside [since, now), and another wrap. */
        put(f->s, session("b0000000-0000-4000-8000-00000000000b", WRAP_A, THERAPY_COLD,
                          since - 1, 900, OUTCOME_COMPLETED));
        put(f->s, session("b0000000-0000-4000-8000-00000000000c", WRAP_A, THERAPY_COLD,
                          now, 900, OUTCOME_COMPLETED));
        put(f->s, session("b0000000-0000-4000-8000-00000000000d", WRAP_B, THERAPY_COLD,
                          local_time("2026-11-16T08:00"), 900, OUTCOME_COMPLETED));

        assert_int_equal(store_compliance(f->s, WRAP_A, since, now, &c), 0);
        assert_int_equal(c.cold_completed, 3);
        assert_int_equal(c.cold_incomplete, 2);
        assert_int_equal(c.cold_refused, 1);
        assert_int_equal(c.heat_refused, 1);
        /* 900 + 599 + 700 + 300 + 1200 + 600 = 4299 s = 71 whole minutes. */
        assert_int_equal(c.minutes, 71);
        assert_int_equal(c.days_with_cold, 3);

        /* Days are local days: in UTC the Tuesday 00:15 session was on Monday. */
        set_tz("UTC");
        assert_int_equal(store_compliance(f->s, WRAP_A, since, now, &c), 0);
        assert_int_equal(c.days_with_cold, 2);
        assert_int_equal(c.cold_completed, 3);

        /* All wraps. */
        assert_int_equal(store_compliance(f->s, NULL, since, now, &c), 0);
        assert_int_equal(c.cold_completed, 4);
        assert_int_equal(c.minutes, 86);
        /* An empty window. */
        assert_int_equal(store_compliance(f->s, WRAP_A, now + 1, now + 100, &c), 0);
        assert_int_equal(c.cold_completed + c.cold_incomplete + c.cold_refused + c.heat_refused + c.minutes + c.days_with_cold, 0);
}


/* ---- what a clinic reads (schema step 2) ---- */

/* A store made by schema step 1 with an alert in it keeps the alert, which becomes a record. */
static void test_migrate_alerts_from_v1(void **state) {
        Fixture *f = *state;
        AlertRecord *list = NULL;
        size_t n = 0;

        {
                /* Build version 1 by hand, from the step itself. */
                sqlite3 *db;
                assert_int_equal(sqlite3_open(f->path, &db), SQLITE_OK);
                for (const char *const *sql = schema_step(1); *sql; sql++)
                        assert_int_equal(sqlite3_exec(db, *sql, NULL, NULL, NULL), SQLITE_OK);
                assert_int_equal(sqlite3_exec(db,
                        "PRAGMA user_version = 1; PRAGMA application_id = 1263425360;"
                        "INSERT INTO wraps (id, address, adopted_at) VALUES ('" WRAP_A "', '" ADDR_A "', 1);"
                        "INSERT INTO alerts (wrap, kind, at) VALUES ('" WRAP_A "', 'red_flag', 500);",
                        NULL, NULL, NULL), SQLITE_OK);
                sqlite3_close(db);
        }
        assert_int_equal(store_open(f->path, &f->s), 0);
        assert_int_equal(raw_int(f->path, "PRAGMA user_version"), (int64_t) schema_version_latest());
        assert_int_equal(store_alerts_list(f->s, WRAP_A, 0, INT64_MAX, false, &list, &n), 0);
        assert_int_equal(n, 1);
        assert_int_equal(list[0].kind, ALERT_RED_FLAG);
        assert_int_equal(list[0].at, 500);
        assert_int_equal(list[0].acked_at, 0);
        assert_string_equal(list[0].text, "");
        free(list);
}

static void test_alert_records(void **state) {
        Fixture *f = *state;
        AlertRecord *list = NULL, a;
        AlertRecord battery = alert(WRAP_A, ALERT_LOW_BATTERY, 100, "Battery 8 %");
        AlertRecord heat = alert(WRAP_A, ALERT_HEAT_FIRST_WEEK, 200, "Heat asked for");
        AlertRecord bad = alert(WRAP_A, ALERT_NONE, 300, NULL), other = alert(WRAP_B, ALERT_RED_FLAG, 300, NULL);
        OutboxMsg *got = NULL;
        int64_t id1, id2;
        size_t n = 0;
        int calls = 0;

        assert_int_equal(store_alert_add(f->s, &battery, test_alert_msg, &calls), 0);
        assert_int_equal(store_alert_add(f->s, &heat, test_alert_msg, &calls), 0);
        id1 = battery.id;
        id2 = heat.id;
        assert_true(id2 > id1 && id1 > 0);
        assert_int_equal(store_alert_add(f->s, &bad, NULL, NULL), -EINVAL);
        assert_int_equal(store_alert_add(f->s, &other, NULL, NULL), -ENOENT);
        memset(bad.text, 'x', sizeof(bad.text));   /* no NUL: too long */
        bad.kind = ALERT_RED_FLAG;
        assert_int_equal(store_alert_add(f->s, &bad, NULL, NULL), -EINVAL);

        assert_int_equal(store_alert_get(f->s, id1, &a), 0);
        assert_string_equal(a.text, "Battery 8 %");
        assert_string_equal(a.wrap, WRAP_A);
        assert_string_equal(a.session_id, "");
        /* Acknowledging the older alert: its message is not the latest (not retained). */
        assert_int_equal(store_alert_ack(f->s, id1, 150, test_alert_msg, &calls, &a), 0);
        assert_int_equal(a.acked_at, 150);
        assert_int_equal(store_alert_ack(f->s, id1, 160, NULL, NULL, NULL), -EALREADY);
        assert_int_equal(store_alert_ack(f->s, 9999, 160, NULL, NULL, NULL), -ENOENT);
        assert_int_equal(store_outbox_peek(f->s, 0, 10, &got, &n), 0);
        assert_int_equal(n, 3);
        assert_true(got[0].retain && got[1].retain && !got[2].retain);
        assert_string_equal(got[2].payload, "{\"id\":1,\"acked\":true}");
        outbox_msgs_free(got, n);
        /* The newest, acknowledged: retained. */
        assert_int_equal(store_alert_ack(f->s, id2, 170, test_alert_msg, &calls, NULL), 0);
        assert_int_equal(store_outbox_peek(f->s, 0, 10, &got, &n), 0);
        assert_int_equal(n, 4);
        assert_true(got[3].retain);
        outbox_msgs_free(got, n);
        assert_int_equal(calls, 4);
        /* An alert about a session keeps its session_id. */
        snprintf(other.wrap, sizeof other.wrap, "%s", WRAP_A);
        snprintf(other.session_id, sizeof other.session_id, "6f1c2a52-0d4e-4c1b-9a77-3a1d2a9b8c01");
        other.kind = ALERT_SAFETY_STOP;
        assert_int_equal(store_alert_add(f->s, &other, NULL, NULL), 0);
        assert_int_equal(store_alert_get(f->s, other.id, &a), 0);
        assert_string_equal(a.session_id, "6f1c2a52-0d4e-4c1b-9a77-3a1d2a9b8c01");
        assert_int_equal(store_alert_ack(f->s, other.id, 120, NULL, NULL, NULL), 0);

        assert_int_equal(store_alerts_list(f->s, WRAP_A, 0, INT64_MAX, true, &list, &n), 0);
        assert_int_equal(n, 0);
        free(list);
        assert_int_equal(store_alerts_list(f->s, WRAP_A, 0, INT64_MAX, false, &list, &n), 0);
        assert_int_equal(n, 3);
        assert_int_equal(list[1].id, id2);
        assert_int_equal(list[1].acked_at, 170);
        assert_string_equal(list[2].session_id, "6f1c2a52-0d4e-4c1b-9a77-3a1d2a9b8c01");
        free(list);
        assert_int_equal(store_alerts_list(f->s, NULL, 0, 150, false, &list, &n), 0);
        assert_int_equal(n, 1);
        assert_int_equal(list[0].acked_at, 150);
        free(list);
        /* R8 still sees only its own kinds. */
        unsigned mask = 1;
        assert_int_equal(store_alerts_raised(f->s, WRAP_A, 0, &mask), 0);
        assert_int_equal(mask, 0);
}

/* The clinic uplink's change sequence: what goes out, in commit order, and corrections again. */
static void test_uplink_changes(void **state) {
        Fixture *f = *state;
        SessionRecord open = session("s-1", WRAP_A, THERAPY_COLD, 2000, 0, OUTCOME_OPEN), done;
        PatientProfile p = { .wrap = WRAP_A, .label = "Patient 12", .knee = KNEE_LEFT };
        DiaryEntry e = { .at = 2500, .score = 3, .where = WHERE_FRONT }, got;
        StoreChange *c = NULL;
        Store *ro = NULL;
        char wrap[WRAP_ID_MAX], *why = NULL;
        uint64_t pending;
        int64_t latest, created;
        size_t n;

        /* The adopted wrap (its Patient and Device) is change 1. */
        assert_int_equal(store_changes_after(f->s, 0, 10, &c, &n), 0);
        assert_int_equal(n, 1);
        assert_int_equal(c[0].kind, CHANGE_WRAP);
        assert_string_equal(c[0].key, WRAP_A);
        free(c);

        /* An open session is not a record yet; once it ends it is, at rev 1. */
        assert_int_equal(store_session_put(f->s, &open, NULL), 0);
        assert_int_equal(store_changes_pending(f->s, 1, &pending, &latest), 0);
        assert_int_equal(pending, 0);
        done = session("s-1", WRAP_A, THERAPY_COLD, 2000, 700, OUTCOME_COMPLETED);
        assert_int_equal(store_session_put(f->s, &done, NULL), 0);
        assert_int_equal(store_diary_add(f->s, WRAP_A, &e, NULL, NULL, NULL), 0);
        assert_int_equal(store_changes_after(f->s, 1, 10, &c, &n), 0);
        assert_int_equal(n, 2);
        assert_int_equal(c[0].kind, CHANGE_SESSION);
        assert_string_equal(c[0].key, "s-1");
        assert_int_equal(c[0].rev, 1);
        assert_int_equal(c[1].kind, CHANGE_DIARY);
        assert_int_equal(store_diary_get(f->s, 1, wrap, &got), 0);
        assert_string_equal(wrap, WRAP_A);
        assert_int_equal(got.id, 1);
        assert_int_equal(got.score, 3);
        free(c);

        /* A correction moves the record past any cursor again, as rev 2; a profile, its wrap. */
        done.duration_s = 800;
        done.ended_at = done.started_at + 800;
        assert_int_equal(store_session_put(f->s, &done, NULL), 0);
        assert_int_equal(store_profile_set(f->s, &p, 3000), 0);
        assert_int_equal(store_changes_pending(f->s, 3, &pending, &latest), 0);
        assert_int_equal(pending, 2);
        assert_int_equal(latest, 5);
        assert_int_equal(store_changes_after(f->s, 3, 10, &c, &n), 0);
        assert_int_equal(n, 2);
        assert_string_equal(c[0].key, "s-1");
        assert_int_equal(c[0].seq, 4);
        assert_int_equal(c[0].rev, 2);
        assert_int_equal(c[1].kind, CHANGE_WRAP);
        assert_int_equal(c[1].rev, 2);
        free(c);
        /* One row per record, however often it changed. */
        assert_int_equal(store_changes_pending(f->s, 0, &pending, NULL), 0);
        assert_int_equal(pending, 3);

        /* A run goes to the clinic too (schema step 6), by its id. */
        RunRecord run = { .wrap = WRAP_A, .ended_at = 2600, .minutes = 30, .meters = 6000, .source = SOURCE_CLI,
                          .recorded_at = 2600 }, got_run;
        int64_t run_id = 0;
        assert_int_equal(store_run_add(f->s, &run, NULL, &run_id), 0);
        assert_int_equal(store_changes_after(f->s, 5, 10, &c, &n), 0);
        assert_int_equal(n, 1);
        assert_int_equal(c[0].kind, CHANGE_RUN);
        assert_int_equal(c[0].seq, 6);
        assert_string_equal(change_kind_to_string(c[0].kind), "run");
        assert_int_equal(change_kind_from_string("run"), CHANGE_RUN);
        assert_int_equal(change_kind_from_string("later"), CHANGE_UNKNOWN);
        free(c);
        assert_int_equal(store_run_get(f->s, run_id, &got_run), 0);
        assert_int_equal(got_run.meters, 6000);
        assert_string_equal(got_run.wrap, WRAP_A);
        assert_int_equal(store_run_get(f->s, run_id + 1, &got_run), -ENOENT);
        assert_int_equal(store_changes_pending(f->s, 0, &pending, NULL), 0);
        assert_int_equal(pending, 4);

        /* Read-only, as the uplink (another user) opens it: the same view, no writes. */
        assert_int_equal(store_open_readonly(f->path, &ro, &why), 0);
        assert_int_equal(store_changes_pending(ro, 0, &pending, NULL), 0);
        assert_int_equal(pending, 4);
        assert_int_equal(store_identity(ro, &created), 0);
        assert_true(created > 0);
        assert_true(store_diary_add(ro, WRAP_A, &e, NULL, NULL, NULL) < 0);
        store_close(ro);
        free(why);
}

static void test_profile_and_device_info(void **state) {
        Fixture *f = *state;
        PatientProfile p = { .wrap = WRAP_A, .label = "Patient 12", .knee = KNEE_RIGHT, .clinic_ref = "PT-12" }, q;
        WrapDeviceInfo info = { .manufacturer = "Acme", .model = "KW-1", .serial = "S1", .firmware = "1.0" }, g;

        /* Nothing set yet: an empty profile, not an error. */
        assert_int_equal(store_profile_get(f->s, WRAP_A, &q), 0);
        assert_string_equal(q.wrap, WRAP_A);
        assert_string_equal(q.label, "");
        assert_int_equal(q.knee, KNEE_UNSET);
        assert_int_equal(store_device_info_get(f->s, WRAP_A, &g), 0);
        assert_string_equal(g.model, "");

        assert_int_equal(store_profile_set(f->s, &p, 100), 0);
        assert_int_equal(store_profile_get(f->s, WRAP_A, &q), 0);
        assert_string_equal(q.label, "Patient 12");
        assert_int_equal(q.knee, KNEE_RIGHT);
        assert_string_equal(q.clinic_ref, "PT-12");
        assert_int_equal(q.set_at, 100);
        p.knee = KNEE_UNSET;
        p.clinic_ref[0] = 0;
        assert_int_equal(store_profile_set(f->s, &p, 200), 0);
        assert_int_equal(store_profile_get(f->s, WRAP_A, &q), 0);
        assert_int_equal(q.knee, KNEE_UNSET);
        assert_string_equal(q.clinic_ref, "");
        p.knee = _KNEE_MAX;
        assert_int_equal(store_profile_set(f->s, &p, 200), -EINVAL);
        snprintf(p.wrap, sizeof(p.wrap), "%s", WRAP_B);
        p.knee = KNEE_LEFT;
        assert_int_equal(store_profile_set(f->s, &p, 200), -ENOENT);

        assert_int_equal(store_device_info_set(f->s, WRAP_A, &info, 100), 0);
        assert_int_equal(store_device_info_get(f->s, WRAP_A, &g), 0);
        assert_string_equal(g.manufacturer, "Acme");
        assert_string_equal(g.firmware, "1.0");

        assert_string_equal(knee_to_string(KNEE_LEFT), "left");
        assert_null(knee_to_string(KNEE_UNSET));
        assert_int_equal(knee_from_string("right"), KNEE_RIGHT);
        assert_int_equal(knee_from_string("both"), -EINVAL);
}

static void test_runs_followed(void **state) {
        Fixture *f = *state;
        RunRecord *runs = NULL;
        Compliance c;
        size_t n = 0;
        int64_t t0 = local_time("2026-11-16T07:00");
        RunRecord r = { .wrap = WRAP_A, .minutes = 40, .meters = 8000, .source = SOURCE_CLI, .recorded_at = t0 };

        /* Run 1 ends 07:00; a compliant cold session at 07:30 follows it. */
        r.ended_at = t0;
        assert_int_equal(store_run_add(f->s, &r, NULL, NULL), 0);
        put(f->s, session("c0000000-0000-4000-8000-000000000001", WRAP_A, THERAPY_COLD, t0 + 1800, 900, OUTCOME_COMPLETED));
        /* Run 2 ends 12:00; cold pressed at 12:20 is refused (R6): counts against it, with its reason. */
        r.ended_at = t0 + 5 * 3600;
        assert_int_equal(store_run_add(f->s, &r, NULL, NULL), 0);
        put(f->s, session("c0000000-0000-4000-8000-000000000002", WRAP_A, THERAPY_COLD, t0 + 5 * 3600 + 1200, 0, OUTCOME_REFUSED));
        /* Run 3 ends 18:00; cold only at 19:01 (too late), and an incomplete one at 18:10. */
        r.ended_at = t0 + 11 * 3600;
        assert_int_equal(store_run_add(f->s, &r, NULL, NULL), 0);
        put(f->s, session("c0000000-0000-4000-8000-000000000003", WRAP_A, THERAPY_COLD, t0 + 11 * 3600 + 600, 300, OUTCOME_STOPPED_BY_USER));
        put(f->s, session("c0000000-0000-4000-8000-000000000004", WRAP_A, THERAPY_COLD, t0 + 12 * 3600 + 60, 900, OUTCOME_COMPLETED));
        /* Run 4 ends 21:00, followed by heat only. */
        r.ended_at = t0 + 14 * 3600;
        assert_int_equal(store_run_add(f->s, &r, NULL, NULL), 0);
        put(f->s, session("c0000000-0000-4000-8000-000000000005", WRAP_A, THERAPY_HEAT, t0 + 14 * 3600 + 60, 900, OUTCOME_COMPLETED));

        r.minutes = 2000;
        assert_int_equal(store_run_add(f->s, &r, NULL, NULL), -EINVAL);

        assert_int_equal(store_runs_list(f->s, WRAP_A, 0, INT64_MAX, &runs, &n), 0);
        assert_int_equal(n, 4);
        assert_string_equal(runs[0].followed_by, "c0000000-0000-4000-8000-000000000001");
        assert_string_equal(runs[0].cold_press, "");
        assert_string_equal(runs[1].followed_by, "");
        assert_string_equal(runs[1].cold_press, "c0000000-0000-4000-8000-000000000002");
        assert_string_equal(runs[2].followed_by, "");
        assert_string_equal(runs[2].cold_press, "c0000000-0000-4000-8000-000000000003");
        assert_string_equal(runs[3].followed_by, "");
        assert_string_equal(runs[3].cold_press, "");
        assert_int_equal(runs[0].meters, 8000);
        assert_int_equal(runs[0].source, SOURCE_CLI);
        free(runs);

        assert_int_equal(store_compliance(f->s, WRAP_A, t0 - 3600, t0 + 24 * 3600, &c), 0);
        assert_int_equal(c.runs, 4);
        assert_int_equal(c.runs_followed, 1);
        /* A period that holds only the second run. */
        assert_int_equal(store_compliance(f->s, WRAP_A, t0 + 3600, t0 + 6 * 3600, &c), 0);
        assert_int_equal(c.runs, 1);
        assert_int_equal(c.runs_followed, 0);
}

static void test_injuries_list(void **state) {
        Fixture *f = *state;
        InjuryRecord *list = NULL;
        size_t n = 0;

        assert_int_equal(store_injury_add(f->s, WRAP_A, 0, "2026-11-01", 5000), 0);
        assert_int_equal(store_injury_resolve(f->s, WRAP_A, 6000, NULL), 0);
        assert_int_equal(store_injury_add(f->s, WRAP_A, 1800000000, NULL, 7000), 0);
        assert_int_equal(store_injuries_list(f->s, WRAP_A, &list, &n), 0);
        assert_int_equal(n, 2);
        assert_string_equal(list[0].date, "2026-11-01");
        assert_int_equal(list[0].resolved_at, 6000);
        assert_string_equal(list[1].date, "");
        assert_int_equal(list[1].at, 1800000000);
        assert_int_equal(list[1].resolved_at, 0);
        free(list);
}

/* ---- the change history, in the change's own transaction ---- */

static AuditRecord audit_of(const char *wrap, const char *what, const char *detail) {
        AuditRecord a = { .at = 7000, .source = SOURCE_DBUS, .uid = 1000 };

        snprintf(a.wrap, sizeof a.wrap, "%s", wrap ? wrap : "");
        snprintf(a.what, sizeof a.what, "%s", what);
        snprintf(a.detail, sizeof a.detail, "%s", detail);
        return a;
}

static size_t audit_count(Fixture *f) {
        AuditRecord *list = NULL;
        size_t n = 0;

        assert_int_equal(store_audit_list(f->s, NULL, &list, &n), 0);
        free(list);
        return n;
}

static size_t injury_count(Fixture *f, bool open_only) {
        InjuryRecord *list = NULL;
        size_t n = 0, k = 0;

        assert_int_equal(store_injuries_list(f->s, WRAP_A, &list, &n), 0);
        for (size_t i = 0; i < n; i++)
                k += !open_only || list[i].resolved_at == 0;
        free(list);
        return k;
}

/*
 * Each change and its history row are one transaction: when the row cannot be written (here a
 * trigger another connection adds refuses it, after the change's own statement ran), the
 * change is rolled back with it, and the store is as before. Then both go in together.
 */
static void test_audit_in_change_transaction(void **state) {
        Fixture *f = *state;
        RulesTime rec = { .wall = 6000, .wall_ok = true };
        RulesPrescription def, rx, got;
        AuditRecord a, bad = { .source = SOURCE_MQTT };
        StoredWrap sw;
        bool prescribed;

        rules_prescription_default(&def);
        rx = def;
        rx.cold_s = 720;
        assert_int_equal(store_injury_add_stamped(f->s, WRAP_A, 0, "2026-11-01", &rec, NULL, NULL), 0);
        assert_int_equal(store_prescription_set(f->s, WRAP_A, &rx, 5000, NULL), 0);
        assert_int_equal(audit_count(f), 0);

        /* A history row that is not valid: nothing changes. */
        rx.cold_s = 780;
        assert_int_equal(store_prescription_set(f->s, WRAP_A, &rx, 5001, &bad), -EINVAL);
        assert_int_equal(store_prescription_get(f->s, WRAP_A, &def, &got, NULL), 0);
        assert_int_equal(got.cold_s, 720);

        raw_exec(f->path, "CREATE TRIGGER refuse_history BEFORE INSERT ON audit BEGIN "
                          "SELECT RAISE(ABORT, 'no history today'); END");
        a = audit_of(WRAP_A, "prescription", "cold_s=780");
        assert_true(store_prescription_set(f->s, WRAP_A, &rx, 5001, &a) < 0);
        assert_non_null(strstr(store_errmsg(f->s), "no history today"));
        assert_int_equal(store_prescription_get(f->s, WRAP_A, &def, &got, &prescribed), 0);
        assert_int_equal(got.cold_s, 720);
        a = audit_of(WRAP_A, "prescription_cleared", "");
        assert_true(store_prescription_clear(f->s, WRAP_A, &a) < 0);
        assert_int_equal(store_prescription_get(f->s, WRAP_A, &def, &got, &prescribed), 0);
        assert_true(prescribed);
        a = audit_of(WRAP_A, "injury", "2026-11-20");
        assert_true(store_injury_add_stamped(f->s, WRAP_A, 0, "2026-11-20", &rec, NULL, &a) < 0);
        assert_int_equal(injury_count(f, false), 1);
        a = audit_of(WRAP_A, "injury_resolved", "");
        assert_true(store_injury_resolve(f->s, WRAP_A, 6500, &a) < 0);
        assert_int_equal(injury_count(f, true), 1);
        a = audit_of(WRAP_A, "removal", "");
        assert_true(store_wrap_remove(f->s, WRAP_A, &a) < 0);
        assert_int_equal(store_wrap_get(f->s, WRAP_A, &sw), 0);
        a = audit_of(NULL, "adoption", "open 60 s");
        assert_true(store_audit_add(f->s, &a) < 0);
        assert_int_equal(audit_count(f), 0);

        /* The history takes rows again: each change goes in with its row. */
        raw_exec(f->path, "DROP TRIGGER refuse_history");
        a = audit_of(WRAP_A, "prescription", "cold_s=780");
        assert_int_equal(store_prescription_set(f->s, WRAP_A, &rx, 5001, &a), 0);
        assert_int_equal(store_prescription_get(f->s, WRAP_A, &def, &got, NULL), 0);
        assert_int_equal(got.cold_s, 780);
        a = audit_of(WRAP_A, "injury", "2026-11-20");
        a.source = SOURCE_MQTT;
        a.uid = -1;
        snprintf(a.topic, sizeof a.topic, "kneewrap/%s/set", WRAP_A);
        snprintf(a.claimed_client, sizeof a.claimed_client, "nurse-app");
        assert_int_equal(store_injury_add_stamped(f->s, WRAP_A, 0, "2026-11-20", &rec, NULL, &a), 0);
        {
                AuditRecord *list = NULL;
                size_t n = 0;

                assert_int_equal(store_audit_list(f->s, WRAP_A, &list, &n), 0);
                assert_int_equal(n, 2);
                assert_string_equal(list[0].topic, "");
                assert_string_equal(list[0].claimed_client, "");
                assert_int_equal(list[0].uid, 1000);
                assert_int_equal(list[1].source, SOURCE_MQTT);
                assert_int_equal(list[1].uid, -1);
                assert_string_equal(list[1].topic, "kneewrap/" WRAP_A "/set");
                assert_string_equal(list[1].claimed_client, "nurse-app");
                free(list);
        }
        a = audit_of(WRAP_A, "injury_resolved", "");
        assert_int_equal(store_injury_resolve(f->s, WRAP_A, 6500, &a), 0);
        assert_int_equal(injury_count(f, true), 0);
        a = audit_of(WRAP_A, "prescription_cleared", "");
        assert_int_equal(store_prescription_clear(f->s, WRAP_A, &a), 0);
        a = audit_of(WRAP_A, "removal", "");
        assert_int_equal(store_wrap_remove(f->s, WRAP_A, &a), 0);
        assert_int_equal(store_wrap_get(f->s, WRAP_A, &sw), -ENOENT);
        assert_int_equal(audit_count(f), 5);
        /* A change that does not happen writes no row either. */
        a = audit_of(WRAP_A, "injury_resolved", "");
        assert_int_equal(store_injury_resolve(f->s, WRAP_A, 6600, &a), -ENOENT);
        assert_int_equal(audit_count(f), 5);
}

/* ---- a full disk ---- */

/* A private mount namespace, so the small tmpfs is seen by this test process only. */
static int private_mounts(void) {
        if (unshare(CLONE_NEWNS) < 0) {
                char map[64];
                uid_t uid = getuid();
                gid_t gid = getgid();
                int fd;

                if (unshare(CLONE_NEWUSER | CLONE_NEWNS) < 0)
                        return -errno;
                fd = open("/proc/self/setgroups", O_WRONLY);
                if (fd >= 0) {
                        (void) !write(fd, "deny", 4);
                        close(fd);
                }
                snprintf(map, sizeof(map), "0 %u 1", (unsigned) uid);
                fd = open("/proc/self/uid_map", O_WRONLY);
                if (fd < 0 || write(fd, map, strlen(map)) < 0)
                        return -errno;
                close(fd);
                snprintf(map, sizeof(map), "0 %u 1", (unsigned) gid);
                fd = open("/proc/self/gid_map", O_WRONLY);
                if (fd < 0 || write(fd, map, strlen(map)) < 0)
                        return -errno;
                close(fd);
        }
        if (mount(NULL, "/", NULL, MS_REC | MS_PRIVATE, NULL) < 0)
                return -errno;
        return 0;
}

static void test_full_disk(void **state) {
        Fixture *f = *state;
        char mnt[96], filler[128];
        SessionRecord r, got;
        char ids[8][UUID_STR_MAX];
        char big[16384];
        int fd, k;

        k = private_mounts();
        snprintf(mnt, sizeof(mnt), "%s/small", f->dir);
        assert_int_equal(mkdir(mnt, 0700), 0);
        if (k >= 0 && mount("tmpfs", mnt, "tmpfs", 0, "size=1m,mode=0700") < 0)
                k = -errno;
        if (k < 0) {
                fprintf(stderr, "SKIP test_full_disk: cannot mount a small tmpfs (%s); "
                        "needs root or user namespaces\n", strerror(-k));
                skip();
        }
        snprintf(f->path, sizeof(f->path), "%s/kneewrap.db", mnt);
        snprintf(filler, sizeof(filler), "%s/filler", mnt);

        assert_int_equal(store_open(f->path, &f->s), 0);
        assert_int_equal(store_wrap_add(f->s, ADDR_A, "Left knee", 1000), 0);
        for (int i = 0; i < 5; i++) {
                assert_int_equal(uuid_generate_str(ids[i]), 0);
                r = session(ids[i], WRAP_A, THERAPY_COLD, 10000 + i * 5000, 900, OUTCOME_COMPLETED);
                assert_int_equal(store_session_put(f->s, &r, NULL), 0);
        }

        /* Another program fills the disk. */
        fd = open(filler, O_WRONLY | O_CREAT | O_TRUNC, 0600);
        assert_true(fd >= 0);
        memset(big, 'x', sizeof(big));
        for (;;) {
                ssize_t w = write(fd, big, sizeof(big));
                if (w < 0) {
                        assert_int_equal(errno, ENOSPC);
                        break;
                }
                if (w < (ssize_t) sizeof(big)) {
                        assert_int_equal(write(fd, big, 1), -1);
                        assert_int_equal(errno, ENOSPC);
                        break;
                }
        }
        close(fd);

        memset(big, 'p', sizeof(big) - 1);
        big[sizeof(big) - 1] = '\0';
        OutboxMsg m = { .topic = (char *) "kneewrap/session", .payload = big, .qos = 1 };
        assert_int_equal(uuid_generate_str(ids[5]), 0);
        r = session(ids[5], WRAP_A, THERAPY_COLD, 50000, 900, OUTCOME_COMPLETED);
        assert_int_equal(store_session_put(f->s, &r, &m), -ENOSPC);
        assert_int_equal(m.id, 0);
        assert_true(strlen(store_errmsg(f->s)) > 0);
        assert_int_equal(store_check(f->s), -ENOSPC);
        /* Reads still work, and nothing half-written is visible. */
        assert_int_equal(store_session_get(f->s, ids[0], &got), 0);
        assert_int_equal(store_session_get(f->s, ids[5], &got), -ENOENT);

        /* Room again: the probe says so, and the write goes through. */
        assert_int_equal(unlink(filler), 0);
        assert_int_equal(store_check(f->s), 0);
        assert_int_equal(store_session_put(f->s, &r, &m), 0);
        assert_true(m.id > 0);
        f->s = store_close(f->s);

        assert_int_equal(store_open(f->path, &f->s), 0);
        for (int i = 0; i < 6; i++) {
                assert_int_equal(store_session_get(f->s, ids[i], &got), 0);
                assert_int_equal(got.duration_s, 900);
                assert_int_equal(got.outcome, OUTCOME_COMPLETED);
        }
        uint64_t depth;
        assert_int_equal(store_outbox_depth(f->s, &depth), 0);
        assert_int_equal(depth, 1);
        f->s = store_close(f->s);
        assert_int_equal(umount2(mnt, MNT_DETACH), 0);
}

/*
 * A file-size limit (RLIMIT_FSIZE, what LimitFSIZE= sets; the faults suite's "full disk"
 * without root) makes SQLite's writes fail with EFBIG, which SQLite reports as a disk I/O
 * error, not SQLITE_FULL: the store still says "no room" (-ENOSPC), never "corrupt" (-EUCLEAN),
 * and works again, with nothing lost, when the limit goes.
 */
static void test_file_size_limit(void **state) {
        Fixture *f = *state;
        struct rlimit old, lim;
        SessionRecord r, got;
        char ids[40][UUID_STR_MAX];
        char big[16384];
        void (*old_handler)(int);
        struct stat st;
        int k = 0, rr;

        for (int i = 0; i < 3; i++) {
                assert_int_equal(uuid_generate_str(ids[i]), 0);
                r = session(ids[i], WRAP_A, THERAPY_COLD, 10000 + i * 5000, 900, OUTCOME_COMPLETED);
                assert_int_equal(store_session_put(f->s, &r, NULL), 0);
        }
        k = 3;
        assert_int_equal(getrlimit(RLIMIT_FSIZE, &old), 0);
        old_handler = signal(SIGXFSZ, SIG_IGN);
        {
                char wal[160];
                off_t size = 0;

                snprintf(wal, sizeof wal, "%s-wal", f->path);
                if (stat(f->path, &st) == 0)
                        size = st.st_size;
                if (stat(wal, &st) == 0 && st.st_size > size)
                        size = st.st_size;
                lim = (struct rlimit) { .rlim_cur = (rlim_t) size, .rlim_max = old.rlim_max };
        }
        assert_int_equal(setrlimit(RLIMIT_FSIZE, &lim), 0);

        memset(big, 'p', sizeof(big) - 1);
        big[sizeof(big) - 1] = '\0';
        OutboxMsg m = { .topic = (char *) "kneewrap/session", .payload = big, .qos = 1 };
        /* Until the files have to grow, writes go into their free pages. */
        do {
                assert_true(k < 40);
                assert_int_equal(uuid_generate_str(ids[k]), 0);
                r = session(ids[k], WRAP_A, THERAPY_COLD, 10000 + k * 5000, 900, OUTCOME_COMPLETED);
                m.id = 0;
                rr = store_session_put(f->s, &r, &m);
                if (rr == 0)
                        k++;
        } while (rr == 0);
        assert_int_equal(rr, -ENOSPC);
        assert_int_equal(store_check(f->s), -ENOSPC);
        assert_int_equal(store_session_get(f->s, ids[k], &got), -ENOENT);

        /* Room again: the probe says so, the write goes through, and nothing was lost. */
        assert_int_equal(setrlimit(RLIMIT_FSIZE, &old), 0);
        (void) signal(SIGXFSZ, old_handler);
        assert_int_equal(store_check(f->s), 0);
        assert_int_equal(store_session_put(f->s, &r, &m), 0);
        f->s = store_close(f->s);
        assert_int_equal(store_open(f->path, &f->s), 0);
        for (int i = 0; i <= k; i++)
                assert_int_equal(store_session_get(f->s, ids[i], &got), 0);
}

/* ---- SIGKILL ---- */

#define KILL_AFTER 40

static void sigkill_child(const char *path, int wfd) {
        Store *s = NULL;

        if (store_open(path, &s) < 0)
                _exit(2);
        for (int i = 0; i < 100000; i++) {
                char line[64];
                SessionRecord r = session("", WRAP_A, THERAPY_COLD, 100000 + i, 600 + (uint32_t) i % 300,
                                          OUTCOME_COMPLETED);
                OutboxMsg m = { .topic = (char *) "kneewrap/session", .payload = (char *) "{}", .qos = 1 };

                if (uuid_generate_str(r.session_id) < 0)
                        _exit(3);
                skin_stats_add(&r.skin, 1000 + i);
                if (store_session_put(s, &r, &m) < 0)
                        _exit(4);
                /* Only now, committed, is the id reported. */
                snprintf(line, sizeof(line), "%s %d\n", r.session_id, i);
                if (write(wfd, line, strlen(line)) != (ssize_t) strlen(line))
                        _exit(5);
        }
        _exit(0);
}

static void test_sigkill_durability(void **state) {
        Fixture *f = *state;
        char buf[64 * 1024];
        size_t len = 0;
        int p[2], status, reported = 0;
        pid_t pid;
        FILE *in;
        char id[UUID_STR_MAX];
        int i;

        f->s = store_close(f->s);   /* the wrap was added by setup_open */
        assert_int_equal(pipe(p), 0);
        pid = fork();
        assert_true(pid >= 0);
        if (pid == 0) {
                close(p[0]);
                sigkill_child(f->path, p[1]);
        }
        close(p[1]);

        /* Let it commit KILL_AFTER sessions, then kill it mid-stream. */
        while (len < sizeof(buf)) {
                ssize_t k = read(p[0], buf + len, sizeof(buf) - len);
                assert_true(k > 0);
                len += (size_t) k;
                int lines = 0;
                for (size_t j = 0; j < len; j++)
                        lines += buf[j] == '\n';
                if (lines >= KILL_AFTER)
                        break;
        }
        /* A moment later, so the signal can land inside a transaction, not only between. */
        usleep((useconds_t) (getpid() % 4000));
        assert_int_equal(kill(pid, SIGKILL), 0);
        assert_int_equal(waitpid(pid, &status, 0), pid);
        assert_true(WIFSIGNALED(status));
        assert_int_equal(WTERMSIG(status), SIGKILL);

        /* Whatever it reported after we stopped reading is in the pipe still. */
        for (;;) {
                ssize_t k = read(p[0], buf + len, sizeof(buf) - 1 - len);
                assert_true(k >= 0);
                if (k == 0)
                        break;
                len += (size_t) k;
        }
        close(p[0]);
        buf[len] = '\0';

        assert_int_equal(store_open(f->path, &f->s), 0);
        in = fmemopen(buf, len, "r");
        assert_non_null(in);
        while (fscanf(in, "%36s %d", id, &i) == 2) {
                SessionRecord got;

                assert_int_equal(store_session_get(f->s, id, &got), 0);
                assert_int_equal(got.requested_at, 100000 + i);
                assert_int_equal(got.duration_s, 600 + (uint32_t) i % 300);
                assert_int_equal(got.outcome, OUTCOME_COMPLETED);
                assert_true(got.compliant);
                assert_int_equal(got.skin.n, 1);
                assert_int_equal(got.skin.min, 1000 + i);
                reported++;
        }
        fclose(in);
        assert_true(reported >= KILL_AFTER);

        /* Every committed session brought its outbox message; nothing is half there. */
        uint64_t depth;
        SessionRecord *list = NULL;
        size_t n = 0;
        assert_int_equal(store_outbox_depth(f->s, &depth), 0);
        assert_int_equal(store_sessions_list(f->s, WRAP_A, 0, INT64_MAX, &list, &n), 0);
        assert_int_equal(depth, n);
        /* At most the one being written when the signal came was not yet reported. */
        assert_true(n == (size_t) reported || n == (size_t) reported + 1);
        free(list);
        assert_int_equal(store_check(f->s), 0);
        fprintf(stderr, "sigkill: %d sessions reported, %zu on disk\n", reported, n);
}

int main(void) {
        const struct CMUnitTest tests[] = {
                cmocka_unit_test_setup_teardown(test_open_migrate_reopen, setup, teardown),
                cmocka_unit_test_setup_teardown(test_newer_schema_refused, setup, teardown),
                cmocka_unit_test_setup_teardown(test_not_a_store, setup, teardown),
                cmocka_unit_test_setup_teardown(test_corrupt_file, setup, teardown),
                cmocka_unit_test_setup_teardown(test_unreadable, setup, teardown),
                cmocka_unit_test_setup_teardown(test_busy, setup_open, teardown),
                cmocka_unit_test_setup_teardown(test_wraps, setup, teardown),
                cmocka_unit_test_setup_teardown(test_prescription, setup_open, teardown),
                cmocka_unit_test_setup_teardown(test_rules_state, setup_open, teardown),
                cmocka_unit_test_setup_teardown(test_date_only_injury_berlin, setup_open, teardown),
                cmocka_unit_test_setup_teardown(test_sessions, setup_open, teardown),
                cmocka_unit_test_setup_teardown(test_diary_alerts, setup_open, teardown),
                cmocka_unit_test_setup_teardown(test_after_2038, setup_open, teardown),
                cmocka_unit_test_setup_teardown(test_outbox, setup_open, teardown),
                cmocka_unit_test_setup_teardown(test_compliance, setup_open, teardown),
                cmocka_unit_test_setup_teardown(test_migrate_alerts_from_v1, setup, teardown),
                cmocka_unit_test_setup_teardown(test_alert_records, setup_open, teardown),
                cmocka_unit_test_setup_teardown(test_profile_and_device_info, setup_open, teardown),
                cmocka_unit_test_setup_teardown(test_uplink_changes, setup_open, teardown),
                cmocka_unit_test_setup_teardown(test_runs_followed, setup_open, teardown),
                cmocka_unit_test_setup_teardown(test_injuries_list, setup_open, teardown),
                cmocka_unit_test_setup_teardown(test_audit_in_change_transaction, setup_open, teardown),
                cmocka_unit_test_setup_teardown(test_sigkill_durability, setup_open, teardown),
                /* Last: it moves this process into a private mount namespace. */
                cmocka_unit_test_setup_teardown(test_file_size_limit, setup_open, teardown),
                cmocka_unit_test_setup_teardown(test_full_disk, setup, teardown),
        };

        return cmocka_run_group_tests(tests, NULL, NULL);
}
