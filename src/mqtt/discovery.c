/* discovery: Home Assistant MQTT discovery configs for the gateway and each wrap (jansson). */
#include <errno.h>
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "discovery.h"
#include "kw-build.h"
#include "util.h"

/* Telemetry is republished every 60 s; HA shows "unknown" once three refreshes are missed. */
#define EXPIRE_AFTER_S 300

static const char *base_of(const Config *c) {
        return c->base_topic && c->base_topic[0] ? c->base_topic : "kneewrap";
}

static const char *prefix_of(const Config *c) {
        return c->discovery_prefix && c->discovery_prefix[0] ? c->discovery_prefix : "homeassistant";
}

int discovery_bridge_node(const Config *c, char **ret) {
        const char *b = base_of(c);
        char *s;

        /* A node id may hold only [a-zA-Z0-9_-]; the base topic is unique per gateway on a broker. */
        if (asprintf(&s, "%s_bridge", b) < 0)
                return -ENOMEM;
        for (char *p = s; *p; p++)
                if (!strchr("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789_-", *p))
                        *p = '_';
        *ret = s;
        return 0;
}

typedef struct Builder {
        const Config *c;
        DiscoveryMsg *msgs;
        size_t n;
        int error;
} Builder;

static json_t *str_printf(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
static json_t *str_printf(const char *fmt, ...) {
        va_list ap;
        char *s;
        json_t *j;
        int r;

        va_start(ap, fmt);
        r = vasprintf(&s, fmt, ap);
        va_end(ap);
        if (r < 0)
                return NULL;
        j = json_string(s);
        free(s);
        return j;
}

static void set(Builder *b, json_t *o, const char *key, json_t *v) {
        if (!v || json_object_set_new(o, key, v) < 0)
                b->error = -ENOMEM;
}

static void add(Builder *b, const char *component, const char *node, const char *object, json_t *config, bool clear) {
        DiscoveryMsg *n;
        char *topic = NULL, *payload = NULL;

        if (b->error < 0 || !config) {
                json_decref(config);
                b->error = -ENOMEM;
                return;
        }
        if (asprintf(&topic, "%s/%s/%s/%s/config", prefix_of(b->c), component, node, object) < 0) {
                json_decref(config);
                b->error = -ENOMEM;
                return;
        }
        if (!clear) {
                payload = json_dumps(config, JSON_COMPACT | JSON_REAL_PRECISION(15));
                if (!payload) {
                        free(topic);
                        json_decref(config);
                        b->error = -ENOMEM;
                        return;
                }
        }
        json_decref(config);
        n = realloc(b->msgs, (b->n + 1) * sizeof(*n));
        if (!n) {
                free(topic);
                free(payload);
                b->error = -ENOMEM;
                return;
        }
        b->msgs = n;
        b->msgs[b->n++] = (DiscoveryMsg) { .topic = topic, .payload = payload };
}

/* Who published the config: HA logs it with each discovered entity and links support_url. */
static json_t *origin(void) {
        return json_pack("{s:s, s:s, s:s}", "name", "kneewrap", "sw_version", KW_VERSION,
                         "support_url", KW_SUPPORT_URL);
}

static json_t *availability_item(const char *topic_fmt_base, const char *middle) {
        return json_pack("{s:o, s:s}",
                         "topic", str_printf("%s/%s/availability", topic_fmt_base, middle),
                         "value_template", "{{ value_json.state }}");
}

static json_t *bridge_availability(const Config *c) {
        return json_pack("{s:o, s:s}",
                         "topic", str_printf("%s/bridge/state", base_of(c)),
                         "value_template", "{{ value_json.state }}");
}

/* A new entity config with the keys every entity has. `object_id` becomes default_entity_id
 * "<component>.<object_id>" (HA 2025.10 deprecated object_id; 2026.4 ignores it): the entity id
 * HA gives the entity when it first appears, e.g. sensor.kneewrap_aabbccddeeff_battery. */
static json_t *entity(Builder *b, const char *component, const char *unique_id, const char *object_id,
                      const char *name, json_t *device, bool wrap_availability, const char *wrap) {
        json_t *o = json_object(), *av;

        if (!o) {
                b->error = -ENOMEM;
                json_decref(device);
                return NULL;
        }
        /* A null name: the entity is the device's main feature and takes the device's name. */
        set(b, o, "name", name ? json_string(name) : json_null());
        set(b, o, "unique_id", json_string(unique_id));
        set(b, o, "default_entity_id", str_printf("%s.%s", component, object_id));
        set(b, o, "device", device);
        set(b, o, "origin", origin());
        av = json_array();
        if (!av || json_array_append_new(av, bridge_availability(b->c)) < 0)
                b->error = -ENOMEM;
        if (av && wrap_availability && json_array_append_new(av, availability_item(base_of(b->c), wrap)) < 0)
                b->error = -ENOMEM;
        set(b, o, "availability", av);
        set(b, o, "availability_mode", json_string("all"));
        return o;
}

static json_t *wrap_device(const Config *c, const DiscoveryDevice *d, const char *bridge_node) {
        json_t *dev = json_object();
        const char *hex = strncmp(d->wrap, "wrap_", 5) == 0 ? d->wrap + 5 : d->wrap;
        size_t hl = strlen(hex);
        int ok = 0;

        if (!dev)
                return NULL;
        ok |= json_object_set_new(dev, "identifiers", json_pack("[o]", str_printf("kneewrap_%s", d->wrap)));
        if (d->address)
                ok |= json_object_set_new(dev, "connections", json_pack("[[s,s]]", "bluetooth", d->address));
        if (d->label && d->label[0])
                ok |= json_object_set_new(dev, "name", json_string(d->label));
        else if (d->name && d->name[0])
                ok |= json_object_set_new(dev, "name", json_string(d->name));
        else
                ok |= json_object_set_new(dev, "name", str_printf("KneeWrap %s", hex + (hl > 4 ? hl - 4 : 0)));
        ok |= json_object_set_new(dev, "manufacturer", json_string(d->manufacturer ? d->manufacturer : "KneeWrap"));
        ok |= json_object_set_new(dev, "model", json_string(d->model ? d->model : "KneeWrap"));
        if (d->firmware)
                ok |= json_object_set_new(dev, "sw_version", json_string(d->firmware));
        if (d->serial)
                ok |= json_object_set_new(dev, "serial_number", json_string(d->serial));
        ok |= json_object_set_new(dev, "via_device", json_string(bridge_node));
        if (ok != 0) {
                json_decref(dev);
                return NULL;
        }
        return dev;
}

static json_t *bridge_device(const char *bridge_node) {
        return json_pack("{s:[s], s:s, s:s, s:s, s:s}",
                         "identifiers", bridge_node,
                         "name", "KneeWrap gateway",
                         "manufacturer", "kneewrap",
                         "model", "KneeWrap BLE gateway",
                         "sw_version", KW_VERSION);
}

typedef struct WrapEntity {
        const char *component;
        const char *object;
        const char *name;
        bool wrap_availability;       /* false: shown even when the wrap is away (connectivity) */
        unsigned needs;               /* MQTT_ALLOW_*: not announced (cleared) unless [mqtt] commands allows it */
} WrapEntity;

int discovery_wrap(const Config *c, const DiscoveryDevice *d, bool clear, DiscoveryMsg **ret, size_t *ret_n) {
        static const WrapEntity entities[] = {
                { "sensor",        "skin_temperature",  "Skin temperature",  true  },
                { "sensor",        "pack_temperature",  "Pack temperature",  true  },
                { "sensor",        "battery",           "Battery",           true  },
                { "sensor",        "therapy",           "Therapy",           true  },
                { "sensor",        "remaining",         "Remaining time",    true  },
                { "sensor",        "last_session",      "Last session",      false },
                { "sensor",        "heat_allowed_from", "Heat allowed from", false },
                { "sensor",        "cold_days_7d",      "Cold days (7 days)", false },
                { "binary_sensor", "connected",         "Connected",         false },
                { "binary_sensor", "heat_allowed",      "Heat allowed",      false },
                /* The wrap's own fault flags (Therapy Status byte 10), one problem sensor each. */
                { "binary_sensor", "fault_over_temperature",  "Over-temperature",  true },
                { "binary_sensor", "fault_under_temperature", "Under-temperature", true },
                { "binary_sensor", "fault_sensor",            "Sensor failure",    true },
                { "binary_sensor", "fault_low_battery",       "Low battery",       true },
                { "binary_sensor", "fault_not_worn",          "Not worn",          true },
                { "binary_sensor", "fault_element",           "Element failure",   true },
                { "button",        "start_cold",        "Start cold",        true  , MQTT_ALLOW_SESSIONS },
                { "button",        "start_heat",        "Start heat",        true  , MQTT_ALLOW_SESSIONS },
                { "button",        "stop",              "Stop",              true  , MQTT_ALLOW_SESSIONS },
                { "button",        "injured_today",     "Injured today",     false , MQTT_ALLOW_INJURY },
                { "text",          "injury_date",       "Injury date",       false , MQTT_ALLOW_INJURY },
                { "number",        "pain",              "Pain score",        false , MQTT_ALLOW_DIARY },
                { "event",         "session",           "Session",           false },
                { "button",        "ran",               "I just ran",        false , MQTT_ALLOW_RUNS },
                { "event",         "alert",             "Alert",             false },
        };
        const char *base = base_of(c);
        _cleanup_free_ char *bridge_node = NULL, *state = NULL, *set_topic = NULL;
        Builder b = { .c = c };
        int r;

        r = discovery_bridge_node(c, &bridge_node);
        if (r < 0)
                return r;
        if (asprintf(&state, "%s/%s/state", base, d->wrap) < 0 ||
            asprintf(&set_topic, "%s/%s/set", base, d->wrap) < 0)
                return -ENOMEM;

        for (size_t i = 0; i < ELEMENTSOF(entities); i++) {
                const WrapEntity *e = entities + i;
                char uid[96], oid[96];
                json_t *o;

                snprintf(uid, sizeof uid, "%s_%s", d->wrap, e->object);
                snprintf(oid, sizeof oid, "kneewrap_%s_%s", d->wrap + (strncmp(d->wrap, "wrap_", 5) == 0 ? 5 : 0), e->object);
                if (clear || (e->needs & ~c->mqtt_commands)) {
                        /* Cleared, also when it was announced before [mqtt] commands refused it. */
                        add(&b, e->component, d->wrap, e->object, json_object(), true);
                        continue;
                }
                o = entity(&b, e->component, uid, oid, e->name, wrap_device(c, d, bridge_node), e->wrap_availability,
                           d->wrap);
                if (!o)
                        break;

                if (streq(e->component, "sensor") || streq(e->component, "binary_sensor"))
                        set(&b, o, "state_topic", json_string(state));
                if (streq(e->component, "button") || streq(e->component, "text") || streq(e->component, "number"))
                        set(&b, o, "command_topic", json_string(set_topic));

                if (streq(e->object, "skin_temperature") || streq(e->object, "pack_temperature")) {
                        set(&b, o, "device_class", json_string("temperature"));
                        set(&b, o, "unit_of_measurement", json_string("°C"));
                        set(&b, o, "state_class", json_string("measurement"));
                        set(&b, o, "suggested_display_precision", json_integer(1));
                        set(&b, o, "value_template", json_string(streq(e->object, "skin_temperature")
                                ? "{{ value_json.skin_temp_c }}" : "{{ value_json.pack_temp_c }}"));
                        set(&b, o, "expire_after", json_integer(EXPIRE_AFTER_S));
                } else if (streq(e->object, "battery")) {
                        set(&b, o, "device_class", json_string("battery"));
                        set(&b, o, "unit_of_measurement", json_string("%"));
                        set(&b, o, "state_class", json_string("measurement"));
                        set(&b, o, "entity_category", json_string("diagnostic"));
                        set(&b, o, "value_template", json_string("{{ value_json.battery }}"));
                        set(&b, o, "expire_after", json_integer(EXPIRE_AFTER_S));
                } else if (streq(e->object, "therapy")) {
                        set(&b, o, "device_class", json_string("enum"));
                        set(&b, o, "options", json_pack("[s,s,s,s,s]", "idle", "cooling", "heating", "done", "fault"));
                        set(&b, o, "value_template", json_string("{{ value_json.state }}"));
                        set(&b, o, "expire_after", json_integer(EXPIRE_AFTER_S));
                } else if (streq(e->object, "remaining")) {
                        set(&b, o, "device_class", json_string("duration"));
                        set(&b, o, "unit_of_measurement", json_string("s"));
                        set(&b, o, "state_class", json_string("measurement"));
                        set(&b, o, "value_template", json_string("{{ value_json.remaining_s }}"));
                        set(&b, o, "expire_after", json_integer(EXPIRE_AFTER_S));
                } else if (streq(e->object, "last_session")) {
                        set(&b, o, "device_class", json_string("timestamp"));
                        set(&b, o, "value_template", json_string("{{ value_json.last_session_at }}"));
                        set(&b, o, "json_attributes_topic", json_string(state));
                        set(&b, o, "json_attributes_template", json_string("{{ (value_json.last_session or {}) | tojson }}"));
                } else if (streq(e->object, "heat_allowed_from")) {
                        set(&b, o, "device_class", json_string("timestamp"));
                        set(&b, o, "value_template", json_string("{{ value_json.heat_allowed_at }}"));
                } else if (streq(e->object, "cold_days_7d")) {
                        char *t;
                        if (asprintf(&t, "%s/%s/compliance", base, d->wrap) < 0) {
                                b.error = -ENOMEM;
                                json_decref(o);
                                break;
                        }
                        set(&b, o, "state_topic", json_string(t));
                        set(&b, o, "json_attributes_topic", json_string(t));
                        free(t);
                        set(&b, o, "unit_of_measurement", json_string("d"));
                        /* A count over a sliding window: it falls as well as rises, so measurement,
                         * not total_increasing (which HA would read as a meter reset). */
                        set(&b, o, "state_class", json_string("measurement"));
                        set(&b, o, "value_template", json_string("{{ value_json.last_7_days.days_with_cold }}"));
                } else if (streq(e->object, "connected")) {
                        set(&b, o, "device_class", json_string("connectivity"));
                        set(&b, o, "entity_category", json_string("diagnostic"));
                        set(&b, o, "value_template", json_string("{{ 'ON' if value_json.connected else 'OFF' }}"));
                } else if (streq(e->object, "heat_allowed")) {
                        set(&b, o, "value_template", json_string("{{ 'ON' if value_json.heat_allowed else 'OFF' }}"));
                } else if (strncmp(e->object, "fault_", 6) == 0) {
                        /* The state's "faults" lists the names docs/mqtt.md gives; "sensor" and
                         * "element" are the failures' names there. */
                        set(&b, o, "device_class", json_string("problem"));
                        set(&b, o, "entity_category", json_string("diagnostic"));
                        set(&b, o, "value_template", str_printf("{{ 'ON' if '%s' in (value_json.faults or []) else 'OFF' }}",
                                                                 e->object + 6));
                        set(&b, o, "expire_after", json_integer(EXPIRE_AFTER_S));
                } else if (streq(e->object, "start_cold")) {
                        set(&b, o, "payload_press", json_string("{\"action\":\"start\",\"mode\":\"cold\"}"));
                } else if (streq(e->object, "start_heat")) {
                        set(&b, o, "payload_press", json_string("{\"action\":\"start\",\"mode\":\"heat\"}"));
                } else if (streq(e->object, "stop")) {
                        set(&b, o, "payload_press", json_string("{\"action\":\"stop\"}"));
                } else if (streq(e->object, "ran")) {
                        set(&b, o, "payload_press", json_string("{\"run\":{}}"));
                        set(&b, o, "icon", json_string("mdi:run"));
                } else if (streq(e->object, "alert")) {
                        /* Retained (the latest alert), but Home Assistant fires an event only for
                         * a live message, never for one replayed on subscribe. */
                        char *t;
                        if (asprintf(&t, "%s/%s/alert", base, d->wrap) < 0) {
                                b.error = -ENOMEM;
                                json_decref(o);
                                break;
                        }
                        set(&b, o, "state_topic", json_string(t));
                        free(t);
                        set(&b, o, "event_types", json_pack("[s,s,s,s,s,s,s]", "see_physio", "see_physio_overdue",
                                                            "red_flag", "safety_stop", "low_battery",
                                                            "heat_first_week", "acknowledged"));
                        set(&b, o, "icon", json_string("mdi:alert"));
                } else if (streq(e->object, "injured_today")) {
                        set(&b, o, "payload_press", json_string("{\"injury\":\"today\"}"));
                } else if (streq(e->object, "injury_date")) {
                        set(&b, o, "state_topic", json_string(state));
                        set(&b, o, "value_template", json_string("{{ value_json.injury_date or '' }}"));
                        set(&b, o, "command_template", json_string("{\"injury\": {{ value | tojson }}}"));
                        /* Emptied, the text resolves the injury: offered only when MQTT may. */
                        set(&b, o, "pattern", json_string(c->mqtt_commands & MQTT_ALLOW_RESOLVE
                                                          ? "^([0-9]{4}-[0-9]{2}-[0-9]{2})?$" : "^[0-9]{4}-[0-9]{2}-[0-9]{2}$"));
                        set(&b, o, "min", json_integer(0));
                        set(&b, o, "max", json_integer(10));
                } else if (streq(e->object, "pain")) {
                        set(&b, o, "command_template", json_string("{\"pain\": {\"score\": {{ value | int }}}}"));
                        set(&b, o, "min", json_integer(0));
                        set(&b, o, "max", json_integer(10));
                        set(&b, o, "step", json_integer(1));
                        set(&b, o, "mode", json_string("slider"));
                        set(&b, o, "optimistic", json_true());
                } else if (streq(e->object, "session")) {
                        char *t;
                        if (asprintf(&t, "%s/%s/session", base, d->wrap) < 0) {
                                b.error = -ENOMEM;
                                json_decref(o);
                                break;
                        }
                        set(&b, o, "state_topic", json_string(t));
                        free(t);
                        set(&b, o, "event_types", json_pack("[s,s,s,s,s,s]", "completed", "stopped_by_user",
                                                            "stopped_for_safety", "interrupted", "refused", "not_started"));
                        set(&b, o, "value_template", json_string(
                                "{\"event_type\": {{ value_json.outcome | tojson }}, "
                                "\"session_id\": {{ value_json.session_id | tojson }}, "
                                "\"mode\": {{ value_json.mode | tojson }}}"));
                }
                add(&b, e->component, d->wrap, e->object, o, false);
        }
        if (b.error < 0) {
                discovery_msgs_free(b.msgs, b.n);
                return b.error;
        }
        *ret = b.msgs;
        *ret_n = b.n;
        return 0;
}

/* A gateway entity: its unique_id and object_id are both "<node>_<object>". */
static json_t *bridge_entity(Builder *b, const char *component, const char *node, const char *object,
                             const char *name) {
        char id[128];

        snprintf(id, sizeof id, "%s_%s", node, object);
        return entity(b, component, id, id, name, bridge_device(node), false, NULL);
}

int discovery_bridge(const Config *c, DiscoveryMsg **ret, size_t *ret_n) {
        const char *base = base_of(c);
        _cleanup_free_ char *node = NULL, *health = NULL, *adopt = NULL, *bstate = NULL, *info = NULL;
        char id[128];
        Builder b = { .c = c };
        json_t *o;
        int r;

        r = discovery_bridge_node(c, &node);
        if (r < 0)
                return r;
        if (asprintf(&health, "%s/bridge/health", base) < 0 || asprintf(&adopt, "%s/bridge/request/adopt", base) < 0 ||
            asprintf(&bstate, "%s/bridge/state", base) < 0 || asprintf(&info, "%s/bridge/info", base) < 0)
                return -ENOMEM;

        /* Connectivity: no availability of its own, so it reads "disconnected", not "unavailable". */
        snprintf(id, sizeof id, "%s_connection_state", node);
        o = json_object();
        if (o) {
                set(&b, o, "name", json_string("Connection state"));
                set(&b, o, "unique_id", json_string(id));
                set(&b, o, "default_entity_id", str_printf("binary_sensor.%s", id));
                set(&b, o, "device", bridge_device(node));
                set(&b, o, "origin", origin());
                set(&b, o, "state_topic", json_string(bstate));
                set(&b, o, "value_template", json_string("{{ value_json.state }}"));
                set(&b, o, "payload_on", json_string("online"));
                set(&b, o, "payload_off", json_string("offline"));
                set(&b, o, "device_class", json_string("connectivity"));
                set(&b, o, "entity_category", json_string("diagnostic"));
        }
        add(&b, "binary_sensor", node, "connection_state", o, false);

        o = bridge_entity(&b, "sensor", node, "wraps_connected", "Wraps connected");
        if (o) {
                set(&b, o, "state_topic", json_string(health));
                set(&b, o, "value_template", json_string("{{ value_json.wraps_connected }}"));
                set(&b, o, "state_class", json_string("measurement"));
                set(&b, o, "expire_after", json_integer(EXPIRE_AFTER_S));
        }
        add(&b, "sensor", node, "wraps_connected", o, false);

        o = bridge_entity(&b, "sensor", node, "outbox_depth", "Outbox depth");
        if (o) {
                set(&b, o, "state_topic", json_string(health));
                set(&b, o, "value_template", json_string("{{ value_json.outbox_depth }}"));
                set(&b, o, "state_class", json_string("measurement"));
                set(&b, o, "entity_category", json_string("diagnostic"));
                set(&b, o, "expire_after", json_integer(EXPIRE_AFTER_S));
        }
        add(&b, "sensor", node, "outbox_depth", o, false);

        if (!(c->mqtt_commands & MQTT_ALLOW_ADOPTION)) {
                /* [mqtt] commands refuses adoption: neither the switch nor its end is offered. */
                add(&b, "switch", node, "adoption", json_object(), true);
                add(&b, "sensor", node, "adoption_ends", json_object(), true);
                goto done;
        }
        /* Adoption as a switch, as zigbee2mqtt shows permit_join: on opens it for 2 minutes,
         * off closes it, and its state is bridge/info's adoption_open, so it turns itself off
         * when the window closes (bridge/info is published then). */
        o = bridge_entity(&b, "switch", node, "adoption", "Adoption");
        if (o) {
                set(&b, o, "command_topic", json_string(adopt));
                set(&b, o, "payload_on", json_string("{\"time\":120}"));
                set(&b, o, "payload_off", json_string("{\"time\":0}"));
                set(&b, o, "state_topic", json_string(info));
                set(&b, o, "value_template", json_string("{{ 'ON' if value_json.adoption_open else 'OFF' }}"));
                set(&b, o, "state_on", json_string("ON"));
                set(&b, o, "state_off", json_string("OFF"));
                set(&b, o, "entity_category", json_string("config"));
                set(&b, o, "icon", json_string("mdi:link-plus"));
        }
        add(&b, "switch", node, "adoption", o, false);

        /* Its remaining time: when the window closes, which HA shows counting down ("in 2
         * minutes") with no message a second; unknown while closed. */
        o = bridge_entity(&b, "sensor", node, "adoption_ends", "Adoption ends");
        if (o) {
                set(&b, o, "state_topic", json_string(info));
                set(&b, o, "device_class", json_string("timestamp"));
                set(&b, o, "value_template", json_string("{{ value_json.adoption_until if value_json.adoption_open else None }}"));
                set(&b, o, "entity_category", json_string("diagnostic"));
        }
        add(&b, "sensor", node, "adoption_ends", o, false);

done:
        /* The retained button config of an older version: removed, so the switch replaces it. */
        add(&b, "button", node, "adopt", json_object(), true);

        if (b.error < 0) {
                discovery_msgs_free(b.msgs, b.n);
                return b.error;
        }
        *ret = b.msgs;
        *ret_n = b.n;
        return 0;
}

void discovery_msgs_free(DiscoveryMsg *m, size_t n) {
        for (size_t i = 0; m && i < n; i++) {
                free(m[i].topic);
                free(m[i].payload);
        }
        free(m);
}
