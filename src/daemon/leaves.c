/* leaves: the daemon's side of its leaves: the hooks it sets on the BLE and MQTT clients, and the wraps' life. */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "bluez.h"
#include "clock.h"
#include "commands.h"
#include "discovery.h"
#include "door.h"
#include "log.h"
#include "manager.h"
#include "mqtt.h"
#include "payload.h"
#include "state.h"
#include "store.h"
#include "util.h"
#include "wrap.h"

/*
 * The BLE client knows addresses and bytes; the daemon knows wraps. Every hook below turns
 * an address into the daemon's Wrap and hands the value to wrap.c, which decides. A value
 * for an address the daemon does not know (removed a moment ago) is dropped.
 */

static Wrap *wrap_of(Manager *m, const char *address) {
        /* The client's addresses are normalised already: compare first, normalise only if needed. */
        for (Wrap *w = m->wraps; w; w = wrap_next(w))
                if (streq(wrap_get_address(w), address))
                        return w;
        return wrap_find_address(m, address);
}

static void on_link_up(void *userdata, const char *address) {
        Wrap *w = wrap_of(userdata, address);
        if (w)
                wrap_link_up(w);
}

static void on_link_down(void *userdata, const char *address) {
        Wrap *w = wrap_of(userdata, address);
        if (w)
                wrap_link_down(w);
}

static void on_status(void *userdata, const char *address, const WireStatus *s) {
        Wrap *w = wrap_of(userdata, address);
        if (w)
                wrap_on_status(w, s);
}

static void on_button(void *userdata, const char *address, const WireButton *b, uint64_t received_usec) {
        Wrap *w = wrap_of(userdata, address);
        if (w)
                wrap_on_button(w, b, received_usec);
}

static void on_temperature(void *userdata, const char *address, const WireTemperature *t) {
        Wrap *w = wrap_of(userdata, address);
        if (w)
                wrap_on_temperature(w, t);
}

static void on_response(void *userdata, const char *address, const WireResponse *r) {
        Wrap *w = wrap_of(userdata, address);
        if (w)
                wrap_on_response(w, r);
}

static void on_write_failed(void *userdata, const char *address, uint8_t opcode, int error) {
        Wrap *w = wrap_of(userdata, address);
        if (w)
                wrap_on_write_failed(w, opcode, error);
}

static void on_battery(void *userdata, const char *address, int percent) {
        Wrap *w = wrap_of(userdata, address);
        if (w)
                wrap_on_battery(w, percent);
}

static void on_info(void *userdata, const char *address, const WrapInfo *info) {
        Wrap *w = wrap_of(userdata, address);
        if (w)
                wrap_on_info(w, info);
}

static void on_malformed(void *userdata, const char *address, WrapValueKind kind, const char *why) {
        Manager *m = userdata;
        Wrap *w = wrap_of(m, address);

        if (w)
                wrap_on_malformed(w, kind, why);
        else
                m->malformed++;
}

static bool on_may_adopt(void *userdata) {
        Manager *m = userdata;
        return m->store != NULL;
}

static int on_adopt(void *userdata, const char *address, const char *name) {
        return manager_wrap_adopt(userdata, address, name);
}

static void on_status_changed(void *userdata) {
        manager_update_status(userdata);
}

static void on_bridge_changed(void *userdata) {
        Manager *m = userdata;
        mqtt_bridge_changed(m->mqtt, m->adoption_until);
}

void manager_ble_hooks(Manager *m, BluezHooks *ret) {
        *ret = (BluezHooks) {
                .userdata = m,
                .link_up = on_link_up,
                .link_down = on_link_down,
                .status = on_status,
                .button = on_button,
                .temperature = on_temperature,
                .response = on_response,
                .write_failed = on_write_failed,
                .battery = on_battery,
                .info = on_info,
                .malformed = on_malformed,
                .may_adopt = on_may_adopt,
                .adopt = on_adopt,
                .status_changed = on_status_changed,
                .bridge_changed = on_bridge_changed,
        };
}

/* ---- what wrap.c asks of the link ---- */

static int link_write_request(void *userdata, const char *address, const WireRequest *req) {
        Manager *m = userdata;
        return m->bluez ? bluez_write_request(m->bluez, address, req) : -ENOTCONN;
}

static bool link_ready(void *userdata, const char *address) {
        Manager *m = userdata;
        return bluez_link_ready(m->bluez, address);
}

const WrapLinkOps manager_link_ops = {
        .write_request = link_write_request,
        .ready = link_ready,
};

/* ---- the wraps' life ---- */

int manager_wraps_load(Manager *m) {
        int r = wraps_load(m);

        /* Every wrap the daemon knows has a link; adding one that exists does nothing. */
        for (Wrap *w = m->wraps; w && m->bluez; w = wrap_next(w)) {
                int k = bluez_link_add(m->bluez, wrap_get_address(w));
                if (k < 0)
                        log_wrap_errno(LOG_ERR, k, wrap_get_address(w), "cannot set up the wrap's link: %m");
        }
        return r;
}

int manager_wrap_adopt(Manager *m, const char *address, const char *name) {
        Wrap *w;
        int r;

        if (!m->store)
                return -EAGAIN;
        r = store_wrap_add(m->store, address, name, manager_now(m));
        if (r < 0 && r != -EEXIST) {
                log_wrap_errno(LOG_ERR, r, address, "adoption failed: cannot store the wrap: %m (%s)",
                               store_errmsg(m->store));
                if (store_is_broken(r))
                        manager_store_failed(m, r);
                return r;
        }
        w = wrap_find_address(m, address);
        if (!w) {
                r = wrap_new(m, address, name, &w);
                if (r < 0)
                        return log_wrap_errno(LOG_ERR, r, address, "adoption failed: %m");
        }
        r = bluez_link_add(m->bluez, address);
        if (r < 0)
                log_wrap_errno(LOG_ERR, r, address, "cannot set up the wrap's link: %m");
        mqtt_wrap_added(m->mqtt, wrap_get_id(w), wrap_get_address(w));
        manager_update_status(m);
        return 0;
}

int manager_wrap_forget(Manager *m, const char *wrap) {
        char address[BDADDR_STR_MAX];
        Wrap *w = wrap_find(m, wrap);

        if (!w)
                return -ENOENT;
        snprintf(address, sizeof address, "%s", wrap_get_address(w));
        wrap_removed(w);              /* ends the session: STOP goes out on the link first */
        bluez_link_remove(m->bluez, address, true);
        wrap_free(w);
        return 0;
}

/* ---- the MQTT client's hooks ---- */

static Store *mq_store(void *userdata) {
        Manager *m = userdata;
        return m->store;
}

static void mq_store_failed(void *userdata, int error) {
        manager_store_failed(userdata, error);
}

/* The commands, through the one door; "today" and a diary entry's missing time are ours. */
static int mq_command(void *userdata, const char *wrap, const Command *c, char **ret_data, const char **ret_error) {
        /* MQTT does not name the publisher to subscribers: the history keeps the topic, and a
         * client id an MQTT 5 publisher claims, as a claim (docs/mqtt.md). */
        const DoorActor who = { .source = SOURCE_MQTT, .uid = -1, .topic = c->topic,
                                .claimed_client = c->claimed_client[0] ? c->claimed_client : NULL };
        Manager *m = userdata;
        int r = -EINVAL;

        switch (c->type) {
        case COMMAND_START: {
                SessionRecord rec = { 0 };

                r = door_start(m, wrap, c->mode, SOURCE_MQTT, 0, &rec, ret_error);
                if (r >= 0 && rec.session_id[0])
                        (void) payload_session(&rec, ret_data);
                if (r >= 0 && rec.outcome == OUTCOME_REFUSED && !*ret_error)
                        *ret_error = "refused by the therapy rules";
                else if (r >= 0 && rec.outcome != OUTCOME_REFUSED)
                        *ret_error = NULL;    /* started: a note such as the rule's "why" is not an error */
                break;
        }
        case COMMAND_STOP:
                r = door_stop(m, wrap, SOURCE_MQTT, ret_error);
                break;
        case COMMAND_INJURY:
                /* "today" goes through as it is: the daemon dates it (R10). */
                r = door_set_injury(m, &who, wrap, c->injury[0] ? c->injury : NULL, ret_error);
                break;
        case COMMAND_DIARY: {
                DiaryEntry e = c->diary;
                if (e.at == 0)
                        e.at = manager_now(m);
                r = door_add_diary(m, wrap, &e, ret_error);
                break;
        }
        case COMMAND_ADOPT:
                r = door_open_adoption(m, &who, c->adopt_seconds, ret_error);
                if (r >= 0 && asprintf(ret_data, "{\"time\":%u}", c->adopt_seconds) < 0)
                        *ret_data = NULL;
                break;
        case COMMAND_REMOVE:
                r = door_remove_wrap(m, &who, wrap, ret_error);
                break;
        case COMMAND_PRESCRIPTION:
                r = door_set_prescription(m, &who, wrap, &c->rx, c->rx_set, NULL, ret_error);
                break;
        case COMMAND_RUN: {
                RunRecord run = { .ended_at = c->run_at, .minutes = c->run_minutes, .meters = c->run_meters,
                                  .source = SOURCE_MQTT };
                int64_t id = 0;

                snprintf(run.wrap, sizeof run.wrap, "%s", wrap ? wrap : "");
                r = door_record_run(m, &run, &id, ret_error);
                if (r >= 0 && asprintf(ret_data, "{\"id\":%lld}", (long long) id) < 0)
                        *ret_data = NULL;
                break;
        }
        case COMMAND_ACK_ALERT: {
                AlertRecord a;

                r = door_ack_alert(m, c->alert_id, &a, ret_error);
                /* Acknowledged all the same: an id names one alert wherever it is asked. */
                if (r >= 0 && wrap && !streq(a.wrap, wrap))
                        log_wrap(LOG_NOTICE, wrap, "MQTT acknowledged alert %lld of %s.", (long long) a.id, a.wrap);
                break;
        }
        }
        if (r >= 0 && c->type != COMMAND_START)
                *ret_error = NULL;
        return r;
}

static int mq_wrap_state(void *userdata, const char *wrap, StateView *v) {
        static char injury_date[11];
        Manager *m = userdata;
        Wrap *w = wrap_find(m, wrap);
        const WrapLive *l = w ? wrap_get_live(w) : NULL;
        const SessionRecord *open = w ? wrap_get_session(w) : NULL;
        const WrapStored *st = w ? wrap_stored(w) : NULL;

        *v = (StateView) { .battery = -1 };
        if (l) {
                v->connected = l->connected;
                v->has_status = l->has_status;
                v->state = l->state;
                v->faults = l->faults;
                v->mode = l->mode;
                v->remaining_s = l->remaining_s;
                v->has_skin = l->has_skin;
                v->skin = l->skin;
                v->has_pack = l->has_pack;
                v->pack = l->pack;
                v->battery = l->battery;
        }
        if (open)
                v->session_id = open->session_id;
        /* From memory: a notification runs no SQL (wrap_stored() reads only after a write, or
         * while R10 does not trust the clock). The door's decision, not a copy of R2. */
        if (w)
                v->heat_allowed = wrap_heat_allowed(w, &v->heat_allowed_at);
        if (st && st->has_rules) {
                if (st->rules.has_injury)
                        v->injury_date = clock_format_date(st->rules.injury_from, injury_date);
                if (st->has_last)
                        v->last = &st->last;
        }
        return w ? 0 : -ENOENT;
}

static int mq_wrap_compliance(void *userdata, const char *wrap, Compliance *c7, Compliance *c30) {
        Manager *m = userdata;
        int64_t now = manager_now(m);
        int r;

        int64_t since7, since30, until;

        if (!m->store)
                return -EAGAIN;
        /* Whole local days, today included: the one definition (store.h). */
        r = clock_local_day_start(now, 6, &since7);
        if (r >= 0)
                r = clock_local_day_start(now, 29, &since30);
        if (r >= 0)
                r = clock_local_day_start(now, -1, &until);
        if (r >= 0)
                r = store_compliance(m->store, wrap, since7, until, c7);
        if (r >= 0)
                r = store_compliance(m->store, wrap, since30, until, c30);
        return r;
}

static bool mq_wrap_device(void *userdata, const char *wrap, DiscoveryDevice *d) {
        Wrap *w = wrap_find(userdata, wrap);
        const WrapInfo *info;

        if (!w)
                return false;
        info = wrap_get_info(w);
        d->name = wrap_get_name(w);
        d->address = wrap_get_address(w);
        if (info->have) {
                d->manufacturer = info->manufacturer[0] ? info->manufacturer : NULL;
                d->model = info->model[0] ? info->model : NULL;
                d->serial = info->serial[0] ? info->serial : NULL;
                d->firmware = info->firmware[0] ? info->firmware : NULL;
        }
        return true;
}

static const char *mq_wrap_label(void *userdata, const char *wrap) {
        static PatientProfile profile;
        Manager *m = userdata;

        if (m->store && store_profile_get(m->store, wrap, &profile) >= 0 && profile.label[0])
                return profile.label;
        return NULL;
}

static void mq_health(void *userdata, BridgeHealth *h) {
        Manager *m = userdata;

        h->uptime_s = (clock_mono_usec() - m->started_usec) / USEC_PER_SEC;
        h->store_ok = m->store != NULL;
        h->malformed = m->malformed;
        h->requests_dropped = m->requests_dropped;
        h->clock_synced = m->clock_sync > 0;
        h->clock_trusted = manager_clock_trusted(m);
        h->clock_declared_trusted = m->config.clock_trusted;
        for (Wrap *w = m->wraps; w; w = wrap_next(w))
                h->wraps_connected += wrap_get_live(w)->connected;
        /* The clinic uplink's figures, from its state file: at each health report, never on
         * the notification path. */
        manager_uplink_refresh(m);
        if (m->uplink.configured) {
                h->uplink = true;
                h->has_uplink_pending = m->uplink.has_pending;
                h->uplink_pending = m->uplink.pending;
                h->uplink_last_success = m->uplink.status.last_success_at;
                h->uplink_last_error = m->uplink.status.last_error;
                h->uplink_rejected = m->uplink.status.rejected;
        }
}

static void mq_connection_changed(void *userdata) {
        manager_update_status(userdata);
}

void manager_mqtt_hooks(Manager *m, MqttHooks *ret) {
        *ret = (MqttHooks) {
                .userdata = m,
                .store = mq_store,
                .store_failed = mq_store_failed,
                .command = mq_command,
                .wrap_state = mq_wrap_state,
                .wrap_compliance = mq_wrap_compliance,
                .wrap_device = mq_wrap_device,
                .wrap_label = mq_wrap_label,
                .health = mq_health,
                .connection_changed = mq_connection_changed,
        };
}

int manager_mqtt_new(Manager *m) {
        MqttHooks hooks;

        manager_mqtt_hooks(m, &hooks);
        return mqtt_new(m->event, &m->config, &hooks, &m->mqtt);
}
