/* fhir: session records, diary entries, alerts, the patient and the wrap as FHIR R4 resources. */
#include <errno.h>
#include <inttypes.h>
#include <stdio.h>

#include "clock.h"
#include "fhir.h"
#include "record.h"
#include "rules.h"
#include "store.h"
#include "util.h"

/* SNOMED CT and LOINC concepts; docs/clinic.md says where each was checked. */
#define SCT_CRYOTHERAPY      "26782000"   /* Cryotherapy (procedure) */
#define SCT_KNEE_REGION      "72696002"   /* Knee region structure (body structure) */
#define LOINC_PAIN_0_10      "72514-3"    /* Pain severity - 0-10 verbal numeric rating [Score] - Reported */
#define LOINC_EXERCISE       "73985-4"    /* Exercise activity */
#define LOINC_EXERCISE_MIN   "55411-3"    /* Exercise duration */
#define FHIR_UCUM            "http://unitsofmeasure.org"
#define FHIR_FLAG_DETAIL     "http://hl7.org/fhir/StructureDefinition/flag-detail"

char *fhir_diary_value(const char *wrap, int64_t id, char buf[static FHIR_VALUE_MAX]) {
        snprintf(buf, FHIR_VALUE_MAX, "%s/diary/%" PRId64, wrap, id);
        return buf;
}

char *fhir_alert_value(const char *wrap, int64_t id, char buf[static FHIR_VALUE_MAX]) {
        snprintf(buf, FHIR_VALUE_MAX, "%s/alert/%" PRId64, wrap, id);
        return buf;
}

char *fhir_run_value(const char *wrap, int64_t id, char buf[static FHIR_VALUE_MAX]) {
        snprintf(buf, FHIR_VALUE_MAX, "%s/run/%" PRId64, wrap, id);
        return buf;
}

int fhir_urn_uuid(char buf[static FHIR_URN_MAX]) {
        char uuid[UUID_STR_MAX];
        int r;

        r = uuid_generate_str(uuid);
        if (r < 0)
                return r;
        snprintf(buf, FHIR_URN_MAX, "urn:uuid:%s", uuid);
        return 0;
}

static json_t *identifier(const char *system, const char *value) {
        return json_pack("[{s:s, s:s}]", "system", system, "value", value);
}

static json_t *reference(const char *ref) {
        return ref ? json_pack("{s:s}", "reference", ref) : NULL;
}

static json_t *date_time(int64_t t) {
        char buf[CLOCK_ISO_MAX];

        return json_string(clock_format_iso(t, buf));
}

static const char *nonempty(const char *s) {
        return s && *s ? s : NULL;
}

/* "Left knee", "Right knee", or "Knee" with no laterality recorded. */
static const char *knee_text(const PatientProfile *p) {
        switch (p ? p->knee : KNEE_UNSET) {
        case KNEE_LEFT:
                return "Left knee";
        case KNEE_RIGHT:
                return "Right knee";
        default:
                return "Knee";
        }
}

static json_t *knee_site(const PatientProfile *p, const char *detail) {
        char text[96];

        if (detail)
                snprintf(text, sizeof(text), "%s, %s", knee_text(p), detail);
        else
                snprintf(text, sizeof(text), "%s", knee_text(p));
        return json_pack("[{s:[{s:s, s:s, s:s}], s:s}]",
                         "coding", "system", FHIR_SNOMED, "code", SCT_KNEE_REGION,
                         "display", "Knee region structure",
                         "text", text);
}

json_t *fhir_patient(const PatientProfile *p) {
        json_t *res, *ids;

        if (!p || !*p->wrap)
                return NULL;
        ids = identifier(FHIR_SYSTEM_PATIENT, p->wrap);
        if (!ids)
                return NULL;
        if (*p->clinic_ref &&
            json_array_append_new(ids, json_pack("{s:s, s:{s:s}, s:s}", "use", "usual",
                                                 "type", "text", "Clinic reference",
                                                 "value", p->clinic_ref)) < 0) {
                json_decref(ids);
                return NULL;
        }
        /* The label is the only name there is, and it is no one's real name. */
        res = json_pack("{s:s, s:{s:[{s:s, s:s, s:s}]}, s:o, s:b}",
                        "resourceType", "Patient",
                        "meta", "security", "system", "http://terminology.hl7.org/CodeSystem/v3-ObservationValue",
                        "code", "PSEUDED", "display", "pseudonymized",
                        "identifier", ids,
                        "active", 1);
        if (res && *p->label &&
            json_object_set_new(res, "name", json_pack("[{s:s, s:s}]", "use", "anonymous",
                                                       "text", p->label)) < 0) {
                json_decref(res);
                return NULL;
        }
        return res;
}

json_t *fhir_device(const StoredWrap *w, const WrapDeviceInfo *info, const char *patient_ref) {
        WrapDeviceInfo none = { .manufacturer = "" };
        json_t *res;

        if (!w || !*w->wrap)
                return NULL;
        if (!info)
                info = &none;
        res = json_pack("{s:s, s:o, s:s, s:s*, s:s*, s:s*, s:o*}",
                        "resourceType", "Device",
                        "identifier", identifier(FHIR_SYSTEM_WRAP, w->wrap),
                        "status", "active",
                        "manufacturer", nonempty(info->manufacturer),
                        "serialNumber", nonempty(info->serial),
                        "modelNumber", nonempty(info->model),
                        "patient", reference(patient_ref));
        if (!res)
                return NULL;
        if ((nonempty(w->name) &&
             json_object_set_new(res, "deviceName", json_pack("[{s:s, s:s}]", "name", w->name,
                                                              "type", "user-friendly-name")) < 0) ||
            (nonempty(info->firmware) &&
             json_object_set_new(res, "version", json_pack("[{s:{s:s}, s:s}]", "type", "text", "firmware",
                                                           "value", info->firmware)) < 0) ||
            json_object_set_new(res, "type", json_pack("{s:s}", "text", "Temperature-controlled knee wrap")) < 0) {
                json_decref(res);
                return NULL;
        }
        return res;
}

static const char *procedure_status(SessionOutcome o) {
        switch (o) {
        case OUTCOME_OPEN:
                return "in-progress";
        case OUTCOME_COMPLETED:
                return "completed";
        case OUTCOME_STOPPED_BY_USER:
        case OUTCOME_STOPPED_FOR_SAFETY:
        case OUTCOME_INTERRUPTED:
                return "stopped";
        case OUTCOME_REFUSED:
        case OUTCOME_NOT_STARTED:
                return "not-done";
        case _OUTCOME_MAX:
                break;
        }
        return NULL;
}

static const char *outcome_text(SessionOutcome o) {
        switch (o) {
        case OUTCOME_OPEN:
                return "Running";
        case OUTCOME_COMPLETED:
                return "Completed";
        case OUTCOME_STOPPED_BY_USER:
                return "Stopped by the user";
        case OUTCOME_STOPPED_FOR_SAFETY:
                return "Stopped for safety (skin temperature or a fault on the wrap)";
        case OUTCOME_INTERRUPTED:
                return "Interrupted (link lost or gateway stopped)";
        case OUTCOME_REFUSED:
                return "Refused by the gateway's therapy rules";
        case OUTCOME_NOT_STARTED:
                return "Not started: the wrap answered START with an error";
        case _OUTCOME_MAX:
                break;
        }
        return "Unknown";
}

static const char *refusal_text(RefusalReason r) {
        switch (r) {
        case REFUSAL_HEAT_TOO_SOON:
                return "Heat refused: less than the prescribed wait since the injury (R2)";
        case REFUSAL_REST_INTERVAL:
                return "Refused: rest interval since the last session not over (R4/R6)";
        case REFUSAL_SESSION_ACTIVE:
                return "Refused: a session was already running";
        case REFUSAL_STORE_UNAVAILABLE:
                return "Refused: the gateway could not record the session";
        case REFUSAL_CLOCK_UNSYNCED:
                return "Refused: the gateway's clock was not synchronised, so no wait could be proved over (R10)";
        case REFUSAL_OTHER:
        case REFUSAL_NONE:
        case _REFUSAL_MAX:
                break;
        }
        return "Refused";
}

static json_t *status_reason(const SessionRecord *r) {
        const char *name = refusal_reason_to_string(r->refusal);
        char text[160];

        if (r->outcome == OUTCOME_NOT_STARTED && r->refusal == REFUSAL_NONE)
                return json_pack("{s:s}", "text", "The wrap answered START with an error");
        if (r->refusal == REFUSAL_NONE)
                return NULL;
        if (r->minutes_left > 0)
                snprintf(text, sizeof(text), "%s; %u min left", refusal_text(r->refusal), r->minutes_left);
        else
                snprintf(text, sizeof(text), "%s", refusal_text(r->refusal));
        /* The machine-readable reason, as in the session record, rides in a coding of our own. */
        return json_pack("{s:[{s:s, s:s}], s:s}",
                         "coding", "system", "urn:kneewrap:refusal", "code", name ? name : "other",
                         "text", text);
}

static json_t *procedure_note(const SessionRecord *r) {
        const char *source = request_source_to_string(r->source);
        char req[CLOCK_ISO_MAX], text[400];
        int n;

        n = snprintf(text, sizeof(text), "Requested %s by %s; prescribed %u min, ran %u min %u s",
                     clock_format_iso(r->requested_at, req), source ? source : "?",
                     r->prescribed_s / 60, r->duration_s / 60, r->duration_s % 60);
        if (r->mode == THERAPY_COLD && n > 0 && (size_t) n < sizeof(text))
                n += snprintf(text + n, sizeof(text) - (size_t) n, "; %s (R7: at least 10 min)",
                              r->compliant ? "compliant" : "not compliant");
        if (r->skin.n > 0 && n > 0 && (size_t) n < sizeof(text))
                n += snprintf(text + n, sizeof(text) - (size_t) n, "; skin %.1f-%.1f °C (mean %.1f)",
                              r->skin.min / 100.0, r->skin.max / 100.0,
                              (double) r->skin.sum / (double) r->skin.n / 100.0);
        if (!r->clock_synced && n > 0 && (size_t) n < sizeof(text))
                snprintf(text + n, sizeof(text) - (size_t) n,
                         "; times taken before the gateway's clock was synchronised (R10)");
        return json_pack("[{s:s}]", "text", text);
}

json_t *fhir_procedure(const SessionRecord *r, const PatientProfile *profile,
                       const char *patient_ref, const char *device_ref) {
        const char *status;
        json_t *res, *code;

        if (!r || !*r->session_id || !patient_ref)
                return NULL;
        status = procedure_status(r->outcome);
        if (!status)
                return NULL;
        if (r->mode == THERAPY_COLD)
                code = json_pack("{s:[{s:s, s:s, s:s}], s:s}",
                                 "coding", "system", FHIR_SNOMED, "code", SCT_CRYOTHERAPY,
                                 "display", "Cryotherapy",
                                 "text", "Cold therapy (knee wrap)");
        else if (r->mode == THERAPY_HEAT)
                code = json_pack("{s:s}", "text", "Heat therapy (knee wrap)");
        else
                return NULL;

        res = json_pack("{s:s, s:o, s:s, s:o, s:o, s:o, s:o, s:o}",
                        "resourceType", "Procedure",
                        "identifier", identifier(FHIR_SYSTEM_SESSION, r->session_id),
                        "status", status,
                        "code", code,
                        "subject", reference(patient_ref),
                        "bodySite", knee_site(profile, NULL),
                        "outcome", json_pack("{s:s}", "text", outcome_text(r->outcome)),
                        "note", procedure_note(r));
        if (!res)
                return NULL;

        if (r->started_at > 0 && r->outcome != OUTCOME_REFUSED && r->outcome != OUTCOME_NOT_STARTED) {
                json_t *period = json_pack("{s:o}", "start", date_time(r->started_at));

                if (!period || (r->ended_at > 0 && json_object_set_new(period, "end", date_time(r->ended_at)) < 0) ||
                    json_object_set_new(res, "performedPeriod", period) < 0)
                        goto fail;
        }
        if (streq(status, "not-done") || r->outcome == OUTCOME_STOPPED_FOR_SAFETY) {
                json_t *reason = r->outcome == OUTCOME_STOPPED_FOR_SAFETY
                        ? json_pack("{s:s}", "text", "Stopped for safety (R5)") : status_reason(r);

                if (reason && json_object_set_new(res, "statusReason", reason) < 0)
                        goto fail;
        }
        if (device_ref &&
            json_object_set_new(res, "focalDevice", json_pack("[{s:{s:s}, s:o}]",
                                                              "action", "text", "Cold or heat applied by the wrap",
                                                              "manipulated", reference(device_ref))) < 0)
                goto fail;
        return res;
fail:
        json_decref(res);
        return NULL;
}

static json_t *flag_components(uint8_t flags) {
        static const struct {
                uint8_t bit;
                const char *text;
        } names[] = {
                { DIARY_SWELLING, "Swelling" },
                { DIARY_POP, "A pop" },
                { DIARY_GIVING_WAY, "Giving way" },
                { DIARY_CATCHING, "Catching" },
        };
        json_t *list = json_array();

        for (size_t i = 0; list && i < ELEMENTSOF(names); i++)
                if ((flags & names[i].bit) &&
                    json_array_append_new(list, json_pack("{s:{s:s}, s:b}", "code", "text", names[i].text,
                                                          "valueBoolean", 1)) < 0) {
                        json_decref(list);
                        return NULL;
                }
        return list;
}

static const char *where_text(DiaryWhere w) {
        switch (w) {
        case WHERE_FRONT:
                return "front / kneecap";
        case WHERE_INNER:
                return "inner side";
        case WHERE_OUTER:
                return "outer side";
        case WHERE_BACK:
                return "back";
        case WHERE_BELOW:
                return "below the kneecap";
        case _WHERE_MAX:
                break;
        }
        return NULL;
}

json_t *fhir_pain_observation(const char *wrap, const DiaryEntry *e, const PatientProfile *profile,
                              const char *patient_ref, const char *device_ref) {
        char value[FHIR_VALUE_MAX];
        json_t *res, *components, *site;

        if (!wrap || !*wrap || !e || e->id <= 0 || e->score > 10 || !patient_ref || !where_text(e->where))
                return NULL;
        site = knee_site(profile, where_text(e->where));
        if (!site)
                return NULL;
        res = json_pack("{s:s, s:o, s:s, s:[{s:[{s:s, s:s, s:s}]}], s:{s:[{s:s, s:s, s:s}], s:s}, "
                        "s:o, s:o, s:i, s:o, s:o*}",
                        "resourceType", "Observation",
                        "identifier", identifier(FHIR_SYSTEM_DIARY, fhir_diary_value(wrap, e->id, value)),
                        "status", "final",
                        "category", "coding", "system", "http://terminology.hl7.org/CodeSystem/observation-category",
                        "code", "survey", "display", "Survey",
                        "code", "coding", "system", FHIR_LOINC, "code", LOINC_PAIN_0_10,
                        "display", "Pain severity - 0-10 verbal numeric rating [Score] - Reported",
                        "text", "Knee pain, 0-10",
                        "subject", reference(patient_ref),
                        "effectiveDateTime", date_time(e->at),
                        "valueInteger", (int) e->score,
                        "bodySite", json_array_get(site, 0) ? json_incref(json_array_get(site, 0)) : NULL,
                        "device", reference(device_ref));
        json_decref(site);
        if (!res)
                return NULL;
        components = flag_components(e->flags);
        if (!components || (json_array_size(components) > 0 &&
                            json_object_set(res, "component", components) < 0)) {
                json_decref(components);
                json_decref(res);
                return NULL;
        }
        json_decref(components);
        return res;
}

static const char *alert_title(AlertKind k) {
        switch (k) {
        case ALERT_SEE_PHYSIO:
                return "See a physiotherapist: no improvement in pain 4 weeks after the injury (R8)";
        case ALERT_SEE_PHYSIO_OVERDUE:
                return "See a physiotherapist, overdue: no improvement 6 weeks after the injury (R8)";
        case ALERT_RED_FLAG:
                return "Urgent: sudden swelling after a pop (R9)";
        case ALERT_SAFETY_STOP:
                return "Safety stop during a session (R5)";
        case ALERT_LOW_BATTERY:
                return "Low battery before a session";
        case ALERT_HEAT_FIRST_WEEK:
                return "Heat asked for in the week after an injury (R2)";
        case ALERT_NONE:
                break;
        }
        return NULL;
}

json_t *fhir_flag(const AlertRecord *a, const char *patient_ref, const char *device_ref) {
        char value[FHIR_VALUE_MAX], text[ALERT_TEXT_MAX + 160];
        const char *title;
        json_t *res, *period;

        if (!a || a->id <= 0 || !*a->wrap || !patient_ref)
                return NULL;
        title = alert_title(a->kind);
        if (!title)
                return NULL;
        if (*a->text)
                snprintf(text, sizeof(text), "%s. %s", title, a->text);
        else
                snprintf(text, sizeof(text), "%s", title);
        period = json_pack("{s:o}", "start", date_time(a->at));
        if (period && a->acked_at > 0 && json_object_set_new(period, "end", date_time(a->acked_at)) < 0) {
                json_decref(period);
                return NULL;
        }
        res = json_pack("{s:s, s:o, s:s, s:[{s:[{s:s, s:s, s:s}]}], s:{s:[{s:s, s:s}], s:s}, s:o, s:o, s:o*}",
                        "resourceType", "Flag",
                        "identifier", identifier(FHIR_SYSTEM_ALERT, fhir_alert_value(a->wrap, a->id, value)),
                        "status", a->acked_at > 0 ? "inactive" : "active",
                        "category", "coding", "system", "http://terminology.hl7.org/CodeSystem/flag-category",
                        "code", "clinical", "display", "Clinical",
                        "code", "coding", "system", "urn:kneewrap:alert-kind",
                        "code", alert_kind_to_string(a->kind),
                        "text", text,
                        "subject", reference(patient_ref),
                        "period", period,
                        "author", reference(device_ref));
        if (res && *a->session_id) {
                char display[UUID_STR_MAX + 16];

                snprintf(display, sizeof(display), "Session %s", a->session_id);
                if (json_object_set_new(res, "extension",
                                        json_pack("[{s:s, s:{s:s, s:{s:s, s:s}, s:s}}]", "url", FHIR_FLAG_DETAIL,
                                                  "valueReference", "type", "Procedure",
                                                  "identifier", "system", FHIR_SYSTEM_SESSION,
                                                  "value", a->session_id, "display", display)) < 0) {
                        json_decref(res);
                        return NULL;
                }
        }
        return res;
}

/* A Quantity in a UCUM unit. */
static json_t *quantity(double value, const char *unit) {
        return json_pack("{s:f, s:s, s:s, s:s}", "value", value, "unit", unit, "system", FHIR_UCUM, "code", unit);
}

json_t *fhir_run_observation(const RunRecord *r, const char *patient_ref) {
        char value[FHIR_VALUE_MAX], note[160];
        const char *source;
        json_t *res, *components;

        if (!r || r->id <= 0 || !*r->wrap || !patient_ref || r->ended_at <= 0)
                return NULL;
        source = request_source_to_string(r->source);
        snprintf(note, sizeof(note), "Run logged by the runner (%s)", source ? source : "?");
        res = json_pack("{s:s, s:o, s:s, s:[{s:[{s:s, s:s, s:s}]}], s:{s:[{s:s, s:s, s:s}], s:s}, "
                        "s:o, s:[o], s:{s:s}, s:[{s:s}]}",
                        "resourceType", "Observation",
                        "identifier", identifier(FHIR_SYSTEM_RUN, fhir_run_value(r->wrap, r->id, value)),
                        "status", "final",
                        "category", "coding", "system", "http://terminology.hl7.org/CodeSystem/observation-category",
                        "code", "activity", "display", "Activity",
                        "code", "coding", "system", FHIR_LOINC, "code", LOINC_EXERCISE, "display", "Exercise activity",
                        "text", "Run",
                        "subject", reference(patient_ref),
                        "performer", reference(patient_ref),
                        "valueCodeableConcept", "text", "Running",
                        "note", "text", note);
        if (!res)
                return NULL;
        if (r->minutes > 0) {
                json_t *period = json_pack("{s:o, s:o}", "start", date_time(r->ended_at - (int64_t) r->minutes * 60),
                                           "end", date_time(r->ended_at));
                if (json_object_set_new(res, "effectivePeriod", period) < 0)
                        goto fail;
        } else if (json_object_set_new(res, "effectiveDateTime", date_time(r->ended_at)) < 0)
                goto fail;
        components = json_array();
        if (!components || json_object_set_new(res, "component", components) < 0)
                goto fail;
        if (r->minutes > 0 &&
            json_array_append_new(components, json_pack("{s:{s:[{s:s, s:s, s:s}], s:s}, s:o}",
                                                         "code", "coding", "system", FHIR_LOINC,
                                                         "code", LOINC_EXERCISE_MIN, "display", "Exercise duration",
                                                         "text", "Duration of the run",
                                                         "valueQuantity", quantity(r->minutes, "min"))) < 0)
                goto fail;
        if (r->meters > 0 &&
            json_array_append_new(components, json_pack("{s:{s:s}, s:o}", "code", "text", "Distance of the run",
                                                        "valueQuantity", quantity(r->meters / 1000.0, "km"))) < 0)
                goto fail;
        /* A component list must not be empty in FHIR JSON. */
        if (json_array_size(components) == 0)
                json_object_del(res, "component");
        return res;
fail:
        json_decref(res);
        return NULL;
}

json_t *fhir_bundle_new(const char *type, int64_t timestamp) {
        if (!type)
                return NULL;
        return json_pack("{s:s, s:s, s:o, s:[]}", "resourceType", "Bundle", "type", type,
                         "timestamp", date_time(timestamp), "entry");
}

int fhir_bundle_add(json_t *bundle, const char *full_url, json_t *resource) {
        json_t *entries = json_object_get(bundle, "entry");

        if (!resource)
                return -EINVAL;
        if (!json_is_array(entries) || !full_url) {
                json_decref(resource);
                return -EINVAL;
        }
        if (json_array_append_new(entries, json_pack("{s:s, s:o}", "fullUrl", full_url, "resource", resource)) < 0)
                return -ENOMEM;
        return 0;
}
