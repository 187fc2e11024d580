/* leaves: the daemon's side of its leaves: the hooks it sets on the BLE client, and the wraps' life. */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "bluez.h"
#include "log.h"
#include "manager.h"
#include "mqtt.h"
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
        mqtt_bridge_changed(m->mqtt);
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
        mqtt_wrap_added(m->mqtt, wrap_get_id(w));
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
