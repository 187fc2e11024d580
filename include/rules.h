/* rules: therapy rules R1–R10 (shared/therapy-rules.md) as pure functions of (state, event, now). */
#pragma once

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/*
 * Nothing in this module reads a clock, touches a file or keeps a global: every input is
 * an argument, so every safety decision can be tested in microseconds. Times are Unix
 * seconds (int64_t, whatever the width of time_t); temperatures are hundredths of a °C.
 */

#define RULES_DAY_S                 ((int64_t) 86400)

/* Bounds. A clinic may prescribe inside them; nobody may go outside them. */
#define RULES_COLD_MIN_S            600     /* R1: 10 minutes */
#define RULES_COLD_MAX_S            900     /* R1: 15 minutes, never passed */
#define RULES_COLD_DEFAULT_S        900
#define RULES_HEAT_MIN_S            60      /* the wrap firmware's shortest session */
#define RULES_HEAT_MAX_S            1200    /* R4: 20 minutes */
#define RULES_HEAT_DEFAULT_S        900
#define RULES_HEAT_CAP_S            1200    /* R4: at most 20 minutes of heat ... */
#define RULES_HEAT_CAP_WINDOW_S     3600    /* ... in any 60 minutes */
#define RULES_HEAT_HISTORY          64      /* heat sessions R4 looks back on; see heat_more */
#define RULES_COLD_SETPOINT_MIN     800     /* 8 °C */
#define RULES_COLD_SETPOINT_MAX     1500    /* 15 °C */
#define RULES_COLD_SETPOINT_DEFAULT 1000
#define RULES_HEAT_SETPOINT_MIN     3800
#define RULES_HEAT_SETPOINT_MAX     4200
#define RULES_HEAT_SETPOINT_DEFAULT 4000
#define RULES_HEAT_WAIT_MIN_S       (7 * 86400)      /* R2: never shorter */
#define RULES_HEAT_WAIT_MAX_S       (365 * 86400)
#define RULES_COLD_REST_MIN_S       3600             /* R6: never shorter */
#define RULES_COLD_REST_MAX_S       (24 * 3600)
#define RULES_COMPLIANT_COLD_S      600              /* R7 */
#define RULES_SKIN_COLD_MIN         800              /* R5: below 8 °C in cold */
#define RULES_SKIN_HEAT_MAX         4300             /* R5: above 43 °C in heat */
#define RULES_SKIN_SILENCE_S        15               /* R5: no valid skin reading for 15 s of real time */
#define RULES_PAIN_ALERT_DAYS       28               /* R8 */
#define RULES_PAIN_OVERDUE_DAYS     42
#define RULES_PAIN_WINDOW_DAYS      7
#define RULES_PAIN_IMPROVEMENT      2                /* points */

/* The same numbers as the wire (wrap-profile.md). */
typedef enum TherapyMode {
        THERAPY_NONE = 0,
        THERAPY_COLD = 1,
        THERAPY_HEAT = 2,
} TherapyMode;

typedef enum RequestSource {
        SOURCE_BUTTON,
        SOURCE_MQTT,
        SOURCE_CLI,
        SOURCE_DBUS,
} RequestSource;

typedef enum DenyReason {
        DENY_HEAT_TOO_SOON = 1,
        DENY_REST_INTERVAL = 2,
        DENY_SESSION_ACTIVE = 3,
        DENY_OTHER = 4,
        /* R10: not the wire's number. On the wire it is 4 ("other"), in records clock_unsynced. */
        DENY_CLOCK_UNSYNCED = 5,
} DenyReason;

/* The DENY reason byte the profile defines for a decision's reason (1..4). */
uint8_t deny_reason_wire(DenyReason r);

typedef enum StopReason {
        STOP_USER = 0,
        STOP_COMPLETED = 1,
        STOP_SAFETY = 2,
        STOP_SHUTDOWN = 3,
} StopReason;

typedef struct RulesPrescription {
        uint32_t cold_s;
        int32_t cold_setpoint;   /* 0.01 °C */
        uint32_t heat_s;
        int32_t heat_setpoint;   /* 0.01 °C */
        uint32_t heat_wait_s;
        uint32_t cold_rest_s;
} RulesPrescription;

void rules_prescription_default(RulesPrescription *rx);

/*
 * Checks every field against the bounds above. Returns 0, or -ERANGE with the first field
 * out of bounds named in *ret_field ("cold_s", ...) and a reason in *ret_why (static
 * strings). Values are refused, never clamped.
 */
int rules_prescription_check(const RulesPrescription *rx, const char **ret_field, const char **ret_why);

/*
 * R10: time the gateway can trust. An event is stamped as the journal stamps it: the wall
 * clock, whether that clock was trusted then, and the boot (its id, and CLOCK_BOOTTIME).
 * Within one boot the boot clock measures time since an event exactly, whatever the wall
 * clock did; across boots only a trusted wall clock does, and without one an event of an
 * earlier boot lies at least this boot's uptime in the past, and nothing more is known.
 */
#define RULES_BOOT_ID_MAX 37

typedef struct RulesClock {
        int64_t wall;                 /* Unix s, as the system clock says now */
        bool wall_ok;                 /* synchronised (or declared trusted), not before the newest stored time */
        char boot_id[RULES_BOOT_ID_MAX];
        int64_t boot_s;               /* CLOCK_BOOTTIME now: this boot's uptime */
} RulesClock;

typedef struct RulesTime {
        int64_t wall;                 /* Unix s, as recorded (or as a person stated it) */
        bool wall_ok;                 /* taken while the clock was trusted, corrected since, or stated */
        bool stated;                  /* a time a person gave (an injury's date): no boot stamp applies */
        char boot_id[RULES_BOOT_ID_MAX];   /* "" when unknown */
        int64_t boot_s;               /* CLOCK_BOOTTIME when recorded, in boot_id's boot */
} RulesTime;

/*
 * A lower bound of the seconds since t (negative for a time still ahead), and in
 * *ret_exact whether it is the elapsed time itself rather than only a bound.
 */
int64_t rules_elapsed(const RulesTime *t, const RulesClock *now, bool *ret_exact);
/* The same as an instant on now->wall's axis (now->wall - elapsed): what RulesState holds. */
int64_t rules_time_place(const RulesTime *t, const RulesClock *now, bool *ret_bound);

/* R4: a heat session that ran (or may have: an interrupted one counts in full). */
typedef struct RulesHeat {
        int64_t start;
        uint32_t s;
        bool bound;                   /* start is only a bound (R10) */
} RulesHeat;

typedef struct RulesState {
        RulesPrescription rx;

        /* The most recent unresolved injury (R2, R3, R8). */
        bool has_injury;
        int64_t injury_at;       /* R2's instant: a date-only injury is the end of that local day */
        int64_t injury_from;     /* when it began: the same, or the start of that local day */

        /* The end of the last cold session that ran (R6). */
        bool has_last_cold;
        int64_t last_cold_end;

        /*
         * R10: true when the time above is only a lower bound of how long ago it was (the
         * clock is not trusted): a refusal resting on it is clock_unsynced (DENY 4).
         */
        bool injury_bound;
        bool last_cold_bound;

        /* R4: the heat sessions of the last hour or so, any order. */
        RulesHeat heat[RULES_HEAT_HISTORY];
        unsigned n_heat;
        bool heat_more;               /* older heat sessions exist than those listed */

        /* The session now running on the wrap, if any. */
        bool active;
        TherapyMode active_mode;
        int64_t active_started;
        uint32_t active_duration_s;
        int32_t active_setpoint;      /* 0.01 °C, as started (R5 compares the wrap's Status with it) */
} RulesState;

typedef enum RulesEventType {
        RULES_EVENT_START,       /* someone asks for a session: .mode */
        RULES_EVENT_STOP,        /* someone asks to stop (the stop button, a command) */
        RULES_EVENT_TICK,        /* time passed: is the prescribed end reached? */
        RULES_EVENT_SKIN,        /* a skin temperature reading: .skin */
        RULES_EVENT_FAULT,       /* the wrap's status: .fault_flags, .fault_state */
        RULES_EVENT_REPORTED,    /* the wrap's Status of a running session: .mode, .setpoint */
        RULES_EVENT_SILENCE,     /* real seconds since the last valid skin reading: .silent_s */
} RulesEventType;

typedef struct RulesEvent {
        RulesEventType type;
        TherapyMode mode;
        int32_t skin;            /* 0.01 °C */
        uint8_t fault_flags;     /* Therapy Status byte 10 */
        bool fault_state;        /* Therapy Status state 4 */
        int32_t setpoint;        /* 0.01 °C, RULES_EVENT_REPORTED */
        uint32_t silent_s;       /* RULES_EVENT_SILENCE */
} RulesEvent;

typedef enum RulesAction {
        RULES_NONE,
        RULES_START,
        RULES_DENY,
        RULES_STOP,
} RulesAction;

typedef struct RulesDecision {
        RulesAction action;
        /* RULES_START */
        TherapyMode mode;
        int32_t setpoint;
        uint32_t duration_s;
        /* RULES_DENY */
        DenyReason deny;
        uint16_t minutes_left;   /* rounded up; 0 = unknown */
        int64_t allowed_at;      /* when the wait is over, on now's axis; 0 = unknown */
        /* RULES_STOP */
        StopReason stop;
        /* RULES_START, or RULES_NONE on a tick during a session: when STOP is due */
        int64_t deadline;
        const char *why;         /* for people: the rule and the reason, static */
} RulesDecision;

RulesDecision rules_decide(const RulesState *s, const RulesEvent *ev, int64_t now);

/* R2/R3: is heat allowed now, and from when (*ret_from is now when allowed). */
bool rules_heat_allowed(const RulesState *s, int64_t now, int64_t *ret_from);

/*
 * R4: may a heat session of `len` seconds start now without passing 20 minutes of heat in
 * any 60? *ret_from: the earliest start that could run it in full (now when allowed);
 * *ret_bound: the answer rests on a time that is only a bound (R10).
 */
bool rules_heat_cap_allows(const RulesState *s, int64_t now, uint32_t len, int64_t *ret_from, bool *ret_bound);

/* R7: a cold session that ran at least 10 minutes is compliant; nothing else is. */
bool rules_compliant(TherapyMode mode, uint32_t duration_s);

/* Days since injury_from, in tenths, never negative; false with no injury. */
bool rules_days_since_injury(const RulesState *s, int64_t now, int32_t *ret_tenths);

/* The pain diary. */
typedef enum DiaryWhere {
        WHERE_FRONT,             /* front / kneecap */
        WHERE_INNER,
        WHERE_OUTER,
        WHERE_BACK,
        WHERE_BELOW,             /* below the kneecap */
        _WHERE_MAX,
} DiaryWhere;

enum {
        DIARY_SWELLING   = 1 << 0,
        DIARY_POP        = 1 << 1,
        DIARY_GIVING_WAY = 1 << 2,
        DIARY_CATCHING   = 1 << 3,
};

typedef struct DiaryEntry {
        int64_t id;              /* the store's row id; 0 before it is stored */
        int64_t at;
        uint8_t score;           /* 0..10 */
        DiaryWhere where;
        uint8_t flags;
} DiaryEntry;

typedef enum AlertKind {
        ALERT_NONE = 0,
        ALERT_SEE_PHYSIO = 1 << 0,          /* R8 at 28 days */
        ALERT_SEE_PHYSIO_OVERDUE = 1 << 1,  /* R8 at 42 days */
        ALERT_RED_FLAG = 1 << 2,            /* R9, urgent */
        ALERT_SAFETY_STOP = 1 << 3,         /* R5, raised by the daemon with the STOP */
        ALERT_LOW_BATTERY = 1 << 4,         /* a session asked for with the battery low */
        ALERT_HEAT_FIRST_WEEK = 1 << 5,     /* heat asked for in the week after an injury (R2) */
} AlertKind;

/* R9: an entry with swelling after a pop raises ALERT_RED_FLAG at once. */
AlertKind rules_diary_alert(const DiaryEntry *e);

/*
 * R8: given every diary entry since injury_from (any order) and the R8 alerts already raised
 * for this injury (a mask of ALERT_SEE_PHYSIO / ALERT_SEE_PHYSIO_OVERDUE), returns the alert
 * to raise now, or ALERT_NONE.
 */
AlertKind rules_persisting_pain(const RulesState *s, const DiaryEntry *entries, size_t n,
                                unsigned already_raised, int64_t now);

/* Names used in records, MQTT and the command line. */
const char *therapy_mode_to_string(TherapyMode m);          /* "cold", "heat", "none" */
int therapy_mode_from_string(const char *s);                /* -EINVAL */
const char *request_source_to_string(RequestSource s);      /* "button", "mqtt", "cli", "dbus" */
const char *deny_reason_to_string(DenyReason r);            /* "heat_too_soon", ... "other" */
const char *diary_where_to_string(DiaryWhere w);            /* "front", "inner", "outer", "back", "below" */
int diary_where_from_string(const char *s);
const char *alert_kind_to_string(AlertKind a);              /* "see_physio", "see_physio_overdue", "red_flag", "safety_stop",
                                                               "low_battery", "heat_first_week" */
int alert_kind_from_string(const char *s);                  /* the AlertKind, or -EINVAL */
/* R9 and R5 want someone to act now ("urgent"); the others ask for an appointment or a charge ("warning"). */
const char *alert_kind_severity(AlertKind a);
