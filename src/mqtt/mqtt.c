/* mqtt: the broker client, libmosquitto driven by the one sd-event loop (no thread of its own, no mosquitto_loop). */
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <mosquitto.h>
#include <mqtt_protocol.h>
#include <openssl/err.h>
#include <openssl/ssl.h>
#include <openssl/x509v3.h>
/* mosquitto.h's (and mqtt_protocol.h's) protocol macros would shadow config.h's MqttProtocol names. */
#undef MQTT_PROTOCOL_V31
#undef MQTT_PROTOCOL_V311
#undef MQTT_PROTOCOL_V5
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <unistd.h>

#include "clock.h"
#include "commands.h"
#include "discovery.h"
#include "log.h"
#include "lookup.h"
#include "mqtt.h"
#include "payload.h"
#include "state.h"
#include "store.h"
#include "util.h"
#include "wire.h"

#define OUTBOX_WINDOW        16                       /* outbox messages in flight at most */
#define BACKOFF_MIN_USEC     (1 * USEC_PER_SEC)
#define BACKOFF_MAX_USEC     (60 * USEC_PER_SEC)
#define CONNECT_TIMEOUT_USEC (30 * USEC_PER_SEC)
/* glibc gives DNS at most 30 s (3 servers, 2 tries, 5 s); mDNS and /etc/hosts answer sooner. */
#define LOOKUP_TIMEOUT_USEC  (30 * USEC_PER_SEC)
/* MQTT 5's Maximum Packet Size in CONNECT: a 64 KiB payload (what on_message accepts) with
 * its topic and header still fits; the broker drops anything larger instead of sending it. */
#define PACKET_MAX           (COMMAND_PAYLOAD_MAX + 1024)
#define HEALTH_USEC          (60 * USEC_PER_SEC)
#define PASSWORD_MAX         4096
#define STATE_MIN_USEC       (1 * USEC_PER_SEC)       /* a wrap's state at most this often, but for its session */

typedef struct Inflight {
        int mid;
        int64_t id;
        uint64_t sent_usec;           /* real CLOCK_MONOTONIC (now_mono) when it was handed to the library */
} Inflight;

/* What was last published for a wrap, so that only changes go out between the periodic refreshes. */
typedef struct KnownWrap {
        char wrap[WRAP_ID_MAX];
        char address[BDADDR_STR_MAX];
        bool present;                 /* in the store's list at the last look */
        bool discovered;              /* its discovery configs went out on this connection */
        bool discovered_info;         /* ... with the Device Information the wrap reported */
        bool dirty;
        char *state, *availability, *compliance;
        /* What the compliance figures were computed for: the last record's id and outcome,
         * and the local date (the 7- and 30-day windows move once a day). */
        char compliance_for[UUID_STR_MAX + 24];
        /* When the state last went out, and its session part then (link, session, mode,
         * wrap state, faults): a change there goes out at once, anything else at most once
         * a second. */
        uint64_t state_usec;
        char session_key[UUID_STR_MAX + 32];
} KnownWrap;

typedef struct MqttSettings {
        char *host;
        uint16_t port;
        char *base, *prefix, *client_id, *username, *password;
        char *ca, *ca_dir, *cert, *key;
        uint16_t keepalive;
        MqttProtocol protocol;
} MqttSettings;

struct Mqtt {
        sd_event *event;
        const Config *config;
        MqttHooks hooks;
        MqttSettings s;
        int64_t adoption_until;       /* Unix seconds, scaled clock; 0 = closed */
        uint64_t reconnects;

        struct mosquitto *mosq;
        sd_event_source *io;
        sd_event_source *misc_timer;
        sd_event_source *retry_timer;
        sd_event_source *connect_timer;
        sd_event_source *lookup_timer;
        sd_event_source *health_timer;
        sd_event_source *ha_timer;
        sd_event_source *flush;
        sd_event_source *state_timer; /* a wrap's state held back by the once-a-second limit */
        int fd;

        /* The broker's addresses: looked up off the loop unless [mqtt] host is one, then tried
         * in turn; libmosquitto is only ever given a numeric address, so it never resolves. */
        Lookup *lookup;               /* outstanding, possibly past its timeout (then reused) */
        bool resolving;               /* an attempt waits for it */
        bool late_answer;             /* addrs came after the timeout: the next attempt uses them */
        char addrs[LOOKUP_ADDRS_MAX][LOOKUP_ADDR_MAX];
        size_t n_addrs, addr_index;

        bool connecting;
        bool connected;
        bool saw_writable;            /* the TCP connect completed (first EPOLLOUT) */
        bool refused;                 /* the broker answered CONNACK with an error */
        bool ever_connected;
        bool in_lib;                  /* inside a libmosquitto call: its callbacks must not write or destroy */
        unsigned attempts;            /* failed attempts since the last success */
        char last_error[256];         /* the last failure logged, to log repeats at debug level */
        char lib_error[256];          /* libmosquitto's last error line (OpenSSL's reason) */
        char tls_error[96];           /* " (hostname mismatch)": why the certificate was refused */
        char addr_failure[384];       /* the first TLS failure among the addresses tried in turn */

        Inflight inflight[OUTBOX_WINDOW];
        size_t n_inflight;
        int64_t last_sent_id;

        KnownWrap *wraps;
        size_t n_wraps;
        /* Wraps removed while the broker was away: their retained topics (state, availability,
         * compliance, alert, discovery) are cleared as soon as it is back. */
        KnownWrap *gone;
        size_t n_gone;
        bool dirty_all;               /* (re)publish discovery, info and every state */
        bool outbox_pending;          /* new outbox rows, or room in the window: peek again */
        bool dirty_info;
        bool dirty_health;
};

/* Reports up through the daemon's hooks; a hook it did not set is skipped. */
#define HOOK0(q, name) do { if ((q)->hooks.name) (q)->hooks.name((q)->hooks.userdata); } while (0)

static Store *store_of(Mqtt *q) {
        return q->hooks.store ? q->hooks.store(q->hooks.userdata) : NULL;
}

static void store_failed(Mqtt *q, int r) {
        if (q->hooks.store_failed)
                q->hooks.store_failed(q->hooks.userdata, r);
}

static void schedule_flush(Mqtt *q);
static void connection_lost(Mqtt *q, int rc, const char *why);

/* ---- settings ---- */

static void settings_done(MqttSettings *s) {
        free(s->host);
        free(s->base);
        free(s->prefix);
        free(s->client_id);
        free(s->username);
        if (s->password) {
                explicit_bzero(s->password, strlen(s->password));
                free(s->password);
        }
        free(s->ca);
        free(s->ca_dir);
        free(s->cert);
        free(s->key);
        memset(s, 0, sizeof(*s));
}

static int dup_opt(const char *in, char **out) {
        *out = NULL;
        if (!in)
                return 0;
        *out = strdup(in);
        return *out ? 0 : -ENOMEM;
}

static int check_readable(const char *what, const char *path) {
        int fd;

        if (!path)
                return 0;
        fd = open(path, O_RDONLY | O_CLOEXEC);
        if (fd < 0)
                return log_error_errno(errno, "MQTT: cannot read the %s %s: %m", what, path);
        close(fd);
        return 0;
}

/* Copies what the client needs from the config (the Config may be replaced by a reload). */
static int settings_load(const Config *c, MqttSettings *ret) {
        MqttSettings s = { .port = c->mqtt_port, .keepalive = c->keepalive, .protocol = c->protocol };
        char host[256];
        int r;

        if (!c->mqtt_host)
                return log_error_errno(EINVAL, "MQTT: no [mqtt] host configured.");
        r = check_readable("TLS CA file", c->tls_ca_file);
        if (r >= 0)
                r = check_readable("TLS CA directory", c->tls_ca_dir);
        if (r >= 0)
                r = check_readable("TLS certificate file", c->tls_cert_file);
        if (r >= 0)
                r = check_readable("TLS key file", c->tls_key_file);
        if (r < 0)
                return r;
        if (!!c->tls_cert_file != !!c->tls_key_file)
                return log_error_errno(EINVAL, "MQTT: tls_cert_file and tls_key_file go together; one is missing.");
        if (c->tls_cert_file && !c->tls_ca_file && !c->tls_ca_dir)
                return log_error_errno(EINVAL, "MQTT: a client certificate needs tls_ca_file or tls_ca_dir too (verification stays on).");

        if (dup_opt(c->mqtt_host, &s.host) < 0 || dup_opt(c->base_topic ? c->base_topic : "kneewrap", &s.base) < 0 ||
            dup_opt(c->discovery_prefix ? c->discovery_prefix : "homeassistant", &s.prefix) < 0 ||
            dup_opt(c->username, &s.username) < 0 || dup_opt(c->tls_ca_file, &s.ca) < 0 || dup_opt(c->tls_ca_dir, &s.ca_dir) < 0 ||
            dup_opt(c->tls_cert_file, &s.cert) < 0 || dup_opt(c->tls_key_file, &s.key) < 0)
                goto oom;
        if (c->client_id) {
                if (dup_opt(c->client_id, &s.client_id) < 0)
                        goto oom;
        } else {
                if (gethostname(host, sizeof host) < 0)
                        snprintf(host, sizeof host, "localhost");
                host[sizeof host - 1] = 0;
                if (asprintf(&s.client_id, "kneewrap-%s", host) < 0) {
                        s.client_id = NULL;
                        goto oom;
                }
        }

        if (c->password_file) {
                r = read_small_file(c->password_file, PASSWORD_MAX, &s.password);
                if (r < 0) {
                        settings_done(&s);
                        return log_error_errno(r, "MQTT: cannot read the password file %s: %m", c->password_file);
                }
        } else {
                const char *dir = getenv("CREDENTIALS_DIRECTORY");
                _cleanup_free_ char *p = NULL;

                if (dir && asprintf(&p, "%s/mqtt-password", dir) >= 0 && access(p, F_OK) == 0) {
                        r = read_small_file(p, PASSWORD_MAX, &s.password);
                        if (r < 0) {
                                settings_done(&s);
                                return log_error_errno(r, "MQTT: cannot read the credential %s: %m", p);
                        }
                        /* The unit's SetCredential= default when the file is missing: no password. */
                        if (s.password && !s.password[0]) {
                                free(s.password);
                                s.password = NULL;
                        }
                }
        }
        if (s.password && !s.username) {
                settings_done(&s);
                return log_error_errno(EINVAL, "MQTT: a password is given but no [mqtt] username.");
        }
        *ret = s;
        return 0;
oom:
        settings_done(&s);
        return log_error_errno(ENOMEM, "MQTT: out of memory.");
}

/* ---- small helpers ---- */

static uint64_t now_mono(Mqtt *q) {
        uint64_t t = 0;
        (void) sd_event_now(q->event, CLOCK_MONOTONIC, &t);
        return t;
}

/* Logs a failure once at `level`; the same failure again only at debug level. */
static void report(Mqtt *q, int level, const char *fmt, ...) __attribute__((format(printf, 3, 4)));
static void report(Mqtt *q, int level, const char *fmt, ...) {
        char buf[sizeof q->last_error];
        va_list ap;

        va_start(ap, fmt);
        vsnprintf(buf, sizeof buf, fmt, ap);
        va_end(ap);
        if (streq(buf, q->last_error))
                level = LOG_DEBUG;
        log_full_errno(level, 0, "%s", buf);
        snprintf(q->last_error, sizeof q->last_error, "%s", buf);
}

static int topicf(char **ret, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static int topicf(char **ret, const char *fmt, ...) {
        va_list ap;
        int r;

        va_start(ap, fmt);
        r = vasprintf(ret, fmt, ap);
        va_end(ap);
        if (r < 0) {
                *ret = NULL;
                return -ENOMEM;
        }
        return 0;
}

/* Publishes at QoS 1; payload NULL is an empty message (clears a retained topic). */
static int publish(Mqtt *q, const char *topic, const char *payload, bool retain, int *ret_mid) {
        int rc;

        if (!q->connected)
                return -ENOTCONN;
        rc = mosquitto_publish(q->mosq, ret_mid, topic, payload ? (int) strlen(payload) : 0, payload, 1, retain);
        if (rc != MOSQ_ERR_SUCCESS) {
                log_debug("MQTT: publishing to %s failed: %s", topic, mosquitto_strerror(rc));
                return -EIO;
        }
        return 0;
}

static int publish_topicf(Mqtt *q, const char *payload, bool retain, const char *fmt, ...) __attribute__((format(printf, 4, 5)));
static int publish_topicf(Mqtt *q, const char *payload, bool retain, const char *fmt, ...) {
        _cleanup_free_ char *topic = NULL;
        va_list ap;
        int r;

        va_start(ap, fmt);
        r = vasprintf(&topic, fmt, ap);
        va_end(ap);
        if (r < 0) {
                topic = NULL;
                return -ENOMEM;
        }
        return publish(q, topic, payload, retain, NULL);
}

/* ---- the io source: EPOLLOUT only while libmosquitto has something to write ---- */

static void update_events(Mqtt *q) {
        uint32_t ev = EPOLLIN;

        if (!q->io || !q->mosq)
                return;
        if (mosquitto_want_write(q->mosq)) {
                /*
                 * During a TLS handshake libmosquitto keeps want_write set while it waits to
                 * read; asking for EPOLLOUT then would spin. Past the TCP connect the
                 * handshake moves on reads, and every read is followed by a write attempt.
                 */
                if (!(q->connecting && (q->s.ca || q->s.ca_dir) && q->saw_writable))
                        ev |= EPOLLOUT;
        } else if (q->connecting && !q->saw_writable)
                ev |= EPOLLOUT;
        (void) sd_event_source_set_io_events(q->io, ev);
}

static void check_socket(Mqtt *q, int rc, const char *what) {
        if (rc == MOSQ_ERR_SUCCESS && mosquitto_socket(q->mosq) >= 0)
                return;
        connection_lost(q, rc, what);
}

static int on_io(sd_event_source *s, int fd, uint32_t revents, void *userdata) {
        Mqtt *q = userdata;
        bool first = !q->saw_writable;
        int rc;

        if (revents & EPOLLOUT)
                q->saw_writable = true;
        if (q->connecting && first && (revents & (EPOLLERR | EPOLLHUP))) {
                /*
                 * The TCP connect failed (refused, unreachable): the socket's first event is
                 * its end. Over TLS libmosquitto would not say so: SSL_connect's
                 * SSL_ERROR_SYSCALL only means "try again" to it (net__socket_connect_tls), and
                 * the loop would spin on the hung-up socket until the connect timeout. Its
                 * first write may have taken the error already. Later events (a broker that
                 * answered, then closed) go through libmosquitto as before.
                 */
                int err = 0;
                socklen_t len = sizeof err;

                if (getsockopt(fd, SOL_SOCKET, SO_ERROR, &err, &len) == 0 && err != 0) {
                        errno = err;
                        connection_lost(q, MOSQ_ERR_ERRNO, "connecting");
                        return 0;
                }
                if (revents & EPOLLHUP) {
                        connection_lost(q, MOSQ_ERR_CONN_LOST, "connecting");
                        return 0;
                }
        }

        /* The TLS handshake and every incoming packet move on loop_read; it is harmless when nothing waits. */
        q->in_lib = true;
        rc = mosquitto_loop_read(q->mosq, 1);
        q->in_lib = false;
        if (rc != MOSQ_ERR_SUCCESS || mosquitto_socket(q->mosq) < 0) {
                check_socket(q, rc == MOSQ_ERR_SUCCESS ? MOSQ_ERR_CONN_LOST : rc, "reading");
                return 0;
        }
        if (mosquitto_want_write(q->mosq)) {
                q->in_lib = true;
                rc = mosquitto_loop_write(q->mosq, 1);
                q->in_lib = false;
                if (rc != MOSQ_ERR_SUCCESS || mosquitto_socket(q->mosq) < 0) {
                        check_socket(q, rc == MOSQ_ERR_SUCCESS ? MOSQ_ERR_CONN_LOST : rc, "writing");
                        return 0;
                }
        }
        update_events(q);
        return 0;
}

/* Writes what a publish queued, at once when the socket takes it. */
static void write_now(Mqtt *q) {
        int rc;

        if (!q->mosq || !q->io)
                return;
        if (q->in_lib) {
                /* Called back from inside libmosquitto: write once it has returned. */
                schedule_flush(q);
                return;
        }
        if (mosquitto_want_write(q->mosq) && !q->connecting) {
                q->in_lib = true;
                rc = mosquitto_loop_write(q->mosq, 1);
                q->in_lib = false;
                if (rc != MOSQ_ERR_SUCCESS || mosquitto_socket(q->mosq) < 0) {
                        check_socket(q, rc == MOSQ_ERR_SUCCESS ? MOSQ_ERR_CONN_LOST : rc, "writing");
                        return;
                }
        }
        update_events(q);
}

/*
 * Every keepalive/4 s: libmosquitto sends PINGREQ once keepalive has passed since the last
 * packet out, and the broker gives up after 1.5 × keepalive. Checking every keepalive/2
 * could send the ping at exactly that limit; a quarter leaves a margin at a cost of 4
 * wake-ups per keepalive.
 */
/*
 * A broker that still answers pings but stopped sending PUBACK (a stuck session on its side,
 * a bridge that lost its way) would leave the window full and the outbox growing while the
 * keepalive sees nothing wrong. The oldest message in flight unacknowledged for 1.5 keepalive
 * periods (what MQTT gives a silent peer) means the session is stuck: reconnect, and the
 * outbox is sent again from its start. Returns true when it reconnected.
 */
static bool outbox_stalled(Mqtt *q) {
        uint64_t limit = (uint64_t) q->s.keepalive * USEC_PER_SEC * 3 / 2, age;

        if (!q->connected || q->n_inflight == 0)
                return false;
        age = now_mono(q) - q->inflight[0].sent_usec;
        if (age < limit)
                return false;
        snprintf(q->lib_error, sizeof q->lib_error, "No PUBACK for %" PRIu64 " s for the oldest of %zu messages in flight, "
                 "though the broker answers pings.", age / USEC_PER_SEC, q->n_inflight);
        connection_lost(q, MOSQ_ERR_TIMEOUT, "waiting for PUBACK");
        return true;
}

static int on_misc(sd_event_source *s, uint64_t usec, void *userdata) {
        Mqtt *q = userdata;
        uint64_t period = (q->s.keepalive >= 8 ? q->s.keepalive / 4 : 2) * USEC_PER_SEC;
        int rc;

        (void) sd_event_source_set_time(s, usec + period);
        (void) sd_event_source_set_enabled(s, SD_EVENT_ON);
        if (!q->mosq || !q->io || q->connecting)
                return 0;
        /* Sends PINGREQ when due and notices a broker that stopped answering. */
        q->in_lib = true;
        rc = mosquitto_loop_misc(q->mosq);
        q->in_lib = false;
        if (rc != MOSQ_ERR_SUCCESS || mosquitto_socket(q->mosq) < 0) {
                connection_lost(q, rc == MOSQ_ERR_SUCCESS ? MOSQ_ERR_KEEPALIVE : rc, "keepalive");
                return 0;
        }
        if (outbox_stalled(q))
                return 0;
        write_now(q);
        return 0;
}

/* ---- connecting ---- */

static void drop_connection(Mqtt *q) {
        q->io = sd_event_source_disable_unref(q->io);
        q->connect_timer = sd_event_source_disable_unref(q->connect_timer);
        if (q->mosq) {
                mosquitto_destroy(q->mosq);
                q->mosq = NULL;
        }
        q->fd = -1;
        q->connected = q->connecting = q->saw_writable = q->refused = false;
        /* A new client object resends nothing by itself: the outbox is sent again from its start. */
        q->n_inflight = 0;
        q->last_sent_id = 0;
        for (size_t i = 0; i < q->n_wraps; i++)
                q->wraps[i].discovered = false;
}

static int on_retry(sd_event_source *s, uint64_t usec, void *userdata);

static void schedule_retry(Mqtt *q) {
        /* 1 s, 2 s, 4 s ... 60 s, with jitter so that gateways spread out. */
        uint64_t delay = backoff_usec(q->attempts, BACKOFF_MIN_USEC, BACKOFF_MAX_USEC, random_u64());
        int r;

        q->attempts++;

        q->retry_timer = sd_event_source_disable_unref(q->retry_timer);
        r = sd_event_add_time(q->event, &q->retry_timer, CLOCK_MONOTONIC, now_mono(q) + delay, 0, on_retry, q);
        if (r < 0)
                log_error_errno(r, "MQTT: cannot arm the reconnect timer: %m");
        else
                log_debug("MQTT: next attempt in %.1f s.", (double) delay / USEC_PER_SEC);
}

static int connect_addr(Mqtt *q);

static void connection_lost(Mqtt *q, int rc, const char *why) {
        bool was_connected = q->connected;
        const char *detail = q->lib_error[0] ? q->lib_error : NULL;
        char failure[sizeof q->addr_failure], count[48] = "";
        int level = rc == MOSQ_ERR_TLS ? LOG_ERR : LOG_WARNING;

        snprintf(failure, sizeof failure, "while %s: %s%s%s%s", why,
                 rc == MOSQ_ERR_ERRNO ? strerror(errno) : mosquitto_strerror(rc),
                 detail ? " " : "", detail ? detail : "", q->tls_error);
        if (!was_connected && !q->refused && q->addr_index + 1 < q->n_addrs) {
                /* The name has more addresses (IPv6 and IPv4, say): the next one at once. A
                 * broker that was reached but failed TLS is what the log line will tell. */
                log_debug("MQTT: %s:%u at %s failed %s Trying %s.", q->s.host, q->s.port,
                          q->addrs[q->addr_index], failure, q->addrs[q->addr_index + 1]);
                if (rc == MOSQ_ERR_TLS && !q->addr_failure[0])
                        memcpy(q->addr_failure, failure, sizeof failure);
                drop_connection(q);
                q->addr_index++;
                if (connect_addr(q) < 0) {
                        drop_connection(q);
                        schedule_retry(q);
                }
                return;
        }
        if (!was_connected && rc != MOSQ_ERR_TLS && q->addr_failure[0]) {
                memcpy(failure, q->addr_failure, sizeof failure);
                level = LOG_ERR;
        }
        q->addr_failure[0] = 0;
        /* Not the address: a name whose addresses rotate would make every failure a new line. */
        if (q->n_addrs > 1)
                snprintf(count, sizeof count, " (%zu addresses)", q->n_addrs);
        if (q->refused)
                ; /* on_connect logged the broker's answer */
        else if (was_connected)
                report(q, LOG_WARNING, "MQTT: lost the connection to %s:%u: %s%s%s Reconnecting.",
                       q->s.host, q->s.port, mosquitto_strerror(rc), detail ? " " : "", detail ? detail : "");
        else
                report(q, level, "MQTT: cannot connect to %s:%u%s %s Retrying with backoff.",
                       q->s.host, q->s.port, count, failure);
        q->lib_error[0] = q->tls_error[0] = 0;
        drop_connection(q);
        schedule_retry(q);
        HOOK0(q, connection_changed);
}

static int on_connect_timeout(sd_event_source *s, uint64_t usec, void *userdata) {
        Mqtt *q = userdata;

        q->connect_timer = sd_event_source_disable_unref(q->connect_timer);
        if (q->connecting)
                connection_lost(q, MOSQ_ERR_TIMEOUT, "waiting for the broker's answer");
        return 0;
}

static void on_log(struct mosquitto *mosq, void *userdata, int level, const char *str) {
        Mqtt *q = userdata;

        if (level & (MOSQ_LOG_ERR | MOSQ_LOG_WARNING))
                snprintf(q->lib_error, sizeof q->lib_error, "%s", str);
        else if (level & MOSQ_LOG_DEBUG && log_get_max_level() >= LOG_DEBUG)
                log_debug("libmosquitto: %s", str);
}

static void gone_clear(Mqtt *q);

static void on_connect(struct mosquitto *mosq, void *userdata, int rc) {
        Mqtt *q = userdata;
        _cleanup_free_ char *t1 = NULL, *t2 = NULL, *t3 = NULL;

        q->connect_timer = sd_event_source_disable_unref(q->connect_timer);
        if (rc != 0) {
                /* Wrong credentials or not authorised: say so plainly; the retry backs off. */
                report(q, LOG_ERR, "MQTT: the broker %s:%u refused the connection: %s Retrying with backoff.",
                       q->s.host, q->s.port,
                       q->s.protocol == MQTT_PROTOCOL_V5 ? mosquitto_reason_string(rc) : mosquitto_connack_string(rc));
                q->refused = true;
                return;
        }

        q->connecting = false;
        q->connected = true;
        q->attempts = 0;
        q->last_error[0] = q->lib_error[0] = 0;
        if (q->ever_connected)
                q->reconnects++;
        q->ever_connected = true;
        log_info("MQTT: connected to %s:%u as %s.", q->s.host, q->s.port, q->s.client_id);

        if (topicf(&t1, "%s/+/set", q->s.base) < 0 || topicf(&t2, "%s/bridge/request/+", q->s.base) < 0 ||
            topicf(&t3, "%s/status", q->s.prefix) < 0) {
                log_error("MQTT: out of memory while subscribing; commands will not work.");
                return;
        }
        (void) mosquitto_subscribe(q->mosq, NULL, t1, 1);
        (void) mosquitto_subscribe(q->mosq, NULL, t2, 1);
        (void) mosquitto_subscribe(q->mosq, NULL, t3, 1);
        (void) publish_topicf(q, "{\"state\":\"online\"}", true, "%s/bridge/state", q->s.base);

        gone_clear(q);
        q->dirty_all = true;
        schedule_flush(q);
        HOOK0(q, connection_changed);
}

static void on_publish(struct mosquitto *mosq, void *userdata, int mid) {
        Mqtt *q = userdata;
        Store *st = store_of(q);

        for (size_t i = 0; i < q->n_inflight; i++) {
                int r;

                if (q->inflight[i].mid != mid)
                        continue;
                /* PUBACK: only now may the record leave the outbox. */
                if (st) {
                        r = store_outbox_ack(st, q->inflight[i].id);
                        if (store_is_broken(r))
                                store_failed(q, r);
                        else if (r < 0 && r != -ENOENT)
                                log_error_errno(r, "MQTT: cannot take message %" PRId64 " out of the outbox: %m",
                                                q->inflight[i].id);
                }
                memmove(q->inflight + i, q->inflight + i + 1, (q->n_inflight - i - 1) * sizeof(Inflight));
                q->n_inflight--;
                q->outbox_pending = true;     /* room in the window */
                schedule_flush(q);
                return;
        }
}

static void on_message(struct mosquitto *mosq, void *userdata, const struct mosquitto_message *msg,
                       const mosquitto_property *props);

/* ---- TLS: the broker's certificate checked against [mqtt] host, not the address dialled ---- */

static Mqtt *tls_owner(const SSL *ssl) {
        Mqtt *q = ssl ? SSL_CTX_get_app_data(SSL_get_SSL_CTX(ssl)) : NULL;

        /* Only the connection of the client that made the context. */
        return q && q->mosq && mosquitto_ssl_get(q->mosq) == ssl ? q : NULL;
}

/*
 * SNI. libmosquitto names the host it was given, which is now an address
 * (net__socket_connect_step3: SSL_set_tlsext_host_name), just before SSL_connect. The
 * handshake starts here, before the ClientHello is built: the configured name goes out
 * instead, or none when [mqtt] host is itself an address (RFC 6066 has no SNI for them).
 */
static void on_tls_info(const SSL *ssl, int where, int ret) {
        Mqtt *q;

        if (!(where & SSL_CB_HANDSHAKE_START) || !(q = tls_owner(ssl)))
                return;
        (void) SSL_set_tlsext_host_name(mosquitto_ssl_get(q->mosq), lookup_numeric(q->s.host, NULL) ? NULL : q->s.host);
}

/* OpenSSL's verification, kept; only its reason is noted for the log line. */
static int on_tls_verify(int ok, X509_STORE_CTX *x) {
        const SSL *ssl = X509_STORE_CTX_get_ex_data(x, SSL_get_ex_data_X509_STORE_CTX_idx());
        Mqtt *q = tls_owner(ssl);

        if (!ok && q && !q->tls_error[0])
                snprintf(q->tls_error, sizeof q->tls_error, " (%s)", X509_verify_cert_error_string(X509_STORE_CTX_get_error(x)));
        return ok;
}

/*
 * The client's own SSL_CTX (MOSQ_OPT_SSL_CTX, without MOSQ_OPT_SSL_CTX_WITH_DEFAULTS, so
 * libmosquitto leaves it as it is): what mosquitto_tls_set and _tls_opts_set would set up
 * (TLS 1.2 at least, the CA, the client certificate, peer verification), except that the
 * certificate must name [mqtt] host. libmosquitto's own check would compare it with the
 * address it dials.
 */
static int tls_context(Mqtt *q, SSL_CTX **ret) {
        const MqttSettings *s = &q->s;
        char ip[LOOKUP_ADDR_MAX] = "";
        const char *what = "TLS";
        X509_VERIFY_PARAM *param;
        unsigned long e;
        SSL_CTX *ctx;

        ERR_clear_error();
        ctx = SSL_CTX_new(TLS_client_method());
        if (!ctx)
                goto fail;
        if (SSL_CTX_set_min_proto_version(ctx, TLS1_2_VERSION) != 1)
                goto fail;
        SSL_CTX_set_options(ctx, SSL_OP_NO_COMPRESSION);
        SSL_CTX_set_mode(ctx, SSL_MODE_RELEASE_BUFFERS);
        what = s->ca ? s->ca : s->ca_dir;
        if (SSL_CTX_load_verify_locations(ctx, s->ca, s->ca_dir) != 1)
                goto fail;
        if (s->cert) {
                what = s->cert;
                if (SSL_CTX_use_certificate_chain_file(ctx, s->cert) != 1)
                        goto fail;
                what = s->key;
                if (SSL_CTX_use_PrivateKey_file(ctx, s->key, SSL_FILETYPE_PEM) != 1 || SSL_CTX_check_private_key(ctx) != 1)
                        goto fail;
        }
        SSL_CTX_set_verify(ctx, SSL_VERIFY_PEER, on_tls_verify);
        param = SSL_CTX_get0_param(ctx);
        X509_VERIFY_PARAM_set_hostflags(param, X509_CHECK_FLAG_NO_PARTIAL_WILDCARDS);
        what = s->host;
        if (lookup_numeric(s->host, ip))
                ip[strcspn(ip, "%")] = 0;   /* a link-local address's scope is no part of the certificate's */
        if (ip[0] ? X509_VERIFY_PARAM_set1_ip_asc(param, ip) != 1 : X509_VERIFY_PARAM_set1_host(param, s->host, 0) != 1)
                goto fail;
        SSL_CTX_set_app_data(ctx, q);
        SSL_CTX_set_info_callback(ctx, on_tls_info);
        *ret = ctx;
        return 0;
fail:
        e = ERR_peek_last_error();
        snprintf(q->lib_error, sizeof q->lib_error, "TLS setup failed for %s: %s.", what,
                 e ? ERR_reason_error_string(e) : "out of memory");
        ERR_clear_error();
        SSL_CTX_free(ctx);
        return -EIO;
}

/*
 * MQTT 5: CONNECT carries Maximum Packet Size. libmosquitto 2.0.11 takes CONNECT properties
 * only in mosquitto_connect_bind_v5(), which connects blocking (mosquitto__reconnect(mosq,
 * true): a connect() to an address that does not answer would hold the loop for minutes).
 * That function stores them (lib/connect.c: mosquitto_property_copy_all into
 * mosq->connect_properties) before it checks its arguments (mosquitto__connect_init: no
 * host is MOSQ_ERR_INVAL), and every later connect, the asynchronous one included, sends
 * what is stored (mosquitto__reconnect). Called without a host it stores them and goes no
 * further. The faults suite checks that the broker honours the limit, so a libmosquitto
 * that stopped doing this fails a test rather than the limit going missing quietly.
 */
static void set_connect_properties(Mqtt *q) {
        mosquitto_property *props = NULL;
        int rc;

        if (q->s.protocol != MQTT_PROTOCOL_V5)
                return;
        rc = mosquitto_property_add_int32(&props, MQTT_PROP_MAXIMUM_PACKET_SIZE, PACKET_MAX);
        if (rc == MOSQ_ERR_SUCCESS)
                rc = mosquitto_connect_bind_v5(q->mosq, NULL, q->s.port, q->s.keepalive, NULL, props);
        mosquitto_property_free_all(&props);
        if (rc != MOSQ_ERR_INVAL)
                log_warning("MQTT: cannot set CONNECT's Maximum Packet Size: %s", mosquitto_strerror(rc));
}

/* Connects to the address q->addrs[q->addr_index] (numeric: libmosquitto resolves nothing). */
static int connect_addr(Mqtt *q) {
        MqttSettings *s = &q->s;
        const char *addr = q->addrs[q->addr_index];
        int rc, r;

        drop_connection(q);
        q->mosq = mosquitto_new(s->client_id, true, q);
        if (!q->mosq)
                return log_error_errno(errno ? errno : ENOMEM, "MQTT: cannot create the client: %m");

        (void) mosquitto_int_option(q->mosq, MOSQ_OPT_PROTOCOL_VERSION,
                                    s->protocol == MQTT_PROTOCOL_V5 ? 5 : 4 /* MQTT 5, 3.1.1 */);
        mosquitto_connect_callback_set(q->mosq, on_connect);
        mosquitto_publish_callback_set(q->mosq, on_publish);
        mosquitto_message_v5_callback_set(q->mosq, on_message);   /* props: NULL with MQTT 3.1.1 */
        mosquitto_log_callback_set(q->mosq, on_log);

        {
                _cleanup_free_ char *will = NULL;
                if (topicf(&will, "%s/bridge/state", s->base) < 0)
                        return log_error_errno(ENOMEM, "MQTT: out of memory.");
                rc = mosquitto_will_set(q->mosq, will, (int) strlen("{\"state\":\"offline\"}"),
                                        "{\"state\":\"offline\"}", 1, true);
                if (rc != MOSQ_ERR_SUCCESS)
                        return log_error_errno(EINVAL, "MQTT: cannot set the last will: %s", mosquitto_strerror(rc));
        }
        if (s->username) {
                rc = mosquitto_username_pw_set(q->mosq, s->username, s->password);
                if (rc != MOSQ_ERR_SUCCESS)
                        return log_error_errno(EINVAL, "MQTT: cannot set the username: %s", mosquitto_strerror(rc));
        }
        q->connecting = true;
        q->lib_error[0] = q->tls_error[0] = 0;
        if (s->ca || s->ca_dir) {
                SSL_CTX *ctx = NULL;

                if (tls_context(q, &ctx) < 0) {
                        /* A CA file replaced by something unreadable as one: retried, it may be fixed. */
                        connection_lost(q, MOSQ_ERR_TLS, "setting up TLS");
                        return 0;
                }
                /* WITH_DEFAULTS is on in a new client (lib/mosquitto.c): off, or it would set the context up again. */
                rc = mosquitto_int_option(q->mosq, MOSQ_OPT_SSL_CTX_WITH_DEFAULTS, 0);
                if (rc == MOSQ_ERR_SUCCESS)
                        rc = mosquitto_void_option(q->mosq, MOSQ_OPT_SSL_CTX, ctx);   /* takes its own reference */
                SSL_CTX_free(ctx);
                if (rc != MOSQ_ERR_SUCCESS)
                        return log_error_errno(EINVAL, "MQTT: cannot use TLS: %s", mosquitto_strerror(rc));
        }
        set_connect_properties(q);

        if (!streq(addr, s->host))
                log_debug("MQTT: connecting to %s:%u at %s.", s->host, s->port, addr);
        rc = mosquitto_connect_bind_async(q->mosq, addr, s->port, s->keepalive, NULL);
        if (rc != MOSQ_ERR_SUCCESS || mosquitto_socket(q->mosq) < 0) {
                connection_lost(q, rc == MOSQ_ERR_SUCCESS ? MOSQ_ERR_NO_CONN : rc, "connecting");
                return 0;
        }
        q->fd = mosquitto_socket(q->mosq);
        r = sd_event_add_io(q->event, &q->io, q->fd, EPOLLIN | EPOLLOUT, on_io, q);
        if (r < 0)
                return log_error_errno(r, "MQTT: cannot watch the socket: %m");
        r = sd_event_add_time(q->event, &q->connect_timer, CLOCK_MONOTONIC,
                              now_mono(q) + CONNECT_TIMEOUT_USEC, 0, on_connect_timeout, q);
        if (r < 0)
                return log_error_errno(r, "MQTT: cannot arm the connect timeout: %m");
        update_events(q);
        return 0;
}

/* ---- the broker's addresses ---- */

static void lookup_cancel(Mqtt *q) {
        q->lookup = lookup_free(q->lookup);
        q->lookup_timer = sd_event_source_disable_unref(q->lookup_timer);
        q->resolving = q->late_answer = false;
}

static void lookup_failed(Mqtt *q, const char *why) {
        q->resolving = false;
        q->lookup_timer = sd_event_source_disable_unref(q->lookup_timer);
        report(q, LOG_WARNING, "MQTT: cannot look up the broker %s: %s. Retrying with backoff.", q->s.host, why);
        schedule_retry(q);
        HOOK0(q, connection_changed);
}

static void on_lookup(Lookup *l, const LookupAnswer *a, void *userdata) {
        Mqtt *q = userdata;

        q->lookup = lookup_free(q->lookup);
        if (!q->resolving) {
                /* After its timeout, between attempts: a slow resolver's answer is kept for the
                 * next attempt, or every attempt would time out the same way. */
                if (!a->error) {
                        memcpy(q->addrs, a->addrs, sizeof q->addrs);
                        q->n_addrs = a->n;
                        q->late_answer = true;
                }
                return;
        }
        q->resolving = false;
        q->lookup_timer = sd_event_source_disable_unref(q->lookup_timer);
        if (a->error) {
                lookup_failed(q, lookup_strerror(a));
                return;
        }
        memcpy(q->addrs, a->addrs, sizeof q->addrs);
        q->n_addrs = a->n;
        q->addr_index = 0;
        if (connect_addr(q) < 0) {
                drop_connection(q);
                schedule_retry(q);
        }
}

static int on_lookup_timeout(sd_event_source *s, uint64_t usec, void *userdata) {
        Mqtt *q = userdata;
        char why[64];

        /*
         * The lookup itself goes on (getaddrinfo cannot be interrupted): the next attempt waits
         * for its answer rather than start another thread behind a resolver that hangs.
         */
        snprintf(why, sizeof why, "no answer in %u s", (unsigned) (LOOKUP_TIMEOUT_USEC / USEC_PER_SEC));
        lookup_failed(q, why);
        return 0;
}

/* One attempt: the broker's addresses, at once when [mqtt] host is one, else looked up. */
static int connect_now(Mqtt *q) {
        int r;

        drop_connection(q);
        q->addr_index = 0;
        q->addr_failure[0] = 0;
        if (q->late_answer) {
                q->late_answer = false;
                return connect_addr(q);
        }
        q->n_addrs = 0;
        if (lookup_numeric(q->s.host, q->addrs[0])) {
                q->n_addrs = 1;
                return connect_addr(q);
        }
        if (!q->lookup) {
                r = lookup_start(q->event, q->s.host, on_lookup, q, &q->lookup);
                if (r < 0) {
                        lookup_failed(q, strerror(-r));
                        return 0;
                }
        }
        q->resolving = true;
        q->lookup_timer = sd_event_source_disable_unref(q->lookup_timer);
        r = sd_event_add_time(q->event, &q->lookup_timer, CLOCK_MONOTONIC, now_mono(q) + LOOKUP_TIMEOUT_USEC, 0,
                              on_lookup_timeout, q);
        if (r < 0)
                return log_error_errno(r, "MQTT: cannot arm the lookup timeout: %m");
        log_debug("MQTT: looking up %s.", q->s.host);
        return 0;
}

static int on_retry(sd_event_source *s, uint64_t usec, void *userdata) {
        Mqtt *q = userdata;

        q->retry_timer = sd_event_source_disable_unref(q->retry_timer);
        if (connect_now(q) < 0) {
                drop_connection(q);
                schedule_retry(q);
        }
        return 0;
}

static KnownWrap *known_find(Mqtt *q, const char *wrap);

/* A session record went out: the wrap's retained state (last session, compliance) follows it. */
/* The wrap of "<base>/<wrap>/<leaf>" (leaf with its slash: "/session"); false for another topic. */
static bool wrap_of_topic(Mqtt *q, const char *topic, const char *leaf, char wrap[static WRAP_ID_MAX]) {
        size_t bl = strlen(q->s.base);
        const char *w, *slash;

        if (strncmp(topic, q->s.base, bl) != 0 || topic[bl] != '/')
                return false;
        w = topic + bl + 1;
        slash = strchr(w, '/');
        if (!slash || !streq(slash, leaf) || (size_t) (slash - w) >= WRAP_ID_MAX)
                return false;
        memcpy(wrap, w, (size_t) (slash - w));
        wrap[slash - w] = 0;
        return true;
}

static void mark_wrap_of_topic(Mqtt *q, const char *topic) {
        char wrap[WRAP_ID_MAX];
        KnownWrap *k;

        if (!wrap_of_topic(q, topic, "/session", wrap))
                return;
        k = known_find(q, wrap);
        if (k)
                k->dirty = true;
}

/*
 * A retained alert still in the outbox when its wrap was removed (the broker away, or the
 * window full) would retain it again after the removal cleared the topic: it goes out
 * unretained instead, so the alert is still told, and nothing of the wrap stays.
 */
static bool retain_outbox_msg(Mqtt *q, Store *st, const OutboxMsg *m) {
        char wrap[WRAP_ID_MAX];
        StoredWrap w;

        if (!m->retain || !wrap_of_topic(q, m->topic, "/alert", wrap))
                return m->retain;
        if (store_wrap_get(st, wrap, &w) != -ENOENT)
                return true;
        log_debug("MQTT: outbox message %" PRId64 " is an alert of %s, removed since: not retained", m->id, wrap);
        return false;
}

/* ---- the outbox: in order, a bounded window in flight, acknowledged on PUBACK ---- */

static void outbox_send(Mqtt *q) {
        Store *st;

        q->outbox_pending = false;

        while (q->connected && (st = store_of(q)) && q->n_inflight < OUTBOX_WINDOW) {
                OutboxMsg *msgs = NULL;
                size_t n = 0, want = OUTBOX_WINDOW - q->n_inflight;
                int r;

                r = store_outbox_peek(st, q->last_sent_id, want, &msgs, &n);
                if (r < 0) {
                        /* Busy: the next flush tries again. */
                        if (store_is_broken(r))
                                store_failed(q, r);
                        return;
                }
                for (size_t i = 0; i < n; i++) {
                        int mid = 0;

                        r = mosquitto_publish(q->mosq, &mid, msgs[i].topic, (int) strlen(msgs[i].payload),
                                              msgs[i].payload, msgs[i].qos > 1 ? 1 : msgs[i].qos,
                                              retain_outbox_msg(q, st, &msgs[i]));
                        if (r != MOSQ_ERR_SUCCESS) {
                                log_debug("MQTT: publishing outbox message %" PRId64 " failed: %s",
                                          msgs[i].id, mosquitto_strerror(r));
                                outbox_msgs_free(msgs, n);
                                return;
                        }
                        if (msgs[i].qos == 0) {
                                /* No PUBACK will come: handed to the socket is as far as QoS 0 goes. */
                                r = store_outbox_ack(st, msgs[i].id);
                                if (r < 0 && r != -ENOENT) {
                                        outbox_msgs_free(msgs, n);
                                        if (store_is_broken(r))
                                                store_failed(q, r);
                                        return;
                                }
                        } else
                                q->inflight[q->n_inflight++] = (Inflight) { .mid = mid, .id = msgs[i].id, .sent_usec = now_mono(q) };
                        q->last_sent_id = msgs[i].id;
                        mark_wrap_of_topic(q, msgs[i].topic);
                }
                outbox_msgs_free(msgs, n);
                if (n < want)
                        break;
        }
}

/* ---- wraps: discovery and retained state ---- */

static KnownWrap *known_find(Mqtt *q, const char *wrap) {
        for (size_t i = 0; i < q->n_wraps; i++)
                if (streq(q->wraps[i].wrap, wrap))
                        return q->wraps + i;
        return NULL;
}

static KnownWrap *known_add(Mqtt *q, const char *wrap, const char *address) {
        KnownWrap *k = known_find(q, wrap), *n;

        if (k) {
                if (address)
                        snprintf(k->address, sizeof k->address, "%s", address);
                return k;
        }
        n = realloc(q->wraps, (q->n_wraps + 1) * sizeof(*n));
        if (!n)
                return NULL;
        q->wraps = n;
        k = q->wraps + q->n_wraps++;
        memset(k, 0, sizeof(*k));
        snprintf(k->wrap, sizeof k->wrap, "%s", wrap);
        if (address)
                snprintf(k->address, sizeof k->address, "%s", address);
        k->present = true;
        k->dirty = true;
        return k;
}

static void known_forget(Mqtt *q, KnownWrap *k) {
        free(k->state);
        free(k->availability);
        free(k->compliance);
        memmove(k, k + 1, (size_t) (q->wraps + q->n_wraps - (k + 1)) * sizeof(*k));
        q->n_wraps--;
}

/* Publishes when the payload differs from the last one sent, or when forced (refresh). */
static void publish_changed(Mqtt *q, char **last, char *payload, bool force, const char *wrap, const char *leaf) {
        if (!payload)
                return;
        if (!force && *last && streq(*last, payload)) {
                free(payload);
                return;
        }
        if (publish_topicf(q, payload, true, "%s/%s/%s", q->s.base, wrap, leaf) < 0) {
                free(payload);
                return;
        }
        free(*last);
        *last = payload;
}

static void publish_wrap_discovery(Mqtt *q, KnownWrap *k, bool clear) {
        DiscoveryDevice d = { .wrap = k->wrap, .address = k->address[0] ? k->address : NULL };
        DiscoveryMsg *msgs = NULL;
        size_t n = 0;
        int r;

        if (q->hooks.wrap_device)
                (void) q->hooks.wrap_device(q->hooks.userdata, k->wrap, &d);
        d.wrap = k->wrap;
        if (k->address[0])
                d.address = k->address;
        /* The patient's label, where the clinic set one, names the device: asked for here, on
         * discovery only, never on the notification path. */
        if (!clear && q->hooks.wrap_label)
                d.label = q->hooks.wrap_label(q->hooks.userdata, k->wrap);
        k->discovered_info = d.model != NULL;
        r = discovery_wrap(q->config, &d, clear, &msgs, &n);
        if (r < 0) {
                log_error_errno(r, "MQTT: cannot build the discovery configs of %s: %m", k->wrap);
                return;
        }
        for (size_t i = 0; i < n; i++)
                (void) publish(q, msgs[i].topic, msgs[i].payload, true, NULL);
        discovery_msgs_free(msgs, n);
        k->discovered = !clear;
}

/* Wake up when the first held-back state is due. */
static void state_timer_arm(Mqtt *q, uint64_t when) {
        uint64_t t = 0;
        int enabled = 0;

        if (!q->state_timer)
                return;
        (void) sd_event_source_get_enabled(q->state_timer, &enabled);
        if (enabled != SD_EVENT_OFF && sd_event_source_get_time(q->state_timer, &t) >= 0 && t <= when)
                return;
        (void) sd_event_source_set_time(q->state_timer, when);
        (void) sd_event_source_set_enabled(q->state_timer, SD_EVENT_ONESHOT);
}

static void publish_wrap_state(Mqtt *q, KnownWrap *k, bool force) {
        StateView v = { .battery = -1 };
        char *json = NULL, key[sizeof k->session_key];
        uint64_t now = now_mono(q);

        if (!q->hooks.wrap_state || q->hooks.wrap_state(q->hooks.userdata, k->wrap, &v) < 0)
                v = (StateView) { .battery = -1 };
        snprintf(key, sizeof key, "%d/%s/%d/%u/%u", v.connected, v.session_id ? v.session_id : "", (int) v.mode,
                 (unsigned) v.state, (unsigned) v.faults);
        if (!force && k->state_usec && now < k->state_usec + STATE_MIN_USEC && streq(key, k->session_key)) {
                /* Nothing of the session changed: it goes out with the next second (still dirty). */
                state_timer_arm(q, k->state_usec + STATE_MIN_USEC);
                return;
        }
        k->state_usec = now;
        snprintf(k->session_key, sizeof k->session_key, "%s", key);
        if (!k->availability || streq(k->availability, "{\"state\":\"online\"}") != v.connected)
                q->dirty_health = true;   /* wraps_connected changed */
        publish_changed(q, &k->availability,
                        strdup(v.connected ? "{\"state\":\"online\"}" : "{\"state\":\"offline\"}"),
                        force, k->wrap, "availability");
        if (state_wrap_json(&v, &json) >= 0)
                publish_changed(q, &k->state, json, force, k->wrap, "state");

        if (q->hooks.wrap_compliance) {
                char ckey[sizeof k->compliance_for], today[11];
                Compliance c7, c30;

                /* Status and temperatures change the state every few seconds; the figures change
                 * only with a record, or as the day turns. Ask for them only then. */
                snprintf(ckey, sizeof ckey, "%s/%s/%s", v.last ? v.last->session_id : "",
                         v.last ? session_outcome_to_string(v.last->outcome) : "",
                         clock_format_date(clock_real_sec(), today));
                if ((force || !streq(ckey, k->compliance_for)) &&
                    q->hooks.wrap_compliance(q->hooks.userdata, k->wrap, &c7, &c30) >= 0 &&
                    state_compliance_json(&c7, &c30, 0, &json) >= 0) {
                        publish_changed(q, &k->compliance, json, force, k->wrap, "compliance");
                        snprintf(k->compliance_for, sizeof k->compliance_for, "%s", ckey);
                }
        }
        k->dirty = false;
}

static void clear_wrap_topics(Mqtt *q, KnownWrap *k) {
        publish_wrap_discovery(q, k, true);
        (void) publish_topicf(q, NULL, true, "%s/%s/state", q->s.base, k->wrap);
        (void) publish_topicf(q, NULL, true, "%s/%s/availability", q->s.base, k->wrap);
        (void) publish_topicf(q, NULL, true, "%s/%s/compliance", q->s.base, k->wrap);
        (void) publish_topicf(q, NULL, true, "%s/%s/alert", q->s.base, k->wrap);
}

/* Remembers a wrap removed while disconnected (its id and address only; at most once). */
static void gone_add(Mqtt *q, const KnownWrap *k) {
        KnownWrap *n;

        for (size_t i = 0; i < q->n_gone; i++)
                if (streq(q->gone[i].wrap, k->wrap))
                        return;
        n = realloc(q->gone, (q->n_gone + 1) * sizeof *n);
        if (!n) {
                log_warning("MQTT: out of memory: the retained topics of %s stay on the broker.", k->wrap);
                return;
        }
        q->gone = n;
        q->gone[q->n_gone] = (KnownWrap) { 0 };
        memcpy(q->gone[q->n_gone].wrap, k->wrap, sizeof k->wrap);
        memcpy(q->gone[q->n_gone].address, k->address, sizeof k->address);
        q->n_gone++;
}

/* Back on the broker: the wraps removed meanwhile lose their retained topics now. */
static void gone_clear(Mqtt *q) {
        for (size_t i = 0; i < q->n_gone; i++) {
                clear_wrap_topics(q, &q->gone[i]);
                log_info("MQTT: cleared the retained topics of %s, removed while the broker was away.", q->gone[i].wrap);
        }
        free(q->gone);
        q->gone = NULL;
        q->n_gone = 0;
}

/* Brings the list of wraps in line with the store: new ones discovered, vanished ones cleared. */
static void reconcile_wraps(Mqtt *q) {
        StoredWrap *list = NULL;
        size_t n = 0;
        int r;

        if (!store_of(q))
                return;
        r = store_wrap_list(store_of(q), &list, &n);
        if (r < 0)
                return;
        for (size_t i = 0; i < q->n_wraps; i++)
                q->wraps[i].present = false;
        for (size_t i = 0; i < n; i++) {
                KnownWrap *k = known_add(q, list[i].wrap, list[i].address);
                if (k)
                        k->present = true;
        }
        free(list);
        for (size_t i = 0; i < q->n_wraps;) {
                KnownWrap *k = q->wraps + i;
                if (k->present) {
                        i++;
                        continue;
                }
                if (q->connected)
                        clear_wrap_topics(q, k);
                else
                        gone_add(q, k);
                known_forget(q, k);
                q->dirty_info = true;
        }
}

static void publish_bridge_info(Mqtt *q) {
        const char **ids = calloc(q->n_wraps + 1, sizeof(char *));
        BridgeInfo b = {
                .config = q->config,
                .wraps = ids,
                .n_wraps = q->n_wraps,
                .adoption_open = q->adoption_until > clock_real_sec(),
                .adoption_until = q->adoption_until,
        };
        char *json = NULL;

        if (!ids)
                return;
        for (size_t i = 0; i < q->n_wraps; i++)
                ids[i] = q->wraps[i].wrap;
        if (state_bridge_info_json(&b, &json) >= 0)
                (void) publish_topicf(q, json, true, "%s/bridge/info", q->s.base);
        free(json);
        free(ids);
        q->dirty_info = false;
}

static void publish_health(Mqtt *q) {
        BridgeHealth h = { 0 };
        Store *st = store_of(q);
        char *json = NULL;

        if (q->hooks.health)
                q->hooks.health(q->hooks.userdata, &h);
        h.wraps_adopted = (unsigned) q->n_wraps;
        h.mqtt_reconnects = q->reconnects;
        if (st && store_outbox_depth(st, &h.outbox_depth) >= 0)
                h.has_outbox_depth = true;
        if (state_bridge_health_json(&h, &json) >= 0)
                (void) publish_topicf(q, json, false, "%s/bridge/health", q->s.base);
        free(json);
}

static void publish_bridge_discovery(Mqtt *q) {
        DiscoveryMsg *msgs = NULL;
        size_t n = 0;

        if (discovery_bridge(q->config, &msgs, &n) < 0)
                return;
        for (size_t i = 0; i < n; i++)
                (void) publish(q, msgs[i].topic, msgs[i].payload, true, NULL);
        discovery_msgs_free(msgs, n);
}

/* The wrap's Device Information arrived after its discovery went out: the HA device should show it. */
static bool wrap_has_info(Mqtt *q, KnownWrap *k) {
        DiscoveryDevice d = { .wrap = k->wrap };
        return q->hooks.wrap_device && q->hooks.wrap_device(q->hooks.userdata, k->wrap, &d) && d.model;
}

/* Everything that waits for the loop: the outbox first, then discovery and state. */
static int on_flush(sd_event_source *s, void *userdata) {
        Mqtt *q = userdata;
        bool all = q->dirty_all;

        if (!q->connected)
                return 0;
        /* Only when there is something new for it: a notification reads nothing from the store. */
        if (all || q->outbox_pending)
                outbox_send(q);
        if (all) {
                reconcile_wraps(q);
                publish_bridge_discovery(q);
                publish_bridge_info(q);
                publish_health(q);
                q->dirty_all = false;
        }
        for (size_t i = 0; i < q->n_wraps; i++) {
                KnownWrap *k = q->wraps + i;
                if (!k->discovered || (!k->discovered_info && wrap_has_info(q, k)))
                        publish_wrap_discovery(q, k, false);
                if (all || k->dirty)
                        publish_wrap_state(q, k, all);
        }
        if (q->dirty_info)
                publish_bridge_info(q);
        if (q->dirty_health) {
                publish_health(q);
                q->dirty_health = false;
        }
        write_now(q);
        return 0;
}

static void schedule_flush(Mqtt *q) {
        if (q && q->flush)
                (void) sd_event_source_set_enabled(q->flush, SD_EVENT_ONESHOT);
}

static int on_health(sd_event_source *s, uint64_t usec, void *userdata) {
        Mqtt *q = userdata;

        (void) sd_event_source_set_time(s, usec + HEALTH_USEC);
        (void) sd_event_source_set_enabled(s, SD_EVENT_ON);
        if (!q->connected)
                return 0;
        reconcile_wraps(q);
        publish_health(q);
        /* The telemetry has expire_after: refresh it, and let heat_allowed follow the clock. */
        for (size_t i = 0; i < q->n_wraps; i++)
                publish_wrap_state(q, q->wraps + i, true);
        if (q->dirty_info || q->adoption_until)
                publish_bridge_info(q);
        outbox_send(q);
        write_now(q);
        return 0;
}

static int on_ha_status(sd_event_source *s, uint64_t usec, void *userdata) {
        Mqtt *q = userdata;

        q->ha_timer = sd_event_source_disable_unref(q->ha_timer);
        q->dirty_all = true;
        for (size_t i = 0; i < q->n_wraps; i++)
                q->wraps[i].discovered = false;
        schedule_flush(q);
        return 0;
}

/* ---- commands ---- */

static void respond(Mqtt *q, const char *topic, const Command *c, const char *data, const char *error) {
        _cleanup_free_ char *json = NULL;

        if (command_response(c, data, error, &json) < 0)
                return;
        (void) publish(q, topic, json, false, NULL);
}

static const char *err_text(int r, const char *error, char buf[static 128]) {
        if (error)
                return error;
        snprintf(buf, 128, "%s", strerror(r < 0 ? -r : r));
        return buf;
}

static void mark_wrap_dirty(Mqtt *q, const char *wrap) {
        KnownWrap *k = wrap ? known_find(q, wrap) : NULL;

        if (k)
                k->dirty = true;
}

static void run_command(Mqtt *q, const char *wrap, const Command *c, const char *response_topic) {
        const char *error = NULL;
        char buf[128];
        _cleanup_free_ char *data = NULL;
        unsigned needs = command_needs(c);
        int r = -EOPNOTSUPP;

        if (!(needs & q->config->mqtt_commands)) {
                /* Authority: the broker's ACL says who may publish; [mqtt] commands says what that may do. */
                char why[COMMAND_ERROR_MAX];

                snprintf(why, sizeof why, "not allowed over MQTT: [mqtt] commands does not list \"%s\"",
                         mqtt_allow_to_string(needs));
                respond(q, response_topic, c, NULL, why);
                log_wrap(LOG_NOTICE, wrap, "MQTT command refused: %s.", why);
                return;
        }

        if (q->hooks.command)
                r = q->hooks.command(q->hooks.userdata, wrap, c, &data, &error);
        if (r == -ENOBUFS) {
                /* Over one request of its kind a second: dropped, not recorded. It is answered
                 * like any refused command; the door counts it and logs one line per 100. */
                respond(q, response_topic, c, NULL, err_text(r, error, buf));
                return;
        }
        if (r < 0 || error) {
                /* A refusal by the rules is a record in the outbox too: it goes out below. */
                respond(q, response_topic, c, r < 0 ? NULL : data, err_text(r, error, buf));
                log_wrap(LOG_NOTICE, wrap, "MQTT command refused: %s", err_text(r, error, buf));
        } else
                respond(q, response_topic, c, data, NULL);
        /* Whatever the command wrote (a record, an alert) is in the outbox, and the state may follow. */
        mark_wrap_dirty(q, wrap);
        schedule_flush(q);
}

/*
 * What the publisher of a command claims to be: the MQTT 5 user property "client". A
 * subscriber is never told who published (MQTT 3.1.1 and 5 alike), so this is recorded as a
 * claim, never as an identity; the broker's ACL is the authority. A value that is too long or
 * holds control characters is not recorded.
 */
static void claimed_client(const mosquitto_property *props, const char *topic, char out[static COMMAND_CLIENT_MAX]) {
        const mosquitto_property *p;
        char *name = NULL, *value = NULL;
        bool skip = false;

        out[0] = '\0';
        for (p = props; (p = mosquitto_property_read_string_pair(p, MQTT_PROP_USER_PROPERTY, &name, &value, skip));
             skip = true) {
                bool found = streq(name, COMMAND_CLIENT_PROPERTY), ok = value && strlen(value) < COMMAND_CLIENT_MAX;

                for (const char *c = value; ok && *c; c++)
                        ok = (unsigned char) *c >= 0x20 && *c != 0x7f;
                if (found && ok)
                        snprintf(out, COMMAND_CLIENT_MAX, "%s", value);
                else if (found)
                        log_notice("MQTT: a command on %s claims a client id that is too long or not text: "
                                   "not recorded.", topic);
                free(name);
                free(value);
                name = value = NULL;
                if (found)
                        break;
        }
}

static void on_message(struct mosquitto *mosq, void *userdata, const struct mosquitto_message *msg,
                       const mosquitto_property *props) {
        Mqtt *q = userdata;
        const char *t = msg->topic;
        char error[COMMAND_ERROR_MAX], name[COMMAND_NAME_MAX];
        _cleanup_free_ char *resp = NULL;
        TopicKind kind;
        Command c;
        int r;

        kind = command_route(q->s.base, q->s.prefix, t, name);
        if (kind == TOPIC_IGNORED)
                return;
        if (msg->payloadlen < 0 || (size_t) msg->payloadlen > COMMAND_PAYLOAD_MAX) {
                /* Dropped before anything reads it: a 4 MiB JSON array is never parsed. */
                log_warning("MQTT: dropped a %d-byte message on %s: larger than %d bytes.",
                            msg->payloadlen, t, COMMAND_PAYLOAD_MAX);
                return;
        }
        if (kind == TOPIC_HA_STATUS) {
                /* Home Assistant restarted: send discovery and state again, after a short random delay. */
                if (msg->payloadlen == 6 && memcmp(msg->payload, "online", 6) == 0 && !q->ha_timer) {
                        uint64_t delay = USEC_PER_SEC + random_u64() % (4 * USEC_PER_SEC);
                        (void) sd_event_add_time(q->event, &q->ha_timer, CLOCK_MONOTONIC,
                                                 now_mono(q) + delay, 0, on_ha_status, q);
                }
                return;
        }
        if (msg->retain)
                return; /* a command left retained on the broker is stale: never act on it */

        if (kind == TOPIC_BRIDGE_REQUEST) {
                if (topicf(&resp, "%s/bridge/response/%s", q->s.base, name) < 0)
                        return;
                r = command_parse(name, msg->payload, (size_t) msg->payloadlen, &c, error);
                if (r < 0) {
                        respond(q, resp, &c, NULL, error);
                        log_notice("MQTT: bad request on %s: %s", t, error);
                        return;
                }
                snprintf(c.topic, sizeof c.topic, "%s", t);
                claimed_client(props, t, c.claimed_client);
                run_command(q, c.wrap[0] ? c.wrap : NULL, &c, resp);
                return;
        }

        /* <wrap>/set */
        if (topicf(&resp, "%s/%s/response", q->s.base, name) < 0)
                return;
        r = command_parse(NULL, msg->payload, (size_t) msg->payloadlen, &c, error);
        if (r < 0) {
                respond(q, resp, &c, NULL, error);
                log_wrap(LOG_NOTICE, name, "MQTT: bad command: %s", error);
                return;
        }
        if (c.type == COMMAND_ADOPT || c.type == COMMAND_REMOVE || c.type == COMMAND_PRESCRIPTION)
                return;
        snprintf(c.topic, sizeof c.topic, "%s", t);
        claimed_client(props, t, c.claimed_client);
        run_command(q, name, &c, resp);
}

/* ---- the public face ---- */

static int on_state_timer(sd_event_source *s, uint64_t usec, void *userdata) {
        schedule_flush(userdata);
        return 0;
}

static int mqtt_setup_sources(Mqtt *q) {
        sd_event *e = q->event;
        uint64_t now = now_mono(q);
        int r;

        r = sd_event_add_defer(e, &q->flush, on_flush, q);
        if (r < 0)
                return r;
        (void) sd_event_source_set_enabled(q->flush, SD_EVENT_OFF);
        r = sd_event_add_time(e, &q->misc_timer, CLOCK_MONOTONIC, now + USEC_PER_SEC, 0, on_misc, q);
        if (r < 0)
                return r;
        r = sd_event_add_time(e, &q->state_timer, CLOCK_MONOTONIC, UINT64_MAX, 0, on_state_timer, q);
        if (r >= 0)
                r = sd_event_source_set_enabled(q->state_timer, SD_EVENT_OFF);
        if (r < 0)
                return r;
        r = sd_event_add_time(e, &q->health_timer, CLOCK_MONOTONIC, now + HEALTH_USEC, 0, on_health, q);
        if (r < 0)
                return r;
        return 0;
}

int mqtt_new(sd_event *event, const Config *config, const MqttHooks *hooks, Mqtt **ret) {
        Mqtt *q;
        int r;

        q = calloc(1, sizeof(*q));
        if (!q)
                return log_error_errno(ENOMEM, "MQTT: out of memory.");
        q->event = sd_event_ref(event);
        q->config = config;
        if (hooks)
                q->hooks = *hooks;
        q->fd = -1;
        r = settings_load(config, &q->s);
        if (r < 0) {
                sd_event_unref(q->event);
                free(q);
                return r;
        }
        mosquitto_lib_init();
        r = mqtt_setup_sources(q);
        if (r < 0) {
                log_error_errno(r, "MQTT: cannot set up the event sources: %m");
                mqtt_free(q);
                return r;
        }
        r = connect_now(q);
        if (r < 0) {
                /* Only a setup that can never work fails here; a broker that is down is retried. */
                mqtt_free(q);
                return r;
        }
        *ret = q;
        return 0;
}

Mqtt *mqtt_free(Mqtt *q) {
        if (!q)
                return NULL;
        if (q->connected) {
                /* A clean disconnect suppresses the will: say offline ourselves, best effort. */
                (void) publish_topicf(q, "{\"state\":\"offline\"}", true, "%s/bridge/state", q->s.base);
                (void) mosquitto_disconnect(q->mosq);
                (void) mosquitto_loop_write(q->mosq, 1);
        }
        drop_connection(q);
        lookup_cancel(q);
        q->retry_timer = sd_event_source_disable_unref(q->retry_timer);
        q->misc_timer = sd_event_source_disable_unref(q->misc_timer);
        q->health_timer = sd_event_source_disable_unref(q->health_timer);
        q->ha_timer = sd_event_source_disable_unref(q->ha_timer);
        q->flush = sd_event_source_disable_unref(q->flush);
        q->state_timer = sd_event_source_disable_unref(q->state_timer);
        while (q->n_wraps > 0)
                known_forget(q, q->wraps);
        free(q->wraps);
        free(q->gone);
        settings_done(&q->s);
        sd_event_unref(q->event);
        free(q);
        mosquitto_lib_cleanup();
        return NULL;
}

static bool settings_equal(const MqttSettings *a, const MqttSettings *b) {
        return streq_ptr(a->host, b->host) && a->port == b->port && streq_ptr(a->base, b->base) &&
                streq_ptr(a->prefix, b->prefix) && streq_ptr(a->client_id, b->client_id) &&
                streq_ptr(a->username, b->username) && streq_ptr(a->password, b->password) &&
                streq_ptr(a->ca, b->ca) && streq_ptr(a->ca_dir, b->ca_dir) && streq_ptr(a->cert, b->cert) && streq_ptr(a->key, b->key) &&
                a->keepalive == b->keepalive && a->protocol == b->protocol;
}

int mqtt_reload(Mqtt *q) {
        MqttSettings s;
        int r;

        if (!q)
                return 0;
        r = settings_load(q->config, &s);
        if (r < 0)
                return r;
        if (settings_equal(&s, &q->s)) {
                /* The broker side is unchanged: no reconnect. bridge/info (therapy defaults may differ)
                 * and discovery ([mqtt] commands decides which entities are offered) go again. */
                settings_done(&s);
                q->dirty_info = true;
                q->dirty_all = true;
                for (size_t i = 0; i < q->n_wraps; i++)
                        q->wraps[i].discovered = false;
                schedule_flush(q);
                return 0;
        }
        if (q->connected) {
                (void) publish_topicf(q, "{\"state\":\"offline\"}", true, "%s/bridge/state", q->s.base);
                (void) mosquitto_disconnect(q->mosq);
                (void) mosquitto_loop_write(q->mosq, 1);
        }
        drop_connection(q);
        lookup_cancel(q);   /* the old name's, or one that hangs: the new settings ask again */
        settings_done(&q->s);
        q->s = s;
        q->attempts = 0;
        q->last_error[0] = 0;
        q->retry_timer = sd_event_source_disable_unref(q->retry_timer);
        while (q->n_wraps > 0)
                known_forget(q, q->wraps);
        r = connect_now(q);
        if (r < 0) {
                drop_connection(q);
                schedule_retry(q);
        }
        return 0;
}

void mqtt_kick(Mqtt *q) {
        if (!q)
                return;
        q->outbox_pending = true;
        schedule_flush(q);
}

void mqtt_wrap_changed(Mqtt *q, const char *wrap) {
        KnownWrap *k;

        if (!q || !wrap)
                return;
        if (!known_find(q, wrap))
                q->dirty_info = q->dirty_health = true;   /* adopted since we last looked */
        k = known_add(q, wrap, NULL);
        if (k)
                k->dirty = true;
        schedule_flush(q);
}

void mqtt_wrap_compliance_changed(Mqtt *q, const char *wrap) {
        KnownWrap *k;

        if (!q || !wrap || !(k = known_find(q, wrap)))
                return;
        k->compliance_for[0] = '\0';
        k->dirty = true;
        schedule_flush(q);
}

void mqtt_wrap_profile_changed(Mqtt *q, const char *wrap) {
        KnownWrap *k;

        if (!q || !wrap || !(k = known_find(q, wrap)))
                return;
        k->discovered = false;
        k->dirty = true;
        schedule_flush(q);
}

void mqtt_wrap_added(Mqtt *q, const char *wrap, const char *address) {
        KnownWrap *k;

        if (!q || !wrap)
                return;
        k = known_add(q, wrap, address);
        if (k) {
                k->dirty = true;
                k->discovered = false;
        }
        q->dirty_info = true;
        schedule_flush(q);
}

void mqtt_wrap_removed(Mqtt *q, const char *wrap) {
        KnownWrap *k;

        if (!q || !wrap)
                return;
        k = known_find(q, wrap);
        if (!k)
                k = known_add(q, wrap, NULL);
        if (!k)
                return;
        if (q->connected) {
                clear_wrap_topics(q, k);
                write_now(q);
        } else
                gone_add(q, k);
        known_forget(q, k);
        q->dirty_info = true;
        schedule_flush(q);
}

void mqtt_bridge_changed(Mqtt *q, int64_t adoption_until) {
        if (!q)
                return;
        q->adoption_until = adoption_until;
        q->dirty_info = true;
        /* The clock's state (R10) is in bridge/health. */
        q->dirty_health = true;
        schedule_flush(q);
}

bool mqtt_connected(Mqtt *q) {
        return q && q->connected;
}
