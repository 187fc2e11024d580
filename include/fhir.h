/* fhir: the store's records as FHIR R4 (4.0.1) resources, for reports and clinic delivery. */
#pragma once

#include <jansson.h>
#include <stdbool.h>
#include <stdint.h>

#include "record.h"
#include "rules.h"
#include "store.h"

/*
 * Pure functions: no clock, no store, no I/O (fhir_urn_uuid alone reads randomness). Each
 * returns a new json_t the caller owns (json_decref), or NULL on a bad argument or out of
 * memory. Nothing here assigns a resource `id`: a collection Bundle names entries by
 * fullUrl, a transaction by fullUrl + request, and a server assigns ids.
 *
 * References between resources are passed in as strings (`patient_ref`, `device_ref`) and
 * written as Reference.reference unchanged: "urn:uuid:…" inside a Bundle, "Patient/123"
 * against a server.
 *
 * Identity. Every resource carries an `identifier` under one of the systems below, so a
 * server can de-duplicate and update it (conditional create with
 * ifNoneExist "identifier=<system>|<value>", conditional update on the same search). The
 * values are unique across gateways:
 *
 *   resource       system                  value
 *   Patient        FHIR_SYSTEM_PATIENT     the wrap id ("wrap_aabbcc001122"): one patient per wrap
 *   Device         FHIR_SYSTEM_WRAP        the wrap id
 *   Procedure      FHIR_SYSTEM_SESSION     session_id (a UUID)
 *   Observation    FHIR_SYSTEM_DIARY       "<wrap id>/diary/<row id>"
 *   Flag           FHIR_SYSTEM_ALERT       "<wrap id>/alert/<row id>"
 *   Observation    FHIR_SYSTEM_RUN         "<wrap id>/run/<row id>"
 *
 * Row ids are the gateway's own and never reused (SQLite rowid of a table nothing deletes
 * from). A wrap id comes from the wrap's Bluetooth address, so it is the same wherever
 * the wrap is adopted.
 *
 * The systems are URNs under "urn:kneewrap:": the project has no web domain of its own to
 * put them under. They are plain URIs to a server; nothing dereferences them.
 * docs/clinic.md lists them for clinics.
 *
 * Times are FHIR dateTime with the gateway's local UTC offset ("2026-11-21T15:04:05+01:00").
 */

#define FHIR_SYSTEM_PATIENT  "urn:kneewrap:patient"
#define FHIR_SYSTEM_WRAP     "urn:kneewrap:wrap"
#define FHIR_SYSTEM_SESSION  "urn:kneewrap:session-id"
#define FHIR_SYSTEM_DIARY    "urn:kneewrap:diary-entry"
#define FHIR_SYSTEM_ALERT    "urn:kneewrap:alert"
#define FHIR_SYSTEM_RUN      "urn:kneewrap:run"

/* Code systems used (checked sources are named in docs/clinic.md). */
#define FHIR_SNOMED          "http://snomed.info/sct"
#define FHIR_LOINC           "http://loinc.org"

/* The identifier value of a diary entry or an alert (see above); buf of FHIR_VALUE_MAX. */
#define FHIR_VALUE_MAX 96
char *fhir_diary_value(const char *wrap, int64_t id, char buf[static FHIR_VALUE_MAX]);
char *fhir_alert_value(const char *wrap, int64_t id, char buf[static FHIR_VALUE_MAX]);
char *fhir_run_value(const char *wrap, int64_t id, char buf[static FHIR_VALUE_MAX]);

/* A fresh "urn:uuid:…" for an entry's fullUrl (random; buf of FHIR_URN_MAX). Returns 0 or -errno. */
#define FHIR_URN_MAX (9 + UUID_STR_MAX)
int fhir_urn_uuid(char buf[static FHIR_URN_MAX]);

/*
 * Patient: pseudonymous. identifier = FHIR_SYSTEM_PATIENT|wrap, and the clinic's reference
 * (when set) as a second identifier of type "clinic reference" without a system; the label
 * as name.text; meta.security PSEUDED (v3-ObservationValue). `p` may be an empty profile
 * (nothing set) but its wrap must be set.
 */
json_t *fhir_patient(const PatientProfile *p);

/*
 * Device: the wrap. identifier = FHIR_SYSTEM_WRAP|wrap id; manufacturer, modelNumber,
 * serialNumber, version (firmware) from the wrap's Device Information (info may be NULL or
 * hold empty strings: those are left out); deviceName from the adopted name; patient.
 */
json_t *fhir_device(const StoredWrap *w, const WrapDeviceInfo *info, const char *patient_ref);

/*
 * Procedure: one session record, refused ones included.
 *   status: completed (outcome completed), stopped (stopped_by_user, stopped_for_safety,
 *           interrupted), not-done with statusReason (refused, not_started),
 *           in-progress (still open);
 *   code: cold as SNOMED CT 26782000 "Cryotherapy" with text "Cold therapy (knee wrap)";
 *         heat as text only, "Heat therapy (knee wrap)" (no SNOMED concept was verified);
 *   performedPeriod: started_at..ended_at when it ran (end left out while open);
 *   bodySite: knee (SNOMED CT 72696002) with the laterality from the profile in its text;
 *   focalDevice: the wrap (device_ref); outcome: the record's outcome as text;
 *   note: requested time, prescribed and run minutes, R7 compliance, skin temperatures;
 *   identifier: FHIR_SYSTEM_SESSION|session_id.
 * `profile` may be NULL (knee unknown). device_ref may be NULL (no focalDevice).
 */
json_t *fhir_procedure(const SessionRecord *r, const PatientProfile *profile,
                       const char *patient_ref, const char *device_ref);

/*
 * Observation: one pain diary entry. LOINC 72514-3 "Pain severity - 0-10 verbal numeric
 * rating [Score] - Reported", category survey, valueInteger = score, effectiveDateTime,
 * bodySite text = the knee and where it hurts, one component per flag set (swelling,
 * pop, giving way, catching) as valueBoolean true, code text only. `wrap` names the entry
 * with e->id (must be > 0). device_ref may be NULL.
 */
json_t *fhir_pain_observation(const char *wrap, const DiaryEntry *e, const PatientProfile *profile,
                              const char *patient_ref, const char *device_ref);

/*
 * Flag: one alert. status active while not acknowledged, inactive once it is (a server
 * gets the change by a conditional update on the identifier); category clinical; code text
 * = the alert's kind in words and its text; period.start = raised at, period.end =
 * acknowledged at; subject the patient; author the device (may be NULL). An alert about a
 * session carries R4's core extension flag-detail (http://hl7.org/fhir/StructureDefinition/
 * flag-detail, "the record that provides additional supporting information about this flag",
 * context Flag) with a logical Reference to that session's Procedure: type Procedure and
 * identifier FHIR_SYSTEM_SESSION|session_id, which resolves on any server whichever Bundle
 * carried the Procedure. R4's Flag has no element of its own for it.
 */
json_t *fhir_flag(const AlertRecord *a, const char *patient_ref, const char *device_ref);

/*
 * Observation: one run the runner logged. category activity; code LOINC 73985-4 "Exercise
 * activity" with valueCodeableConcept text "Running" (the HL7 Physical Activity IG's activity
 * measure); effectivePeriod from ended_at - minutes to ended_at when the minutes are known,
 * else effectiveDateTime = ended_at; components: LOINC 55411-3 "Exercise duration" in min
 * (UCUM) when known, and the distance in km (UCUM), code text only (no LOINC concept for a
 * run's distance was verified), when known; performer the patient, who reported it; note:
 * how it was logged. identifier FHIR_SYSTEM_RUN|"<wrap>/run/<id>". docs/clinic.md says where
 * the codes were checked.
 */
json_t *fhir_run_observation(const RunRecord *r, const char *patient_ref);

/* An empty Bundle of `type` ("collection", "transaction", …) with `timestamp` (Unix s). */
json_t *fhir_bundle_new(const char *type, int64_t timestamp);
/* Appends { fullUrl, resource } to bundle.entry, taking the reference to `resource`. */
int fhir_bundle_add(json_t *bundle, const char *full_url, json_t *resource);
