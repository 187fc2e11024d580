/* test-fhir: the FHIR R4 mapping, field by field; `--print` writes a bundle of every case for the schema test. */
#include <errno.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>
#include <cmocka.h>

#include "fhir.h"
#include "record.h"
#include "rules.h"
#include "store.h"
#include "util.h"

#define T0 ((int64_t) 1795000000)   /* 2026-11-18T11:06:40Z (TZ=UTC in the tests) */
#define PATIENT "urn:uuid:11111111-1111-4111-8111-111111111111"
#define DEVICE "urn:uuid:22222222-2222-4222-8222-222222222222"

static const char *str_at(json_t *j, const char *path) {
        /* A tiny dotted path walker: "a.b.0.c". */
        char buf[256], *save = NULL, *tok;

        snprintf(buf, sizeof(buf), "%s", path);
        for (tok = strtok_r(buf, ".", &save); tok && j; tok = strtok_r(NULL, ".", &save)) {
                if (json_is_array(j))
                        j = json_array_get(j, (size_t) strtoul(tok, NULL, 10));
                else
                        j = json_object_get(j, tok);
        }
        return json_is_string(j) ? json_string_value(j) : NULL;
}

static json_t *at(json_t *j, const char *path) {
        char buf[256], *save = NULL, *tok;

        snprintf(buf, sizeof(buf), "%s", path);
        for (tok = strtok_r(buf, ".", &save); tok && j; tok = strtok_r(NULL, ".", &save))
                j = json_is_array(j) ? json_array_get(j, (size_t) strtoul(tok, NULL, 10)) : json_object_get(j, tok);
        return j;
}

static PatientProfile profile(Knee knee) {
        PatientProfile p = { .wrap = "wrap_aabbcc001122", .knee = knee };

        snprintf(p.label, sizeof(p.label), "Patient 12");
        snprintf(p.clinic_ref, sizeof(p.clinic_ref), "PT-2026-0012");
        return p;
}

static SessionRecord session(TherapyMode mode, SessionOutcome outcome) {
        SessionRecord r = {
                .session_id = "6f1c2a52-0d4e-4c1b-9a77-3a1d2a9b8c01",
                .wrap = "wrap_aabbcc001122",
                .mode = mode,
                .source = SOURCE_BUTTON,
                .requested_at = T0,
                .prescribed_s = 900,
                .outcome = outcome,
        };

        if (outcome == OUTCOME_REFUSED) {
                r.refusal = mode == THERAPY_HEAT ? REFUSAL_HEAT_TOO_SOON : REFUSAL_REST_INTERVAL;
                r.minutes_left = 42;
                return r;
        }
        if (outcome == OUTCOME_NOT_STARTED)
                return r;
        r.started_at = T0 + 1;
        if (outcome != OUTCOME_OPEN) {
                r.duration_s = outcome == OUTCOME_COMPLETED ? 900 : 300;
                r.ended_at = r.started_at + r.duration_s;
        }
        r.compliant = mode == THERAPY_COLD && r.duration_s >= 600;
        skin_stats_add(&r.skin, 1200);
        skin_stats_add(&r.skin, 1100);
        return r;
}

static void test_patient(void **state) {
        PatientProfile p = profile(KNEE_LEFT), empty = { .wrap = "wrap_aabbcc001122" };
        json_t *j = fhir_patient(&p);

        assert_non_null(j);
        assert_string_equal(str_at(j, "resourceType"), "Patient");
        assert_string_equal(str_at(j, "identifier.0.system"), FHIR_SYSTEM_PATIENT);
        assert_string_equal(str_at(j, "identifier.0.value"), "wrap_aabbcc001122");
        assert_string_equal(str_at(j, "identifier.1.value"), "PT-2026-0012");
        assert_string_equal(str_at(j, "name.0.text"), "Patient 12");
        assert_string_equal(str_at(j, "meta.security.0.code"), "PSEUDED");
        json_decref(j);

        /* Nothing set: still a patient, without a name or a clinic reference. */
        j = fhir_patient(&empty);
        assert_non_null(j);
        assert_null(at(j, "name"));
        assert_int_equal(json_array_size(at(j, "identifier")), 1);
        json_decref(j);

        empty.wrap[0] = '\0';
        assert_null(fhir_patient(&empty));
        assert_null(fhir_patient(NULL));
}

static void test_device(void **state) {
        StoredWrap w = { .wrap = "wrap_aabbcc001122", .address = "AA:BB:CC:00:11:22", .name = "KneeWrap 1122" };
        WrapDeviceInfo info = { .manufacturer = "Acme", .model = "KW-1", .serial = "AABBCC001122", .firmware = "1.4.2" };
        json_t *j = fhir_device(&w, &info, PATIENT);

        assert_non_null(j);
        assert_string_equal(str_at(j, "identifier.0.system"), FHIR_SYSTEM_WRAP);
        assert_string_equal(str_at(j, "identifier.0.value"), "wrap_aabbcc001122");
        assert_string_equal(str_at(j, "manufacturer"), "Acme");
        assert_string_equal(str_at(j, "modelNumber"), "KW-1");
        assert_string_equal(str_at(j, "serialNumber"), "AABBCC001122");
        assert_string_equal(str_at(j, "version.0.value"), "1.4.2");
        assert_string_equal(str_at(j, "deviceName.0.name"), "KneeWrap 1122");
        assert_string_equal(str_at(j, "patient.reference"), PATIENT);
        json_decref(j);

        /* Never read: only what is known. */
        j = fhir_device(&w, NULL, NULL);
        assert_non_null(j);
        assert_null(at(j, "manufacturer"));
        assert_null(at(j, "version"));
        assert_null(at(j, "patient"));
        json_decref(j);
}

static void test_procedure_status(void **state) {
        static const struct {
                TherapyMode mode;
                SessionOutcome outcome;
                const char *status;
                bool period, reason;
        } cases[] = {
                { THERAPY_COLD, OUTCOME_COMPLETED, "completed", true, false },
                { THERAPY_COLD, OUTCOME_STOPPED_BY_USER, "stopped", true, false },
                { THERAPY_COLD, OUTCOME_STOPPED_FOR_SAFETY, "stopped", true, true },
                { THERAPY_HEAT, OUTCOME_INTERRUPTED, "stopped", true, false },
                { THERAPY_COLD, OUTCOME_REFUSED, "not-done", false, true },
                { THERAPY_HEAT, OUTCOME_REFUSED, "not-done", false, true },
                { THERAPY_COLD, OUTCOME_NOT_STARTED, "not-done", false, true },
                { THERAPY_COLD, OUTCOME_OPEN, "in-progress", true, false },
        };
        PatientProfile p = profile(KNEE_RIGHT);

        for (size_t i = 0; i < ELEMENTSOF(cases); i++) {
                SessionRecord r = session(cases[i].mode, cases[i].outcome);
                json_t *j = fhir_procedure(&r, &p, PATIENT, DEVICE);

                assert_non_null(j);
                assert_string_equal(str_at(j, "status"), cases[i].status);
                assert_string_equal(str_at(j, "identifier.0.system"), FHIR_SYSTEM_SESSION);
                assert_string_equal(str_at(j, "identifier.0.value"), r.session_id);
                assert_true((at(j, "performedPeriod") != NULL) == cases[i].period);
                assert_true((at(j, "statusReason") != NULL) == cases[i].reason);
                assert_string_equal(str_at(j, "bodySite.0.text"), "Right knee");
                assert_string_equal(str_at(j, "bodySite.0.coding.0.code"), "72696002");
                assert_string_equal(str_at(j, "focalDevice.0.manipulated.reference"), DEVICE);
                assert_string_equal(str_at(j, "subject.reference"), PATIENT);
                assert_non_null(str_at(j, "code.text"));
                if (cases[i].mode == THERAPY_COLD)
                        assert_string_equal(str_at(j, "code.coding.0.code"), "26782000");
                else
                        assert_null(at(j, "code.coding"));
                if (cases[i].outcome == OUTCOME_OPEN)
                        assert_null(at(j, "performedPeriod.end"));
                json_decref(j);
        }
}

static void test_procedure_refusal(void **state) {
        SessionRecord r = session(THERAPY_HEAT, OUTCOME_REFUSED);
        json_t *j = fhir_procedure(&r, NULL, PATIENT, NULL);

        assert_non_null(j);
        assert_string_equal(str_at(j, "statusReason.coding.0.code"), "heat_too_soon");
        assert_non_null(strstr(str_at(j, "statusReason.text"), "42 min left"));
        assert_string_equal(str_at(j, "bodySite.0.text"), "Knee");
        assert_null(at(j, "focalDevice"));
        /* R10: times from an unsynchronised clock say so. */
        assert_non_null(strstr(str_at(j, "note.0.text"), "(R10)"));
        json_decref(j);
        r.clock_synced = true;
        j = fhir_procedure(&r, NULL, PATIENT, NULL);
        assert_null(strstr(str_at(j, "note.0.text"), "(R10)"));
        json_decref(j);

        r.mode = THERAPY_NONE;
        assert_null(fhir_procedure(&r, NULL, PATIENT, NULL));
        r = session(THERAPY_COLD, OUTCOME_COMPLETED);
        assert_null(fhir_procedure(&r, NULL, NULL, NULL));
}

static void test_observation(void **state) {
        PatientProfile p = profile(KNEE_LEFT);
        DiaryEntry e = { .id = 7, .at = T0, .score = 6, .where = WHERE_INNER, .flags = DIARY_SWELLING | DIARY_POP };
        json_t *j = fhir_pain_observation("wrap_aabbcc001122", &e, &p, PATIENT, DEVICE);

        assert_non_null(j);
        assert_string_equal(str_at(j, "code.coding.0.system"), FHIR_LOINC);
        assert_string_equal(str_at(j, "code.coding.0.code"), "72514-3");
        assert_int_equal(json_integer_value(at(j, "valueInteger")), 6);
        assert_string_equal(str_at(j, "identifier.0.system"), FHIR_SYSTEM_DIARY);
        assert_string_equal(str_at(j, "identifier.0.value"), "wrap_aabbcc001122/diary/7");
        assert_string_equal(str_at(j, "bodySite.text"), "Left knee, inner side");
        assert_int_equal(json_array_size(at(j, "component")), 2);
        assert_string_equal(str_at(j, "component.0.code.text"), "Swelling");
        assert_string_equal(str_at(j, "effectiveDateTime"), "2026-11-18T11:06:40+00:00");
        json_decref(j);

        e.flags = 0;
        j = fhir_pain_observation("wrap_aabbcc001122", &e, NULL, PATIENT, NULL);
        assert_non_null(j);
        assert_null(at(j, "component"));
        json_decref(j);

        e.id = 0;   /* never stored: no identity */
        assert_null(fhir_pain_observation("wrap_aabbcc001122", &e, NULL, PATIENT, NULL));
        e.id = 1;
        e.score = 11;
        assert_null(fhir_pain_observation("wrap_aabbcc001122", &e, NULL, PATIENT, NULL));
}

static void test_flag(void **state) {
        AlertRecord a = { .id = 3, .wrap = "wrap_aabbcc001122", .kind = ALERT_RED_FLAG, .at = T0,
                          .text = "Diary entry: swelling after a pop" };
        json_t *j = fhir_flag(&a, PATIENT, DEVICE);

        assert_non_null(j);
        assert_string_equal(str_at(j, "status"), "active");
        assert_string_equal(str_at(j, "identifier.0.value"), "wrap_aabbcc001122/alert/3");
        assert_string_equal(str_at(j, "code.coding.0.code"), "red_flag");
        assert_non_null(strstr(str_at(j, "code.text"), "Urgent"));
        assert_null(at(j, "period.end"));
        json_decref(j);

        a.acked_at = T0 + 60;
        j = fhir_flag(&a, PATIENT, NULL);
        assert_string_equal(str_at(j, "status"), "inactive");
        assert_non_null(at(j, "period.end"));

        /* No session: no flag-detail. */
        assert_null(at(j, "extension"));
        json_decref(j);

        /* About a session: R4's flag-detail extension, a logical reference to its Procedure. */
        a.kind = ALERT_SAFETY_STOP;
        snprintf(a.session_id, sizeof a.session_id, "6f1c2a52-0d4e-4c1b-9a77-3a1d2a9b8c01");
        j = fhir_flag(&a, PATIENT, DEVICE);
        assert_non_null(j);
        assert_int_equal(json_array_size(at(j, "extension")), 1);
        assert_string_equal(str_at(j, "extension.0.url"), "http://hl7.org/fhir/StructureDefinition/flag-detail");
        assert_string_equal(str_at(j, "extension.0.valueReference.type"), "Procedure");
        assert_string_equal(str_at(j, "extension.0.valueReference.identifier.system"), FHIR_SYSTEM_SESSION);
        assert_string_equal(str_at(j, "extension.0.valueReference.identifier.value"), a.session_id);
        json_decref(j);

        a.kind = ALERT_NONE;
        assert_null(fhir_flag(&a, PATIENT, NULL));
}

static void test_run(void **state) {
        RunRecord r = { .id = 4, .wrap = "wrap_aabbcc001122", .ended_at = T0, .minutes = 42, .meters = 8200,
                        .source = SOURCE_CLI, .recorded_at = T0 + 5 };
        json_t *j = fhir_run_observation(&r, PATIENT);

        assert_non_null(j);
        assert_string_equal(str_at(j, "resourceType"), "Observation");
        assert_string_equal(str_at(j, "status"), "final");
        assert_string_equal(str_at(j, "identifier.0.system"), "urn:kneewrap:run");
        assert_string_equal(str_at(j, "identifier.0.value"), "wrap_aabbcc001122/run/4");
        assert_string_equal(str_at(j, "category.0.coding.0.code"), "activity");
        assert_string_equal(str_at(j, "code.coding.0.system"), "http://loinc.org");
        assert_string_equal(str_at(j, "code.coding.0.code"), "73985-4");
        assert_string_equal(str_at(j, "valueCodeableConcept.text"), "Running");
        assert_string_equal(str_at(j, "subject.reference"), PATIENT);
        assert_string_equal(str_at(j, "performer.0.reference"), PATIENT);
        /* 42 minutes ending at T0 (TZ=UTC). */
        assert_string_equal(str_at(j, "effectivePeriod.start"), "2026-11-18T10:24:40+00:00");
        assert_string_equal(str_at(j, "effectivePeriod.end"), "2026-11-18T11:06:40+00:00");
        assert_null(at(j, "effectiveDateTime"));
        assert_string_equal(str_at(j, "component.0.code.coding.0.code"), "55411-3");
        assert_true(json_real_value(at(j, "component.0.valueQuantity.value")) == 42.0);
        assert_string_equal(str_at(j, "component.0.valueQuantity.system"), "http://unitsofmeasure.org");
        assert_string_equal(str_at(j, "component.0.valueQuantity.code"), "min");
        assert_true(json_real_value(at(j, "component.1.valueQuantity.value")) == 8.2);
        assert_string_equal(str_at(j, "component.1.valueQuantity.code"), "km");
        assert_non_null(strstr(str_at(j, "note.0.text"), "cli"));
        json_decref(j);

        /* "I just ran": neither minutes nor km; a time, no components (FHIR has no empty arrays). */
        r.minutes = r.meters = 0;
        j = fhir_run_observation(&r, PATIENT);
        assert_non_null(j);
        assert_string_equal(str_at(j, "effectiveDateTime"), "2026-11-18T11:06:40+00:00");
        assert_null(at(j, "effectivePeriod"));
        assert_null(at(j, "component"));
        json_decref(j);

        r.meters = 5000;
        j = fhir_run_observation(&r, PATIENT);
        assert_int_equal(json_array_size(at(j, "component")), 1);
        assert_string_equal(str_at(j, "component.0.code.text"), "Distance of the run");
        json_decref(j);

        r.id = 0;
        assert_null(fhir_run_observation(&r, PATIENT));
        assert_null(fhir_run_observation(NULL, PATIENT));
}

static void test_bundle(void **state) {
        json_t *b = fhir_bundle_new("collection", T0);
        char urn[FHIR_URN_MAX];

        assert_non_null(b);
        assert_int_equal(fhir_urn_uuid(urn), 0);
        assert_int_equal(strncmp(urn, "urn:uuid:", 9), 0);
        assert_int_equal(strlen(urn), 9 + 36);
        assert_int_equal(fhir_bundle_add(b, urn, json_object()), 0);
        assert_int_equal(fhir_bundle_add(b, urn, NULL), -EINVAL);
        assert_int_equal(json_array_size(at(b, "entry")), 1);
        assert_string_equal(str_at(b, "type"), "collection");
        json_decref(b);
}

/* Every case above in one collection bundle, for tests/integration/test_fhir_schema.py. */
static int print_bundle(void) {
        static const SessionOutcome outcomes[] = {
                OUTCOME_COMPLETED, OUTCOME_STOPPED_BY_USER, OUTCOME_STOPPED_FOR_SAFETY,
                OUTCOME_INTERRUPTED, OUTCOME_REFUSED, OUTCOME_NOT_STARTED, OUTCOME_OPEN,
        };
        StoredWrap w = { .wrap = "wrap_aabbcc001122", .address = "AA:BB:CC:00:11:22", .name = "KneeWrap 1122" };
        WrapDeviceInfo info = { .manufacturer = "Acme", .model = "KW-1", .serial = "AABBCC001122", .firmware = "1.4.2" };
        PatientProfile p = profile(KNEE_LEFT);
        json_t *b = fhir_bundle_new("collection", T0);
        char urn[FHIR_URN_MAX];
        int r = 0, id = 1;

        r |= fhir_bundle_add(b, PATIENT, fhir_patient(&p));
        r |= fhir_bundle_add(b, DEVICE, fhir_device(&w, &info, PATIENT));
        for (int mode = THERAPY_COLD; mode <= THERAPY_HEAT; mode++)
                for (size_t i = 0; i < ELEMENTSOF(outcomes); i++) {
                        SessionRecord s = session((TherapyMode) mode, outcomes[i]);

                        uuid_generate_str(s.session_id);
                        r |= fhir_urn_uuid(urn);
                        r |= fhir_bundle_add(b, urn, fhir_procedure(&s, i % 2 ? &p : NULL, PATIENT, i % 3 ? DEVICE : NULL));
                }
        for (int score = 0; score <= 10; score += 5) {
                DiaryEntry e = { .id = id++, .at = T0 + score, .score = (uint8_t) score,
                                 .where = (DiaryWhere) (score % _WHERE_MAX), .flags = (uint8_t) score };

                r |= fhir_urn_uuid(urn);
                r |= fhir_bundle_add(b, urn, fhir_pain_observation(w.wrap, &e, &p, PATIENT, DEVICE));
        }
        for (unsigned bit = 0; bit < 6; bit++) {
                AlertRecord a = { .id = bit + 1, .wrap = "wrap_aabbcc001122", .kind = (AlertKind) (1u << bit),
                                  .at = T0, .text = "detail", .acked_at = bit % 2 ? T0 + 5 : 0 };

                if (bit % 3 == 0)
                        uuid_generate_str(a.session_id);
                r |= fhir_urn_uuid(urn);
                r |= fhir_bundle_add(b, urn, fhir_flag(&a, PATIENT, bit % 2 ? DEVICE : NULL));
        }
        for (unsigned k = 0; k < 4; k++) {
                RunRecord run = { .id = k + 1, .wrap = "wrap_aabbcc001122", .ended_at = T0 + k,
                                  .minutes = k % 2 ? 30 : 0, .meters = k >= 2 ? 5250 : 0, .source = SOURCE_MQTT };

                r |= fhir_urn_uuid(urn);
                r |= fhir_bundle_add(b, urn, fhir_run_observation(&run, PATIENT));
        }
        if (r != 0 || json_dumpf(b, stdout, JSON_INDENT(1)) < 0) {
                json_decref(b);
                return 1;
        }
        json_decref(b);
        return 0;
}

int main(int argc, char *argv[]) {
        const struct CMUnitTest tests[] = {
                cmocka_unit_test(test_patient),
                cmocka_unit_test(test_device),
                cmocka_unit_test(test_procedure_status),
                cmocka_unit_test(test_procedure_refusal),
                cmocka_unit_test(test_observation),
                cmocka_unit_test(test_flag),
                cmocka_unit_test(test_run),
                cmocka_unit_test(test_bundle),
        };

        if (argc > 1 && strcmp(argv[1], "--print") == 0)
                return print_bundle();
        return cmocka_run_group_tests(tests, NULL, NULL);
}
