/* store: every durable fact in one SQLite database in WAL mode. */
#pragma once

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "record.h"
#include "rules.h"

/*
 * Every function commits before it returns 0: what the daemon acts on or reports is on
 * disk first. Errors are returned as negative errno (-ENOSPC for a full disk, -EIO for an
 * unreadable or corrupt file, -ENOENT for a missing row, -EEXIST for a duplicate) and
 * store_errmsg() says what SQLite said; nothing here logs.
 */

typedef struct Store Store;

/* Opens (creating if needed) and migrates to the current schema (PRAGMA user_version). */
int store_open(const char *path, Store **ret);
/* The same; on failure, *ret_errmsg (when not NULL) says why, for the caller to free(). */
int store_open_err(const char *path, Store **ret, char **ret_errmsg);
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
int store_wrap_remove(Store *s, const char *wrap);
int store_wrap_get(Store *s, const char *wrap, StoredWrap *ret);
int store_wrap_list(Store *s, StoredWrap **ret, size_t *ret_n);

/* Injuries: at is the instant, or with date_only the local date "YYYY-MM-DD" in `date`. */
int store_injury_add(Store *s, const char *wrap, int64_t at, const char *date, int64_t now);
int store_injury_resolve(Store *s, const char *wrap, int64_t now);

/* A clinic's prescription; the caller has checked it with rules_prescription_check(). */
int store_prescription_set(Store *s, const char *wrap, const RulesPrescription *rx, int64_t now);
int store_prescription_clear(Store *s, const char *wrap);
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
                             const RulesTime *recorded, const char *pending);
/* Once the clock is trusted: the pending injuries of boot `boot_id` get their time
 * (boot_wall0 + their boot stamp) and, for "today", their local date. */
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

/* The pain diary; `alert` (R9), when not NULL, goes to the alert table and outbox at once. */
int store_diary_add(Store *s, const char *wrap, const DiaryEntry *e, AlertKind alert, OutboxMsg *msg);
int store_diary_list(Store *s, const char *wrap, int64_t since, DiaryEntry **ret, size_t *ret_n);

/* Alerts. The R8 ones raised since `since` (an injury's start), as an AlertKind mask. */
int store_alert_add(Store *s, const char *wrap, AlertKind kind, int64_t at, OutboxMsg *msg);
int store_alerts_raised(Store *s, const char *wrap, int64_t since, unsigned *ret_mask);

/* The outbox, in order. A message leaves it only with store_outbox_ack (after PUBACK). */
int store_outbox_add(Store *s, OutboxMsg *msg);
int store_outbox_peek(Store *s, int64_t after_id, size_t max, OutboxMsg **ret, size_t *ret_n);
int store_outbox_ack(Store *s, int64_t id);
int store_outbox_depth(Store *s, uint64_t *ret);
void outbox_msgs_free(OutboxMsg *m, size_t n);

/* Compliance over [since, now). Days are local calendar days. */
typedef struct Compliance {
        uint32_t cold_completed;      /* compliant cold sessions (R7) */
        uint32_t cold_incomplete;     /* cold sessions that ran, not compliant */
        uint32_t cold_refused;
        uint32_t heat_refused;
        uint32_t minutes;             /* therapy minutes that ran, cold and heat */
        uint32_t days_with_cold;      /* local days with a compliant cold session */
} Compliance;

int store_compliance(Store *s, const char *wrap, int64_t since, int64_t now, Compliance *ret);
