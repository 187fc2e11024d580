/* test-config: kneewrapd.conf parsing: the defaults, and every kind of error with its line. */
#include <errno.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <syslog.h>
#include <unistd.h>
#include <cmocka.h>

#include "config.h"
#include "rules.h"
#include "util.h"

typedef struct Result {
        int r;
        Config c;
        char path[64];
        char errors[8192];
} Result;

/* Writes `text` to a temporary file and loads it; errors are collected as text. */
static Result *load(const char *text) {
        Result *res = calloc(1, sizeof *res);
        FILE *f, *err;
        int fd;

        assert_non_null(res);
        snprintf(res->path, sizeof res->path, "/tmp/test-config-XXXXXX");
        fd = mkstemp(res->path);
        assert_true(fd >= 0);
        f = fdopen(fd, "w");
        assert_non_null(f);
        fputs(text, f);
        fclose(f);

        err = fmemopen(res->errors, sizeof res->errors - 1, "w");
        assert_non_null(err);
        config_init(&res->c);
        res->r = config_load(&res->c, res->path, err);
        fclose(err);
        unlink(res->path);
        return res;
}

static void result_free(Result *res) {
        config_done(&res->c);
        free(res);
}

static unsigned count_lines(const char *s) {
        unsigned n = 0;
        for (; *s; s++)
                n += *s == '\n';
        return n;
}

/* Asserts exactly one error, on `line`, containing every fragment given. */
static void expect_one_error(const char *text, unsigned line, ...) {
        Result *res = load(text);
        char prefix[96];
        const char *frag;
        va_list ap;

        if (res->r != -EINVAL || count_lines(res->errors) != 1)
                print_error("config:\n%s\nerrors:\n%s\n", text, res->errors);
        assert_int_equal(res->r, -EINVAL);
        assert_int_equal(count_lines(res->errors), 1);
        snprintf(prefix, sizeof prefix, "%s:%u: ", res->path, line);
        if (strncmp(res->errors, prefix, strlen(prefix)) != 0)
                print_error("expected prefix %s, got %s", prefix, res->errors);
        assert_true(strncmp(res->errors, prefix, strlen(prefix)) == 0);
        va_start(ap, line);
        while ((frag = va_arg(ap, const char *))) {
                if (!strstr(res->errors, frag))
                        print_error("expected \"%s\" in: %s", frag, res->errors);
                assert_non_null(strstr(res->errors, frag));
        }
        va_end(ap);

        /* A config with errors is left at the defaults. */
        assert_int_equal(res->c.mqtt_port, 1883);
        assert_null(res->c.mqtt_host);
        result_free(res);
}

static void assert_defaults(const Config *c) {
        RulesPrescription rx;

        rules_prescription_default(&rx);
        assert_int_equal(c->log_level, LOG_INFO);
        assert_null(c->adapter);
        assert_false(c->auto_adopt);
        assert_int_equal(c->n_allow, 0);
        assert_true(c->power_on);
        assert_null(c->mqtt_host);
        assert_int_equal(c->mqtt_port, 1883);
        assert_string_equal(c->base_topic, "kneewrap");
        assert_string_equal(c->discovery_prefix, "homeassistant");
        assert_null(c->client_id);
        assert_null(c->username);
        assert_null(c->password_file);
        assert_null(c->tls_ca_file);
        assert_null(c->tls_cert_file);
        assert_null(c->tls_key_file);
        assert_int_equal(c->keepalive, 60);
        assert_int_equal(c->protocol, MQTT_PROTOCOL_V311);
        assert_null(c->tls_ca_dir);
        assert_int_equal(c->mqtt_commands, MQTT_ALLOW_SESSIONS | MQTT_ALLOW_DIARY | MQTT_ALLOW_RUNS | MQTT_ALLOW_INJURY);
        assert_memory_equal(&c->therapy, &rx, sizeof rx);
        assert_int_equal(c->therapy.cold_s, 900);
        assert_int_equal(c->therapy.cold_setpoint, 1000);
        assert_int_equal(c->therapy.heat_s, 900);
        assert_int_equal(c->therapy.heat_setpoint, 4000);
        assert_int_equal(c->therapy.heat_wait_s, 7 * 86400);
        assert_int_equal(c->therapy.cold_rest_s, 3600);
        assert_string_equal(c->store_path, "/var/lib/kneewrap/kneewrap.db");
}

static void test_defaults_init(void **state) {
        Config c;

        config_init(&c);
        assert_defaults(&c);
        config_done(&c);
}

static void test_defaults_empty_and_comments(void **state) {
        Result *res = load("# nothing but comments\n; and blank lines\n\n[daemon]\n[mqtt]\n   # indented\n");

        assert_int_equal(res->r, 0);
        assert_string_equal(res->errors, "");
        assert_defaults(&res->c);
        result_free(res);
}

static void test_every_key(void **state) {
        Result *res = load(
                "[daemon]\n"
                "log_level = debug\n"
                "[bluetooth]\n"
                "adapter = hci1\n"
                "auto_adopt = yes\n"
                "allow = aa:bb:cc:00:11:22, AA:BB:CC:00:11:33  aa-bb-cc-00-11-44,AA:BB:CC:00:11:22\n"
                "power_on = no\n"
                "[mqtt]\n"
                "host = broker.lan\n"
                "base_topic = knees\n"
                "discovery_prefix = ha/discovery\n"
                "client_id = kw-test\n"
                "username = kw\n"
                "password_file = /etc/kneewrap/mqtt-password\n"
                "tls_ca_file = /etc/ssl/ca.pem\n"
                "tls_cert_file = /etc/kneewrap/cert.pem\n"
                "tls_key_file = /etc/kneewrap/key.pem\n"
                "keepalive = 30\n"
                "protocol = 5\n"
                "[therapy]\n"
                "cold_minutes = 12\n"
                "cold_setpoint_c = 9.5\n"
                "heat_minutes = 20\n"
                "heat_setpoint_c = 41\n"
                "heat_wait_days = 14\n"
                "cold_rest_minutes = 90\n"
                "[store]\n"
                "path = /tmp/kw.db\n");

        if (res->r != 0)
                print_error("%s", res->errors);
        assert_int_equal(res->r, 0);
        assert_int_equal(res->c.log_level, LOG_DEBUG);
        assert_string_equal(res->c.adapter, "hci1");
        assert_true(res->c.auto_adopt);
        /* Normalised, and the repeated address counted once. */
        assert_int_equal(res->c.n_allow, 3);
        assert_string_equal(res->c.allow[0], "AA:BB:CC:00:11:22");
        assert_string_equal(res->c.allow[1], "AA:BB:CC:00:11:33");
        assert_false(res->c.power_on);
        assert_string_equal(res->c.mqtt_host, "broker.lan");
        assert_int_equal(res->c.mqtt_port, 8883); /* TLS and no port: 8883 */
        assert_string_equal(res->c.base_topic, "knees");
        assert_string_equal(res->c.discovery_prefix, "ha/discovery");
        assert_string_equal(res->c.client_id, "kw-test");
        assert_string_equal(res->c.username, "kw");
        assert_string_equal(res->c.password_file, "/etc/kneewrap/mqtt-password");
        assert_string_equal(res->c.tls_ca_file, "/etc/ssl/ca.pem");
        assert_int_equal(res->c.keepalive, 30);
        assert_int_equal(res->c.protocol, MQTT_PROTOCOL_V5);
        assert_int_equal(res->c.therapy.cold_s, 720);
        assert_int_equal(res->c.therapy.cold_setpoint, 950);
        assert_int_equal(res->c.therapy.heat_s, 1200);
        assert_int_equal(res->c.therapy.heat_setpoint, 4100);
        assert_int_equal(res->c.therapy.heat_wait_s, 14 * 86400);
        assert_int_equal(res->c.therapy.cold_rest_s, 5400);
        assert_string_equal(res->c.store_path, "/tmp/kw.db");
        result_free(res);
}

static void test_adapter_address(void **state) {
        Result *res = load("[bluetooth]\nadapter = 00:1a:7d:da:71:13\n");

        assert_int_equal(res->r, 0);
        assert_string_equal(res->c.adapter, "00:1A:7D:DA:71:13");
        result_free(res);
}

static void test_port_explicit_with_tls(void **state) {
        Result *res = load("[mqtt]\nhost = b\ntls_ca_file = /ca.pem\nport = 1884\n");

        assert_int_equal(res->r, 0);
        assert_int_equal(res->c.mqtt_port, 1884);
        result_free(res);
}

static void test_out_of_bounds(void **state) {
        /* Each bound, just outside, is refused with the line, the key and the rule. */
        expect_one_error("[therapy]\ncold_minutes = 9\n", 2, "[therapy] cold_minutes", "R1", NULL);
        expect_one_error("[therapy]\ncold_minutes = 16\n", 2, "cold_minutes", "R1", NULL);
        expect_one_error("[therapy]\n\ncold_setpoint_c = 7.99\n", 3, "cold_setpoint_c", "8.00 to 15.00", NULL);
        expect_one_error("[therapy]\ncold_setpoint_c = 15.01\n", 2, "cold_setpoint_c", NULL);
        expect_one_error("[therapy]\nheat_minutes = 0\n", 2, "heat_minutes", "R4", NULL);
        expect_one_error("[therapy]\nheat_minutes = 21\n", 2, "heat_minutes", "R4", NULL);
        expect_one_error("[therapy]\nheat_setpoint_c = 37.9\n", 2, "heat_setpoint_c", "38.00 to 42.00", NULL);
        expect_one_error("[therapy]\nheat_setpoint_c = 42.5\n", 2, "heat_setpoint_c", NULL);
        expect_one_error("[therapy]\nheat_wait_days = 6\n", 2, "heat_wait_days", "R2", NULL);
        expect_one_error("[therapy]\nheat_wait_days = 366\n", 2, "heat_wait_days", "R2", NULL);
        expect_one_error("[therapy]\ncold_rest_minutes = 59\n", 2, "cold_rest_minutes", "R6", NULL);
        expect_one_error("[therapy]\ncold_rest_minutes = 1441\n", 2, "cold_rest_minutes", "R6", NULL);
        expect_one_error("[therapy]\ncold_minutes = -1\n", 2, "cold_minutes", "R1", NULL);
        expect_one_error("[therapy]\nheat_wait_days = 99999999999\n", 2, "heat_wait_days", "R2", NULL);
        expect_one_error("[mqtt]\nkeepalive = 4\n", 2, "[mqtt] keepalive", "5 to 3600", NULL);
        expect_one_error("[mqtt]\nkeepalive = 3601\n", 2, "keepalive", NULL);
        expect_one_error("[mqtt]\nport = 0\n", 2, "[mqtt] port", "1 to 65535", NULL);
        expect_one_error("[mqtt]\nport = 65536\n", 2, "port", NULL);
}

static void test_bounds_accepted(void **state) {
        Result *res = load("[therapy]\ncold_minutes = 10\ncold_setpoint_c = 8\nheat_minutes = 1\n"
                           "heat_setpoint_c = 42\nheat_wait_days = 365\ncold_rest_minutes = 1440\n");

        assert_int_equal(res->r, 0);
        assert_int_equal(res->c.therapy.cold_s, 600);
        assert_int_equal(res->c.therapy.heat_s, 60);
        assert_int_equal(res->c.therapy.heat_wait_s, 365 * 86400);
        result_free(res);
}

static void test_bad_values(void **state) {
        expect_one_error("[daemon]\nlog_level = loud\n", 2, "[daemon] log_level", "\"loud\"", NULL);
        expect_one_error("[bluetooth]\nauto_adopt = perhaps\n", 2, "auto_adopt", "boolean", NULL);
        expect_one_error("[bluetooth]\nadapter = hcix\n", 2, "adapter", NULL);
        expect_one_error("[bluetooth]\nallow = AA:BB:CC:00:11:22, nonsense\n", 2, "allow", "\"nonsense\"", NULL);
        expect_one_error("[therapy]\ncold_minutes = 12.5\n", 2, "cold_minutes", "whole number", NULL);
        expect_one_error("[therapy]\ncold_setpoint_c = 10.125\n", 2, "cold_setpoint_c", "two decimals", NULL);
        expect_one_error("[mqtt]\nbase_topic = a/b\n", 2, "base_topic", NULL);
        expect_one_error("[mqtt]\nbase_topic = kw/#\n", 2, "base_topic", NULL);
        expect_one_error("[mqtt]\nbase_topic = +\n", 2, "base_topic", NULL);
        expect_one_error("[mqtt]\ndiscovery_prefix = ha/+/x\n", 2, "discovery_prefix", NULL);
        expect_one_error("[mqtt]\nprotocol = 3.1\n", 2, "protocol", "\"3.1.1\" or \"5\"", NULL);
        expect_one_error("[mqtt]\npassword_file = secret.txt\n", 2, "password_file", "absolute", NULL);
        expect_one_error("[store]\npath = kneewrap.db\n", 2, "[store] path", "absolute", NULL);
        expect_one_error("[mqtt]\nhost =\n", 2, "host", "empty value", NULL);
        expect_one_error("[mqtt]\nport = 1883 ; the usual\n", 2, "port", "whole number", NULL);
}

static void test_unknown_and_duplicate(void **state) {
        expect_one_error("[mqtt]\nhost = b\nhots = c\n", 3, "[mqtt] hots", "unknown key", NULL);
        expect_one_error("[daemon]\nadapter = hci0\n", 2, "[daemon] adapter", "unknown key", NULL);
        /* An unknown section is reported once, at its header, not for each key in it. */
        expect_one_error("[daemon]\n[mqqt]\nhost = x\nport = 1\n", 2, "[mqqt]", "unknown section", NULL);
        expect_one_error("[mqtt]\nport = 1883\nhost = b\n\nport = 1884\n", 5, "[mqtt] port",
                         "duplicate", "line 2", NULL);
        /* Duplicates count across repeated section headers too. */
        expect_one_error("[store]\npath = /a\n[daemon]\n[store]\npath = /b\n", 5, "duplicate", NULL);
}

static void test_malformed(void **state) {
        expect_one_error("[mqtt]\nhost\n", 2, "malformed line", NULL);
        expect_one_error("[mqtt\nhost = x\n", 1, "malformed section header", NULL);
        expect_one_error("[mqtt] x\n", 1, "malformed section header", NULL);
        expect_one_error("[mqtt]\n= x\n", 2, "no key", NULL);
        expect_one_error("host = x\n[mqtt]\n", 1, "outside any [section]", NULL);
        expect_one_error("[mqtt]\nhost: x\n", 2, "malformed line", NULL);
}

static void test_long_line(void **state) {
        char text[6000] = "[bluetooth]\nallow = ";
        size_t n = strlen(text);

        memset(text + n, 'x', 5000);
        text[n + 5000] = '\n';
        text[n + 5001] = '\0';
        expect_one_error(text, 2, "too long", NULL);
}

static void test_allow_many(void **state) {
        char text[4096] = "[bluetooth]\nallow =";
        Result *res;

        for (unsigned i = 0; i < CONFIG_MAX_ALLOW; i++)
                snprintf(text + strlen(text), sizeof text - strlen(text), " AA:BB:CC:00:00:%02X", i);
        strcat(text, "\n");
        res = load(text);
        assert_int_equal(res->r, 0);
        assert_int_equal(res->c.n_allow, CONFIG_MAX_ALLOW);
        assert_string_equal(res->c.allow[CONFIG_MAX_ALLOW - 1], "AA:BB:CC:00:00:3F");
        result_free(res);

        strcpy(text + strlen(text) - 1, " AA:BB:CC:00:01:00\n");
        expect_one_error(text, 2, "allow", "more than 64", NULL);
}

/* [mqtt] commands: a list of names, or none; an unknown name is an error, never ignored. */
static void test_mqtt_commands(void **state) {
        Result *res = load("[mqtt]\ncommands = sessions, resolve adoption\n");

        assert_int_equal(res->r, 0);
        assert_int_equal(res->c.mqtt_commands, MQTT_ALLOW_SESSIONS | MQTT_ALLOW_RESOLVE | MQTT_ALLOW_ADOPTION);
        result_free(res);
        res = load("[mqtt]\ncommands = none\n");
        assert_int_equal(res->r, 0);
        assert_int_equal(res->c.mqtt_commands, 0);
        result_free(res);
        assert_string_equal(mqtt_allow_to_string(MQTT_ALLOW_PRESCRIPTION), "prescription");
        assert_null(mqtt_allow_to_string(MQTT_ALLOW_PRESCRIPTION | MQTT_ALLOW_DIARY));
        expect_one_error("[mqtt]\ncommands = sessions everything\n", 2, "[mqtt] commands", "\"everything\"", NULL);
        expect_one_error("[mqtt]\ncommands = none diary\n", 2, "commands", "\"none\"", NULL);
        expect_one_error("[mqtt]\ncommands = ,\n", 2, "commands", "no command", NULL);
}

/* tls_ca_dir alone turns TLS on (port 8883) and is enough for a client certificate. */
static void test_tls_ca_dir(void **state) {
        Result *res = load("[mqtt]\nhost = b\ntls_ca_dir = /etc/ssl/certs\ntls_cert_file = /c\ntls_key_file = /k\n");

        assert_int_equal(res->r, 0);
        assert_string_equal(res->c.tls_ca_dir, "/etc/ssl/certs");
        assert_int_equal(res->c.mqtt_port, 8883);
        result_free(res);
}

static void test_tls_pairs(void **state) {
        expect_one_error("[mqtt]\ntls_ca_file = /ca\n\ntls_cert_file = /c.pem\n", 4,
                         "tls_cert_file", "without tls_key_file", NULL);
        expect_one_error("[mqtt]\ntls_ca_file = /ca\ntls_key_file = /k.pem\n", 3,
                         "tls_key_file", "without tls_cert_file", NULL);
        expect_one_error("[mqtt]\ntls_cert_file = /c.pem\ntls_key_file = /k.pem\n", 2,
                         "without tls_ca_file or tls_ca_dir", NULL);
}

static void test_every_error_reported(void **state) {
        /* Parsing goes on after an error: all of them are listed, each with its line. */
        Result *res = load("[daemon]\nlog_level = loud\n[mqtt]\nport = x\nbogus\n[therapy]\ncold_minutes = 30\n");

        assert_int_equal(res->r, -EINVAL);
        assert_int_equal(count_lines(res->errors), 4);
        assert_non_null(strstr(res->errors, ":2: [daemon] log_level"));
        assert_non_null(strstr(res->errors, ":4: [mqtt] port"));
        assert_non_null(strstr(res->errors, ":5: malformed"));
        assert_non_null(strstr(res->errors, ":7: [therapy] cold_minutes"));
        result_free(res);
}

static void test_errors_null_stream(void **state) {
        /* No error stream: still refused. */
        char path[] = "/tmp/test-config-XXXXXX";
        int fd = mkstemp(path);
        Config c;

        assert_true(fd >= 0);
        assert_int_equal(write(fd, "[x]\n", 4), 4);
        close(fd);
        config_init(&c);
        assert_int_equal(config_load(&c, path, NULL), -EINVAL);
        assert_defaults(&c);
        config_done(&c);
        unlink(path);
}

static void test_missing_file(void **state) {
        Config c;

        config_init(&c);
        assert_int_equal(config_load(&c, "/nonexistent/kneewrapd.conf", NULL), -ENOENT);
        assert_defaults(&c);
        config_done(&c);
}

static void test_reload_replaces(void **state) {
        /* Loading twice into one Config replaces, never merges with, the first load. */
        char path[] = "/tmp/test-config-XXXXXX";
        int fd = mkstemp(path);
        Config c;

        assert_true(fd >= 0);
        close(fd);
        config_init(&c);
        FILE *f = fopen(path, "w");
        fputs("[mqtt]\nhost = one\nusername = u\n", f);
        fclose(f);
        assert_int_equal(config_load(&c, path, NULL), 0);
        assert_string_equal(c.username, "u");
        f = fopen(path, "w");
        fputs("[mqtt]\nhost = two\n", f);
        fclose(f);
        assert_int_equal(config_load(&c, path, NULL), 0);
        assert_string_equal(c.mqtt_host, "two");
        assert_null(c.username);
        config_done(&c);
        unlink(path);
}

int main(void) {
        const struct CMUnitTest tests[] = {
                cmocka_unit_test(test_defaults_init),
                cmocka_unit_test(test_defaults_empty_and_comments),
                cmocka_unit_test(test_every_key),
                cmocka_unit_test(test_adapter_address),
                cmocka_unit_test(test_port_explicit_with_tls),
                cmocka_unit_test(test_out_of_bounds),
                cmocka_unit_test(test_bounds_accepted),
                cmocka_unit_test(test_bad_values),
                cmocka_unit_test(test_unknown_and_duplicate),
                cmocka_unit_test(test_malformed),
                cmocka_unit_test(test_long_line),
                cmocka_unit_test(test_allow_many),
                cmocka_unit_test(test_tls_pairs),
                cmocka_unit_test(test_mqtt_commands),
                cmocka_unit_test(test_tls_ca_dir),
                cmocka_unit_test(test_every_error_reported),
                cmocka_unit_test(test_errors_null_stream),
                cmocka_unit_test(test_missing_file),
                cmocka_unit_test(test_reload_replaces),
        };
        return cmocka_run_group_tests(tests, NULL, NULL);
}
