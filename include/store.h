/* store: every durable fact in one SQLite database in WAL mode. */
#pragma once

#include <errno.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "record.h"
#include "rules.h"

/*
 * Every function commits before it returns 0: what the daemon acts on or reports is on
 * disk first. Errors are returned as negative errno and store_errmsg() says what SQLite
 * said; nothing here logs:
 *   -ENOSPC   no room: a full file system, a quota, or the file-size limit (RLIMIT_FSIZE);
 *             SQLite reports some of these as an I/O error, so the store asks the system
 *   -EUCLEAN  the file is corrupt or truncated (SQLITE_CORRUPT, SQLITE_NOTADB), and only then
 *   -EBADMSG  a sound SQLite file that is not a kneewrap store
 *   -EIO      any other I/O error (a failing disk, often)
 *   -EROFS, -EACCES, -EPERM, -ENOENT (the directory), -EPROTO (a newer schema) when opening
 *   -ENOENT   a missing row, -EEXIST a duplicate
 */

typedef struct Store Store;

/* A row of the change history (below): the change functions that take one (`audit`, NULL for
 * none) write it in the change's own transaction, so that a change is never kept without it. */
typedef struct AuditRecord AuditRecord;

/*
 * The one answer to "does this error mean the store itself is broken?": a full disk, an I/O
 * error, a corrupt file, a read-only file system, permissions. The daemon then closes the
 * store, refuses sessions as store_unavailable and retries with backoff. Every other error is
 * about the call, not the store: -EBUSY (another writer holds the lock: try again),
 * -ENOENT, -EEXIST, -EINVAL, -ENOMEM.
 */
static inline bool store_is_broken(int r) {
        return r == -ENOSPC || r == -EIO || r == -EUCLEAN || r == -EROFS || r == -EACCES || r == -EPERM;
}

/* Opens (creating if needed) and migrates to the current schema (PRAGMA user_version). */
int store_open(const char *path, Store **ret);
/* The same; on failure, *ret_errmsg (when not NULL) says why, for the caller to free(). */
int store_open_err(const char *path, Store **ret, char **ret_errmsg);
/*
 * Opens an existing store read-only, with no migration, for another user (the clinic
 * uplink): -EPROTO while its schema is older than this build's, so kneewrapd has not
 * migrated it yet. Only the getters work on it.
 */
int store_open_readonly(const char *path, Store **ret, char **ret_errmsg);
Store *store_close(Store *s);
const char *store_errmsg(Store *s);
/* A cheap read and write probe, to tell when a full or broken store works again. */
int store_check(Store *s);

/* A message for the MQTT outbox, written in the same transaction as the fact it reports. */
typedef struct OutboxMsg {
        int64_t id;                   /* set by the store; ascending = the order to send */
        char *topic;
        char *payload;
        uint8_t qos;
        bool retain;
} OutboxMsg;

/* Adopted wraps. */
typedef struct StoredWrap {
        char wrap[WRAP_ID_MAX];
        char address[BDADDR_STR_MAX];
        char name[64];
        int64_t adopted_at;
} StoredWrap;

int store_wrap_add(Store *s, const char *address, const char *name, int64_t now);
int store_wrap_remove(Store *s, const char *wrap, const AuditRecord *audit);
int store_wrap_get(Store *s, const char *wrap, StoredWrap *ret);
int store_wrap_list(Store *s, StoredWrap **ret, size_t *ret_n);
/* The same as store_wrap_get, removed wraps included: their records still go to a clinic. */
int store_wrap_get_any(Store *s, const char *wrap, StoredWrap *ret);

/*
 * The patient behind a wrap, as a clinic knows them: pseudonymous on purpose. The gateway
 * never stores a name; `label` is what the clinic calls the patient ("Patient 12").
 */
typedef enum Knee {
        KNEE_UNSET,
        KNEE_LEFT,
        KNEE_RIGHT,
        _KNEE_MAX,
} Knee;

#define PROFILE_TEXT_MAX 64           /* label and clinic_ref, bytes with the NUL */

typedef struct PatientProfile {
        char wrap[WRAP_ID_MAX];
        char label[PROFILE_TEXT_MAX];       /* "" when unset */
        Knee knee;
        char clinic_ref[PROFILE_TEXT_MAX];  /* the clinic's own reference, "" when unset */
        int64_t set_at;                     /* 0: never set */
} PatientProfile;

const char *knee_to_string(Knee k);           /* "left", "right"; NULL for KNEE_UNSET */
int knee_from_string(const char *s);

/* Sets the profile (every field: an empty string clears one). */
int store_profile_set(Store *s, const PatientProfile *p, int64_t now);
/* The profile; a wrap without one gets an empty profile and 0. */
int store_profile_get(Store *s, const char *wrap, PatientProfile *ret);

/* The wrap's Device Information service (0x180A), as last read. "" where unknown. */
typedef struct WrapDeviceInfo {
        char manufacturer[64];
        char model[64];
        char serial[64];
        char firmware[64];
} WrapDeviceInfo;

int store_device_info_set(Store *s, const char *wrap, const WrapDeviceInfo *info, int64_t now);
/* A wrap whose information was never read gets an empty struct and 0. */
int store_device_info_get(Store *s, const char *wrap, WrapDeviceInfo *ret);

/* Injuries: at is the instant, or with date_only the local date "YYYY-MM-DD" in `date`. */
int store_injury_add(Store *s, const char *wrap, int64_t at, const char *date, int64_t now);
int store_injury_resolve(Store *s, const char *wrap, int64_t now, const AuditRecord *audit);

typedef struct InjuryRecord {
        int64_t id;
        int64_t at;                   /* R2's instant (a date-only injury: the end of that day) */
        char date[11];                /* "YYYY-MM-DD" when only a date was given, else "" */
        int64_t recorded_at;
        int64_t resolved_at;          /* 0: not resolved */
} InjuryRecord;

/* Every injury of a wrap, resolved ones included, oldest first. */
int store_injuries_list(Store *s, const char *wrap, InjuryRecord **ret, size_t *ret_n);

/* A clinic's prescription; the caller has checked it with rules_prescription_check(). */
int store_prescription_set(Store *s, const char *wrap, const RulesPrescription *rx, int64_t now,
                           const AuditRecord *audit);
int store_prescription_clear(Store *s, const char *wrap, const AuditRecord *audit);
/* The prescription in force: the clinic's, or `defaults`. */
int store_prescription_get(Store *s, const char *wrap, const RulesPrescription *defaults,
                           RulesPrescription *ret, bool *ret_prescribed);

/*
 * The rules' view of a wrap: prescription (or defaults), the latest unresolved injury, and
 * the end of the last cold session that ran. The active-session fields are left cleared:
 * the daemon owns those.
 */
int store_rules_state(Store *s, const char *wrap, const RulesPrescription *defaults, RulesState *ret);
/*
 * The same on R10's clock: every time is placed on now->wall's axis as rules_time_place()
 * does (the boot clock within this boot, a trusted wall clock across boots, else a lower
 * bound, flagged), and R4's heat history is filled. This is the one the daemon decides on.
 */
int store_rules_state_at(Store *s, const char *wrap, const RulesPrescription *defaults,
                         const RulesClock *now, RulesState *ret);

/*
 * R10. An injury recorded at `recorded` (the clock and boot stamp of the entry). `pending`
 * ("today" or "now", with no date) marks one entered while the clock was not trusted: it
 * counts from that moment until store_injuries_date() gives it its date.
 */
int store_injury_add_stamped(Store *s, const char *wrap, int64_t at, const char *date,
                             const RulesTime *recorded, const char *pending, const AuditRecord *audit);
/* Once the clock is trusted: the pending injuries of boot `boot_id` get their time
 * (boot_wall0 + their boot stamp) and, for "today", their local date; those of earlier boots
 * the latest time they can have had, boot_wall0 (this boot's start). */
int store_injuries_date(Store *s, const char *boot_id, int64_t boot_wall0, unsigned *ret_n);
/* Records of boot `boot_id` taken before the clock was synchronised, oldest first. */
int store_sessions_unsynced(Store *s, const char *boot_id, SessionRecord **ret, size_t *ret_n);
/* The newest time stored from a trusted clock (0 when none): R10's floor for the wall clock. */
int store_newest_time(Store *s, int64_t *ret);

/* Sessions: insert or update by session_id, plus `msg` into the outbox when not NULL. */
int store_session_put(Store *s, const SessionRecord *rec, OutboxMsg *msg);
int store_session_get(Store *s, const char *session_id, SessionRecord *ret);
/* Sessions still OUTCOME_OPEN, oldest first: to reconcile after a restart. */
int store_sessions_open(Store *s, SessionRecord **ret, size_t *ret_n);
/* Sessions requested in [since, until), wrap NULL for all, oldest first. */
int store_sessions_list(Store *s, const char *wrap, int64_t since, int64_t until,
                        SessionRecord **ret, size_t *ret_n);
int store_last_session(Store *s, const char *wrap, SessionRecord *ret);

/* Alerts. The R8 ones raised since `since` (an injury's start), as an AlertKind mask. */
int store_alerts_raised(Store *s, const char *wrap, int64_t since, unsigned *ret_mask);

#define ALERT_TEXT_MAX 256

/* An alert as stored: what a clinic sees and acknowledges. */
typedef struct AlertRecord {
        int64_t id;                   /* the store's row id, never reused: what --ack takes */
        char wrap[WRAP_ID_MAX];
        AlertKind kind;
        int64_t at;
        char text[ALERT_TEXT_MAX];    /* a sentence for people */
        int64_t acked_at;             /* 0: not acknowledged (open) */
        char session_id[UUID_STR_MAX]; /* the session it is about (a safety stop, heat in the first
                                        * week, a low battery at a request), "" when none */
} AlertRecord;

/*
 * Builds the outbox message for an alert (raised or acknowledged) once the alert has its
 * id, inside the transaction that writes it: the alert and its message are committed
 * together or not at all. `latest`: no newer alert of the wrap exists (what a retained
 * message may say). The store frees ret->topic and ret->payload. A negative return aborts.
 */
typedef int (*AlertMsgFn)(const AlertRecord *a, bool latest, void *userdata, OutboxMsg *ret);

/*
 * Adds an alert: a->wrap, kind, at, text and session_id are read; a->id is set. msg_fn may be NULL
 * (no MQTT). -EINVAL for a kind that is not one AlertKind or a text too long.
 */
int store_alert_add(Store *s, AlertRecord *a, AlertMsgFn msg_fn, void *userdata);
/* The pain diary; `alert` (R9), when not NULL, is added in the same transaction (as above). */
int store_diary_add(Store *s, const char *wrap, const DiaryEntry *e, AlertRecord *alert,
                    AlertMsgFn msg_fn, void *userdata);
int store_diary_list(Store *s, const char *wrap, int64_t since, DiaryEntry **ret, size_t *ret_n);

/* Alerts of `wrap` (NULL for all) raised in [since, until), oldest first; open_only skips acked ones. */
int store_alerts_list(Store *s, const char *wrap, int64_t since, int64_t until, bool open_only,
                      AlertRecord **ret, size_t *ret_n);
int store_alert_get(Store *s, int64_t id, AlertRecord *ret);
/*
 * Acknowledges an alert at `now`; *ret (when not NULL) is the alert after. -ENOENT for no
 * such alert, -EALREADY when it was acknowledged before.
 */
int store_alert_ack(Store *s, int64_t id, int64_t now, AlertMsgFn msg_fn, void *userdata, AlertRecord *ret);

/* A run the runner logged: cold should follow it within RUN_FOLLOW_WINDOW_S of its end. */
#define RUN_FOLLOW_WINDOW_S 3600

typedef struct RunRecord {
        int64_t id;
        char wrap[WRAP_ID_MAX];
        int64_t ended_at;             /* when the run ended ("I just ran": now) */
        uint32_t minutes;             /* 0: not given */
        uint32_t meters;              /* 0: not given */
        RequestSource source;
        int64_t recorded_at;

        /* Filled by store_runs_list(), from the sessions (not stored with the run). A run
         * is followed when a compliant cold session (R7) started within
         * RUN_FOLLOW_WINDOW_S after it ended: followed_by is the first such session. When
         * none did, cold_press is the first cold request in that window, whatever became
         * of it (refused, say, by R6: its record says why), or "" when there was none. */
        char followed_by[UUID_STR_MAX];
        char cold_press[UUID_STR_MAX];
} RunRecord;

int store_run_add(Store *s, const RunRecord *run, OutboxMsg *msg, int64_t *ret_id);
/* One run by its id (followed_by and cold_press filled as by store_runs_list); -ENOENT. */
int store_run_get(Store *s, int64_t id, RunRecord *ret);
/* Runs that ended in [since, until), oldest first. */
int store_runs_list(Store *s, const char *wrap, int64_t since, int64_t until, RunRecord **ret, size_t *ret_n);

/* One change to an injury, a prescription or the adoption, and who made it. The history is
 * append-only: the store refuses to update or delete a row. A change stored by a function
 * above is written with its row, in one transaction; store_audit_add is for a change that
 * is not in the store (the adoption window). */
struct AuditRecord {
        int64_t id;
        int64_t at;                   /* Unix seconds */
        char wrap[WRAP_ID_MAX];       /* "" for adoption */
        char what[24];                /* injury, injury_resolved, prescription, prescription_cleared, adoption, removal */
        char detail[256];             /* the value set: a date, the prescription, the window */
        RequestSource source;         /* the interface */
        int64_t uid;                  /* the D-Bus caller's uid; -1 when not known (MQTT, the wrap) */
        /* MQTT: a subscriber is not told who published. The topic it came on (the broker's
         * ACL decides who may publish there), and what an MQTT 5 publisher claims to be in
         * the user property "client": never verified, only recorded. "" when none. */
        char topic[256];
        char claimed_client[128];
};

int store_audit_add(Store *s, const AuditRecord *a);
/* The whole history, oldest first: one wrap's (and the adoption's) when wrap is not NULL. */
int store_audit_list(Store *s, const char *wrap, AuditRecord **ret, size_t *ret_n);

/* The outbox, in order. A message leaves it only with store_outbox_ack (after PUBACK). */
int store_outbox_add(Store *s, OutboxMsg *msg);
int store_outbox_peek(Store *s, int64_t after_id, size_t max, OutboxMsg **ret, size_t *ret_n);
int store_outbox_ack(Store *s, int64_t id);
int store_outbox_depth(Store *s, uint64_t *ret);
void outbox_msgs_free(OutboxMsg *m, size_t n);

/*
 * The clinic uplink's change sequence: every write of a wrap, a finished session, a diary
 * entry, a run or an alert gives it the next seq (SQLite triggers), so what is past a cursor is exactly what the
 * clinic has not confirmed; rev counts the record's writes (1: new; more: corrected).
 */
typedef enum ChangeKind {
        CHANGE_UNKNOWN,
        CHANGE_WRAP,                  /* key: the wrap id (its Patient and Device) */
        CHANGE_SESSION,               /* key: the session_id */
        CHANGE_DIARY,                 /* key: the diary entry's id */
        CHANGE_ALERT,                 /* key: the alert's id */
        CHANGE_RUN,                   /* key: the run's id */
        _CHANGE_KIND_MAX,
} ChangeKind;

/* "wrap", "session", "diary", "alert", "run": the store's names; NULL or CHANGE_UNKNOWN otherwise. */
const char *change_kind_to_string(ChangeKind k);
ChangeKind change_kind_from_string(const char *s);

typedef struct StoreChange {
        int64_t seq;
        int64_t rev;
        ChangeKind kind;
        char key[40];
} StoreChange;

/* Up to max changes with seq > after, in seq order. */
int store_changes_after(Store *s, int64_t after, size_t max, StoreChange **ret, size_t *ret_n);
/* How many have seq > after, and the highest seq there is (0: none). */
int store_changes_pending(Store *s, int64_t after, uint64_t *ret_n, int64_t *ret_latest);
/* When the store was created: a cursor belongs to one store file. */
int store_identity(Store *s, int64_t *ret_created_at);
int store_diary_get(Store *s, int64_t id, char wrap[static WRAP_ID_MAX], DiaryEntry *ret);

/*
 * Compliance: the one definition, for every interface (MQTT, the CLI, D-Bus, reports).
 * Over sessions requested and runs ended in [since, until); a period is whole local
 * calendar days in the gateway's time zone (clock_local_day_start() gives the bounds), and
 * a day is the local day a session started.
 */
typedef struct Compliance {
        uint32_t cold_completed;      /* compliant cold sessions (R7) */
        uint32_t cold_incomplete;     /* cold sessions that ran, not compliant */
        uint32_t cold_refused;
        uint32_t heat_refused;
        uint32_t heat_refused_first_week;  /* heat refused less than 7 days after the injury */
        uint32_t minutes;             /* therapy minutes that ran, cold and heat */
        uint32_t days_with_cold;      /* local days with a compliant cold session */
        uint32_t runs;
        uint32_t runs_followed;       /* runs a compliant cold session followed (RunRecord.followed_by) */
} Compliance;

int store_compliance(Store *s, const char *wrap, int64_t since, int64_t until, Compliance *ret);
