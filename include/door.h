/* door: the one door: every action that changes the gateway's state, whoever asks for it. */
#pragma once

#include <stdint.h>

#include "manager.h"
#include "record.h"
#include "rules.h"
#include "util.h"
#include "store.h"

/*
 * The wrap's button, MQTT (mqtt/mqtt.c), D-Bus (daemon/bus-api.c) and so kneewrapctl all
 * call these functions and nothing below them: one validation, one merge, one log line (the
 * audit) and one set of errors per action, so that no interface can go around the therapy
 * rules or word a refusal its own way.
 *
 * NEW ACTIONS GO HERE. Add one door_*() function below (and in daemon/door.c), with the
 * same shape: (Manager *m, what the action needs..., const char **ret_error). Validate every
 * argument in it, not in the interface; return the errors listed below; log the action once.
 * Then have each interface call it: a D-Bus method in bus-api.c (map the error with
 * bus_api's one_door_error), an MQTT command in mqtt/commands.c + mqtt.c, a kneewrapctl
 * command that calls the D-Bus method. Document it in docs/ in the same commit.
 *
 * Return values, the one set of errors:
 *   0         done, or decided: a refusal by the therapy rules is a decision, recorded and
 *             reported in *ret_record / *ret_error, not an error
 *   -EINVAL   the request is malformed (a mode, a date, a score, nothing to prescribe,
 *             adoption too long)
 *   -ENOENT   no adopted wrap has that id, or (injury) nothing to resolve
 *   -ERANGE   outside the therapy rules' bounds (a prescription)
 *   -ESRCH    no session is running on the wrap
 *   -ENOTCONN the wrap is not connected
 *   -EAGAIN   the store is unavailable (closed after a failure, being retried)
 *   store_is_broken(r): the store failed during the action; it is now unavailable
 *   -EBUSY    the store is busy (another writer): try again
 *   -ENOBUFS  the wrap had a request of the same kind (DoorRateKind: a session start, a
 *             diary entry, a run, an injury, a prescription, a profile, the adoption)
 *             decided less than a second ago (scaled clock): this one is dropped, neither
 *             decided nor recorded, and counted in m->requests_dropped (bridge/health), so a
 *             flood cannot fill the store. It is met after the request is checked, just
 *             before the write: a malformed request takes no turn. door_stop is never limited
 *   -EALREADY (an alert) it was acknowledged before
 * With every error, *ret_error (when ret_error is not NULL) is a sentence for the asker,
 * valid until the next door call.
 */

/*
 * Who asks, for the append-only change history (store_audit_*) that the injury, prescription,
 * adoption and removal doors write with each change: the interface, the D-Bus caller's uid
 * (-1 when not known), and what MQTT tells of the publisher: the topic, and the client id an
 * MQTT 5 publisher claims (not verified: the broker's ACL is the authority). NULL: the
 * command line.
 */
typedef struct DoorActor {
        RequestSource source;
        int64_t uid;
        const char *topic;
        const char *claimed_client;
} DoorActor;

/*
 * What the request limit counts apart: at most one request of each kind per wrap per second
 * is decided, so a diary entry just after a session start is not dropped. STOP is no kind:
 * a stop always passes (safety). Alert acknowledgements and removals are not limited either:
 * each changes an existing row once and creates none.
 */
typedef enum DoorRateKind {
        DOOR_RATE_SESSION,           /* a session start (door_start) */
        DOOR_RATE_DIARY,
        DOOR_RATE_RUN,
        DOOR_RATE_INJURY,            /* recording or resolving one */
        DOOR_RATE_PRESCRIPTION,      /* setting or clearing one */
        DOOR_RATE_PROFILE,
        DOOR_RATE_ADOPTION,          /* the gateway's: its wrap is "" */
        _DOOR_RATE_MAX,
} DoorRateKind;

/* When a wrap's last request of each kind was decided (Manager.rates): one per wrap that asked. */
typedef struct DoorRate {
        char wrap[WRAP_ID_MAX];
        uint64_t decided_usec[_DOOR_RATE_MAX];  /* clock_mono_usec(), the scaled clock; 0: never */
} DoorRate;

/* Sessions. press_usec: mono_usec() when the wrap's button was pressed, for the latency
 * figures; 0 for every other asker. */
int door_start(Manager *m, const char *wrap, TherapyMode mode, RequestSource source, uint64_t press_usec,
               SessionRecord *ret_record, const char **ret_error);
int door_stop(Manager *m, const char *wrap, RequestSource source, const char **ret_error);

/* An injury, as "YYYY-MM-DD" or an ISO 8601 date and time; NULL marks it resolved (R3). */
int door_set_injury(Manager *m, const DoorActor *who, const char *wrap, const char *iso_or_null,
                    const char **ret_error);

/* A pain diary entry; R9's red flag and R8 are checked here. */
int door_add_diary(Manager *m, const char *wrap, const DiaryEntry *e, const char **ret_error);

/*
 * A clinic's prescription: the fields in `set` (RX_* of record.h) take their value from
 * `values`; the others keep the value in force (the clinic's, or the configured defaults).
 * The whole is checked against the rules' bounds. *ret_in_force, when given, is the result.
 */
int door_set_prescription(Manager *m, const DoorActor *who, const char *wrap, const RulesPrescription *values,
                          unsigned set, RulesPrescription *ret_in_force, const char **ret_error);
/* Back to the configured defaults. */
int door_clear_prescription(Manager *m, const DoorActor *who, const char *wrap, const char **ret_error);

/* Adoption: open for `seconds` (at most DOOR_ADOPTION_MAX_S), or close with 0. */
#define DOOR_ADOPTION_MAX_S 3600
int door_open_adoption(Manager *m, const DoorActor *who, unsigned seconds, const char **ret_error);
/* Forgets a wrap: its session ends, its bond goes; its history stays in the store. */
int door_remove_wrap(Manager *m, const DoorActor *who, const char *wrap, const char **ret_error);

/* ---- what a clinic reads ---- */

/*
 * A run: run->wrap, ended_at (0: now, "I just ran"; at most 31 days back), minutes and
 * meters (0: not given) and source are read. *ret_id, when given, is its id. A compliant
 * cold session that starts within RUN_FOLLOW_WINDOW_S after it ended follows it (store.h).
 */
#define RUN_MINUTES_MAX 1440
#define RUN_METERS_MAX 1000000
int door_record_run(Manager *m, const RunRecord *run, int64_t *ret_id, const char **ret_error);

/* The patient profile of p->wrap, every field (an empty string clears one; KNEE_UNSET). */
int door_set_profile(Manager *m, const PatientProfile *p, const char **ret_error);

/* Acknowledges an alert by its id; *ret, when given, is the alert after. -ENOENT: no such
 * alert; -EALREADY: acknowledged before. */
int door_ack_alert(Manager *m, int64_t id, AlertRecord *ret, const char **ret_error);
