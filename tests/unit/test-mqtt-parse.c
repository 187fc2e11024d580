/* Unit tests for the MQTT command parser, its responses, HA discovery configs and state JSON. */
#include <errno.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <cmocka.h>
#include <jansson.h>

#include "../../src/mqtt/commands.h"
#include "config.h"
#include "../../src/mqtt/discovery.h"
#include "../../src/mqtt/state.h"
#include "util.h"

static int parse(const char *request, const char *json, Command *c, char error[static COMMAND_ERROR_MAX]) {
        return command_parse(request, json, strlen(json), c, error);
}

static void test_set_start_stop(void **state) {
        char err[COMMAND_ERROR_MAX];
        Command c;

        assert_int_equal(parse(NULL, "{\"action\":\"start\",\"mode\":\"cold\"}", &c, err), 0);
        assert_int_equal(c.type, COMMAND_START);
        assert_int_equal(c.mode, THERAPY_COLD);
        assert_false(c.has_transaction);
        assert_int_equal(parse(NULL, "{\"mode\":\"heat\",\"action\":\"start\",\"transaction\":\"t1\"}", &c, err), 0);
        assert_int_equal(c.mode, THERAPY_HEAT);
        assert_true(c.has_transaction);
        assert_string_equal(c.transaction, "t1");
        assert_int_equal(parse(NULL, "{\"action\":\"stop\"}", &c, err), 0);
        assert_int_equal(c.type, COMMAND_STOP);

        assert_int_equal(parse(NULL, "{\"action\":\"start\",\"mode\":\"none\"}", &c, err), -EINVAL);
        assert_non_null(strstr(err, "\"mode\" must be"));
        assert_int_equal(parse(NULL, "{\"action\":\"start\",\"mode\":1}", &c, err), -EINVAL);
        assert_int_equal(parse(NULL, "{\"action\":true}", &c, err), -EINVAL);
        assert_int_equal(parse(NULL, "{\"action\":\"stop\",\"action\":\"stop\"}", &c, err), -EINVAL);
        assert_non_null(strstr(err, "not JSON"));
        assert_int_equal(parse(NULL, "{\"action\":\"start\",\"mode\":\"cold\",\"x\":1}", &c, err), -EINVAL);
        assert_string_equal(err, "unknown key \"x\" in the command");
        assert_int_equal(parse(NULL, "", &c, err), -EINVAL);
        assert_int_equal(parse(NULL, "null", &c, err), -EINVAL);
        assert_int_equal(parse(NULL, "\"start\"", &c, err), -EINVAL);
}

static void test_set_injury_and_pain(void **state) {
        char err[COMMAND_ERROR_MAX];
        Command c;

        assert_int_equal(parse(NULL, "{\"injury\":\"2026-11-20\"}", &c, err), 0);
        assert_int_equal(c.type, COMMAND_INJURY);
        assert_string_equal(c.injury, "2026-11-20");
        assert_int_equal(parse(NULL, "{\"injury\":\"2026-11-20T18:30+01:00\"}", &c, err), 0);
        assert_string_equal(c.injury, "2026-11-20T18:30+01:00");
        assert_int_equal(parse(NULL, "{\"injury\":null}", &c, err), 0);
        assert_string_equal(c.injury, "");
        assert_int_equal(parse(NULL, "{\"injury\":\"\"}", &c, err), 0);
        assert_string_equal(c.injury, "");
        assert_int_equal(parse(NULL, "{\"injury\":\"today\"}", &c, err), 0);
        assert_string_equal(c.injury, "today");
        assert_int_equal(parse(NULL, "{\"injury\":\"2026-02-30\"}", &c, err), -EINVAL);
        assert_int_equal(parse(NULL, "{\"injury\":5}", &c, err), -EINVAL);

        assert_int_equal(parse(NULL, "{\"pain\":{\"score\":6,\"where\":\"outer\",\"flags\":[\"swelling\",\"pop\"]}}", &c, err), 0);
        assert_int_equal(c.type, COMMAND_DIARY);
        assert_int_equal(c.diary.score, 6);
        assert_int_equal(c.diary.where, WHERE_OUTER);
        assert_int_equal(c.diary.flags, DIARY_SWELLING | DIARY_POP);
        assert_int_equal(c.diary.at, 0);
        /* HA's number sends 6.0; the default place is the front (kneecap), as kneewrapctl's. */
        assert_int_equal(parse(NULL, "{\"pain\":{\"score\":6.0}}", &c, err), 0);
        assert_int_equal(c.diary.score, 6);
        assert_int_equal(c.diary.where, WHERE_FRONT);
        assert_int_equal(parse(NULL, "{\"pain\":{\"score\":6.5}}", &c, err), -EINVAL);
        assert_int_equal(parse(NULL, "{\"pain\":{\"score\":-1}}", &c, err), -EINVAL);
        assert_int_equal(parse(NULL, "{\"pain\":{\"score\":1e300}}", &c, err), -EINVAL);
        assert_int_equal(parse(NULL, "{\"pain\":{\"where\":\"back\"}}", &c, err), -EINVAL);
        assert_int_equal(parse(NULL, "{\"pain\":{\"score\":1,\"flags\":\"pop\"}}", &c, err), -EINVAL);
        assert_int_equal(parse(NULL, "{\"pain\":{\"score\":1,\"at\":\"2026-11-20\"}}", &c, err), -EINVAL);
        assert_int_equal(parse(NULL, "{\"pain\":{\"score\":1,\"at\":\"2026-11-20T10:00:00Z\"}}", &c, err), 0);
        assert_int_equal(c.diary.at, 1795168800);
        assert_int_equal(parse(NULL, "{\"pain\":{\"score\":1},\"injury\":null}", &c, err), -EINVAL);
}

static void test_set_run_and_ack(void **state) {
        char err[COMMAND_ERROR_MAX];
        Command c;

        /* "I just ran": everything optional. */
        assert_int_equal(parse(NULL, "{\"run\":{}}", &c, err), 0);
        assert_int_equal(c.type, COMMAND_RUN);
        assert_int_equal(c.run_at, 0);
        assert_int_equal(c.run_minutes, 0);
        assert_int_equal(parse(NULL, "{\"run\":{\"at\":\"2026-11-21T07:40:00Z\",\"minutes\":40,\"km\":8.25}}", &c, err), 0);
        assert_int_equal(c.run_at, 1795246800);
        assert_int_equal(c.run_minutes, 40);
        assert_int_equal(c.run_meters, 8250);
        assert_int_equal(parse(NULL, "{\"run\":{\"km\":0}}", &c, err), -EINVAL);
        assert_non_null(strstr(err, "km"));
        assert_int_equal(parse(NULL, "{\"run\":{\"minutes\":2000}}", &c, err), -EINVAL);
        assert_int_equal(parse(NULL, "{\"run\":{\"at\":\"2026-11-21\"}}", &c, err), -EINVAL);
        assert_int_equal(parse(NULL, "{\"run\":{\"pace\":5}}", &c, err), -EINVAL);
        assert_int_equal(parse(NULL, "{\"run\":5}", &c, err), -EINVAL);
        assert_int_equal(parse(NULL, "{\"run\":{},\"pain\":{\"score\":3}}", &c, err), -EINVAL);

        assert_int_equal(parse(NULL, "{\"ack_alert\":17,\"transaction\":\"t1\"}", &c, err), 0);
        assert_int_equal(c.type, COMMAND_ACK_ALERT);
        assert_int_equal(c.alert_id, 17);
        assert_int_equal(parse(NULL, "{\"ack_alert\":0}", &c, err), -EINVAL);
        assert_int_equal(parse(NULL, "{\"ack_alert\":\"17\"}", &c, err), -EINVAL);
}

static void test_bridge_requests(void **state) {
        char err[COMMAND_ERROR_MAX];
        Command c;

        assert_int_equal(command_parse("adopt", "", 0, &c, err), 0);
        assert_int_equal(c.type, COMMAND_ADOPT);
        assert_int_equal(c.adopt_seconds, 120);
        assert_int_equal(parse("adopt", "{\"time\":0,\"transaction\":5}", &c, err), 0);
        assert_int_equal(c.adopt_seconds, 0);
        assert_true(c.transaction_is_number);
        assert_int_equal(parse("adopt", "{\"time\":3601}", &c, err), -EINVAL);
        assert_int_equal(parse("adopt", "{\"wrap\":\"wrap_aabbccddeeff\"}", &c, err), -EINVAL);

        assert_int_equal(parse("remove", "{\"wrap\":\"wrap_aabbccddeeff\"}", &c, err), 0);
        assert_int_equal(c.type, COMMAND_REMOVE);
        assert_string_equal(c.wrap, "wrap_aabbccddeeff");
        assert_int_equal(parse("remove", "{\"wrap\":\"wrap_AABBCCDDEEFF\"}", &c, err), -EINVAL);
        assert_int_equal(parse("remove", "{\"wrap\":\"wrap_aabbccddeef\"}", &c, err), -EINVAL);
        assert_int_equal(parse("remove", "{}", &c, err), -EINVAL);

        assert_int_equal(parse("prescription", "{\"wrap\":\"wrap_aabbccddeeff\",\"cold_s\":720,"
                               "\"cold_setpoint_c\":12.5,\"heat_wait_s\":864000}", &c, err), 0);
        assert_int_equal(c.type, COMMAND_PRESCRIPTION);
        assert_int_equal(c.rx_set, RX_COLD_S | RX_COLD_SETPOINT | RX_HEAT_WAIT_S);
        assert_int_equal(c.rx.cold_s, 720);
        assert_int_equal(c.rx.cold_setpoint, 1250);
        assert_int_equal(c.rx.heat_wait_s, 864000);
        assert_int_equal(parse("prescription", "{\"wrap\":\"wrap_aabbccddeeff\",\"cold_setpoint_c\":12.555}", &c, err), -EINVAL);
        assert_int_equal(parse("prescription", "{\"wrap\":\"wrap_aabbccddeeff\",\"cold_s\":-1}", &c, err), -EINVAL);
        assert_int_equal(parse("prescription", "{\"wrap\":\"wrap_aabbccddeeff\"}", &c, err), -EINVAL);

        assert_int_equal(parse("injury", "{\"wrap\":\"wrap_aabbccddeeff\",\"injury\":null}", &c, err), 0);
        assert_int_equal(c.type, COMMAND_INJURY);
        assert_int_equal(parse("injury", "{\"wrap\":\"wrap_aabbccddeeff\"}", &c, err), -EINVAL);
        assert_int_equal(parse("diary", "{\"wrap\":\"wrap_aabbccddeeff\",\"score\":2,\"transaction\":\"d\"}", &c, err), 0);
        assert_int_equal(c.type, COMMAND_DIARY);
        assert_int_equal(c.diary.score, 2);
        assert_int_equal(parse("reboot", "{}", &c, err), -EINVAL);
        assert_non_null(strstr(err, "unknown request"));
}

static void test_response(void **state) {
        char err[COMMAND_ERROR_MAX];
        char *j = NULL;
        Command c;

        assert_int_equal(parse("adopt", "{\"time\":10,\"transaction\":\"x\\\"y\"}", &c, err), 0);
        assert_int_equal(command_response(&c, "{\"time\":10}", NULL, &j), 0);
        assert_string_equal(j, "{\"status\":\"ok\",\"data\":{\"time\":10},\"transaction\":\"x\\\"y\"}");
        free(j);
        assert_int_equal(parse(NULL, "{\"action\":\"stop\",\"transaction\":-3}", &c, err), 0);
        assert_int_equal(command_response(&c, NULL, "no session is running", &j), 0);
        assert_string_equal(j, "{\"status\":\"error\",\"data\":{},\"error\":\"no session is running\",\"transaction\":-3}");
        free(j);
        /* A key cut in the middle of a character still gives a UTF-8 answer. */
        assert_int_equal(parse(NULL, "{\"aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa\xc3\xa9\":1}", &c, err), -EINVAL);
        assert_int_equal(command_response(&c, NULL, err, &j), 0);
        assert_non_null(strstr(j, "unknown key"));
        free(j);
}

static Config test_config(void) {
        Config c = { .base_topic = (char *) "kneewrap", .discovery_prefix = (char *) "homeassistant",
                     .mqtt_commands = MQTT_ALLOW_DEFAULT | MQTT_ALLOW_RESOLVE | MQTT_ALLOW_PRESCRIPTION | MQTT_ALLOW_ADOPTION };
        return c;
}

static void test_discovery(void **state) {
        Config cfg = test_config();
        DiscoveryDevice d = { .wrap = "wrap_aabbccddeeff", .address = "AA:BB:CC:DD:EE:FF", .name = "Left knee" };
        DiscoveryMsg *m = NULL, *b = NULL;
        size_t n = 0, nb = 0;
        json_t *seen = json_object();

        assert_int_equal(discovery_wrap(&cfg, &d, false, &m, &n), 0);
        assert_int_equal(n, 25);
        assert_int_equal(discovery_bridge(&cfg, &b, &nb), 0);
        assert_int_equal(nb, 6);
        for (size_t i = 0; i < n + nb; i++) {
                DiscoveryMsg *x = i < n ? m + i : b + (i - n);
                json_t *o;
                const char *uid;

                if (!x->payload) {
                        /* The one clearing message: the adopt button of older versions. */
                        assert_string_equal(x->topic, "homeassistant/button/kneewrap_bridge/adopt/config");
                        continue;
                }
                o = json_loads(x->payload, 0, NULL);
                assert_non_null(o);
                assert_true(strncmp(x->topic, "homeassistant/", 14) == 0);
                assert_non_null(strstr(x->topic, "/config"));
                uid = json_string_value(json_object_get(o, "unique_id"));
                assert_non_null(uid);
                assert_null(json_object_get(seen, uid));
                json_object_set_new(seen, uid, json_true());
                assert_non_null(json_object_get(o, "device"));
                assert_non_null(json_object_get(o, "origin"));
                assert_null(json_object_get(o, "object_id"));
                assert_non_null(json_object_get(o, "default_entity_id"));
                assert_non_null(json_object_get(json_object_get(o, "origin"), "support_url"));
                json_decref(o);
        }
        assert_string_equal(m[0].topic, "homeassistant/sensor/wrap_aabbccddeeff/skin_temperature/config");
        {
                /* "I just ran", and the alert event entity on the retained alert topic. */
                json_t *ran = NULL, *ev = NULL;
                for (size_t i = 0; i < n; i++) {
                        if (streq(m[i].topic, "homeassistant/button/wrap_aabbccddeeff/ran/config"))
                                ran = json_loads(m[i].payload, 0, NULL);
                        if (streq(m[i].topic, "homeassistant/event/wrap_aabbccddeeff/alert/config"))
                                ev = json_loads(m[i].payload, 0, NULL);
                }
                assert_non_null(ran);
                assert_non_null(ev);
                assert_string_equal(json_string_value(json_object_get(ran, "payload_press")), "{\"run\":{}}");
                assert_string_equal(json_string_value(json_object_get(ev, "state_topic")), "kneewrap/wrap_aabbccddeeff/alert");
                assert_int_equal(json_array_size(json_object_get(ev, "event_types")), 7);
                assert_string_equal(json_string_value(json_object_get(json_object_get(ev, "device"), "name")), "Left knee");
                json_decref(ran);
                json_decref(ev);
        }
        discovery_msgs_free(m, n);

        /* A patient label names the device. */
        d.label = "Patient 12";
        assert_int_equal(discovery_wrap(&cfg, &d, false, &m, &n), 0);
        {
                json_t *o = json_loads(m[0].payload, 0, NULL);
                assert_string_equal(json_string_value(json_object_get(json_object_get(o, "device"), "name")), "Patient 12");
                json_decref(o);
        }
        discovery_msgs_free(m, n);
        d.label = NULL;
        discovery_msgs_free(b, nb);
        json_decref(seen);

        /* Clearing names the same topics with no payload. */
        assert_int_equal(discovery_wrap(&cfg, &d, true, &m, &n), 0);
        assert_int_equal(n, 25);
        for (size_t i = 0; i < n; i++)
                assert_null(m[i].payload);
        discovery_msgs_free(m, n);

        cfg.base_topic = (char *) "home/knee wraps";
        {
                char *node = NULL;
                assert_int_equal(discovery_bridge_node(&cfg, &node), 0);
                assert_string_equal(node, "home_knee_wraps_bridge");
                free(node);
        }
}

static void test_state(void **state) {
        SessionRecord last = {
                .session_id = "0f8fad5b-d9cb-469f-a165-70867728950e", .wrap = "wrap_aabbccddeeff",
                .mode = THERAPY_COLD, .requested_at = 1795269845, .started_at = 1795269847,
                .ended_at = 1795270747, .prescribed_s = 900, .duration_s = 900, .outcome = OUTCOME_COMPLETED,
                .compliant = true,
        };
        StateView v = {
                .connected = true, .has_status = true, .state = 1, .faults = 1u << 4, .mode = THERAPY_COLD,
                .remaining_s = 512, .has_skin = true, .skin = 1250, .battery = 87, .heat_allowed = false,
                .heat_allowed_at = 1795561200, .injury_date = "2026-11-20", .last = &last,
        };
        Compliance c7 = { .cold_completed = 3, .days_with_cold = 2, .minutes = 45 }, c30 = { .heat_refused = 1 };
        char *j = NULL;

        assert_int_equal(state_wrap_json(&v, &j), 0);
        assert_string_equal(j,
                "{\"connected\":true,\"state\":\"cooling\",\"mode\":\"cold\",\"remaining_s\":512,"
                "\"skin_temp_c\":12.5,\"pack_temp_c\":null,\"battery\":87,\"faults\":[\"not_worn\"],"
                "\"session_id\":null,\"heat_allowed\":false,\"heat_allowed_at\":\"2026-11-24T23:00:00+00:00\","
                "\"injury_date\":\"2026-11-20\",\"last_session_at\":\"2026-11-21T14:19:07+00:00\","
                "\"last_session\":{\"session_id\":\"0f8fad5b-d9cb-469f-a165-70867728950e\","
                "\"wrap\":\"wrap_aabbccddeeff\",\"mode\":\"cold\",\"source\":\"button\","
                "\"requested_at\":\"2026-11-21T14:04:05+00:00\",\"started_at\":\"2026-11-21T14:04:07+00:00\","
                "\"ended_at\":\"2026-11-21T14:19:07+00:00\",\"prescribed_s\":900,\"duration_s\":900,"
                "\"outcome\":\"completed\",\"compliant\":true,\"refusal\":null,\"skin_c\":null,"
                "\"days_since_injury\":null,\"clock_synced\":false}}");
        free(j);

        assert_int_equal(state_compliance_json(&c7, &c30, 0, &j), 0);
        assert_string_equal(j,
                "{\"last_7_days\":{\"cold_completed\":3,\"cold_incomplete\":0,\"cold_refused\":0,"
                "\"heat_refused\":0,\"heat_refused_first_week\":0,\"minutes\":45,\"days_with_cold\":2,"
                "\"runs\":0,\"runs_followed\":0},"
                "\"last_30_days\":{\"cold_completed\":0,\"cold_incomplete\":0,\"cold_refused\":0,"
                "\"heat_refused\":1,\"heat_refused_first_week\":0,\"minutes\":0,\"days_with_cold\":0,"
                "\"runs\":0,\"runs_followed\":0}}");
        free(j);
}

static void test_bridge_info_has_no_secrets(void **state) {
        Config cfg = test_config();
        const char *wraps[] = { "wrap_aabbccddeeff" };
        BridgeInfo b = { .config = &cfg, .wraps = wraps, .n_wraps = 1 };
        char *j = NULL;

        cfg.mqtt_host = (char *) "broker";
        cfg.username = (char *) "gateway";
        cfg.password_file = (char *) "/etc/kneewrap/secret-password-file";
        cfg.tls_key_file = (char *) "/etc/kneewrap/secret.key";
        assert_int_equal(state_bridge_info_json(&b, &j), 0);
        assert_null(strstr(j, "secret"));
        assert_null(strstr(j, "gateway"));
        assert_non_null(strstr(j, "\"wraps\":[\"wrap_aabbccddeeff\"]"));
        free(j);
}

int main(void) {
        const struct CMUnitTest tests[] = {
                cmocka_unit_test(test_set_start_stop),
                cmocka_unit_test(test_set_injury_and_pain),
                cmocka_unit_test(test_set_run_and_ack),
                cmocka_unit_test(test_bridge_requests),
                cmocka_unit_test(test_response),
                cmocka_unit_test(test_discovery),
                cmocka_unit_test(test_state),
                cmocka_unit_test(test_bridge_info_has_no_secrets),
        };

        setenv("TZ", "UTC", 1);
        tzset();
        return cmocka_run_group_tests(tests, NULL, NULL);
}
