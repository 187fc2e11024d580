/* state: the retained and periodic JSON of MQTT (wrap state, compliance, bridge info, health). */
#include <errno.h>
#include <jansson.h>
#include <stdlib.h>

#include "clock.h"
#include "kw-build.h"
#include "payload.h"
#include "state.h"
#include "util.h"

#define DUMP_FLAGS (JSON_COMPACT | JSON_REAL_PRECISION(15))

static int dump(json_t *o, bool failed, char **ret) {
        char *s;

        if (!o || failed) {
                json_decref(o);
                return -ENOMEM;
        }
        s = json_dumps(o, DUMP_FLAGS);
        json_decref(o);
        if (!s)
                return -ENOMEM;
        *ret = s;
        return 0;
}

static bool put(json_t *o, const char *k, json_t *v) {
        return !o || !v || json_object_set_new(o, k, v) < 0;
}

static json_t *iso_or_null(int64_t t) {
        char buf[CLOCK_ISO_MAX];
        return t ? json_string(clock_format_iso(t, buf)) : json_null();
}

static json_t *str_or_null(const char *s) {
        return s ? json_string(s) : json_null();
}

static const char *wire_state_name(uint8_t s) {
        static const char *const names[] = { "idle", "cooling", "heating", "done", "fault" };
        return s < ELEMENTSOF(names) ? names[s] : NULL;
}

static json_t *faults_json(uint8_t f) {
        static const char *const names[] = {
                "over_temperature", "under_temperature", "sensor", "low_battery", "not_worn", "element",
        };
        json_t *a = json_array();

        for (size_t i = 0; a && i < ELEMENTSOF(names); i++)
                if (f & (1u << i) && json_array_append_new(a, json_string(names[i])) < 0) {
                        json_decref(a);
                        return NULL;
                }
        return a;
}

int state_wrap_json(const StateView *v, char **ret) {
        json_t *o = json_object(), *last = json_null();
        bool f = false;
        int64_t last_at = 0;

        if (v->last) {
                char *s;
                int r = payload_session(v->last, &s);
                if (r < 0) {
                        json_decref(o);
                        return r;
                }
                last = json_loads(s, 0, NULL);
                free(s);
                last_at = v->last->ended_at ? v->last->ended_at : v->last->requested_at;
        }
        f |= put(o, "connected", json_boolean(v->connected));
        f |= put(o, "state", str_or_null(v->has_status ? wire_state_name(v->state) : NULL));
        f |= put(o, "mode", str_or_null(v->mode == THERAPY_NONE ? NULL : therapy_mode_to_string(v->mode)));
        f |= put(o, "remaining_s", json_integer(v->mode == THERAPY_NONE ? 0 : v->remaining_s));
        f |= put(o, "skin_temp_c", v->has_skin ? json_real(v->skin / 100.0) : json_null());
        f |= put(o, "pack_temp_c", v->has_pack ? json_real(v->pack / 100.0) : json_null());
        f |= put(o, "battery", v->battery >= 0 ? json_integer(v->battery) : json_null());
        f |= put(o, "faults", faults_json(v->has_status ? v->faults : 0));
        f |= put(o, "session_id", str_or_null(v->session_id));
        f |= put(o, "heat_allowed", json_boolean(v->heat_allowed));
        f |= put(o, "heat_allowed_at", iso_or_null(v->heat_allowed_at));
        f |= put(o, "injury_date", str_or_null(v->injury_date));
        f |= put(o, "last_session_at", iso_or_null(last_at));
        f |= put(o, "last_session", last);
        return dump(o, f, ret);
}

int state_compliance_json(const Compliance *d7, const Compliance *d30, int64_t now, char **ret) {
        json_t *o = json_object();
        bool f = false;

        f |= put(o, "last_7_days", payload_compliance_json(d7));
        f |= put(o, "last_30_days", payload_compliance_json(d30));
        if (now != 0)
                f |= put(o, "at", iso_or_null(now));
        return dump(o, f, ret);
}

int state_bridge_info_json(const BridgeInfo *b, char **ret) {
        const Config *c = b->config;
        json_t *o = json_object(), *wraps = json_array(), *cfg, *th;
        bool f = false;

        for (size_t i = 0; wraps && i < b->n_wraps; i++)
                f |= json_array_append_new(wraps, json_string(b->wraps[i])) < 0;
        th = json_pack("{s:I, s:f, s:I, s:f, s:I, s:I}",
                       "cold_s", (json_int_t) c->therapy.cold_s,
                       "cold_setpoint_c", c->therapy.cold_setpoint / 100.0,
                       "heat_s", (json_int_t) c->therapy.heat_s,
                       "heat_setpoint_c", c->therapy.heat_setpoint / 100.0,
                       "heat_wait_s", (json_int_t) c->therapy.heat_wait_s,
                       "cold_rest_s", (json_int_t) c->therapy.cold_rest_s);
        /* No secrets: neither the password nor the key, only whether they are set. */
        cfg = json_object();
        f |= put(cfg, "mqtt_host", str_or_null(c->mqtt_host));
        f |= put(cfg, "mqtt_port", json_integer(c->mqtt_port));
        f |= put(cfg, "protocol", json_string(c->protocol == MQTT_PROTOCOL_V5 ? "5" : "3.1.1"));
        f |= put(cfg, "tls", json_boolean(c->tls_ca_file || c->tls_ca_dir));
        f |= put(cfg, "client_certificate", json_boolean(c->tls_cert_file != NULL));
        f |= put(cfg, "username", json_boolean(c->username != NULL));
        f |= put(cfg, "base_topic", str_or_null(c->base_topic));
        f |= put(cfg, "discovery_prefix", str_or_null(c->discovery_prefix));
        f |= put(cfg, "auto_adopt", json_boolean(c->auto_adopt));
        f |= put(cfg, "allow", json_integer(c->n_allow));
        f |= put(cfg, "therapy", th);

        f |= put(o, "version", json_string(KW_VERSION));
        f |= put(o, "adapter", str_or_null(c->adapter));
        f |= put(o, "wraps", wraps);
        f |= put(o, "adoption_open", json_boolean(b->adoption_open));
        f |= put(o, "adoption_until", iso_or_null(b->adoption_open ? b->adoption_until : 0));
        f |= put(o, "config", cfg);
        return dump(o, f, ret);
}

int state_bridge_health_json(const BridgeHealth *h, char **ret) {
        json_t *o = json_object();
        bool f = false;

        f |= put(o, "uptime_s", json_integer((json_int_t) h->uptime_s));
        f |= put(o, "wraps_adopted", json_integer(h->wraps_adopted));
        f |= put(o, "wraps_connected", json_integer(h->wraps_connected));
        f |= put(o, "store", json_string(h->store_ok ? "ok" : "unavailable"));
        f |= put(o, "outbox_depth", h->has_outbox_depth ? json_integer((json_int_t) h->outbox_depth) : json_null());
        f |= put(o, "mqtt_reconnects", json_integer((json_int_t) h->mqtt_reconnects));
        f |= put(o, "malformed_values", json_integer((json_int_t) h->malformed));
        f |= put(o, "requests_dropped", json_integer((json_int_t) h->requests_dropped));
        f |= put(o, "clock_synced", json_boolean(h->clock_synced));
        f |= put(o, "clock_trusted", json_boolean(h->clock_trusted));
        f |= put(o, "clock_declared_trusted", json_boolean(h->clock_declared_trusted));
        if (h->uplink) {
                json_t *u = json_object();
                bool g = false;

                g |= put(u, "pending", h->has_uplink_pending ? json_integer((json_int_t) h->uplink_pending) : json_null());
                g |= put(u, "last_success", iso_or_null(h->uplink_last_success));
                g |= put(u, "last_error", h->uplink_last_error && *h->uplink_last_error ?
                                               json_string(h->uplink_last_error) : json_null());
                g |= put(u, "rejected", json_integer((json_int_t) h->uplink_rejected));
                f |= g || put(o, "uplink", u);
        }
        return dump(o, f, ret);
}
