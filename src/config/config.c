/* config: kneewrapd.conf, read with inih, every value checked against its bounds. */
#include <ctype.h>
#include <errno.h>
#include <ini.h>
#include <limits.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <syslog.h>

#include "config.h"
#include "log.h"
#include "rules.h"
#include "util.h"

/*
 * inih tells the handler neither the line number nor about lines it could not parse, and
 * the config must name file:line for every problem. So our reader feeds inih one line at
 * a time, counts them, and checks the shape of each line itself: inih only ever sees
 * well-formed lines, and the handler runs right after the line it was given was read.
 */

#define LINE_MAX_LEN 4096

typedef enum Section {
        SECTION_NONE,
        SECTION_DAEMON,
        SECTION_BLUETOOTH,
        SECTION_MQTT,
        SECTION_THERAPY,
        SECTION_STORE,
        SECTION_UNKNOWN,
} Section;

static const char *const section_names[] = {
        [SECTION_DAEMON] = "daemon",
        [SECTION_BLUETOOTH] = "bluetooth",
        [SECTION_MQTT] = "mqtt",
        [SECTION_THERAPY] = "therapy",
        [SECTION_STORE] = "store",
};

typedef struct Parser Parser;
typedef int (*KeyParser)(Parser *p, const char *value, const char **why);

typedef struct Key {
        Section section;
        const char *name;
        KeyParser parse;
} Key;

struct Parser {
        Config *c;
        const char *path;
        FILE *f;
        FILE *errors;
        char *buf;
        size_t bufsz;
        unsigned line;
        unsigned n_errors;
        Section section;
        char section_name[64];
        unsigned seen[32];          /* per key: the line it was set on, 0 = not set */
        char why_buf[160];          /* for messages that carry a value */
};

static void perr(Parser *p, unsigned line, const char *key, const char *fmt, ...) __attribute__((format(printf, 4, 5)));
static void perr(Parser *p, unsigned line, const char *key, const char *fmt, ...) {
        va_list ap;

        p->n_errors++;
        if (!p->errors)
                return;
        fprintf(p->errors, "%s:%u: ", p->path, line);
        if (key)
                fprintf(p->errors, "[%s] %s: ", p->section_name, key);
        va_start(ap, fmt);
        vfprintf(p->errors, fmt, ap);
        va_end(ap);
        fputc('\n', p->errors);
}

int config_set_string(char **dst, const char *value) {
        char *s = strdup(value);
        if (!s)
                return -ENOMEM;
        free(*dst);
        *dst = s;
        return 0;
}

int config_set_path(char **dst, const char *value, const char **why) {
        if (value[0] != '/') {
                *why = "must be an absolute path";
                return -EINVAL;
        }
        return config_set_string(dst, value);
}

static int parse_uint_range(const char *value, int64_t min, int64_t max, int64_t *ret, const char **why) {
        int64_t v;

        if (parse_int64(value, &v) < 0) {
                *why = "not a whole number";
                return -EINVAL;
        }
        if (v < min || v > max) {
                *why = "out of range";
                return -ERANGE;
        }
        *ret = v;
        return 0;
}

/* [daemon] */

static int key_log_level(Parser *p, const char *value, const char **why) {
        int l = log_level_from_string(value);
        if (l < 0) {
                *why = "not one of debug, info, notice, warning, error, crit";
                return -EINVAL;
        }
        p->c->log_level = l;
        return 0;
}

/* [bluetooth] */

static int key_clinic_group(Parser *p, const char *value, const char **why) {
        /* A group name as useradd takes it: no ':' or ',' and no space, which getgrnam would never match. */
        if (strpbrk(value, ":, \t") || strlen(value) > 32) {
                *why = "not a group name";
                return -EINVAL;
        }
        return config_set_string(&p->c->clinic_group, value);
}

static int key_adapter(Parser *p, const char *value, const char **why) {
        char addr[BDADDR_STR_MAX];
        const char *d;

        if (strncmp(value, "hci", 3) == 0 && value[3]) {
                for (d = value + 3; *d; d++)
                        if (!isdigit((unsigned char) *d))
                                break;
                if (!*d && strlen(value) <= 8)
                        return config_set_string(&p->c->adapter, value);
        }
        if (bdaddr_normalize(value, addr) == 0)
                return config_set_string(&p->c->adapter, addr);
        *why = "not an adapter name (hci0, hci1, ...) nor a Bluetooth address";
        return -EINVAL;
}

static int key_clock_trusted(Parser *p, const char *value, const char **why) {
        if (parse_bool(value, &p->c->clock_trusted) < 0) {
                *why = "not a boolean (yes or no)";
                return -EINVAL;
        }
        return 0;
}

static int key_auto_adopt(Parser *p, const char *value, const char **why) {
        if (parse_bool(value, &p->c->auto_adopt) < 0) {
                *why = "not a boolean (yes or no)";
                return -EINVAL;
        }
        return 0;
}

static int key_power_on(Parser *p, const char *value, const char **why) {
        if (parse_bool(value, &p->c->power_on) < 0) {
                *why = "not a boolean (yes or no)";
                return -EINVAL;
        }
        return 0;
}

static int key_allow(Parser *p, const char *value, const char **why) {
        char copy[LINE_MAX_LEN], *save = NULL, *tok;
        unsigned n = 0;

        snprintf(copy, sizeof copy, "%s", value);
        for (tok = strtok_r(copy, ", \t", &save); tok; tok = strtok_r(NULL, ", \t", &save)) {
                char addr[BDADDR_STR_MAX];
                bool dup = false;

                if (bdaddr_normalize(tok, addr) < 0) {
                        snprintf(p->why_buf, sizeof p->why_buf,
                                 "\"%.40s\" is not a Bluetooth address (AA:BB:CC:DD:EE:FF)", tok);
                        *why = p->why_buf;
                        return -EINVAL;
                }
                for (unsigned i = 0; i < n; i++)
                        dup = dup || streq(p->c->allow[i], addr);
                if (dup)
                        continue;
                if (n >= CONFIG_MAX_ALLOW) {
                        snprintf(p->why_buf, sizeof p->why_buf, "more than %d addresses", CONFIG_MAX_ALLOW);
                        *why = p->why_buf;
                        return -E2BIG;
                }
                memcpy(p->c->allow[n++], addr, BDADDR_STR_MAX);
        }
        if (n == 0) {
                *why = "no address given";
                return -EINVAL;
        }
        p->c->n_allow = n;
        return 0;
}

/* [mqtt] */

static int key_host(Parser *p, const char *value, const char **why) {
        for (const char *s = value; *s; s++)
                if (isspace((unsigned char) *s) || iscntrl((unsigned char) *s) || *s == '/') {
                        *why = "not a host name or address";
                        return -EINVAL;
                }
        if (strlen(value) > 253) {
                *why = "longer than a host name can be (253)";
                return -EINVAL;
        }
        return config_set_string(&p->c->mqtt_host, value);
}

static int key_port(Parser *p, const char *value, const char **why) {
        int64_t v;
        int r = parse_uint_range(value, 1, 65535, &v, why);
        if (r < 0) {
                if (r == -ERANGE)
                        *why = "out of range (1 to 65535)";
                return r;
        }
        p->c->mqtt_port = (uint16_t) v;
        return 0;
}

/* A topic level of our own: no wildcards, no separator, not reserved ($SYS...). */
static bool topic_level_valid(const char *s) {
        if (!*s || *s == '$' || strlen(s) > 64)
                return false;
        for (; *s; s++)
                if (*s == '+' || *s == '#' || *s == '/' || iscntrl((unsigned char) *s) || *s == ' ')
                        return false;
        return true;
}

/* Home Assistant's prefix may have several levels: "homeassistant", "ha/discovery". */
static bool topic_valid(const char *s) {
        size_t n = strlen(s);
        if (n == 0 || n > 128 || *s == '$' || s[0] == '/' || s[n - 1] == '/' || strstr(s, "//"))
                return false;
        for (; *s; s++)
                if (*s == '+' || *s == '#' || iscntrl((unsigned char) *s) || *s == ' ')
                        return false;
        return true;
}

static int key_base_topic(Parser *p, const char *value, const char **why) {
        if (!topic_level_valid(value)) {
                *why = "not one MQTT topic level (no '/', '+', '#', spaces or leading '$'; at most 64 characters)";
                return -EINVAL;
        }
        return config_set_string(&p->c->base_topic, value);
}

static int key_discovery_prefix(Parser *p, const char *value, const char **why) {
        if (!topic_valid(value)) {
                *why = "not a valid MQTT topic (no '+', '#', spaces, empty levels or leading '$')";
                return -EINVAL;
        }
        return config_set_string(&p->c->discovery_prefix, value);
}

static int key_client_id(Parser *p, const char *value, const char **why) {
        if (strlen(value) > 128) {
                *why = "longer than 128 characters";
                return -EINVAL;
        }
        for (const char *s = value; *s; s++)
                if (!isgraph((unsigned char) *s) && !((unsigned char) *s & 0x80)) {
                        *why = "contains spaces or control characters";
                        return -EINVAL;
                }
        return config_set_string(&p->c->client_id, value);
}

static int key_username(Parser *p, const char *value, const char **why) {
        for (const char *s = value; *s; s++)
                if (iscntrl((unsigned char) *s)) {
                        *why = "contains control characters";
                        return -EINVAL;
                }
        return config_set_string(&p->c->username, value);
}

static int key_password_file(Parser *p, const char *value, const char **why) {
        return config_set_path(&p->c->password_file, value, why);
}

static int key_tls_ca_file(Parser *p, const char *value, const char **why) {
        return config_set_path(&p->c->tls_ca_file, value, why);
}

static int key_tls_ca_dir(Parser *p, const char *value, const char **why) {
        return config_set_path(&p->c->tls_ca_dir, value, why);
}

static const char *const allow_names[] = {
        "sessions", "diary", "runs", "injury", "resolve", "prescription", "adoption", "alerts",
};

const char *mqtt_allow_to_string(unsigned bit) {
        for (size_t i = 0; i < ELEMENTSOF(allow_names); i++)
                if (bit == 1u << i)
                        return allow_names[i];
        return NULL;
}

static int key_commands(Parser *p, const char *value, const char **why) {
        char copy[LINE_MAX_LEN], *save = NULL, *tok;
        unsigned set = 0;

        snprintf(copy, sizeof copy, "%s", value);
        for (tok = strtok_r(copy, ", \t", &save); tok; tok = strtok_r(NULL, ", \t", &save)) {
                size_t i;

                if (streq(tok, "none") && set == 0 && !strtok_r(NULL, ", \t", &save)) {
                        p->c->mqtt_commands = 0;
                        return 0;
                }
                for (i = 0; i < ELEMENTSOF(allow_names) && !streq(tok, allow_names[i]); i++)
                        ;
                if (i == ELEMENTSOF(allow_names)) {
                        snprintf(p->why_buf, sizeof p->why_buf, "unknown command \"%.40s\" (sessions, diary, runs, "
                                 "injury, resolve, prescription, adoption, alerts, or none)", tok);
                        *why = p->why_buf;
                        return -EINVAL;
                }
                set |= 1u << i;
        }
        if (set == 0) {
                *why = "no command given (use \"none\" to refuse every command)";
                return -EINVAL;
        }
        p->c->mqtt_commands = set;
        return 0;
}

static int key_tls_cert_file(Parser *p, const char *value, const char **why) {
        return config_set_path(&p->c->tls_cert_file, value, why);
}

static int key_tls_key_file(Parser *p, const char *value, const char **why) {
        return config_set_path(&p->c->tls_key_file, value, why);
}

static int key_keepalive(Parser *p, const char *value, const char **why) {
        int64_t v;
        int r = parse_uint_range(value, 5, 3600, &v, why);
        if (r < 0) {
                if (r == -ERANGE)
                        *why = "out of range (5 to 3600 seconds)";
                return r;
        }
        p->c->keepalive = (uint16_t) v;
        return 0;
}

static int key_protocol(Parser *p, const char *value, const char **why) {
        if (streq(value, "3.1.1"))
                p->c->protocol = MQTT_PROTOCOL_V311;
        else if (streq(value, "5"))
                p->c->protocol = MQTT_PROTOCOL_V5;
        else {
                *why = "not \"3.1.1\" or \"5\"";
                return -EINVAL;
        }
        return 0;
}

/* [therapy]: the bounds live in rules.c only; we try the value on a valid prescription. */

static int therapy_try(Parser *p, const RulesPrescription *rx, const char **why) {
        const char *field, *rwhy;

        if (rules_prescription_check(rx, &field, &rwhy) < 0) {
                *why = rwhy;
                return -ERANGE;
        }
        p->c->therapy = *rx;
        return 0;
}

static int therapy_uint(Parser *p, const char *value, int64_t unit, uint32_t *field_in_copy,
                        RulesPrescription *copy, const char **why) {
        int64_t v;

        if (parse_int64(value, &v) < 0) {
                *why = "not a whole number";
                return -EINVAL;
        }
        /* Far outside every bound either way: let rules.c say why, without overflowing. */
        if (v < 0)
                *field_in_copy = 0;
        else if (v > (int64_t) UINT32_MAX / unit)
                *field_in_copy = UINT32_MAX;
        else
                *field_in_copy = (uint32_t) (v * unit);
        return therapy_try(p, copy, why);
}

static int key_cold_minutes(Parser *p, const char *value, const char **why) {
        RulesPrescription rx = p->c->therapy;
        return therapy_uint(p, value, 60, &rx.cold_s, &rx, why);
}

static int key_heat_minutes(Parser *p, const char *value, const char **why) {
        RulesPrescription rx = p->c->therapy;
        return therapy_uint(p, value, 60, &rx.heat_s, &rx, why);
}

static int key_heat_wait_days(Parser *p, const char *value, const char **why) {
        RulesPrescription rx = p->c->therapy;
        return therapy_uint(p, value, RULES_DAY_S, &rx.heat_wait_s, &rx, why);
}

static int key_cold_rest_minutes(Parser *p, const char *value, const char **why) {
        RulesPrescription rx = p->c->therapy;
        return therapy_uint(p, value, 60, &rx.cold_rest_s, &rx, why);
}

static int therapy_setpoint(Parser *p, const char *value, int32_t *field_in_copy,
                            RulesPrescription *copy, const char **why) {
        int32_t v;
        int r = parse_decimal_centi(value, &v);

        if (r == -ERANGE) {
                *why = "out of range";
                return r;
        }
        if (r < 0) {
                *why = "not a temperature in °C (like 10 or 10.5, at most two decimals)";
                return r;
        }
        *field_in_copy = v;
        return therapy_try(p, copy, why);
}

static int key_cold_setpoint(Parser *p, const char *value, const char **why) {
        RulesPrescription rx = p->c->therapy;
        return therapy_setpoint(p, value, &rx.cold_setpoint, &rx, why);
}

static int key_heat_setpoint(Parser *p, const char *value, const char **why) {
        RulesPrescription rx = p->c->therapy;
        return therapy_setpoint(p, value, &rx.heat_setpoint, &rx, why);
}

/* [store] */

static int key_store_path(Parser *p, const char *value, const char **why) {
        return config_set_path(&p->c->store_path, value, why);
}

static int key_uplink_state(Parser *p, const char *value, const char **why) {
        return config_set_path(&p->c->uplink_state_path, value, why);
}

static const Key keys[] = {
        { SECTION_DAEMON,    "log_level",         key_log_level },
        { SECTION_DAEMON,    "clinic_group",      key_clinic_group },
        { SECTION_DAEMON,    "clock_trusted",     key_clock_trusted },
        { SECTION_BLUETOOTH, "adapter",           key_adapter },
        { SECTION_BLUETOOTH, "auto_adopt",        key_auto_adopt },
        { SECTION_BLUETOOTH, "allow",             key_allow },
        { SECTION_BLUETOOTH, "power_on",          key_power_on },
        { SECTION_MQTT,      "host",              key_host },
        { SECTION_MQTT,      "port",              key_port },
        { SECTION_MQTT,      "base_topic",        key_base_topic },
        { SECTION_MQTT,      "discovery_prefix",  key_discovery_prefix },
        { SECTION_MQTT,      "client_id",         key_client_id },
        { SECTION_MQTT,      "username",          key_username },
        { SECTION_MQTT,      "password_file",     key_password_file },
        { SECTION_MQTT,      "tls_ca_file",       key_tls_ca_file },
        { SECTION_MQTT,      "tls_ca_dir",        key_tls_ca_dir },
        { SECTION_MQTT,      "tls_cert_file",     key_tls_cert_file },
        { SECTION_MQTT,      "tls_key_file",      key_tls_key_file },
        { SECTION_MQTT,      "keepalive",         key_keepalive },
        { SECTION_MQTT,      "protocol",          key_protocol },
        { SECTION_MQTT,      "commands",          key_commands },
        { SECTION_THERAPY,   "cold_minutes",      key_cold_minutes },
        { SECTION_THERAPY,   "cold_setpoint_c",   key_cold_setpoint },
        { SECTION_THERAPY,   "heat_minutes",      key_heat_minutes },
        { SECTION_THERAPY,   "heat_setpoint_c",   key_heat_setpoint },
        { SECTION_THERAPY,   "heat_wait_days",    key_heat_wait_days },
        { SECTION_THERAPY,   "cold_rest_minutes", key_cold_rest_minutes },
        { SECTION_STORE,     "path",              key_store_path },
        { SECTION_STORE,     "uplink_state",      key_uplink_state },
};

_Static_assert(ELEMENTSOF(keys) <= ELEMENTSOF(((Parser *) 0)->seen), "Parser.seen too small");

static int key_index(Section s, const char *name) {
        for (size_t i = 0; i < ELEMENTSOF(keys); i++)
                if (keys[i].section == s && streq(keys[i].name, name))
                        return (int) i;
        return -1;
}

static int handler(void *user, const char *section, const char *name, const char *value) {
        Parser *p = user;
        const char *why = NULL;
        int i, r;

        (void) section; /* the reader tracked it, with its line */

        if (p->section == SECTION_UNKNOWN)
                return 1; /* reported once, at its header */

        i = key_index(p->section, name);
        if (i < 0) {
                perr(p, p->line, name, "unknown key");
                return 1;
        }
        if (p->seen[i]) {
                perr(p, p->line, name, "duplicate key (first set on line %u)", p->seen[i]);
                return 1;
        }
        p->seen[i] = p->line;
        if (!*value) {
                perr(p, p->line, name, "empty value (comment the line out to use the default)");
                return 1;
        }
        r = keys[i].parse(p, value, &why);
        if (r == -ENOMEM) {
                perr(p, p->line, name, "out of memory");
                return 1;
        }
        if (r < 0) {
                perr(p, p->line, name, "\"%.64s\": %s", value, why ? why : "invalid value");
                return 1;
        }
        return 1;
}

static char *rstrip(char *s) {
        size_t n = strlen(s);
        while (n > 0 && isspace((unsigned char) s[n - 1]))
                s[--n] = '\0';
        return s;
}

/* Checks a line's shape and tracks sections. Returns false to hide the line from inih. */
static bool classify(Parser *p, char *line) {
        char *s = line, *end, *eq, *colon;

        while (isspace((unsigned char) *s))
                s++;
        if (*s == '\0' || *s == '#' || *s == ';')
                return true;

        if (*s == '[') {
                /* Keys under a broken header are not reported again, one by one. */
                p->section = SECTION_UNKNOWN;
                end = strchr(s, ']');
                if (!end) {
                        perr(p, p->line, NULL, "malformed section header: no closing ']'");
                        return false;
                }
                for (char *t = end + 1; *t; t++)
                        if (!isspace((unsigned char) *t)) {
                                perr(p, p->line, NULL, "malformed section header: text after ']'");
                                return false;
                        }
                *end = '\0';
                snprintf(p->section_name, sizeof p->section_name, "%s", s + 1);
                *end = ']';
                for (size_t i = 0; i < ELEMENTSOF(section_names); i++)
                        if (section_names[i] && streq(section_names[i], p->section_name))
                                p->section = (Section) i;
                if (p->section == SECTION_UNKNOWN)
                        perr(p, p->line, NULL, "[%s]: unknown section", p->section_name);
                return true;
        }

        eq = strchr(s, '=');
        colon = strchr(s, ':');
        if (!eq || (colon && colon < eq)) {
                perr(p, p->line, NULL, "malformed line: expected \"key = value\", a [section] or a comment");
                return false;
        }
        if (eq == s) {
                perr(p, p->line, NULL, "malformed line: no key before '='");
                return false;
        }
        if (p->section == SECTION_NONE) {
                *eq = '\0';
                rstrip(s);
                perr(p, p->line, NULL, "%s: key outside any [section]", s);
                return false;
        }
        return true;
}

static char *reader(char *str, int num, void *stream) {
        Parser *p = stream;
        ssize_t n;

        n = getline(&p->buf, &p->bufsz, p->f);
        if (n < 0)
                return NULL;
        p->line++;

        if ((size_t) n != strlen(p->buf)) {
                perr(p, p->line, NULL, "malformed line: contains a NUL byte");
                goto hide;
        }
        rstrip(p->buf);
        if (strlen(p->buf) + 2 > (size_t) num) {
                perr(p, p->line, NULL, "line too long (at most %d characters)", num - 3);
                goto hide;
        }
        if (!classify(p, p->buf))
                goto hide;

        snprintf(str, (size_t) num, "%s\n", p->buf);
        return str;
hide:
        snprintf(str, (size_t) num, "\n");
        return str;
}

void config_init(Config *c) {
        *c = (Config) {
                .log_level = LOG_INFO,
                .power_on = true,
                .mqtt_port = 1883,
                .base_topic = strdup("kneewrap"),
                .discovery_prefix = strdup("homeassistant"),
                .keepalive = 60,
                .protocol = MQTT_PROTOCOL_V311,
                .mqtt_commands = MQTT_ALLOW_DEFAULT,
                .store_path = strdup("/var/lib/kneewrap/kneewrap.db"),
                .clinic_group = strdup("kneewrap-clinic"),
                .uplink_state_path = strdup("/var/lib/kneewrap-uplink/uplink.db"),
        };
        rules_prescription_default(&c->therapy);
}

void config_done(Config *c) {
        if (!c)
                return;
        free(c->adapter);
        free(c->mqtt_host);
        free(c->base_topic);
        free(c->discovery_prefix);
        free(c->client_id);
        free(c->username);
        free(c->password_file);
        free(c->tls_ca_file);
        free(c->tls_ca_dir);
        free(c->tls_cert_file);
        free(c->tls_key_file);
        free(c->store_path);
        free(c->clinic_group);
        free(c->uplink_state_path);
        *c = (Config) { 0 };
}

static void check_whole(Parser *p) {
        Config *c = p->c;
        int cert = key_index(SECTION_MQTT, "tls_cert_file"), key = key_index(SECTION_MQTT, "tls_key_file");

        snprintf(p->section_name, sizeof p->section_name, "mqtt");
        if (c->tls_cert_file && !c->tls_key_file)
                perr(p, p->seen[cert], "tls_cert_file", "set without tls_key_file: a client certificate needs its key");
        if (c->tls_key_file && !c->tls_cert_file)
                perr(p, p->seen[key], "tls_key_file", "set without tls_cert_file: a client key needs its certificate");
        if ((c->tls_cert_file || c->tls_key_file) && !c->tls_ca_file && !c->tls_ca_dir)
                perr(p, p->seen[c->tls_cert_file ? cert : key], c->tls_cert_file ? "tls_cert_file" : "tls_key_file",
                     "set without tls_ca_file or tls_ca_dir: TLS needs the CA that signed the broker's certificate");
        if (!p->seen[key_index(SECTION_MQTT, "port")] && (c->tls_ca_file || c->tls_ca_dir))
                c->mqtt_port = 8883;
}

int config_load(Config *c, const char *path, FILE *errors) {
        FILE *f;
        int r;

        f = fopen(path, "re");
        if (!f)
                return -errno;
        r = config_load_stream(c, f, path, errors);
        fclose(f);
        return r;
}

int config_load_stream(Config *c, FILE *f, const char *path, FILE *errors) {
        Config tmp;
        Parser p = {
                .c = &tmp,
                .path = path,
                .errors = errors,
                .section = SECTION_NONE,
                .f = f,
        };
        int r;

        config_init(&tmp);
        if (!tmp.base_topic || !tmp.discovery_prefix || !tmp.store_path || !tmp.clinic_group ||
            !tmp.uplink_state_path) {
                config_done(&tmp);
                return -ENOMEM;
        }

        /* Debian's inih takes these at run time. A heap line buffer lets `allow` be long;
         * continuation lines and inline comments would hide mistakes, so both are off. */
        ini_use_stack = false;
        ini_allow_realloc = false;
        ini_max_line = LINE_MAX_LEN;
        ini_initial_alloc = LINE_MAX_LEN;
        ini_allow_multiline = false;
        ini_allow_inline_comments = false;
        ini_allow_no_value = false;
        ini_stop_on_first_error = false;

        r = ini_parse_stream(reader, &p, handler, &p);
        if (r == -2)
                r = -ENOMEM;
        else if (ferror(p.f))
                r = -EIO;
        else if (r > 0 && p.n_errors == 0)
                /* inih saw something our reader let through: still an error, with its line. */
                perr(&p, (unsigned) r, NULL, "malformed line");
        free(p.buf);

        if (r >= 0 || p.n_errors > 0) {
                check_whole(&p);
                r = p.n_errors > 0 ? -EINVAL : 0;
        }

        config_done(c);
        if (r < 0) {
                config_done(&tmp);
                config_init(c);
                return r;
        }
        *c = tmp;
        return 0;
}
