/* Unit tests for bus-util: the a{sv} walk on messages built and sealed locally, never sent. */
#include <errno.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>
#include <cmocka.h>
#include <systemd/sd-bus.h>

#include "bus-util.h"
#include "util.h"

typedef struct {
        uint32_t number;
        char name[32];
        unsigned seen;
        char contents[64];
        int fail_on_number;
} Seen;

/* sd-bus makes messages only on an open bus: one end of a socketpair, started but never
 * authenticated, is enough, and no dbus-daemon is needed. */
static sd_bus_message *new_call(sd_bus **ret_bus, int *ret_peer) {
        sd_bus *bus = NULL;
        sd_bus_message *m = NULL;
        int fds[2];

        assert_int_equal(socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0, fds), 0);
        assert_int_equal(sd_bus_new(&bus), 0);
        assert_true(sd_bus_set_fd(bus, fds[0], fds[0]) >= 0);
        assert_true(sd_bus_start(bus) >= 0);
        assert_true(sd_bus_message_new_method_call(bus, &m, "org.example", "/", "org.example.I", "M") >= 0);
        *ret_bus = bus;
        *ret_peer = fds[1];
        return m;
}

static void seal(sd_bus *bus, int peer, sd_bus_message *m) {
        assert_true(sd_bus_message_seal(m, 1, 0) >= 0);
        assert_true(sd_bus_message_rewind(m, true) >= 0);
        sd_bus_close_unref(bus);
        close(peer);
}

/* A method call, carrying a{sv} then a trailing "s" to show where the walk stops. */
static sd_bus_message *build(const char *tail) {
        sd_bus *bus;
        int peer;
        sd_bus_message *m = new_call(&bus, &peer);

        assert_true(sd_bus_message_append(m, "a{sv}", 4,
                                          "number", "u", (uint32_t) 42,
                                          "name", "s", "left knee",
                                          "list", "as", 2, "a", "b",
                                          "flag", "b", 1) >= 0);
        assert_true(sd_bus_message_append(m, "s", tail) >= 0);
        seal(bus, peer, m);
        return m;
}

static int entry(sd_bus_message *m, const char *key, const char *contents, void *userdata) {
        Seen *s = userdata;
        int r;

        s->seen++;
        strncat(s->contents, contents, sizeof s->contents - strlen(s->contents) - 1);
        strncat(s->contents, ",", sizeof s->contents - strlen(s->contents) - 1);
        if (streq(key, "number")) {
                if (s->fail_on_number)
                        return s->fail_on_number;
                r = sd_bus_message_read(m, "v", "u", &s->number);
                return r < 0 ? r : 1;
        }
        if (streq(key, "name")) {
                const char *n;
                r = sd_bus_message_read(m, "v", "s", &n);
                if (r >= 0)
                        snprintf(s->name, sizeof s->name, "%s", n);
                return r < 0 ? r : 1;
        }
        return 0;       /* "list" and "flag": skipped by the walk */
}

static void test_reads_and_skips(void **state) {
        sd_bus_message *m = build("after");
        Seen s = { 0 };
        const char *tail;

        assert_true(bus_message_read_dict(m, entry, &s) >= 0);
        assert_int_equal(s.seen, 4);
        assert_int_equal(s.number, 42);
        assert_string_equal(s.name, "left knee");
        assert_string_equal(s.contents, "u,s,as,b,");
        /* The whole dictionary was consumed, skipped entries included. */
        assert_true(sd_bus_message_read(m, "s", &tail) > 0);
        assert_string_equal(tail, "after");
        sd_bus_message_unref(m);
}

static void test_callback_error_stops(void **state) {
        sd_bus_message *m = build("after");
        Seen s = { .fail_on_number = -EINVAL };

        assert_int_equal(bus_message_read_dict(m, entry, &s), -EINVAL);
        assert_int_equal(s.seen, 1);
        assert_int_equal(s.name[0], '\0');
        sd_bus_message_unref(m);
}

static void test_wrong_type(void **state) {
        sd_bus *bus;
        int peer;
        sd_bus_message *m = new_call(&bus, &peer);
        Seen s = { 0 };

        assert_true(sd_bus_message_append(m, "s", "not a dictionary") >= 0);
        seal(bus, peer, m);
        assert_true(bus_message_read_dict(m, entry, &s) < 0);
        assert_int_equal(s.seen, 0);
        sd_bus_message_unref(m);
}

static void test_empty(void **state) {
        sd_bus *bus;
        int peer;
        sd_bus_message *m = new_call(&bus, &peer);
        Seen s = { 0 };

        assert_true(sd_bus_message_append(m, "a{sv}", 0) >= 0);
        seal(bus, peer, m);
        assert_true(bus_message_read_dict(m, entry, &s) >= 0);
        assert_int_equal(s.seen, 0);
        sd_bus_message_unref(m);
}

int main(void) {
        const struct CMUnitTest tests[] = {
                cmocka_unit_test(test_reads_and_skips),
                cmocka_unit_test(test_callback_error_stops),
                cmocka_unit_test(test_wrong_type),
                cmocka_unit_test(test_empty),
        };
        return cmocka_run_group_tests(tests, NULL, NULL);
}
