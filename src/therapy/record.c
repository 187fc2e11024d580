/* record: the names of modes, sources, outcomes, refusals, diary places and alerts, one table each. */
#include <errno.h>
#include <stddef.h>

#include "record.h"
#include "rules.h"
#include "util.h"

/*
 * Each name lives in exactly one table, read both ways, so what is written to a record or
 * MQTT can always be read back. An index without a name gives NULL (systemd's convention).
 */
#define TABLE_TO_STRING(table, i) \
        ((i) >= 0 && (size_t) (i) < ELEMENTSOF(table) ? (table)[i] : NULL)

static int table_from_string(const char *const *table, size_t n, const char *s) {
        if (!s)
                return -EINVAL;
        for (size_t i = 0; i < n; i++)
                if (table[i] && streq(table[i], s))
                        return (int) i;
        return -EINVAL;
}

static const char *const therapy_mode_table[] = {
        [THERAPY_NONE] = "none",
        [THERAPY_COLD] = "cold",
        [THERAPY_HEAT] = "heat",
};

const char *therapy_mode_to_string(TherapyMode m) {
        return TABLE_TO_STRING(therapy_mode_table, (int) m);
}

int therapy_mode_from_string(const char *s) {
        return table_from_string(therapy_mode_table, ELEMENTSOF(therapy_mode_table), s);
}

static const char *const request_source_table[] = {
        [SOURCE_BUTTON] = "button",
        [SOURCE_MQTT] = "mqtt",
        [SOURCE_CLI] = "cli",
        [SOURCE_DBUS] = "dbus",
};

const char *request_source_to_string(RequestSource s) {
        return TABLE_TO_STRING(request_source_table, (int) s);
}

static const char *const diary_where_table[_WHERE_MAX] = {
        [WHERE_FRONT] = "front",
        [WHERE_INNER] = "inner",
        [WHERE_OUTER] = "outer",
        [WHERE_BACK] = "back",
        [WHERE_BELOW] = "below",
};

const char *diary_where_to_string(DiaryWhere w) {
        return TABLE_TO_STRING(diary_where_table, (int) w);
}

int diary_where_from_string(const char *s) {
        return table_from_string(diary_where_table, ELEMENTSOF(diary_where_table), s);
}

const char *alert_kind_to_string(AlertKind a) {
        /* A mask of several alerts has no one name. */
        switch (a) {
        case ALERT_SEE_PHYSIO:
                return "see_physio";
        case ALERT_SEE_PHYSIO_OVERDUE:
                return "see_physio_overdue";
        case ALERT_RED_FLAG:
                return "red_flag";
        case ALERT_SAFETY_STOP:
                return "safety_stop";
        case ALERT_LOW_BATTERY:
                return "low_battery";
        case ALERT_HEAT_FIRST_WEEK:
                return "heat_first_week";
        case ALERT_NONE:
                break;
        }
        return NULL;
}

const char *alert_kind_severity(AlertKind a) {
        return a == ALERT_RED_FLAG || a == ALERT_SAFETY_STOP ? "urgent" : "warning";
}

int alert_kind_from_string(const char *s) {
        for (unsigned bit = 0; bit < 8; bit++) {
                const char *name = alert_kind_to_string((AlertKind) (1u << bit));
                if (s && name && streq(s, name))
                        return (int) (1u << bit);
        }
        return -EINVAL;
}

static const char *const session_outcome_table[_OUTCOME_MAX] = {
        [OUTCOME_OPEN] = "open",
        [OUTCOME_COMPLETED] = "completed",
        [OUTCOME_STOPPED_BY_USER] = "stopped_by_user",
        [OUTCOME_STOPPED_FOR_SAFETY] = "stopped_for_safety",
        [OUTCOME_INTERRUPTED] = "interrupted",
        [OUTCOME_REFUSED] = "refused",
        [OUTCOME_NOT_STARTED] = "not_started",
};

const char *session_outcome_to_string(SessionOutcome o) {
        return TABLE_TO_STRING(session_outcome_table, (int) o);
}

int session_outcome_from_string(const char *s) {
        return table_from_string(session_outcome_table, ELEMENTSOF(session_outcome_table), s);
}

/* REFUSAL_NONE has no name: a record without a refusal writes null. */
static const char *const refusal_reason_table[_REFUSAL_MAX] = {
        [REFUSAL_HEAT_TOO_SOON] = "heat_too_soon",
        [REFUSAL_REST_INTERVAL] = "rest_interval",
        [REFUSAL_SESSION_ACTIVE] = "session_active",
        [REFUSAL_STORE_UNAVAILABLE] = "store_unavailable",
        [REFUSAL_OTHER] = "other",
        [REFUSAL_CLOCK_UNSYNCED] = "clock_unsynced",
};

const char *refusal_reason_to_string(RefusalReason r) {
        return TABLE_TO_STRING(refusal_reason_table, (int) r);
}

int refusal_reason_from_string(const char *s) {
        return table_from_string(refusal_reason_table, ELEMENTSOF(refusal_reason_table), s);
}

RefusalReason refusal_from_deny(DenyReason d) {
        switch (d) {
        case DENY_HEAT_TOO_SOON:
                return REFUSAL_HEAT_TOO_SOON;
        case DENY_REST_INTERVAL:
                return REFUSAL_REST_INTERVAL;
        case DENY_SESSION_ACTIVE:
                return REFUSAL_SESSION_ACTIVE;
        case DENY_CLOCK_UNSYNCED:
                return REFUSAL_CLOCK_UNSYNCED;
        case DENY_OTHER:
                break;
        }
        return REFUSAL_OTHER;
}

/* A DENY is named as the refusal it becomes in the record, from the same table. */
const char *deny_reason_to_string(DenyReason r) {
        switch (r) {
        case DENY_HEAT_TOO_SOON:
        case DENY_REST_INTERVAL:
        case DENY_SESSION_ACTIVE:
        case DENY_OTHER:
        case DENY_CLOCK_UNSYNCED:
                return refusal_reason_to_string(refusal_from_deny(r));
        }
        return NULL;
}

/* The profile has four DENY reasons: R10's refusal is "other" (4) on the wire. */
uint8_t deny_reason_wire(DenyReason r) {
        switch (r) {
        case DENY_HEAT_TOO_SOON:
        case DENY_REST_INTERVAL:
        case DENY_SESSION_ACTIVE:
                return (uint8_t) r;
        case DENY_OTHER:
        case DENY_CLOCK_UNSYNCED:
                break;
        }
        return DENY_OTHER;
}

/* R10: the times of a record taken before the clock was trusted, from its boot stamps. */
bool record_correct_times(SessionRecord *rec, int64_t wall0) {
        /* Every time the record has must have its boot stamp, or it stays unsynced. */
        if (rec->clock_synced || rec->requested_boot < 0 ||
            (rec->started_at && rec->started_boot < 0) || (rec->ended_at && rec->ended_boot < 0))
                return false;
        rec->requested_at = wall0 + rec->requested_boot;
        if (rec->started_at)
                rec->started_at = wall0 + rec->started_boot;
        if (rec->ended_at)
                rec->ended_at = wall0 + rec->ended_boot;
        rec->clock_synced = true;
        return true;
}
