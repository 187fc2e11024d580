/* uplink-config: /etc/kneewrap/uplink.conf, the clinic uplink's configuration (inih). */
#include <arpa/inet.h>
#include <errno.h>
#include <ini.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "config.h"
#include "uplink.h"
#include "util.h"

void uplink_config_init(UplinkConfig *c) {
        const char *state_dir = getenv("STATE_DIRECTORY");   /* set by StateDirectory= */

        *c = (UplinkConfig) {
                .timeout_s = 30,
                .store_path = strdup("/var/lib/kneewrap/kneewrap.db"),
                .batch = 100,
                .retry_max_s = 300,
                .poll_s = 60,
        };
        if (state_dir && *state_dir && !strchr(state_dir, ':'))
                (void) asprintf(&c->state_path, "%s/uplink.db", state_dir);
        else
                c->state_path = strdup("/var/lib/kneewrap-uplink/uplink.db");
}

void uplink_config_done(UplinkConfig *c) {
        char **strings[] = { &c->url, &c->address, &c->ca_file, &c->token_file, &c->token_url, &c->client_id,
                             &c->client_secret_file, &c->scope, &c->store_path, &c->state_path };

        for (size_t i = 0; i < ELEMENTSOF(strings); i++) {
                free(*strings[i]);
                *strings[i] = NULL;
        }
}

typedef struct Parser {
        UplinkConfig *c;
        const char *path;
        FILE *file;
        FILE *errors;
        unsigned line;
        unsigned n_errors;
} Parser;

static void perr(Parser *p, const char *section, const char *key, const char *why) {
        p->n_errors++;
        if (p->errors)
                fprintf(p->errors, "%s:%u: [%s] %s: %s\n", p->path, p->line, section, key, why);
}

static int set_uint(unsigned *dst, const char *value, int64_t min, int64_t max, const char **why) {
        int64_t v;

        if (parse_int64(value, &v) < 0 || v < min || v > max) {
                static char buf[64];
                snprintf(buf, sizeof buf, "must be a whole number from %lld to %lld", (long long) min, (long long) max);
                *why = buf;
                return -EINVAL;
        }
        *dst = (unsigned) v;
        return 0;
}

/* Only https, but for a server on this machine (the tests', or a local relay). */
static int set_url(char **dst, const char *value, const char **why) {
        if (strncmp(value, "https://", 8) != 0 &&
            strncmp(value, "http://127.0.0.1", 16) != 0 && strncmp(value, "http://localhost", 16) != 0 &&
            strncmp(value, "http://[::1]", 12) != 0) {
                *why = "must be an https:// URL (http:// only to this machine)";
                return -EINVAL;
        }
        return config_set_string(dst, value);
}

static int set_address(char **dst, const char *value, const char **why) {
        unsigned char buf[sizeof(struct in6_addr)];

        if (inet_pton(AF_INET, value, buf) != 1 && inet_pton(AF_INET6, value, buf) != 1) {
                *why = "not an IPv4 or IPv6 address";
                return -EINVAL;
        }
        return config_set_string(dst, value);
}

static int handler(void *user, const char *section, const char *name, const char *value) {
        Parser *p = user;
        UplinkConfig *c = p->c;
        const char *why = "unknown key";
        int r = -EINVAL;

        if (!*value) {
                perr(p, section, name, "empty value (comment the line out to use the default)");
                return 1;
        }
        if (streq(section, "server")) {
                if (streq(name, "url"))
                        r = set_url(&c->url, value, &why);
                else if (streq(name, "address"))
                        r = set_address(&c->address, value, &why);
                else if (streq(name, "ca_file"))
                        r = config_set_path(&c->ca_file, value, &why);
                else if (streq(name, "timeout"))
                        r = set_uint(&c->timeout_s, value, 1, 120, &why);
        } else if (streq(section, "auth")) {
                if (streq(name, "token_file"))
                        r = config_set_path(&c->token_file, value, &why);
                else if (streq(name, "token_url"))
                        r = set_url(&c->token_url, value, &why);
                else if (streq(name, "client_id"))
                        r = config_set_string(&c->client_id, value);
                else if (streq(name, "client_secret_file"))
                        r = config_set_path(&c->client_secret_file, value, &why);
                else if (streq(name, "scope"))
                        r = config_set_string(&c->scope, value);
        } else if (streq(section, "uplink")) {
                if (streq(name, "store"))
                        r = config_set_path(&c->store_path, value, &why);
                else if (streq(name, "state"))
                        r = config_set_path(&c->state_path, value, &why);
                else if (streq(name, "batch"))
                        r = set_uint(&c->batch, value, 3, 1000, &why);
                else if (streq(name, "retry_max"))
                        r = set_uint(&c->retry_max_s, value, 1, 86400, &why);
                else if (streq(name, "poll"))
                        r = set_uint(&c->poll_s, value, 1, 86400, &why);
        } else
                why = "unknown section";
        if (r == -ENOMEM)
                why = "out of memory";
        if (r < 0)
                perr(p, section, name, why);
        return 1;
}

/* inih's reader, counting lines so that each error names its own. */
static char *reader(char *buf, int size, void *userdata) {
        Parser *p = userdata;
        char *s = fgets(buf, size, p->file);

        if (s)
                p->line++;
        return s;
}

int uplink_config_load(UplinkConfig *c, const char *path, FILE *errors) {
        Parser p = { .c = c, .path = path, .errors = errors };
        int r;

        p.file = fopen(path, "re");
        if (!p.file) {
                r = -errno;
                if (errors)
                        fprintf(errors, "%s: %m\n", path);
                return r;
        }
        /* As kneewrapd.conf: no continuation lines or inline comments to hide a mistake. */
        ini_allow_multiline = false;
        ini_allow_inline_comments = false;
        ini_allow_no_value = false;
        ini_stop_on_first_error = false;
        r = ini_parse_stream(reader, &p, handler, &p);
        fclose(p.file);
        if (r > 0 && p.n_errors == 0) {
                p.line = (unsigned) r;
                perr(&p, "?", "?", "malformed line");
        }
        if (!c->url) {
                p.n_errors++;
                if (errors)
                        fprintf(errors, "%s: [server] url: not set: the clinic's FHIR base URL is needed\n", path);
        }
        if (c->token_url && !c->client_id) {
                p.n_errors++;
                if (errors)
                        fprintf(errors, "%s: [auth] client_id: needed with token_url\n", path);
        }
        return p.n_errors ? -EINVAL : 0;
}
