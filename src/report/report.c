/* report: one wrap's period read once from the store, written as JSON, CSV (RFC 4180) or FHIR R4. */
#include <errno.h>
#include <inttypes.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "clock.h"
#include "fhir.h"
#include "payload.h"
#include "record.h"
#include "report.h"
#include "rules.h"
#include "store.h"
#include "util.h"

/* ---- reading ---- */

void report_data_done(ReportData *d) {
        if (!d)
                return;
        free(d->sessions);
        free(d->runs);
        free(d->run_sessions);
        free(d->diary);
        free(d->injuries);
        free(d->alerts);
        free(d->history);
        memset(d, 0, sizeof *d);
}

static int load_diary(Store *s, ReportData *d) {
        size_t n = 0, kept = 0;
        DiaryEntry *all = NULL;
        int r;

        r = store_diary_list(s, d->wrap.wrap, d->since, &all, &n);
        if (r < 0)
                return r;
        for (size_t i = 0; i < n; i++)
                if (all[i].at < d->until)
                        all[kept++] = all[i];
        d->diary = all;
        d->n_diary = kept;
        return 0;
}

/* store_audit_list() gives the wrap's whole history (and the adoption's), oldest first. */
static int load_history(Store *s, ReportData *d) {
        size_t n = 0, kept = 0;
        AuditRecord *all = NULL;
        int r;

        r = store_audit_list(s, d->wrap.wrap, &all, &n);
        if (r < 0)
                return r;
        for (size_t i = 0; i < n; i++)
                if (all[i].at >= d->since && all[i].at < d->until)
                        all[kept++] = all[i];
        d->history = all;
        d->n_history = kept;
        return 0;
}

static int load_run_sessions(Store *s, ReportData *d) {
        d->run_sessions = calloc(d->n_runs ? d->n_runs : 1, sizeof *d->run_sessions);
        if (!d->run_sessions)
                return -ENOMEM;
        for (size_t i = 0; i < d->n_runs; i++) {
                const RunRecord *r = &d->runs[i];
                const char *id = *r->followed_by ? r->followed_by : r->cold_press;
                int k;

                if (!*id)
                        continue;
                k = store_session_get(s, id, &d->run_sessions[i]);
                if (k < 0)
                        return k;
        }
        return 0;
}

int report_load(Store *s, const char *wrap, const RulesPrescription *defaults, int64_t since, int64_t until,
                int64_t now, ReportData *ret) {
        ReportData d = { .since = since, .until = until, .generated_at = now };
        int r;

        if (!s || !wrap || since >= until)
                return -EINVAL;
        r = store_wrap_get(s, wrap, &d.wrap);
        if (r < 0)
                return r;
        r = store_device_info_get(s, wrap, &d.device);
        if (r >= 0)
                r = store_profile_get(s, wrap, &d.profile);
        if (r >= 0)
                r = store_prescription_get(s, wrap, defaults, &d.rx, &d.prescribed);
        if (r >= 0)
                r = store_compliance(s, wrap, since, until, &d.compliance);
        if (r >= 0)
                r = store_sessions_list(s, wrap, since, until, &d.sessions, &d.n_sessions);
        if (r >= 0)
                r = store_runs_list(s, wrap, since, until, &d.runs, &d.n_runs);
        if (r >= 0)
                r = load_run_sessions(s, &d);
        if (r >= 0)
                r = load_diary(s, &d);
        if (r >= 0)
                r = store_injuries_list(s, wrap, &d.injuries, &d.n_injuries);
        if (r >= 0)
                r = store_alerts_list(s, wrap, since, until, false, &d.alerts, &d.n_alerts);
        if (r >= 0)
                r = load_history(s, &d);
        if (r < 0) {
                report_data_done(&d);
                return r;
        }
        *ret = d;
        return 0;
}

/* ---- JSON ---- */

static json_t *iso_or_null(int64_t t) {
        char buf[CLOCK_ISO_MAX];

        return t ? json_string(clock_format_iso(t, buf)) : json_null();
}

static json_t *str_or_null(const char *s) {
        return s && *s ? json_string(s) : json_null();
}

json_t *report_profile_json(const PatientProfile *p) {
        return json_pack("{s:s, s:o, s:o, s:o, s:o}",
                         "wrap", p->wrap,
                         "label", str_or_null(p->label),
                         "knee", str_or_null(knee_to_string(p->knee)),
                         "clinic_ref", str_or_null(p->clinic_ref),
                         "set_at", iso_or_null(p->set_at));
}

json_t *report_prescription_json(const RulesPrescription *rx, bool prescribed) {
        return json_pack("{s:b, s:I, s:f, s:I, s:f, s:I, s:I}",
                         "prescribed_by_clinic", prescribed,
                         "cold_s", (json_int_t) rx->cold_s,
                         "cold_setpoint_c", rx->cold_setpoint / 100.0,
                         "heat_s", (json_int_t) rx->heat_s,
                         "heat_setpoint_c", rx->heat_setpoint / 100.0,
                         "heat_wait_s", (json_int_t) rx->heat_wait_s,
                         "cold_rest_s", (json_int_t) rx->cold_rest_s);
}

/* What became of the cold press after a run that was not followed: its outcome and reason. */
static json_t *press_json(const SessionRecord *s) {
        if (!s || !*s->session_id)
                return json_null();
        return json_pack("{s:s, s:s, s:o, s:o, s:I, s:b}",
                         "session_id", s->session_id,
                         "outcome", session_outcome_to_string(s->outcome),
                         "refusal", str_or_null(refusal_reason_to_string(s->refusal)),
                         "requested_at", iso_or_null(s->requested_at),
                         "duration_s", (json_int_t) s->duration_s,
                         "compliant", s->compliant);
}

json_t *report_run_json(const RunRecord *r, const SessionRecord *s) {
        bool followed = *r->followed_by != '\0';

        return json_pack("{s:I, s:s, s:o, s:o, s:o, s:s, s:b, s:o, s:o}",
                         "id", (json_int_t) r->id,
                         "wrap", r->wrap,
                         "ended_at", iso_or_null(r->ended_at),
                         "minutes", r->minutes ? json_integer(r->minutes) : json_null(),
                         "km", r->meters ? json_real(r->meters / 1000.0) : json_null(),
                         "source", request_source_to_string(r->source),
                         "followed", followed,
                         "followed_by", str_or_null(r->followed_by),
                         "cold_press", followed ? json_null() : press_json(s));
}

static json_t *flags_json(uint8_t flags) {
        static const struct { uint8_t bit; const char *name; } map[] = {
                { DIARY_SWELLING, "swelling" }, { DIARY_POP, "pop" },
                { DIARY_GIVING_WAY, "giving_way" }, { DIARY_CATCHING, "catching" },
        };
        json_t *a = json_array();

        for (size_t i = 0; a && i < ELEMENTSOF(map); i++)
                if ((flags & map[i].bit) && json_array_append_new(a, json_string(map[i].name)) < 0) {
                        json_decref(a);
                        return NULL;
                }
        return a;
}

json_t *report_diary_json(const DiaryEntry *e) {
        return json_pack("{s:I, s:o, s:i, s:s, s:o}",
                         "id", (json_int_t) e->id,
                         "at", iso_or_null(e->at),
                         "score", (int) e->score,
                         "where", diary_where_to_string(e->where),
                         "flags", flags_json(e->flags));
}

json_t *report_injury_json(const InjuryRecord *i) {
        return json_pack("{s:I, s:o, s:o, s:o, s:o}",
                         "id", (json_int_t) i->id,
                         "at", iso_or_null(i->at),
                         "date", str_or_null(i->date),
                         "recorded_at", iso_or_null(i->recorded_at),
                         "resolved_at", iso_or_null(i->resolved_at));
}

json_t *report_alert_json(const AlertRecord *a) {
        return json_pack("{s:I, s:s, s:s, s:o, s:s, s:o, s:o}",
                         "id", (json_int_t) a->id,
                         "wrap", a->wrap,
                         "kind", alert_kind_to_string(a->kind),
                         "at", iso_or_null(a->at),
                         "text", a->text,
                         "acked_at", iso_or_null(a->acked_at),
                         "session_id", str_or_null(a->session_id[0] ? a->session_id : NULL));
}

/* One change: uid is null when not known (MQTT, the wrap); topic and claimed_client are what
 * MQTT tells (null otherwise): the client id is what an MQTT 5 publisher claims, unverified. */
json_t *report_audit_json(const AuditRecord *e) {
        return json_pack("{s:I, s:o, s:o, s:s, s:s, s:s, s:o, s:o, s:o}",
                         "id", (json_int_t) e->id,
                         "at", iso_or_null(e->at),
                         "wrap", str_or_null(e->wrap),
                         "what", e->what,
                         "detail", e->detail,
                         "source", request_source_to_string(e->source),
                         "uid", e->uid >= 0 ? json_integer((json_int_t) e->uid) : json_null(),
                         "topic", str_or_null(e->topic),
                         "claimed_client", str_or_null(e->claimed_client));
}

/* Appends each element's JSON to a new array; NULL when one cannot be built. */
#define ARRAY_OF(list, n, fn, ...) ({                                            \
                json_t *_a = json_array();                                       \
                for (size_t _i = 0; _a && _i < (n); _i++)                        \
                        if (json_array_append_new(_a, fn(&(list)[_i], ##__VA_ARGS__)) < 0) { \
                                json_decref(_a);                                 \
                                _a = NULL;                                       \
                        }                                                        \
                _a;                                                              \
        })

static json_t *runs_json(const ReportData *d) {
        json_t *a = json_array();

        for (size_t i = 0; a && i < d->n_runs; i++)
                if (json_array_append_new(a, report_run_json(&d->runs[i], &d->run_sessions[i])) < 0) {
                        json_decref(a);
                        return NULL;
                }
        return a;
}

static json_t *sessions_json(const ReportData *d) {
        json_t *a = json_array();

        for (size_t i = 0; a && i < d->n_sessions; i++) {
                if (d->sessions[i].outcome == OUTCOME_OPEN)
                        continue;   /* still running: its record is not final */
                if (json_array_append_new(a, payload_session_json(&d->sessions[i])) < 0) {
                        json_decref(a);
                        return NULL;
                }
        }
        return a;
}

json_t *report_json(const ReportData *d) {
        json_t *device = json_pack("{s:s, s:s, s:o, s:o, s:o, s:o, s:o}",
                                   "id", d->wrap.wrap, "address", d->wrap.address,
                                   "name", str_or_null(d->wrap.name),
                                   "manufacturer", str_or_null(d->device.manufacturer),
                                   "model", str_or_null(d->device.model),
                                   "serial", str_or_null(d->device.serial),
                                   "firmware", str_or_null(d->device.firmware));

        return json_pack("{s:s, s:o, s:o, s:{s:o, s:o}, s:o, s:o, s:o, s:o, s:o, s:o, s:o, s:o, s:o}",
                         "report", "kneewrap clinic report",
                         "generated_at", iso_or_null(d->generated_at),
                         "patient", report_profile_json(&d->profile),
                         "period", "since", iso_or_null(d->since), "until", iso_or_null(d->until),
                         "wrap", device,
                         "prescription", report_prescription_json(&d->rx, d->prescribed),
                         "compliance", payload_compliance_json(&d->compliance),
                         "sessions", sessions_json(d),
                         "runs", runs_json(d),
                         "diary", ARRAY_OF(d->diary, d->n_diary, report_diary_json),
                         "injuries", ARRAY_OF(d->injuries, d->n_injuries, report_injury_json),
                         "alerts", ARRAY_OF(d->alerts, d->n_alerts, report_alert_json),
                         "history", ARRAY_OF(d->history, d->n_history, report_audit_json));
}

/* ---- FHIR ---- */

json_t *report_fhir(const ReportData *d) {
        char patient[FHIR_URN_MAX], device[FHIR_URN_MAX], urn[FHIR_URN_MAX];
        json_t *b = fhir_bundle_new("collection", d->generated_at);
        int r = 0;

        if (!b || fhir_urn_uuid(patient) < 0 || fhir_urn_uuid(device) < 0) {
                json_decref(b);
                return NULL;
        }
        r |= fhir_bundle_add(b, patient, fhir_patient(&d->profile));
        r |= fhir_bundle_add(b, device, fhir_device(&d->wrap, &d->device, patient));
        for (size_t i = 0; r == 0 && i < d->n_sessions; i++) {
                /* A session's own id is a UUID already: its entry is named by it. */
                snprintf(urn, sizeof urn, "urn:uuid:%s", d->sessions[i].session_id);
                r |= fhir_bundle_add(b, urn, fhir_procedure(&d->sessions[i], &d->profile, patient, device));
        }
        for (size_t i = 0; r == 0 && i < d->n_diary; i++) {
                r |= fhir_urn_uuid(urn);
                r |= fhir_bundle_add(b, urn, fhir_pain_observation(d->wrap.wrap, &d->diary[i], &d->profile,
                                                                   patient, device));
        }
        for (size_t i = 0; r == 0 && i < d->n_runs; i++) {
                r |= fhir_urn_uuid(urn);
                r |= fhir_bundle_add(b, urn, fhir_run_observation(&d->runs[i], patient));
        }
        for (size_t i = 0; r == 0 && i < d->n_alerts; i++) {
                if (d->alerts[i].acked_at > 0)
                        continue;   /* a Flag per open alert */
                r |= fhir_urn_uuid(urn);
                r |= fhir_bundle_add(b, urn, fhir_flag(&d->alerts[i], patient, device));
        }
        if (r != 0) {
                json_decref(b);
                return NULL;
        }
        return b;
}

/* ---- CSV, RFC 4180 ---- */

static const char *const report_table_names[_REPORT_TABLE_MAX] = {
        [REPORT_SESSIONS] = "sessions",
        [REPORT_RUNS] = "runs",
        [REPORT_DIARY] = "diary",
        [REPORT_ALERTS] = "alerts",
        [REPORT_HISTORY] = "history",
};

int report_table_from_string(const char *s) {
        for (int i = 0; i < _REPORT_TABLE_MAX; i++)
                if (s && streq(s, report_table_names[i]))
                        return i;
        return -EINVAL;
}

typedef struct Csv {
        FILE *f;
        bool first;                  /* no field on this line yet */
} Csv;

/* One field: quoted when it holds a comma, a quote, CR or LF (RFC 4180, 2.6), quotes doubled. */
static void csv_field(Csv *c, const char *v) {
        if (!c->first)
                fputc(',', c->f);
        c->first = false;
        if (!v)
                return;
        if (!strpbrk(v, ",\"\r\n")) {
                fputs(v, c->f);
                return;
        }
        fputc('"', c->f);
        for (const char *p = v; *p; p++) {
                if (*p == '"')
                        fputc('"', c->f);
                fputc(*p, c->f);
        }
        fputc('"', c->f);
}

static void csv_fieldf(Csv *c, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void csv_fieldf(Csv *c, const char *fmt, ...) {
        char buf[64];
        va_list ap;

        va_start(ap, fmt);
        vsnprintf(buf, sizeof buf, fmt, ap);
        va_end(ap);
        csv_field(c, buf);
}

static void csv_time(Csv *c, int64_t t) {
        char buf[CLOCK_ISO_MAX];

        csv_field(c, t ? clock_format_iso(t, buf) : NULL);
}

static void csv_end(Csv *c) {
        fputs("\r\n", c->f);
        c->first = true;
}

static void csv_header(Csv *c, const char *const *names) {
        for (; *names; names++)
                csv_field(c, *names);
        csv_end(c);
}

static void csv_sessions(Csv *c, const ReportData *d) {
        static const char *const head[] = {
                "session_id", "wrap", "mode", "source", "requested_at", "started_at", "ended_at",
                "prescribed_s", "duration_s", "outcome", "compliant", "refusal_reason",
                "refusal_minutes_left", "skin_c_min", "skin_c_mean", "skin_c_max", "days_since_injury",
                "clock_synced", NULL,
        };

        csv_header(c, head);
        for (size_t i = 0; i < d->n_sessions; i++) {
                const SessionRecord *s = &d->sessions[i];
                bool refused = s->refusal != REFUSAL_NONE;

                if (s->outcome == OUTCOME_OPEN)
                        continue;
                csv_field(c, s->session_id);
                csv_field(c, s->wrap);
                csv_field(c, therapy_mode_to_string(s->mode));
                csv_field(c, request_source_to_string(s->source));
                csv_time(c, s->requested_at);
                csv_time(c, s->started_at);
                csv_time(c, s->ended_at);
                csv_fieldf(c, "%" PRIu32, s->prescribed_s);
                csv_fieldf(c, "%" PRIu32, s->duration_s);
                csv_field(c, session_outcome_to_string(s->outcome));
                csv_field(c, s->compliant ? "true" : "false");
                csv_field(c, refused ? refusal_reason_to_string(s->refusal) : NULL);
                if (refused)
                        csv_fieldf(c, "%u", s->minutes_left);
                else
                        csv_field(c, NULL);
                if (s->skin.n > 0) {
                        csv_fieldf(c, "%.2f", s->skin.min / 100.0);
                        csv_fieldf(c, "%.2f", (double) s->skin.sum / s->skin.n / 100.0);
                        csv_fieldf(c, "%.2f", s->skin.max / 100.0);
                } else {
                        csv_field(c, NULL);
                        csv_field(c, NULL);
                        csv_field(c, NULL);
                }
                if (s->has_days_since_injury)
                        csv_fieldf(c, "%d.%d", s->days_since_injury / 10, s->days_since_injury % 10);
                else
                        csv_field(c, NULL);
                csv_field(c, s->clock_synced ? "true" : "false");
                csv_end(c);
        }
}

static void csv_runs(Csv *c, const ReportData *d) {
        static const char *const head[] = {
                "id", "wrap", "ended_at", "minutes", "km", "source", "followed", "followed_by",
                "cold_press", "cold_press_outcome", "cold_press_refusal", NULL,
        };

        csv_header(c, head);
        for (size_t i = 0; i < d->n_runs; i++) {
                const RunRecord *r = &d->runs[i];
                const SessionRecord *s = &d->run_sessions[i];
                bool press = !*r->followed_by && *r->cold_press;

                csv_fieldf(c, "%" PRId64, r->id);
                csv_field(c, r->wrap);
                csv_time(c, r->ended_at);
                if (r->minutes)
                        csv_fieldf(c, "%" PRIu32, r->minutes);
                else
                        csv_field(c, NULL);
                if (r->meters)
                        csv_fieldf(c, "%.3f", r->meters / 1000.0);
                else
                        csv_field(c, NULL);
                csv_field(c, request_source_to_string(r->source));
                csv_field(c, *r->followed_by ? "true" : "false");
                csv_field(c, *r->followed_by ? r->followed_by : NULL);
                csv_field(c, press ? r->cold_press : NULL);
                csv_field(c, press ? session_outcome_to_string(s->outcome) : NULL);
                csv_field(c, press ? refusal_reason_to_string(s->refusal) : NULL);
                csv_end(c);
        }
}

static void csv_diary(Csv *c, const ReportData *d) {
        static const char *const head[] = {
                "id", "wrap", "at", "score", "where", "swelling", "pop", "giving_way", "catching", NULL,
        };

        csv_header(c, head);
        for (size_t i = 0; i < d->n_diary; i++) {
                const DiaryEntry *e = &d->diary[i];

                csv_fieldf(c, "%" PRId64, e->id);
                csv_field(c, d->wrap.wrap);
                csv_time(c, e->at);
                csv_fieldf(c, "%u", e->score);
                csv_field(c, diary_where_to_string(e->where));
                csv_field(c, e->flags & DIARY_SWELLING ? "true" : "false");
                csv_field(c, e->flags & DIARY_POP ? "true" : "false");
                csv_field(c, e->flags & DIARY_GIVING_WAY ? "true" : "false");
                csv_field(c, e->flags & DIARY_CATCHING ? "true" : "false");
                csv_end(c);
        }
}

static void csv_alerts(Csv *c, const ReportData *d) {
        static const char *const head[] = { "id", "wrap", "kind", "at", "text", "acked_at", "session_id", NULL };

        csv_header(c, head);
        for (size_t i = 0; i < d->n_alerts; i++) {
                const AlertRecord *a = &d->alerts[i];

                csv_fieldf(c, "%" PRId64, a->id);
                csv_field(c, a->wrap);
                csv_field(c, alert_kind_to_string(a->kind));
                csv_time(c, a->at);
                csv_field(c, a->text);
                csv_time(c, a->acked_at);
                csv_field(c, a->session_id);
                csv_end(c);
        }
}

static void csv_history(Csv *c, const ReportData *d) {
        static const char *const head[] = { "id", "wrap", "at", "what", "detail", "source", "uid", "topic", "claimed_client",
                                            NULL };

        csv_header(c, head);
        for (size_t i = 0; i < d->n_history; i++) {
                const AuditRecord *e = &d->history[i];

                csv_fieldf(c, "%" PRId64, e->id);
                csv_field(c, *e->wrap ? e->wrap : NULL);
                csv_time(c, e->at);
                csv_field(c, e->what);
                csv_field(c, *e->detail ? e->detail : NULL);
                csv_field(c, request_source_to_string(e->source));
                if (e->uid >= 0)
                        csv_fieldf(c, "%" PRId64, e->uid);
                else
                        csv_field(c, NULL);
                csv_field(c, *e->topic ? e->topic : NULL);
                csv_field(c, *e->claimed_client ? e->claimed_client : NULL);
                csv_end(c);
        }
}

int report_csv(const ReportData *d, ReportTable t, FILE *f) {
        Csv c = { .f = f, .first = true };

        switch (t) {
        case REPORT_SESSIONS:
                csv_sessions(&c, d);
                break;
        case REPORT_RUNS:
                csv_runs(&c, d);
                break;
        case REPORT_DIARY:
                csv_diary(&c, d);
                break;
        case REPORT_ALERTS:
                csv_alerts(&c, d);
                break;
        case REPORT_HISTORY:
                csv_history(&c, d);
                break;
        default:
                return -EINVAL;
        }
        return ferror(f) ? -EIO : 0;
}
