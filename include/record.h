/* record: one session request as therapy-rules.md lists it, refused ones included. */
#pragma once

#include <stdbool.h>
#include <stdint.h>

#include "rules.h"
#include "util.h"

typedef enum SessionOutcome {
        OUTCOME_OPEN,                 /* asked for and not ended yet: never published */
        OUTCOME_COMPLETED,
        OUTCOME_STOPPED_BY_USER,
        OUTCOME_STOPPED_FOR_SAFETY,
        OUTCOME_INTERRUPTED,
        OUTCOME_REFUSED,
        OUTCOME_NOT_STARTED,          /* the wrap answered START with an error */
        _OUTCOME_MAX,
} SessionOutcome;

typedef enum RefusalReason {
        REFUSAL_NONE,
        REFUSAL_HEAT_TOO_SOON,
        REFUSAL_REST_INTERVAL,
        REFUSAL_SESSION_ACTIVE,
        REFUSAL_STORE_UNAVAILABLE,
        REFUSAL_OTHER,
        REFUSAL_CLOCK_UNSYNCED,       /* R10 */
        _REFUSAL_MAX,
} RefusalReason;

/* Which fields of a RulesPrescription a request sets; the others keep their value in force
 * (door_set_prescription() merges them, once, for every interface). */
enum {
        RX_COLD_S          = 1 << 0,
        RX_COLD_SETPOINT   = 1 << 1,
        RX_HEAT_S          = 1 << 2,
        RX_HEAT_SETPOINT   = 1 << 3,
        RX_HEAT_WAIT_S     = 1 << 4,
        RX_COLD_REST_S     = 1 << 5,
        RX_ALL             = (1 << 6) - 1,
};

/* Skin temperature readings during a session, 0.01 °C. */
typedef struct SkinStats {
        uint32_t n;
        int32_t min, max;
        int64_t sum;
} SkinStats;

typedef struct SessionRecord {
        char session_id[UUID_STR_MAX];
        char wrap[WRAP_ID_MAX];
        TherapyMode mode;
        RequestSource source;
        int64_t requested_at;         /* Unix seconds */
        int64_t started_at;           /* 0: did not happen (null) */
        int64_t ended_at;             /* 0: did not happen (null) */
        uint32_t prescribed_s;
        uint32_t duration_s;
        SessionOutcome outcome;
        bool compliant;
        RefusalReason refusal;
        uint16_t minutes_left;
        SkinStats skin;
        bool has_days_since_injury;
        int32_t days_since_injury;    /* tenths of a day */
        bool clock_synced;            /* R10: the times above come from a synchronised (trusted) clock */

        /* Kept in the store, not in the published record. */
        int32_t setpoint;             /* 0.01 °C */
        uint8_t start_result;         /* the control point's answer to START, 0 if none */

        /*
         * R10: the boot the times were taken in, and CLOCK_BOOTTIME (s) at each: -1 where the
         * time was not taken in that boot (or did not happen). What lets a wait run on the boot
         * clock, and a time taken before the clock was synchronised be corrected after.
         */
        char boot_id[RULES_BOOT_ID_MAX];
        int64_t requested_boot;
        int64_t started_boot;
        int64_t ended_boot;
} SessionRecord;

static inline void skin_stats_add(SkinStats *s, int32_t v) {
        if (s->n == 0 || v < s->min)
                s->min = v;
        if (s->n == 0 || v > s->max)
                s->max = v;
        s->sum += v;
        s->n++;
}

const char *session_outcome_to_string(SessionOutcome o);   /* "completed", ... ; "open" */
int session_outcome_from_string(const char *s);
const char *refusal_reason_to_string(RefusalReason r);     /* NULL for REFUSAL_NONE */
int refusal_reason_from_string(const char *s);
RefusalReason refusal_from_deny(DenyReason d);

/*
 * R10: gives a record taken before the clock was trusted its true times, wall0 being the
 * trusted wall clock's reading at the start of the record's boot; clock_synced turns true.
 * False (and nothing changed) when it was synced already or a time has no boot stamp.
 */
bool record_correct_times(SessionRecord *rec, int64_t wall0);
