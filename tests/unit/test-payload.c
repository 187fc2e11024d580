/* Unit tests for payload: the session record and alert JSON, byte for byte, and their topics. */
#include <errno.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <cmocka.h>

#include "config.h"
#include "payload.h"
#include "record.h"
#include "util.h"

/* 2026-11-21 15:04:05 in Berlin (+01:00). */
#define T0 ((int64_t) 1795269845)

static Config test_config(void) {
        /* Only the fields the payload builders read: no dependency on config.c. */
        Config c = { .base_topic = (char *) "kneewrap" };
        return c;
}

static SessionRecord completed_cold(void) {
        SessionRecord r = {
                .session_id = "0f8fad5b-d9cb-469f-a165-70867728950e",
                .wrap = "wrap_aabbccddeeff",
                .mode = THERAPY_COLD,
                .source = SOURCE_BUTTON,
                .requested_at = T0,
                .started_at = T0 + 2,
                .ended_at = T0 + 2 + 900,
                .prescribed_s = 900,
                .duration_s = 900,
                .outcome = OUTCOME_COMPLETED,
                .compliant = true,
                .refusal = REFUSAL_NONE,
                .has_days_since_injury = true,
                .days_since_injury = 35,
                .clock_synced = true,
                .setpoint = 1000,
        };
        /* min 10.5, max 14.5, mean (1050+1200+1451)/3 = 1233.67 -> 12.34 */
        skin_stats_add(&r.skin, 1200);
        skin_stats_add(&r.skin, 1050);
        skin_stats_add(&r.skin, 1451);
        return r;
}

static void test_completed(void **state) {
        SessionRecord r = completed_cold();
        _cleanup_free_ char *j = NULL;

        assert_int_equal(payload_session(&r, &j), 0);
        assert_string_equal(j,
                "{\"session_id\":\"0f8fad5b-d9cb-469f-a165-70867728950e\","
                "\"wrap\":\"wrap_aabbccddeeff\",\"mode\":\"cold\",\"source\":\"button\","
                "\"requested_at\":\"2026-11-21T15:04:05+01:00\","
                "\"started_at\":\"2026-11-21T15:04:07+01:00\","
                "\"ended_at\":\"2026-11-21T15:19:07+01:00\","
                "\"prescribed_s\":900,\"duration_s\":900,\"outcome\":\"completed\","
                "\"compliant\":true,\"refusal\":null,"
                "\"skin_c\":{\"min\":10.5,\"mean\":12.34,\"max\":14.51},"
                "\"days_since_injury\":3.5,\"clock_synced\":true}");
}

static void test_refused(void **state) {
        SessionRecord r = {
                .session_id = "6ba7b810-9dad-41d1-80b4-00c04fd430c8",
                .wrap = "wrap_aabbccddeeff",
                .mode = THERAPY_HEAT,
                .source = SOURCE_MQTT,
                .requested_at = T0,
                .prescribed_s = 900,
                .outcome = OUTCOME_REFUSED,
                .refusal = REFUSAL_CLOCK_UNSYNCED,
                .minutes_left = 7245,
                .has_days_since_injury = true,
                .days_since_injury = 20,
        };
        _cleanup_free_ char *j = NULL;

        assert_int_equal(payload_session(&r, &j), 0);
        assert_string_equal(j,
                "{\"session_id\":\"6ba7b810-9dad-41d1-80b4-00c04fd430c8\","
                "\"wrap\":\"wrap_aabbccddeeff\",\"mode\":\"heat\",\"source\":\"mqtt\","
                "\"requested_at\":\"2026-11-21T15:04:05+01:00\","
                "\"started_at\":null,\"ended_at\":null,"
                "\"prescribed_s\":900,\"duration_s\":0,\"outcome\":\"refused\","
                "\"compliant\":false,"
                "\"refusal\":{\"reason\":\"clock_unsynced\",\"minutes_left\":7245},"
                "\"skin_c\":null,\"days_since_injury\":2.0,\"clock_synced\":false}");
}

static void test_not_started(void **state) {
        /* Summer time: the offset is +02:00. */
        SessionRecord r = {
                .session_id = "16fd2706-8baf-433b-82eb-8c7fada847da",
                .wrap = "wrap_001122334455",
                .mode = THERAPY_COLD,
                .source = SOURCE_CLI,
                .requested_at = 1782887400,
                .prescribed_s = 720,
                .outcome = OUTCOME_NOT_STARTED,
                .start_result = 3,
        };
        _cleanup_free_ char *j = NULL;

        assert_int_equal(payload_session(&r, &j), 0);
        assert_string_equal(j,
                "{\"session_id\":\"16fd2706-8baf-433b-82eb-8c7fada847da\","
                "\"wrap\":\"wrap_001122334455\",\"mode\":\"cold\",\"source\":\"cli\","
                "\"requested_at\":\"2026-07-01T08:30:00+02:00\","
                "\"started_at\":null,\"ended_at\":null,"
                "\"prescribed_s\":720,\"duration_s\":0,\"outcome\":\"not_started\","
                "\"compliant\":false,\"refusal\":null,\"skin_c\":null,"
                "\"days_since_injury\":null,\"clock_synced\":false}");
}

static char *skin_of(int32_t a, int32_t b) {
        SessionRecord r = completed_cold();
        char *j = NULL, *p, *e;

        memset(&r.skin, 0, sizeof(r.skin));
        skin_stats_add(&r.skin, a);
        skin_stats_add(&r.skin, b);
        assert_int_equal(payload_session(&r, &j), 0);
        p = strstr(j, "\"skin_c\":");
        assert_non_null(p);
        e = strchr(p, '}');
        assert_non_null(e);
        e[1] = 0;
        memmove(j, p, strlen(p) + 1);
        return j;
}

static void test_skin_numbers(void **state) {
        char *j;

        /* Whole degrees keep their ".0"; a mean of x.xx5 rounds away from zero. */
        j = skin_of(900, 1000);
        assert_string_equal(j, "\"skin_c\":{\"min\":9.0,\"mean\":9.5,\"max\":10.0}");
        free(j);
        j = skin_of(3655, 3656);
        assert_string_equal(j, "\"skin_c\":{\"min\":36.55,\"mean\":36.56,\"max\":36.56}");
        free(j);
        j = skin_of(-101, -100);
        assert_string_equal(j, "\"skin_c\":{\"min\":-1.01,\"mean\":-1.01,\"max\":-1.0}");
        free(j);
        j = skin_of(1, 2);
        assert_string_equal(j, "\"skin_c\":{\"min\":0.01,\"mean\":0.02,\"max\":0.02}");
        free(j);
        j = skin_of(4299, 4301);
        assert_string_equal(j, "\"skin_c\":{\"min\":42.99,\"mean\":43.0,\"max\":43.01}");
        free(j);
}

static void test_session_msg(void **state) {
        Config c = test_config();
        SessionRecord r = completed_cold();
        _cleanup_free_ char *j = NULL;
        OutboxMsg m = { 0 };

        assert_int_equal(payload_session_msg(&c, &r, &m), 0);
        assert_string_equal(m.topic, "kneewrap/wrap_aabbccddeeff/session");
        assert_int_equal(m.qos, 1);
        assert_false(m.retain);
        assert_int_equal(payload_session(&r, &j), 0);
        assert_string_equal(m.payload, j);
        outbox_msg_done(&m);
        assert_null(m.topic);
        assert_null(m.payload);

        c.base_topic = (char *) "home/knee";
        assert_int_equal(payload_session_msg(&c, &r, &m), 0);
        assert_string_equal(m.topic, "home/knee/wrap_aabbccddeeff/session");
        outbox_msg_done(&m);
}

static void test_alert_msg(void **state) {
        Config c = test_config();
        AlertRecord a = { .id = 7, .wrap = "wrap_aabbccddeeff", .kind = ALERT_RED_FLAG, .at = T0,
                          .text = "Sudden swelling after a \"pop\": see a doctor today." };
        OutboxMsg m = { 0 };

        assert_int_equal(payload_alert_msg(&c, &a, true, &m), 0);
        assert_string_equal(m.topic, "kneewrap/wrap_aabbccddeeff/alert");
        assert_int_equal(m.qos, 1);
        assert_true(m.retain);
        assert_string_equal(m.payload,
                "{\"id\":7,\"event_type\":\"red_flag\",\"alert\":\"red_flag\",\"severity\":\"urgent\","
                "\"wrap\":\"wrap_aabbccddeeff\",\"at\":\"2026-11-21T15:04:05+01:00\","
                "\"message\":\"Sudden swelling after a \\\"pop\\\": see a doctor today.\","
                "\"session_id\":null,\"acked_at\":null}");
        outbox_msg_done(&m);

        /* Acknowledged, and no longer the latest: not retained, or it would hide the newer one. */
        a.kind = ALERT_SEE_PHYSIO;
        a.acked_at = T0 + 60;
        snprintf(a.text, sizeof a.text, "ok");
        snprintf(a.session_id, sizeof a.session_id, "0f8fad5b-d9cb-469f-a165-70867728950e");
        assert_int_equal(payload_alert_msg(&c, &a, false, &m), 0);
        assert_false(m.retain);
        assert_string_equal(m.payload,
                "{\"id\":7,\"event_type\":\"acknowledged\",\"alert\":\"see_physio\",\"severity\":\"warning\","
                "\"wrap\":\"wrap_aabbccddeeff\",\"at\":\"2026-11-21T15:04:05+01:00\",\"message\":\"ok\","
                "\"session_id\":\"0f8fad5b-d9cb-469f-a165-70867728950e\",\"acked_at\":\"2026-11-21T15:05:05+01:00\"}");
        outbox_msg_done(&m);
}

int main(void) {
        const struct CMUnitTest tests[] = {
                cmocka_unit_test(test_completed),
                cmocka_unit_test(test_refused),
                cmocka_unit_test(test_not_started),
                cmocka_unit_test(test_skin_numbers),
                cmocka_unit_test(test_session_msg),
                cmocka_unit_test(test_alert_msg),
        };

        setenv("TZ", "Europe/Berlin", 1);
        tzset();
        return cmocka_run_group_tests(tests, NULL, NULL);
}
