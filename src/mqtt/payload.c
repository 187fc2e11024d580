/* payload: the session-record and alert JSON that goes through the outbox to MQTT (jansson). */
#include <errno.h>
#include <inttypes.h>
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "clock.h"
#include "payload.h"
#include "util.h"

/*
 * %.15g prints every value that has at most 15 significant decimal digits exactly as
 * written (36.55 stays 36.55, never 36.549999999999997), and jansson appends ".0" to a
 * whole number, so 9 hundredths-derived degrees come out as 9.0: the JSON keeps its type.
 */
#define PAYLOAD_DUMP_FLAGS (JSON_COMPACT | JSON_REAL_PRECISION(15))

static const char *base_topic(const Config *c) {
        return c && c->base_topic && c->base_topic[0] ? c->base_topic : "kneewrap";
}

static int dump(json_t *o, char **ret) {
        char *s;

        if (!o)
                return -ENOMEM;
        s = json_dumps(o, PAYLOAD_DUMP_FLAGS);
        json_decref(o);
        if (!s)
                return -ENOMEM;
        *ret = s;
        return 0;
}

/* Adds key = value, taking the reference; false on failure (value may be NULL: ENOMEM). */
static bool put(json_t *o, const char *key, json_t *v) {
        return v && json_object_set_new(o, key, v) == 0;
}

static json_t *time_or_null(int64_t unix_sec) {
        char buf[CLOCK_ISO_MAX];

        if (unix_sec == 0)
                return json_null();
        return json_string(clock_format_iso(unix_sec, buf));
}

static json_t *string_or_null(const char *s) {
        return s ? json_string(s) : json_null();
}

/* Hundredths to a real with two decimals at most. */
static json_t *centi(int64_t v) {
        return json_real((double) v / 100.0);
}

/* sum / n rounded to the nearest hundredth, halves away from zero. */
static int64_t mean_rounded(int64_t sum, uint32_t n) {
        int64_t q = sum / (int64_t) n, r = sum % (int64_t) n;

        if (r < 0 ? -2 * r >= (int64_t) n : 2 * r >= (int64_t) n)
                q += r < 0 ? -1 : 1;
        return q;
}

static json_t *skin_json(const SkinStats *s) {
        json_t *o;

        if (s->n == 0)
                return json_null();
        o = json_object();
        if (!o)
                return NULL;
        if (!put(o, "min", centi(s->min)) ||
            !put(o, "mean", centi(mean_rounded(s->sum, s->n))) ||
            !put(o, "max", centi(s->max))) {
                json_decref(o);
                return NULL;
        }
        return o;
}

static json_t *refusal_json(const SessionRecord *rec) {
        const char *reason;
        json_t *o;

        if (rec->refusal == REFUSAL_NONE)
                return json_null();
        reason = refusal_reason_to_string(rec->refusal);
        o = json_object();
        if (!o)
                return NULL;
        if (!put(o, "reason", json_string(reason ? reason : "other")) ||
            !put(o, "minutes_left", json_integer(rec->minutes_left))) {
                json_decref(o);
                return NULL;
        }
        return o;
}

/* Tenths of a day as a number with one decimal. */
static json_t *days_json(const SessionRecord *rec) {
        if (!rec->has_days_since_injury)
                return json_null();
        return json_real((double) rec->days_since_injury / 10.0);
}

static json_t *session_json(const SessionRecord *rec) {
        json_t *o = json_object();

        /* The order and names of therapy-rules.md, "What a session log records". */
        if (!o ||
            !put(o, "session_id", json_string(rec->session_id)) ||
            !put(o, "wrap", json_string(rec->wrap)) ||
            !put(o, "mode", string_or_null(rec->mode == THERAPY_NONE ? NULL : therapy_mode_to_string(rec->mode))) ||
            !put(o, "source", string_or_null(request_source_to_string(rec->source))) ||
            !put(o, "requested_at", time_or_null(rec->requested_at)) ||
            !put(o, "started_at", time_or_null(rec->started_at)) ||
            !put(o, "ended_at", time_or_null(rec->ended_at)) ||
            !put(o, "prescribed_s", json_integer(rec->prescribed_s)) ||
            !put(o, "duration_s", json_integer(rec->duration_s)) ||
            !put(o, "outcome", string_or_null(session_outcome_to_string(rec->outcome))) ||
            !put(o, "compliant", json_boolean(rec->compliant)) ||
            !put(o, "refusal", refusal_json(rec)) ||
            !put(o, "skin_c", skin_json(&rec->skin)) ||
            !put(o, "days_since_injury", days_json(rec)) ||
            !put(o, "clock_synced", json_boolean(rec->clock_synced))) {
                json_decref(o);
                return NULL;
        }
        return o;
}

int payload_session(const SessionRecord *rec, char **ret_json) {
        return dump(session_json(rec), ret_json);
}

json_t *payload_session_json(const SessionRecord *rec) {
        return session_json(rec);
}

json_t *payload_compliance_json(const Compliance *c) {
        return json_pack("{s:I, s:I, s:I, s:I, s:I, s:I, s:I, s:I, s:I}",
                         "cold_completed", (json_int_t) c->cold_completed,
                         "cold_incomplete", (json_int_t) c->cold_incomplete,
                         "cold_refused", (json_int_t) c->cold_refused,
                         "heat_refused", (json_int_t) c->heat_refused,
                         "heat_refused_first_week", (json_int_t) c->heat_refused_first_week,
                         "minutes", (json_int_t) c->minutes,
                         "days_with_cold", (json_int_t) c->days_with_cold,
                         "runs", (json_int_t) c->runs,
                         "runs_followed", (json_int_t) c->runs_followed);
}

static int topic_for(const Config *c, const char *wrap, const char *leaf, char **ret) {
        char *t;

        if (asprintf(&t, "%s/%s/%s", base_topic(c), wrap, leaf) < 0)
                return -ENOMEM;
        *ret = t;
        return 0;
}

int payload_session_msg(const Config *c, const SessionRecord *rec, OutboxMsg *ret) {
        OutboxMsg m = { .qos = 1, .retain = false };
        int r;

        r = payload_session(rec, &m.payload);
        if (r < 0)
                return r;
        r = topic_for(c, rec->wrap, "session", &m.topic);
        if (r < 0) {
                free(m.payload);
                return r;
        }
        *ret = m;
        return 0;
}

int payload_alert_msg(const Config *c, const AlertRecord *a, bool latest, OutboxMsg *ret) {
        /* The latest alert is retained, so a Home Assistant that restarts still sees it;
         * an acknowledgement of an older one is not, or it would hide a newer alert. */
        OutboxMsg m = { .qos = 1, .retain = latest };
        const char *name = alert_kind_to_string(a->kind);
        json_t *o = json_object();
        int r;

        /* event_type: what Home Assistant's event entity fires (discovery.c lists them). */
        if (!o ||
            !put(o, "id", json_integer(a->id)) ||
            !put(o, "event_type", json_string(a->acked_at ? "acknowledged" : name ? name : "unknown")) ||
            !put(o, "alert", json_string(name ? name : "unknown")) ||
            !put(o, "severity", json_string(alert_kind_severity(a->kind))) ||
            !put(o, "wrap", json_string(a->wrap)) ||
            !put(o, "at", time_or_null(a->at)) ||
            !put(o, "message", json_string(a->text)) ||
            !put(o, "session_id", string_or_null(a->session_id[0] ? a->session_id : NULL)) ||
            !put(o, "acked_at", time_or_null(a->acked_at))) {
                json_decref(o);
                return -ENOMEM;
        }
        r = dump(o, &m.payload);
        if (r < 0)
                return r;
        r = topic_for(c, a->wrap, "alert", &m.topic);
        if (r < 0) {
                free(m.payload);
                return r;
        }
        *ret = m;
        return 0;
}

void outbox_msg_done(OutboxMsg *m) {
        if (!m)
                return;
        free(m->topic);
        free(m->payload);
        m->topic = m->payload = NULL;
}
