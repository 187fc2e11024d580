/* schema: the store's history of schema steps; user_version N means steps 1..N ran. */
#include <stddef.h>

#include "schema.h"
#include "util.h"

/*
 * Never edit a step that has shipped: append a new one. Each runs inside the one
 * transaction that store_open() takes to migrate, so a database is always at a whole
 * version. CHECK constraints hold the same bounds as rules.h as literals on purpose: a
 * step is history, and must mean the same thing when a macro later changes.
 */
static const char *const schema_step1[] = {
        "CREATE TABLE meta (\n"
        "        id INTEGER PRIMARY KEY CHECK (id = 1),\n"
        "        created_at INTEGER NOT NULL,\n"
        "        probe INTEGER NOT NULL DEFAULT 0\n"
        ");\n",
        "INSERT INTO meta (id, created_at) VALUES (1, CAST(strftime('%s', 'now') AS INTEGER));\n",

        "CREATE TABLE wraps (\n"
        "        id TEXT PRIMARY KEY NOT NULL CHECK (length(id) BETWEEN 1 AND 31),\n"
        "        address TEXT NOT NULL UNIQUE CHECK (length(address) = 17),\n"
        "        name TEXT NOT NULL DEFAULT '' CHECK (length(CAST(name AS BLOB)) < 64),\n"
        "        adopted_at INTEGER NOT NULL,\n"
        "        removed_at INTEGER\n"
        ");\n",

        "CREATE TABLE injuries (\n"
        "        id INTEGER PRIMARY KEY,\n"
        "        wrap TEXT NOT NULL REFERENCES wraps (id),\n"
        "        at INTEGER NOT NULL,\n"
        "        date TEXT CHECK (date IS NULL OR date GLOB '[0-9][0-9][0-9][0-9]-[0-1][0-9]-[0-3][0-9]'),\n"
        "        recorded_at INTEGER NOT NULL,\n"
        "        resolved_at INTEGER\n"
        ");\n",
        "CREATE INDEX injuries_open ON injuries (wrap) WHERE resolved_at IS NULL;\n",

        "CREATE TABLE prescriptions (\n"
        "        wrap TEXT PRIMARY KEY NOT NULL REFERENCES wraps (id),\n"
        "        cold_s INTEGER NOT NULL CHECK (cold_s BETWEEN 600 AND 900),\n"
        "        cold_setpoint INTEGER NOT NULL CHECK (cold_setpoint BETWEEN 800 AND 1500),\n"
        "        heat_s INTEGER NOT NULL CHECK (heat_s BETWEEN 60 AND 1200),\n"
        "        heat_setpoint INTEGER NOT NULL CHECK (heat_setpoint BETWEEN 3800 AND 4200),\n"
        "        heat_wait_s INTEGER NOT NULL CHECK (heat_wait_s BETWEEN 604800 AND 31536000),\n"
        "        cold_rest_s INTEGER NOT NULL CHECK (cold_rest_s BETWEEN 3600 AND 86400),\n"
        "        set_at INTEGER NOT NULL\n"
        ");\n",

        "CREATE TABLE sessions (\n"
        "        session_id TEXT PRIMARY KEY NOT NULL CHECK (length(session_id) BETWEEN 1 AND 36),\n"
        "        wrap TEXT NOT NULL REFERENCES wraps (id),\n"
        "        mode TEXT NOT NULL CHECK (mode IN ('cold', 'heat')),\n"
        "        source TEXT NOT NULL CHECK (source IN ('button', 'mqtt', 'cli', 'dbus')),\n"
        "        requested_at INTEGER NOT NULL,\n"
        "        started_at INTEGER,\n"
        "        ended_at INTEGER,\n"
        "        prescribed_s INTEGER NOT NULL CHECK (prescribed_s >= 0),\n"
        "        duration_s INTEGER NOT NULL CHECK (duration_s >= 0),\n"
        "        outcome TEXT NOT NULL CHECK (outcome IN ('open', 'completed', 'stopped_by_user',\n"
        "                'stopped_for_safety', 'interrupted', 'refused', 'not_started')),\n"
        "        compliant INTEGER NOT NULL CHECK (compliant IN (0, 1)),\n"
        "        refusal TEXT CHECK (refusal IS NULL OR refusal IN ('heat_too_soon', 'rest_interval',\n"
        "                'session_active', 'store_unavailable', 'other')),\n"
        "        minutes_left INTEGER NOT NULL DEFAULT 0 CHECK (minutes_left BETWEEN 0 AND 65535),\n"
        "        skin_n INTEGER NOT NULL DEFAULT 0 CHECK (skin_n >= 0),\n"
        "        skin_min INTEGER,\n"
        "        skin_max INTEGER,\n"
        "        skin_sum INTEGER NOT NULL DEFAULT 0,\n"
        "        days_since_injury INTEGER CHECK (days_since_injury IS NULL OR days_since_injury >= 0),\n"
        "        setpoint INTEGER NOT NULL,\n"
        "        start_result INTEGER NOT NULL DEFAULT 0 CHECK (start_result BETWEEN 0 AND 255),\n"
        /* R7: compliance counts trust this column, so it cannot claim what did not happen. */
        "        CHECK (compliant = 0 OR (mode = 'cold' AND duration_s >= 600)),\n"
        "        CHECK ((skin_n = 0) = (skin_min IS NULL) AND (skin_min IS NULL) = (skin_max IS NULL))\n"
        ");\n",
        "CREATE INDEX sessions_wrap_requested ON sessions (wrap, requested_at);\n",
        "CREATE INDEX sessions_requested ON sessions (requested_at);\n",
        "CREATE INDEX sessions_wrap_cold_end ON sessions (wrap, ended_at) WHERE mode = 'cold';\n",
        "CREATE INDEX sessions_open ON sessions (requested_at) WHERE outcome = 'open';\n",

        "CREATE TABLE diary (\n"
        "        id INTEGER PRIMARY KEY,\n"
        "        wrap TEXT NOT NULL REFERENCES wraps (id),\n"
        "        at INTEGER NOT NULL,\n"
        "        score INTEGER NOT NULL CHECK (score BETWEEN 0 AND 10),\n"
        "        location TEXT NOT NULL CHECK (location IN ('front', 'inner', 'outer', 'back', 'below')),\n"
        "        flags INTEGER NOT NULL DEFAULT 0 CHECK (flags BETWEEN 0 AND 15)\n"
        ");\n",
        "CREATE INDEX diary_wrap_at ON diary (wrap, at);\n",

        "CREATE TABLE alerts (\n"
        "        id INTEGER PRIMARY KEY,\n"
        "        wrap TEXT NOT NULL REFERENCES wraps (id),\n"
        "        kind TEXT NOT NULL CHECK (kind IN ('see_physio', 'see_physio_overdue', 'red_flag', 'safety_stop')),\n"
        "        at INTEGER NOT NULL\n"
        ");\n",
        "CREATE INDEX alerts_wrap_at ON alerts (wrap, at);\n",

        /* AUTOINCREMENT: an id is never reused, even after the newest row was acked. */
        "CREATE TABLE outbox (\n"
        "        id INTEGER PRIMARY KEY AUTOINCREMENT,\n"
        "        topic TEXT NOT NULL CHECK (length(topic) > 0),\n"
        "        payload TEXT NOT NULL,\n"
        "        qos INTEGER NOT NULL CHECK (qos BETWEEN 0 AND 2),\n"
        "        retain INTEGER NOT NULL CHECK (retain IN (0, 1)),\n"
        "        created_at INTEGER NOT NULL\n"
        ");\n",
        NULL,
};

/*
 * 2: what a clinic reads. Alerts become records a person acknowledges, with a text and two
 * more kinds (the table is rebuilt: SQLite cannot change a CHECK; AUTOINCREMENT so an
 * alert's id, which names it in FHIR, is never reused); runs; the patient profile; the
 * wrap's Device Information.
 */
static const char *const schema_step2[] = {
        "CREATE TABLE alerts2 (\n"
        "        id INTEGER PRIMARY KEY AUTOINCREMENT,\n"
        "        wrap TEXT NOT NULL REFERENCES wraps (id),\n"
        "        kind TEXT NOT NULL CHECK (kind IN ('see_physio', 'see_physio_overdue', 'red_flag',\n"
        "                'safety_stop', 'low_battery', 'heat_first_week')),\n"
        "        at INTEGER NOT NULL,\n"
        "        text TEXT NOT NULL DEFAULT '' CHECK (length(CAST(text AS BLOB)) < 256),\n"
        "        acked_at INTEGER\n"
        ");\n",
        "INSERT INTO alerts2 (id, wrap, kind, at) SELECT id, wrap, kind, at FROM alerts;\n",
        "DROP TABLE alerts;\n",
        "ALTER TABLE alerts2 RENAME TO alerts;\n",
        "CREATE INDEX alerts_wrap_at ON alerts (wrap, at);\n",

        "CREATE TABLE runs (\n"
        "        id INTEGER PRIMARY KEY AUTOINCREMENT,\n"
        "        wrap TEXT NOT NULL REFERENCES wraps (id),\n"
        "        ended_at INTEGER NOT NULL,\n"
        "        minutes INTEGER NOT NULL DEFAULT 0 CHECK (minutes BETWEEN 0 AND 1440),\n"
        "        meters INTEGER NOT NULL DEFAULT 0 CHECK (meters BETWEEN 0 AND 1000000),\n"
        "        source TEXT NOT NULL CHECK (source IN ('button', 'mqtt', 'cli', 'dbus')),\n"
        "        recorded_at INTEGER NOT NULL\n"
        ");\n",
        "CREATE INDEX runs_wrap_ended ON runs (wrap, ended_at);\n",

        "CREATE TABLE patients (\n"
        "        wrap TEXT PRIMARY KEY NOT NULL REFERENCES wraps (id),\n"
        "        label TEXT NOT NULL DEFAULT '' CHECK (length(CAST(label AS BLOB)) < 64),\n"
        "        knee TEXT CHECK (knee IS NULL OR knee IN ('left', 'right')),\n"
        "        clinic_ref TEXT NOT NULL DEFAULT '' CHECK (length(CAST(clinic_ref AS BLOB)) < 64),\n"
        "        set_at INTEGER NOT NULL\n"
        ");\n",

        "CREATE TABLE device_info (\n"
        "        wrap TEXT PRIMARY KEY NOT NULL REFERENCES wraps (id),\n"
        "        manufacturer TEXT NOT NULL DEFAULT '' CHECK (length(CAST(manufacturer AS BLOB)) < 64),\n"
        "        model TEXT NOT NULL DEFAULT '' CHECK (length(CAST(model AS BLOB)) < 64),\n"
        "        serial TEXT NOT NULL DEFAULT '' CHECK (length(CAST(serial AS BLOB)) < 64),\n"
        "        firmware TEXT NOT NULL DEFAULT '' CHECK (length(CAST(firmware AS BLOB)) < 64),\n"
        "        read_at INTEGER NOT NULL\n"
        ");\n",
        NULL,
};

/*
 * R10 (issue 8): every session is stamped as the journal stamps its entries (the boot id and
 * CLOCK_BOOTTIME beside the wall clock, and whether that clock was synchronised), and may be
 * refused as clock_unsynced. SQLite cannot change a CHECK in place, so sessions is rebuilt
 * with its rowids (their order is the order things happened, whatever the clock said).
 * Older rows get clock_synced 0: nobody knows what their clock was.
 */
static const char *const schema_step3[] = {
        "CREATE TABLE sessions_r10 (\n"
        "        session_id TEXT PRIMARY KEY NOT NULL CHECK (length(session_id) BETWEEN 1 AND 36),\n"
        "        wrap TEXT NOT NULL REFERENCES wraps (id),\n"
        "        mode TEXT NOT NULL CHECK (mode IN ('cold', 'heat')),\n"
        "        source TEXT NOT NULL CHECK (source IN ('button', 'mqtt', 'cli', 'dbus')),\n"
        "        requested_at INTEGER NOT NULL,\n"
        "        started_at INTEGER,\n"
        "        ended_at INTEGER,\n"
        "        prescribed_s INTEGER NOT NULL CHECK (prescribed_s >= 0),\n"
        "        duration_s INTEGER NOT NULL CHECK (duration_s >= 0),\n"
        "        outcome TEXT NOT NULL CHECK (outcome IN ('open', 'completed', 'stopped_by_user',\n"
        "                'stopped_for_safety', 'interrupted', 'refused', 'not_started')),\n"
        "        compliant INTEGER NOT NULL CHECK (compliant IN (0, 1)),\n"
        "        refusal TEXT CHECK (refusal IS NULL OR refusal IN ('heat_too_soon', 'rest_interval',\n"
        "                'session_active', 'store_unavailable', 'other', 'clock_unsynced')),\n"
        "        minutes_left INTEGER NOT NULL DEFAULT 0 CHECK (minutes_left BETWEEN 0 AND 65535),\n"
        "        skin_n INTEGER NOT NULL DEFAULT 0 CHECK (skin_n >= 0),\n"
        "        skin_min INTEGER,\n"
        "        skin_max INTEGER,\n"
        "        skin_sum INTEGER NOT NULL DEFAULT 0,\n"
        "        days_since_injury INTEGER CHECK (days_since_injury IS NULL OR days_since_injury >= 0),\n"
        "        setpoint INTEGER NOT NULL,\n"
        "        start_result INTEGER NOT NULL DEFAULT 0 CHECK (start_result BETWEEN 0 AND 255),\n"
        "        clock_synced INTEGER NOT NULL DEFAULT 0 CHECK (clock_synced IN (0, 1)),\n"
        "        boot_id TEXT CHECK (boot_id IS NULL OR length(boot_id) = 36),\n"
        "        requested_boot INTEGER CHECK (requested_boot IS NULL OR requested_boot >= 0),\n"
        "        started_boot INTEGER CHECK (started_boot IS NULL OR started_boot >= 0),\n"
        "        ended_boot INTEGER CHECK (ended_boot IS NULL OR ended_boot >= 0),\n"
        "        CHECK (compliant = 0 OR (mode = 'cold' AND duration_s >= 600)),\n"
        "        CHECK ((skin_n = 0) = (skin_min IS NULL) AND (skin_min IS NULL) = (skin_max IS NULL))\n"
        ");\n",
        "INSERT INTO sessions_r10 (rowid, session_id, wrap, mode, source, requested_at, started_at, ended_at,\n"
        "        prescribed_s, duration_s, outcome, compliant, refusal, minutes_left, skin_n, skin_min, skin_max,\n"
        "        skin_sum, days_since_injury, setpoint, start_result)\n"
        "SELECT rowid, session_id, wrap, mode, source, requested_at, started_at, ended_at,\n"
        "        prescribed_s, duration_s, outcome, compliant, refusal, minutes_left, skin_n, skin_min, skin_max,\n"
        "        skin_sum, days_since_injury, setpoint, start_result FROM sessions ORDER BY rowid;\n",
        "DROP TABLE sessions;\n",
        "ALTER TABLE sessions_r10 RENAME TO sessions;\n",
        "CREATE INDEX sessions_wrap_requested ON sessions (wrap, requested_at);\n",
        "CREATE INDEX sessions_requested ON sessions (requested_at);\n",
        "CREATE INDEX sessions_wrap_cold_end ON sessions (wrap, ended_at) WHERE mode = 'cold';\n",
        "CREATE INDEX sessions_open ON sessions (requested_at) WHERE outcome = 'open';\n",
        "CREATE INDEX sessions_unsynced ON sessions (boot_id) WHERE clock_synced = 0;\n",
        /* R6 and R4 read a wrap's last sessions of a mode in the order they were recorded:
         * (wrap, mode, rowid), backwards, without a sort. */
        "CREATE INDEX sessions_wrap_mode ON sessions (wrap, mode);\n",

        /* An injury entered as "today" or "now" while the clock is not trusted counts from that
         * moment (its boot stamp) and gets its date once the clock is synchronised (pending). */
        "ALTER TABLE injuries ADD COLUMN clock_synced INTEGER NOT NULL DEFAULT 1 CHECK (clock_synced IN (0, 1));\n",
        "ALTER TABLE injuries ADD COLUMN boot_id TEXT CHECK (boot_id IS NULL OR length(boot_id) = 36);\n",
        "ALTER TABLE injuries ADD COLUMN recorded_boot INTEGER CHECK (recorded_boot IS NULL OR recorded_boot >= 0);\n",
        "ALTER TABLE injuries ADD COLUMN pending TEXT CHECK (pending IS NULL OR pending IN ('today', 'now'));\n",
        NULL,
};

/*
 * 4: the clinic uplink's change sequence. Every write of a record that goes to the clinic
 * (a wrap: its Patient and Device; a finished session; a diary entry; an alert) gives that record
 * the next seq, so "the highest seq the server confirmed" is a complete cursor: a record
 * corrected later (R10) moves past the cursor again and is sent again, as an update (rev
 * counts the writes). One row per record, whatever the number of corrections. The daemon
 * is the only writer and SQLite serialises writers, so seq grows in commit order and a
 * reader never sees a lower seq appear behind a higher one it already read.
 */
#define UPLINK_BUMP(kind, key) \
        "        INSERT INTO uplink_changes (seq, kind, key) " \
        "SELECT coalesce(max(seq), 0) + 1, '" kind "', " key " FROM uplink_changes WHERE true " \
        "ON CONFLICT (kind, key) DO UPDATE SET seq = excluded.seq, rev = rev + 1;\n"

static const char *const schema_step4[] = {
        "CREATE TABLE uplink_changes (\n"
        "        seq INTEGER NOT NULL UNIQUE CHECK (seq > 0),\n"
        "        kind TEXT NOT NULL CHECK (kind IN ('wrap', 'session', 'diary', 'alert')),\n"
        "        key TEXT NOT NULL,\n"
        "        rev INTEGER NOT NULL DEFAULT 1 CHECK (rev > 0),\n"
        "        PRIMARY KEY (kind, key)\n"
        ") WITHOUT ROWID;\n",
        /* An open session is not a record yet: it is never published. */
        "CREATE TRIGGER uplink_session_insert AFTER INSERT ON sessions WHEN NEW.outcome <> 'open' BEGIN\n"
        UPLINK_BUMP("session", "NEW.session_id")
        "END;\n",
        "CREATE TRIGGER uplink_session_update AFTER UPDATE ON sessions WHEN NEW.outcome <> 'open' BEGIN\n"
        UPLINK_BUMP("session", "NEW.session_id")
        "END;\n",
        "CREATE TRIGGER uplink_diary_insert AFTER INSERT ON diary BEGIN\n"
        UPLINK_BUMP("diary", "CAST(NEW.id AS TEXT)")
        "END;\n",
        "CREATE TRIGGER uplink_diary_update AFTER UPDATE ON diary BEGIN\n"
        UPLINK_BUMP("diary", "CAST(NEW.id AS TEXT)")
        "END;\n",
        "CREATE TRIGGER uplink_alert_insert AFTER INSERT ON alerts BEGIN\n"
        UPLINK_BUMP("alert", "CAST(NEW.id AS TEXT)")
        "END;\n",
        "CREATE TRIGGER uplink_alert_update AFTER UPDATE ON alerts BEGIN\n"
        UPLINK_BUMP("alert", "CAST(NEW.id AS TEXT)")
        "END;\n",
        "CREATE TRIGGER uplink_wrap_insert AFTER INSERT ON wraps BEGIN\n"
        UPLINK_BUMP("wrap", "NEW.id")
        "END;\n",
        "CREATE TRIGGER uplink_wrap_update AFTER UPDATE ON wraps BEGIN\n"
        UPLINK_BUMP("wrap", "NEW.id")
        "END;\n",
        /* The Patient is made of the profile, the Device of the Device Information. */
        "CREATE TRIGGER uplink_patient_insert AFTER INSERT ON patients BEGIN\n"
        UPLINK_BUMP("wrap", "NEW.wrap")
        "END;\n",
        "CREATE TRIGGER uplink_patient_update AFTER UPDATE ON patients BEGIN\n"
        UPLINK_BUMP("wrap", "NEW.wrap")
        "END;\n",
        "CREATE TRIGGER uplink_device_info_insert AFTER INSERT ON device_info BEGIN\n"
        UPLINK_BUMP("wrap", "NEW.wrap")
        "END;\n",
        "CREATE TRIGGER uplink_device_info_update AFTER UPDATE ON device_info BEGIN\n"
        UPLINK_BUMP("wrap", "NEW.wrap")
        "END;\n",
        /* What was recorded before the uplink existed goes too: wraps first, then by time. */
        "INSERT INTO uplink_changes (seq, kind, key) SELECT row_number() OVER (ORDER BY o, at, key), kind, key FROM (\n"
        "        SELECT 0 AS o, adopted_at AS at, 'wrap' AS kind, id AS key FROM wraps\n"
        "        UNION ALL SELECT 1, requested_at, 'session', session_id FROM sessions WHERE outcome <> 'open'\n"
        "        UNION ALL SELECT 1, at, 'diary', CAST(id AS TEXT) FROM diary\n"
        "        UNION ALL SELECT 1, at, 'alert', CAST(id AS TEXT) FROM alerts);\n",
        NULL,
};

/* The append-only history of who changed an injury, a prescription or the adoption. */
static const char *const schema_step5[] = {
        "CREATE TABLE audit (\n"
        "        id INTEGER PRIMARY KEY AUTOINCREMENT,\n"
        "        at INTEGER NOT NULL,\n"
        "        wrap TEXT CHECK (wrap IS NULL OR length(wrap) BETWEEN 1 AND 31),\n"
        "        what TEXT NOT NULL CHECK (what IN ('injury', 'injury_resolved', 'prescription',\n"
        "                'prescription_cleared', 'adoption', 'removal')),\n"
        "        detail TEXT NOT NULL DEFAULT '' CHECK (length(CAST(detail AS BLOB)) < 256),\n"
        "        source TEXT NOT NULL CHECK (source IN ('button', 'mqtt', 'cli', 'dbus')),\n"
        "        uid INTEGER CHECK (uid IS NULL OR uid >= 0),\n"
        "        client TEXT CHECK (client IS NULL OR length(CAST(client AS BLOB)) < 128)\n"
        ");\n",
        "CREATE INDEX audit_wrap ON audit (wrap, id);\n",
        "CREATE TRIGGER audit_append_only_update BEFORE UPDATE ON audit BEGIN\n"
        "        SELECT RAISE(ABORT, 'the change history is append-only');\n"
        "END;\n",
        "CREATE TRIGGER audit_append_only_delete BEFORE DELETE ON audit BEGIN\n"
        "        SELECT RAISE(ABORT, 'the change history is append-only');\n"
        "END;\n",
        NULL,
};

/*
 * 6: the clinic's view, completed. Runs go to the clinic (their own change kind: SQLite
 * cannot change uplink_changes' CHECK in place, so it is rebuilt; legacy_alter_table keeps
 * the rename from re-parsing step 4's triggers, which name the table and so write to the new
 * one), the runs recorded so far after everything else. An alert names the
 * session it is about (a safety stop, heat in the first week, a low battery at a request).
 */
static const char *const schema_step6[] = {
        "ALTER TABLE alerts ADD COLUMN session_id TEXT CHECK (session_id IS NULL OR length(session_id) BETWEEN 1 AND 36);\n",

        "PRAGMA legacy_alter_table = ON;\n",
        "CREATE TABLE uplink_changes6 (\n"
        "        seq INTEGER NOT NULL UNIQUE CHECK (seq > 0),\n"
        "        kind TEXT NOT NULL CHECK (kind IN ('wrap', 'session', 'diary', 'alert', 'run')),\n"
        "        key TEXT NOT NULL,\n"
        "        rev INTEGER NOT NULL DEFAULT 1 CHECK (rev > 0),\n"
        "        PRIMARY KEY (kind, key)\n"
        ") WITHOUT ROWID;\n",
        "INSERT INTO uplink_changes6 (seq, kind, key, rev) SELECT seq, kind, key, rev FROM uplink_changes;\n",
        "DROP TABLE uplink_changes;\n",
        "ALTER TABLE uplink_changes6 RENAME TO uplink_changes;\n",
        "PRAGMA legacy_alter_table = OFF;\n",
        "CREATE TRIGGER uplink_run_insert AFTER INSERT ON runs BEGIN\n"
        UPLINK_BUMP("run", "CAST(NEW.id AS TEXT)")
        "END;\n",
        "CREATE TRIGGER uplink_run_update AFTER UPDATE ON runs BEGIN\n"
        UPLINK_BUMP("run", "CAST(NEW.id AS TEXT)")
        "END;\n",
        "INSERT INTO uplink_changes (seq, kind, key) SELECT (SELECT coalesce(max(seq), 0) FROM uplink_changes) +\n"
        "        row_number() OVER (ORDER BY ended_at, id), 'run', CAST(id AS TEXT) FROM runs;\n",
        NULL,
};
#undef UPLINK_BUMP

/*
 * 7: what MQTT tells of a change's origin: the topic it came on (the broker's ACL, the authority,
 * is per topic) and, renamed from `client`, what an MQTT 5 publisher claims to be in a user
 * property: never verified, so the column says so. (`client` was never written before.)
 */
static const char *const schema_step7[] = {
        "ALTER TABLE audit RENAME COLUMN client TO claimed_client;\n",
        "ALTER TABLE audit ADD COLUMN topic TEXT CHECK (topic IS NULL OR length(CAST(topic AS BLOB)) < 256);\n",
        NULL,
};

static const char *const *const schema_steps[] = {
        schema_step1,       /* 1: the first schema */
        schema_step2,       /* 2: alert records, runs, patient profiles, device information */
        schema_step3,       /* 3: R10's clock stamps; refusal clock_unsynced */
        schema_step4,       /* 4: the clinic uplink's change sequence */
        schema_step5,       /* 5: the append-only history of changes to injuries, prescriptions, adoption */
        schema_step6,       /* 6: runs to the clinic; an alert's session */
        schema_step7,       /* 7: the history's MQTT topic and claimed client */
};

size_t schema_version_latest(void) {
        return ELEMENTSOF(schema_steps);
}

const char *const *schema_step(size_t to_version) {
        if (to_version < 1 || to_version > ELEMENTSOF(schema_steps))
                return NULL;
        return schema_steps[to_version - 1];
}
