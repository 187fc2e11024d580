/* commands: the one parser of MQTT commands and the builder of their responses (jansson). */
#include <errno.h>
#include <inttypes.h>
#include <jansson.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>

#include "clock.h"
#include "commands.h"
#include "util.h"

#define MAX_ADOPT_S 3600

static int fail(char error[static COMMAND_ERROR_MAX], const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static int fail(char error[static COMMAND_ERROR_MAX], const char *fmt, ...) {
        va_list ap;

        va_start(ap, fmt);
        vsnprintf(error, COMMAND_ERROR_MAX, fmt, ap);
        va_end(ap);
        return -EINVAL;
}

/* At most 40 bytes of s for a message, cut at a character boundary so the JSON stays UTF-8. */
#define CLIP_MAX 41
static const char *clip(const char *s, char buf[static CLIP_MAX]) {
        size_t n = strnlen(s, CLIP_MAX);

        if (n < CLIP_MAX)
                return s;
        n = CLIP_MAX - 1;
        while (n > 0 && ((unsigned char) s[n] & 0xC0) == 0x80)
                n--;
        memcpy(buf, s, n);
        buf[n] = 0;
        return buf;
}

/* A whole number, given as an integer or as a real with nothing after the point (HA's number). */
static bool get_whole(json_t *v, int64_t min, int64_t max, int64_t *ret) {
        double d;

        if (json_is_integer(v)) {
                json_int_t i = json_integer_value(v);
                if (i < min || i > max)
                        return false;
                *ret = (int64_t) i;
                return true;
        }
        if (!json_is_real(v))
                return false;
        d = json_real_value(v);
        if (!isfinite(d) || d != floor(d) || d < (double) min || d > (double) max)
                return false;
        *ret = (int64_t) d;
        return true;
}

/* Degrees as a JSON number, to hundredths; more precision than that is refused. */
static bool get_centi(json_t *v, int32_t *ret) {
        double d, c;

        if (!json_is_number(v))
                return false;
        d = json_number_value(v);
        if (!isfinite(d) || d < -100 || d > 100)
                return false;
        c = round(d * 100.0);
        if (fabs(c - d * 100.0) > 1e-6)
                return false;
        *ret = (int32_t) c;
        return true;
}

static int parse_transaction(json_t *root, Command *c, char error[static COMMAND_ERROR_MAX]) {
        json_t *t = json_object_get(root, "transaction");

        if (!t)
                return 0;
        if (json_is_string(t)) {
                if (json_string_length(t) >= COMMAND_TRANSACTION_MAX)
                        return fail(error, "\"transaction\" is longer than %d characters", COMMAND_TRANSACTION_MAX - 1);
                snprintf(c->transaction, sizeof(c->transaction), "%s", json_string_value(t));
        } else if (json_is_integer(t)) {
                snprintf(c->transaction, sizeof(c->transaction), "%" JSON_INTEGER_FORMAT, json_integer_value(t));
                c->transaction_is_number = true;
        } else
                return fail(error, "\"transaction\" must be a string or an integer");
        c->has_transaction = true;
        return 0;
}

/* Only the keys in `allowed` (NULL-terminated) may appear. */
static int check_keys(json_t *o, const char *const *allowed, const char *what, char error[static COMMAND_ERROR_MAX]) {
        char buf[CLIP_MAX];
        const char *key;
        json_t *v;

        json_object_foreach(o, key, v) {
                bool ok = false;
                for (const char *const *a = allowed; *a; a++)
                        if (streq(key, *a))
                                ok = true;
                if (!ok)
                        return fail(error, "unknown key \"%s\" in %s", clip(key, buf), what);
        }
        return 0;
}

static int parse_wrap_name(json_t *root, Command *c, char error[static COMMAND_ERROR_MAX]) {
        json_t *w = json_object_get(root, "wrap");
        const char *s;

        if (!w)
                return fail(error, "\"wrap\" is missing (the wrap's id, e.g. \"wrap_aabbccddeeff\")");
        if (!json_is_string(w))
                return fail(error, "\"wrap\" must be a string");
        s = json_string_value(w);
        if (strncmp(s, "wrap_", 5) != 0 || json_string_length(w) != 17 ||
            strspn(s + 5, "0123456789abcdef") != 12)
                return fail(error, "\"wrap\" must be a wrap id like \"wrap_aabbccddeeff\"");
        snprintf(c->wrap, sizeof(c->wrap), "%s", s);
        return 0;
}

static int parse_injury(json_t *v, Command *c, char error[static COMMAND_ERROR_MAX]) {
        int64_t t;
        const char *s;

        c->type = COMMAND_INJURY;
        if (json_is_null(v))
                return 0;
        if (!json_is_string(v))
                return fail(error, "\"injury\" must be \"YYYY-MM-DD\", a date and time, \"today\", or null (resolved)");
        s = json_string_value(v);
        if (s[0] == 0)
                return 0;
        if (!streq(s, "today") && (json_string_length(v) >= COMMAND_TEXT_MAX || clock_parse_iso(s, &t, NULL) < 0))
                return fail(error, "\"injury\" is not a date (YYYY-MM-DD) or date and time (YYYY-MM-DDTHH:MM[:SS][offset])");
        snprintf(c->injury, sizeof(c->injury), "%s", s);
        return 0;
}

static int parse_flags(json_t *v, uint8_t *ret, char error[static COMMAND_ERROR_MAX]) {
        static const struct { const char *name; uint8_t bit; } names[] = {
                { "swelling", DIARY_SWELLING },
                { "pop", DIARY_POP },
                { "giving_way", DIARY_GIVING_WAY },
                { "catching", DIARY_CATCHING },
        };
        char buf[CLIP_MAX];
        size_t i;
        json_t *f;
        uint8_t flags = 0;

        if (!json_is_array(v))
                return fail(error, "\"flags\" must be a list of \"swelling\", \"pop\", \"giving_way\", \"catching\"");
        json_array_foreach(v, i, f) {
                bool found = false;
                if (!json_is_string(f))
                        return fail(error, "\"flags\" must be a list of strings");
                for (size_t k = 0; k < ELEMENTSOF(names); k++)
                        if (streq(json_string_value(f), names[k].name)) {
                                flags |= names[k].bit;
                                found = true;
                        }
                if (!found)
                        return fail(error, "unknown flag \"%s\" (swelling, pop, giving_way, catching)",
                                    clip(json_string_value(f), buf));
        }
        *ret = flags;
        return 0;
}

/* A diary entry: {"score":6,"where":"outer","flags":["swelling"],"at":"..."} (`extra` is also allowed). */
static int parse_diary(json_t *o, const char *extra, Command *c, char error[static COMMAND_ERROR_MAX]) {
        const char *const allowed[] = { "score", "where", "flags", "at", extra, NULL };
        json_t *v;
        int64_t score;
        int r;

        c->type = COMMAND_DIARY;
        if (!json_is_object(o))
                return fail(error, "\"pain\" must be an object like {\"score\":6,\"where\":\"outer\",\"flags\":[\"swelling\"]}");
        r = check_keys(o, allowed, "the pain entry", error);
        if (r < 0)
                return r;
        v = json_object_get(o, "score");
        if (!v)
                return fail(error, "\"score\" is missing (0-10)");
        if (!get_whole(v, 0, 10, &score))
                return fail(error, "\"score\" must be a whole number from 0 to 10");
        c->diary.score = (uint8_t) score;
        c->diary.where = WHERE_FRONT;
        v = json_object_get(o, "where");
        if (v) {
                int w = json_is_string(v) ? diary_where_from_string(json_string_value(v)) : -EINVAL;
                if (w < 0)
                        return fail(error, "\"where\" must be one of \"front\", \"inner\", \"outer\", \"back\", \"below\"");
                c->diary.where = (DiaryWhere) w;
        }
        v = json_object_get(o, "flags");
        if (v) {
                r = parse_flags(v, &c->diary.flags, error);
                if (r < 0)
                        return r;
        }
        v = json_object_get(o, "at");
        if (v) {
                bool date_only = false;
                if (!json_is_string(v) || clock_parse_iso(json_string_value(v), &c->diary.at, &date_only) < 0 || date_only)
                        return fail(error, "\"at\" must be a date and time (YYYY-MM-DDTHH:MM[:SS][offset])");
        }
        return 0;
}

/* A run: {"at":"2026-11-21T07:40","minutes":40,"km":8.2}, every key optional ({}: it just ended). */
static int parse_run(json_t *o, Command *c, char error[static COMMAND_ERROR_MAX]) {
        static const char *const allowed[] = { "at", "minutes", "km", NULL };
        int64_t minutes;
        json_t *v;
        int r;

        c->type = COMMAND_RUN;
        if (!json_is_object(o))
                return fail(error, "\"run\" must be an object like {\"minutes\":40,\"km\":8.2} ({} for a run that just ended)");
        r = check_keys(o, allowed, "the run", error);
        if (r < 0)
                return r;
        v = json_object_get(o, "at");
        if (v) {
                bool date_only = false;
                if (!json_is_string(v) || clock_parse_iso(json_string_value(v), &c->run_at, &date_only) < 0 || date_only)
                        return fail(error, "\"at\" must be when the run ended: a date and time (YYYY-MM-DDTHH:MM[:SS][offset])");
        }
        v = json_object_get(o, "minutes");
        if (v) {
                if (!get_whole(v, 1, 1440, &minutes))
                        return fail(error, "\"minutes\" must be a whole number from 1 to 1440");
                c->run_minutes = (uint32_t) minutes;
        }
        v = json_object_get(o, "km");
        if (v) {
                double km = json_is_number(v) ? json_number_value(v) : -1;
                if (!(km > 0 && km <= 1000))
                        return fail(error, "\"km\" must be a number above 0, at most 1000");
                c->run_meters = (uint32_t) llround(km * 1000.0);
        }
        return 0;
}

static int parse_set(json_t *root, Command *c, char error[static COMMAND_ERROR_MAX]) {
        static const char *const allowed[] = { "action", "mode", "injury", "pain", "run", "ack_alert", "transaction", NULL };
        json_t *action, *mode, *injury, *pain, *run, *ack;
        char buf[CLIP_MAX];
        int r, n;

        r = check_keys(root, allowed, "the command", error);
        if (r < 0)
                return r;
        action = json_object_get(root, "action");
        mode = json_object_get(root, "mode");
        injury = json_object_get(root, "injury");
        pain = json_object_get(root, "pain");
        run = json_object_get(root, "run");
        ack = json_object_get(root, "ack_alert");
        n = !!action + !!injury + !!pain + !!run + !!ack;
        if (n == 0)
                return fail(error, "nothing to do: give \"action\", \"injury\", \"pain\", \"run\" or \"ack_alert\"");
        if (n > 1)
                return fail(error, "one command per message: \"action\", \"injury\", \"pain\", \"run\" or \"ack_alert\"");
        if (mode && !action)
                return fail(error, "\"mode\" goes with {\"action\":\"start\"}");

        if (injury)
                return parse_injury(injury, c, error);
        if (pain)
                return parse_diary(pain, NULL, c, error);
        if (run)
                return parse_run(run, c, error);
        if (ack) {
                c->type = COMMAND_ACK_ALERT;
                if (!get_whole(ack, 1, INT64_MAX / 2, &c->alert_id))
                        return fail(error, "\"ack_alert\" must be an alert's id, a whole number above 0");
                return 0;
        }

        if (!json_is_string(action))
                return fail(error, "\"action\" must be \"start\" or \"stop\"");
        if (streq(json_string_value(action), "stop")) {
                if (mode)
                        return fail(error, "\"stop\" takes no \"mode\"");
                c->type = COMMAND_STOP;
                return 0;
        }
        if (!streq(json_string_value(action), "start"))
                return fail(error, "unknown action \"%s\" (start, stop)", clip(json_string_value(action), buf));
        if (!mode)
                return fail(error, "\"start\" needs \"mode\": \"cold\" or \"heat\"");
        if (!json_is_string(mode) ||
            (!streq(json_string_value(mode), "cold") && !streq(json_string_value(mode), "heat")))
                return fail(error, "\"mode\" must be \"cold\" or \"heat\"");
        c->type = COMMAND_START;
        c->mode = streq(json_string_value(mode), "cold") ? THERAPY_COLD : THERAPY_HEAT;
        return 0;
}

static int parse_prescription(json_t *root, Command *c, char error[static COMMAND_ERROR_MAX]) {
        static const struct {
                const char *key;
                unsigned bit;
                bool degrees;
                size_t offset;
        } fields[] = {
                { "cold_s",          RX_COLD_S,        false, offsetof(RulesPrescription, cold_s) },
                { "cold_setpoint_c", RX_COLD_SETPOINT, true,  offsetof(RulesPrescription, cold_setpoint) },
                { "heat_s",          RX_HEAT_S,        false, offsetof(RulesPrescription, heat_s) },
                { "heat_setpoint_c", RX_HEAT_SETPOINT, true,  offsetof(RulesPrescription, heat_setpoint) },
                { "heat_wait_s",     RX_HEAT_WAIT_S,   false, offsetof(RulesPrescription, heat_wait_s) },
                { "cold_rest_s",     RX_COLD_REST_S,   false, offsetof(RulesPrescription, cold_rest_s) },
        };
        static const char *const allowed[] = { "wrap", "transaction", "cold_s", "cold_setpoint_c", "heat_s",
                                                "heat_setpoint_c", "heat_wait_s", "cold_rest_s", NULL };
        int r;

        c->type = COMMAND_PRESCRIPTION;
        r = check_keys(root, allowed, "the prescription", error);
        if (r < 0)
                return r;
        for (size_t i = 0; i < ELEMENTSOF(fields); i++) {
                json_t *v = json_object_get(root, fields[i].key);
                uint8_t *p = (uint8_t *) &c->rx + fields[i].offset;

                if (!v)
                        continue;
                if (fields[i].degrees) {
                        int32_t centi;
                        if (!get_centi(v, &centi))
                                return fail(error, "\"%s\" must be a temperature in °C with at most two decimals", fields[i].key);
                        memcpy(p, &centi, sizeof(centi));
                } else {
                        int64_t s;
                        uint32_t u;
                        if (!get_whole(v, 0, UINT32_MAX, &s))
                                return fail(error, "\"%s\" must be a whole number of seconds", fields[i].key);
                        u = (uint32_t) s;
                        memcpy(p, &u, sizeof(u));
                }
                c->rx_set |= fields[i].bit;
        }
        if (c->rx_set == 0)
                return fail(error, "nothing to prescribe: give cold_s, cold_setpoint_c, heat_s, heat_setpoint_c, heat_wait_s or cold_rest_s");
        return 0;
}

static int parse_request(const char *name, json_t *root, Command *c, char error[static COMMAND_ERROR_MAX]) {
        char buf[CLIP_MAX];
        int r;

        if (streq(name, "adopt")) {
                static const char *const allowed[] = { "time", "transaction", NULL };
                json_t *t;
                int64_t s = 120;

                c->type = COMMAND_ADOPT;
                r = check_keys(root, allowed, "the request", error);
                if (r < 0)
                        return r;
                t = json_object_get(root, "time");
                if (t && !get_whole(t, 0, MAX_ADOPT_S, &s))
                        return fail(error, "\"time\" must be a whole number of seconds from 0 (close) to %d", MAX_ADOPT_S);
                c->adopt_seconds = (unsigned) s;
                return 0;
        }
        if (streq(name, "remove")) {
                static const char *const allowed[] = { "wrap", "transaction", NULL };
                c->type = COMMAND_REMOVE;
                r = check_keys(root, allowed, "the request", error);
                if (r < 0)
                        return r;
                return parse_wrap_name(root, c, error);
        }
        if (streq(name, "prescription")) {
                r = parse_wrap_name(root, c, error);
                if (r < 0)
                        return r;
                return parse_prescription(root, c, error);
        }
        if (streq(name, "injury")) {
                static const char *const allowed[] = { "wrap", "injury", "transaction", NULL };
                json_t *v;
                r = check_keys(root, allowed, "the request", error);
                if (r < 0)
                        return r;
                r = parse_wrap_name(root, c, error);
                if (r < 0)
                        return r;
                v = json_object_get(root, "injury");
                if (!v)
                        return fail(error, "\"injury\" is missing (a date, a date and time, \"today\", or null)");
                return parse_injury(v, c, error);
        }
        if (streq(name, "diary")) {
                json_t *copy;
                r = parse_wrap_name(root, c, error);
                if (r < 0)
                        return r;
                /* The entry's keys sit beside "wrap" and "transaction". */
                copy = json_copy(root);
                if (!copy)
                        return fail(error, "out of memory");
                json_object_del(copy, "wrap");
                r = parse_diary(copy, "transaction", c, error);
                json_decref(copy);
                return r;
        }
        return fail(error, "unknown request \"%s\" (adopt, remove, prescription, injury, diary)", clip(name, buf));
}

int command_parse(const char *request, const char *payload, size_t n, Command *ret,
                  char error[static COMMAND_ERROR_MAX]) {
        json_error_t jerr;
        json_t *root;
        int r;

        memset(ret, 0, sizeof(*ret));
        error[0] = 0;

        /* An empty request is an empty object: "adopt" with nothing opens for the default time. */
        if (n == 0 && request)
                root = json_object();
        else
                root = json_loadb(payload, n, JSON_REJECT_DUPLICATES, &jerr);
        if (!root)
                return fail(error, "not JSON: %.100s", n == 0 ? "empty message" : jerr.text);
        if (!json_is_object(root)) {
                json_decref(root);
                return fail(error, "the message must be a JSON object");
        }
        r = parse_transaction(root, ret, error);
        if (r >= 0)
                r = request ? parse_request(request, root, ret, error) : parse_set(root, ret, error);
        json_decref(root);
        return r;
}

int command_response(const Command *c, const char *data_json, const char *error, char **ret_json) {
        json_t *o = json_object(), *data, *e = NULL;
        char *s;

        if (!o)
                return -ENOMEM;
        data = data_json ? json_loads(data_json, 0, NULL) : json_object();
        if (!data || json_object_set_new(o, "status", json_string(error ? "error" : "ok")) < 0 ||
            json_object_set_new(o, "data", data) < 0) {
                json_decref(o);
                return -ENOMEM;
        }
        /* A message quoting the asker's bytes may not be UTF-8: then say less. */
        if (error) {
                e = json_string(error);
                if (!e)
                        e = json_string("invalid command");
        }
        if (error && json_object_set_new(o, "error", e) < 0) {
                json_decref(o);
                return -ENOMEM;
        }
        if (c && c->has_transaction &&
            json_object_set_new(o, "transaction", c->transaction_is_number ?
                                json_integer(strtoll(c->transaction, NULL, 10)) :
                                json_string(c->transaction)) < 0) {
                json_decref(o);
                return -ENOMEM;
        }
        s = json_dumps(o, JSON_COMPACT | JSON_REAL_PRECISION(15));
        json_decref(o);
        if (!s)
                return -ENOMEM;
        *ret_json = s;
        return 0;
}

unsigned command_needs(const Command *c) {
        switch (c->type) {
        case COMMAND_START:
        case COMMAND_STOP:
                return MQTT_ALLOW_SESSIONS;
        case COMMAND_INJURY:
                /* Recording one only tightens the rules; resolving one may allow heat at once. */
                return c->injury[0] ? MQTT_ALLOW_INJURY : MQTT_ALLOW_RESOLVE;
        case COMMAND_DIARY:
                return MQTT_ALLOW_DIARY;
        case COMMAND_PRESCRIPTION:
                return MQTT_ALLOW_PRESCRIPTION;
        case COMMAND_ADOPT:
        case COMMAND_REMOVE:
                return MQTT_ALLOW_ADOPTION;
        case COMMAND_RUN:
                return MQTT_ALLOW_RUNS;
        case COMMAND_ACK_ALERT:
                return MQTT_ALLOW_ALERTS;
        }
        return 0; /* unreachable: every type is listed */
}

/* A topic level we may echo into a response topic: not empty, no separator, no wildcard. */
static bool copy_level(const char *s, size_t n, size_t max, char name[static COMMAND_NAME_MAX]) {
        if (n == 0 || n >= max || n >= COMMAND_NAME_MAX || memchr(s, '+', n) || memchr(s, '#', n))
                return false;
        memcpy(name, s, n);
        name[n] = 0;
        return true;
}

TopicKind command_route(const char *base, const char *prefix, const char *topic,
                        char name[static COMMAND_NAME_MAX]) {
        size_t bl = strlen(base), pl = strlen(prefix);
        const char *rest, *slash;

        name[0] = 0;
        if (strncmp(topic, prefix, pl) == 0 && streq(topic + pl, "/status"))
                return TOPIC_HA_STATUS;
        if (strncmp(topic, base, bl) != 0 || topic[bl] != '/')
                return TOPIC_IGNORED;
        rest = topic + bl + 1;
        if (strncmp(rest, "bridge/request/", 15) == 0) {
                rest += 15;
                if (strchr(rest, '/') || !copy_level(rest, strlen(rest), COMMAND_NAME_MAX, name))
                        return TOPIC_IGNORED;
                return TOPIC_BRIDGE_REQUEST;
        }
        slash = strchr(rest, '/');
        if (!slash || !streq(slash, "/set") || !copy_level(rest, (size_t) (slash - rest), WRAP_ID_MAX, name))
                return TOPIC_IGNORED;
        return TOPIC_WRAP_SET;
}
