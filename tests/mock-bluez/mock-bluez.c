/* kneewrap-mock-bluez: org.bluez as bluetoothd 5.66 presents it, with simulated wraps, for tests. */
/*
 * Two bus connections. "bz" owns org.bluez and carries only what bluetoothd would export, so
 * GetManagedObjects looks like the real thing; RestartBluez closes and reopens it like a
 * daemon restart (a new unique name). "ctl" owns org.kneewrap.Mock with the test controls
 * at /org/kneewrap/mock and survives those restarts.
 *
 * Behaviour follows bluez 5.66 (src/adapter.c, src/device.c, src/gatt-client.c,
 * profiles/battery/battery.c); what it deliberately adds is the "observed" behaviour of
 * real links: services resolved before their objects appear, stalled first connections.
 * BlueZ's own timing runs on the wall clock; only the wraps' firmware follows
 * KNEEWRAP_TIME_SCALE (clock.h), exactly like the daemon.
 *
 * What real bluetoothd 5.66 was seen doing (in a VM, against kneewrap-sim on a second
 * bluetoothd), and this mock does by default:
 *  - A bonded device reconnecting never signals Connected=true (att_connect_cb marks the LE
 *    bearer connected silently, so device_add_connection says nothing); Get and
 *    GetManagedObjects still read true. Only ServicesResolved=true is signalled. A first
 *    connection of an unbonded device does signal Connected=true. Disconnects always signal
 *    Connected=false.
 *  - A first connection: Connected=true, then ONE PropertiesChanged with UUIDs and
 *    ServicesResolved=true, then the GATT objects (late_ms later), Name (the peer's GAP name,
 *    when it differs), Modalias, then ONE PropertiesChanged with Bonded and Paired once
 *    pairing ends (pair_ms counts from the connection and ends after discovery by default).
 *  - GATT objects stay exported across disconnects (GATT cache, DB hash match: no
 *    rediscovery); ServicesResolved toggles. After a bluetoothd restart a bonded device's
 *    objects come back only with the next connection, and Paired=true is signalled in the
 *    same PropertiesChanged as ServicesResolved=true (device_set_paired defers the signal
 *    until services are resolved: pending_paired).
 *  - mgmt commands are serialised: while a Pair is in flight on the adapter, other devices'
 *    Connect and Pair and Start/StopDiscovery wait for it (their calls are queued).
 *  - A second Pair while one is pending: org.bluez.Error.InProgress "In Progress".
 *  - A BlueZ-based peer (option pnp, on by default) shows its bluetoothd's own services
 *    first: GAP 0x1800 (claimed by our gap plugin, never exported), GATT 0x1801 and a
 *    SEPARATE 0x180A holding only the PnP ID 0x2A50 (Modalias comes from it); the wrap's
 *    own 0x180A has only its four strings.
 *  - After connecting, Name (and Alias, if unset) becomes the peer's GAP Device Name
 *    (option gap_name, default the advertised name); an advertisement seen again sets it
 *    back to the advertised name.
 *  - RSSI is invalidated on connect (and when discovery stops); it comes back with the next
 *    advertisement seen while disconnected.
 */
#include <errno.h>
#include <getopt.h>
#include <inttypes.h>
#include <math.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <unistd.h>
#include <systemd/sd-bus.h>
#include <systemd/sd-event.h>

#include "bus-util.h"
#include "clock.h"
#include "log.h"
#include "util.h"
#include "wire.h"
#include "wrapfw.h"

#define BLUEZ_NAME   "org.bluez"
#define MOCK_NAME    "org.kneewrap.Mock"
#define MOCK_PATH    "/org/kneewrap/mock"
#define MOCK_IFACE   "org.kneewrap.Mock1"
#define ADAPTER_PATH "/org/bluez/hci0"
#define ERR          "org.bluez.Error."
#define UUID_CCCD    "00002902-0000-1000-8000-00805f9b34fb"
#define MAX_ATTRS    48
#define MAX_SUBS     8
#define MAX_CLIENTS  16

enum { P_BROADCAST = 0x01, P_READ = 0x02, P_WWR = 0x04, P_WRITE = 0x08, P_NOTIFY = 0x10, P_INDICATE = 0x20 };

typedef enum Role {
        R_NONE, R_SVC_CHANGED, R_MANUF, R_MODEL, R_SERIAL, R_FIRMWARE, R_GAP_NAME, R_GAP_APPEARANCE,
        R_BATTERY, R_TEMP, R_STATUS, R_BUTTON, R_CP, R_PNP,
} Role;

typedef enum Kind { K_SVC, K_CHR, K_DESC } Kind;
typedef enum Link { LINK_DOWN, LINK_CONNECTING, LINK_UP, LINK_DISCONNECTING } Link;

typedef struct Mock Mock;
typedef struct Dev Dev;

typedef struct Attr {
        Dev *dev;
        Kind kind;
        Role role;
        uint16_t handle;
        char uuid[37];
        char path[128];
        struct Attr *parent;        /* chr -> service, desc -> chr */
        bool exported;              /* GAP is claimed by bluetoothd's gap plugin: never exported */
        uint8_t props;
        bool encrypted_write;
        uint8_t value[32];          /* BlueZ's cached Value */
        size_t value_len;
        char *subs[MAX_SUBS];       /* D-Bus clients with a StartNotify session */
        bool notifying;
        sd_bus_message *write_msg;  /* the one write in flight */
        uint8_t write_buf[64];
        size_t write_len;
        int notify_fd;              /* AcquireNotify: our end of the socket pair, or -1 */
        sd_event_source *notify_io;
        sd_bus_slot *slot, *slot_mtu;
} Attr;

struct Dev {
        Mock *m;
        Dev *next;
        char address[BDADDR_STR_MAX];
        char path[64];
        char name[32];              /* bluetoothd's Name: advertised, or read from GAP */
        char adv_name[32];          /* the complete local name in the advertisements */
        char gap_name[32];          /* the peer's GAP Device Name ("": the advertised one) */
        uint8_t model[40];          /* Model Number String as raw bytes (option model), any UTF-8 or not */
        size_t model_len;           /* 0: "KW-1" */
        char alias[64];
        bool random_address;

        /* The radio world: what the peripheral is and does. */
        WrapFw *fw;                 /* NULL: a plain peripheral */
        char *adv_uuids[8];
        bool advertising;
        int16_t rssi;
        bool peer_bonded;           /* the wrap holds a bond (with us, from an earlier pairing) */
        unsigned fail_connects;
        bool stall_next;
        bool services_late;
        bool pnp;
        uint16_t handle_base;
        Attr attrs[MAX_ATTRS];
        size_t n_attrs;
        sd_event_source *fw_timer;

        /* BlueZ's view. */
        bool published, temporary, paired, bonded, trusted, blocked, legacy;
        bool rssi_shown, resolved, gatt_exported, battery_shown, db_cached;
        bool svc_resolved;          /* le_state.svc_resolved: survives disconnects, not restarts */
        bool pending_paired;        /* Paired set before services resolved: signalled with them */
        bool pair_after_gatt;       /* pairing done while a first connection's objects were on their way */
        uint8_t battery_pct;
        Link link;
        bool encrypted;
        sd_bus_message *connect_msg, *pair_msg, *disconnect_msgs[8];
        size_t n_disconnect_msgs;
        bool remove_after_disconnect;
        sd_event_source *t_link, *t_services, *t_pair, *t_temp;
        sd_bus_slot *slot_dev, *slot_rssi, *slot_batt, *slot_modalias;
};

typedef struct DiscoveryClient {
        char *owner;
        bool discovering;
        bool has_filter;
        char *uuids[16];
        size_t n_uuids;
        int16_t rssi_min;           /* INT16_MIN: none */
        bool bredr_only;
        char *pattern;
} DiscoveryClient;

/* A method call waiting for the adapter's mgmt queue (a Pair in flight). */
typedef struct Queued {
        sd_bus_message *msg;
        sd_bus_message_handler_t fn;
        void *userdata;
        Dev *dev;                   /* a Device1 method's device, else NULL */
} Queued;

typedef struct LogEntry {
        char address[BDADDR_STR_MAX];
        int64_t t_usec;
        char hex[2 * 64 + 1];
        uint8_t result;
} LogEntry;

struct Mock {
        sd_event *ev;
        sd_bus *bz, *ctl;
        bool adapter_present, powered, discoverable, pairable, discovering;
        char adapter_alias[64];
        Dev *devs;
        DiscoveryClient clients[MAX_CLIENTS];
        size_t n_clients;
        char *agents[MAX_CLIENTS];          /* "owner path" */
        char *default_agent;
        sd_bus_slot *slot_om, *slot_mgr, *slot_prof, *slot_adapter, *slot_noc;
        sd_event_source *t_scan, *t_restart;
        LogEntry *log;
        size_t n_log;
        Queued *queue;
        size_t n_queue;
        sd_event_source *t_drain;

        /* BlueZ's timing, wall clock ms; tests may shorten it with SetTiming. */
        uint64_t connect_ms, connect_timeout_ms, disconnect_ms, pair_ms, discover_ms,
                 late_ms, cached_ms, stall_drop_ms, temp_timeout_ms, scan_ms;
};

static const char *const adapter_uuids[] = {
        "00001800-0000-1000-8000-00805f9b34fb", "00001801-0000-1000-8000-00805f9b34fb",
        "0000180a-0000-1000-8000-00805f9b34fb", "00001200-0000-1000-8000-00805f9b34fb",
};

/* ---- small helpers ---- */

static char *mfree_str(char *p) {
        free(p);
        return NULL;
}

static void *mfree_ptr(void *p) {
        free(p);
        return NULL;
}

static uint64_t ms(uint64_t v) {
        return v * USEC_PER_MSEC;
}

static int timer_arm(Mock *m, sd_event_source **s, uint64_t usec, sd_event_time_handler_t cb, void *ud) {
        *s = sd_event_source_disable_unref(*s);
        return sd_event_add_time_relative(m->ev, s, CLOCK_MONOTONIC, usec, 0, cb, ud);
}

static void timer_stop(sd_event_source **s) {
        *s = sd_event_source_disable_unref(*s);
}

static void reply_ok(sd_bus_message **msg) {
        if (*msg)
                (void) sd_bus_reply_method_return(*msg, NULL);
        *msg = sd_bus_message_unref(*msg);
}

static void reply_err(sd_bus_message **msg, const char *name, const char *text) {
        if (*msg)
                (void) sd_bus_reply_method_errorf(*msg, name, "%s", text);
        *msg = sd_bus_message_unref(*msg);
}

/* "180f", "0000180f", or 128-bit text -> lower-case 128-bit text, like bt_string2uuid. */
static int uuid_normalize(const char *in, char out[static 37]) {
        size_t n = strlen(in);
        unsigned v;

        if ((n == 4 || n == 8) && strspn(in, "0123456789abcdefABCDEF") == n) {
                v = (unsigned) strtoul(in, NULL, 16);
                snprintf(out, 37, "%08x-0000-1000-8000-00805f9b34fb", v);
                return 0;
        }
        if (n != 36)
                return -EINVAL;
        for (size_t i = 0; i < 36; i++) {
                bool dash = i == 8 || i == 13 || i == 18 || i == 23;
                if (dash ? in[i] != '-' : !strchr("0123456789abcdefABCDEF", in[i]))
                        return -EINVAL;
                out[i] = (char) (in[i] >= 'A' && in[i] <= 'F' ? in[i] - 'A' + 'a' : in[i]);
        }
        out[36] = 0;
        return 0;
}

static Dev *dev_by_address(Mock *m, const char *address) {
        char norm[BDADDR_STR_MAX];

        if (bdaddr_normalize(address, norm) < 0)
                return NULL;
        for (Dev *d = m->devs; d; d = d->next)
                if (streq(d->address, norm))
                        return d;
        return NULL;
}

static Dev *dev_by_path(Mock *m, const char *path) {
        for (Dev *d = m->devs; d; d = d->next)
                if (d->published && streq(d->path, path))
                        return d;
        return NULL;
}

static bool is_wrap(const Dev *d) {
        return d->fw != NULL;
}

static Attr *attr_by_role(Dev *d, Role r) {
        for (size_t i = 0; i < d->n_attrs; i++)
                if (d->attrs[i].kind == K_CHR && d->attrs[i].role == r)
                        return &d->attrs[i];
        return NULL;
}

static size_t n_subs(const Attr *a) {
        size_t n = 0;
        for (size_t i = 0; i < MAX_SUBS; i++)
                n += a->subs[i] != NULL;
        return n;
}

static bool has_sub(const Attr *a, const char *owner) {
        for (size_t i = 0; i < MAX_SUBS; i++)
                if (a->subs[i] && streq(a->subs[i], owner))
                        return true;
        return false;
}

static void props_changed(Mock *m, const char *path, const char *iface, const char *prop) {
        if (m->bz)
                (void) sd_bus_emit_properties_changed(m->bz, path, iface, prop, NULL);
}

/* Several properties in ONE PropertiesChanged, as gdbus batches what changed in one main loop turn. */
static void props_changed_list(Mock *m, const char *path, const char *iface, const char *const *props) {
        if (m->bz && props[0])
                (void) sd_bus_emit_properties_changed_strv(m->bz, path, iface, (char **) props);
}

/* A property that stopped existing (bluez's exists() turned false): listed as invalidated. */
static void prop_invalidated(Mock *m, const char *path, const char *iface, const char *prop) {
        _cleanup_(sd_bus_message_unrefp) sd_bus_message *s = NULL;

        if (!m->bz)
                return;
        if (sd_bus_message_new_signal(m->bz, &s, path, "org.freedesktop.DBus.Properties", "PropertiesChanged") < 0 ||
            sd_bus_message_append(s, "sa{sv}as", iface, 0, 1, prop) < 0)
                return;
        (void) sd_bus_send(m->bz, s, NULL);
}

static uint64_t fw_now(void) {
        return clock_mono_usec();
}

static void fw_kick(Dev *d);
static void link_lost(Dev *d, bool emit);
static void dev_unpublish(Dev *d);
static void gatt_unexport(Dev *d);
static void scan_now(Mock *m);

/* ---- the GATT database of a peripheral ---- */

static Attr *db_add(Dev *d, uint16_t *h, Kind k, const char *uuid16_or_128, Attr *parent,
                    uint8_t props, Role role) {
        Attr *a = &d->attrs[d->n_attrs++];

        *a = (Attr) { .dev = d, .kind = k, .role = role, .parent = parent, .props = props, .notify_fd = -1 };
        (void) uuid_normalize(uuid16_or_128, a->uuid);
        a->handle = *h;
        *h += k == K_CHR ? 2 : 1;     /* a characteristic is its declaration plus its value */

        const Attr *svc = k == K_SVC ? a : k == K_CHR ? parent : parent->parent;
        a->exported = !streq(svc->uuid, "00001800-0000-1000-8000-00805f9b34fb");
        if (k == K_SVC)
                snprintf(a->path, sizeof a->path, "%s/service%04x", d->path, a->handle);
        else if (k == K_CHR)
                snprintf(a->path, sizeof a->path, "%.100s/char%04x", parent->path, a->handle);
        else
                snprintf(a->path, sizeof a->path, "%.110s/desc%04x", parent->path, a->handle);
        return a;
}

static Attr *db_chr(Dev *d, uint16_t *h, Attr *svc, const char *uuid, uint8_t props, Role role) {
        Attr *c = db_add(d, h, K_CHR, uuid, svc, props, role);
        if (props & (P_NOTIFY | P_INDICATE))
                db_add(d, h, K_DESC, "2902", c, 0, R_NONE);
        return c;
}

static void db_build(Dev *d) {
        uint16_t h = d->handle_base ? d->handle_base : 1;
        Attr *s;

        d->n_attrs = 0;
        if (d->pnp) {
                /* A BlueZ-based peer: its bluetoothd's own services come first (gatt-database.c:
                 * GAP, GATT, then a Device Information service with only the PnP ID). */
                s = db_add(d, &h, K_SVC, "1800", NULL, 0, R_NONE);
                db_chr(d, &h, s, "2a00", P_READ, R_GAP_NAME);
                db_chr(d, &h, s, "2a01", P_READ, R_GAP_APPEARANCE);
                db_chr(d, &h, s, "2aa6", P_READ, R_NONE);
                s = db_add(d, &h, K_SVC, "1801", NULL, 0, R_NONE);
                db_chr(d, &h, s, "2a05", P_INDICATE, R_SVC_CHANGED);
                db_chr(d, &h, s, "2b29", P_READ | P_WRITE, R_NONE);
                db_chr(d, &h, s, "2b2a", P_READ, R_NONE);
                db_chr(d, &h, s, "2b3a", P_READ, R_NONE);
                s = db_add(d, &h, K_SVC, "180a", NULL, 0, R_NONE);
                db_chr(d, &h, s, "2a50", P_READ, R_PNP);
        } else {
                s = db_add(d, &h, K_SVC, "1801", NULL, 0, R_NONE);
                db_chr(d, &h, s, "2a05", P_INDICATE, R_SVC_CHANGED);
                s = db_add(d, &h, K_SVC, "1800", NULL, 0, R_NONE);
                db_chr(d, &h, s, "2a00", P_READ, R_GAP_NAME);
                db_chr(d, &h, s, "2a01", P_READ, R_GAP_APPEARANCE);
        }
        /* The peripheral's own Device Information: the strings only. */
        s = db_add(d, &h, K_SVC, "180a", NULL, 0, R_NONE);
        db_chr(d, &h, s, "2a29", P_READ, R_MANUF);
        if (is_wrap(d)) {
                db_chr(d, &h, s, "2a24", P_READ, R_MODEL);
                db_chr(d, &h, s, "2a25", P_READ, R_SERIAL);
                db_chr(d, &h, s, "2a26", P_READ, R_FIRMWARE);
                s = db_add(d, &h, K_SVC, "180f", NULL, 0, R_NONE);
                db_chr(d, &h, s, "2a19", P_READ | P_NOTIFY, R_BATTERY);
                s = db_add(d, &h, K_SVC, "1809", NULL, 0, R_NONE);
                db_chr(d, &h, s, "2a1c", P_INDICATE, R_TEMP);
                s = db_add(d, &h, K_SVC, WIRE_UUID_THERAPY_SERVICE, NULL, 0, R_NONE);
                db_chr(d, &h, s, WIRE_UUID_STATUS, P_READ | P_NOTIFY, R_STATUS);
                db_chr(d, &h, s, WIRE_UUID_BUTTON, P_NOTIFY, R_BUTTON);
                Attr *cp = db_chr(d, &h, s, WIRE_UUID_CONTROL_POINT, P_WRITE | P_INDICATE, R_CP);
                cp->encrypted_write = true;
        } else
                for (size_t i = 0; i < ELEMENTSOF(d->adv_uuids) && d->adv_uuids[i]; i++)
                        db_add(d, &h, K_SVC, d->adv_uuids[i], NULL, 0, R_NONE);
}

/* What a read of a characteristic returns on the peripheral. */
static size_t peer_read(Dev *d, Attr *a, uint8_t *out, size_t max) {
        char s[40];
        size_t n = 0;

        switch (a->role) {
        case R_MANUF: n = (size_t) snprintf(s, sizeof s, "%s", is_wrap(d) ? "KneeWrap Labs" : "Acme"); break;
        case R_MODEL:
                if (d->model_len) {
                        n = d->model_len < max ? d->model_len : max;
                        memcpy(out, d->model, n);
                        return n;
                }
                n = (size_t) snprintf(s, sizeof s, "KW-1");
                break;
        case R_SERIAL:
                n = (size_t) snprintf(s, sizeof s, "KW%c%c%c%c%c%c", d->address[9], d->address[10],
                                      d->address[12], d->address[13], d->address[15], d->address[16]);
                break;
        case R_FIRMWARE: n = (size_t) snprintf(s, sizeof s, "1.0.%u", d->handle_base); break;
        case R_GAP_NAME: n = (size_t) snprintf(s, sizeof s, "%s", d->gap_name[0] ? d->gap_name : d->adv_name); break;
        case R_STATUS: return wrapfw_read_status(d->fw, fw_now(), out);
        case R_BATTERY: out[0] = d->fw ? wrapfw_battery(d->fw) : d->battery_pct; return 1;
        case R_PNP: {
                /* Vendor ID source 2 (USB-IF), vendor 0x1d6b, product 0x0246, version 0x0100. */
                const uint8_t pnp[7] = { 0x02, 0x6b, 0x1d, 0x46, 0x02, 0x00, 0x01 };
                memcpy(out, pnp, sizeof pnp);
                return sizeof pnp;
        }
        default:
                return 0;
        }
        if (n > max)
                n = max;
        memcpy(out, s, n);
        return n;
}

/* ---- GATT objects (src/gatt-client.c) ---- */

typedef struct {
        uint16_t *offset;
        const char **type;
} Options;

static int parse_option(sd_bus_message *m, const char *key, const char *contents, void *userdata) {
        Options *o = userdata;
        int r;

        if (strcasecmp(key, "offset") == 0) {
                if (!streq(contents, "q"))
                        return -EINVAL;
                r = sd_bus_message_read(m, "v", "q", o->offset);
        } else if (o->type && strcasecmp(key, "type") == 0) {
                if (!streq(contents, "s"))
                        return -EINVAL;
                r = sd_bus_message_read(m, "v", "s", o->type);
        } else
                return 0;
        return r < 0 ? r : 1;
}

static int parse_options(sd_bus_message *m, uint16_t *offset, const char **type) {
        Options o = { .offset = offset, .type = type };

        return bus_message_read_dict(m, parse_option, &o);
}

static int reply_bytes(sd_bus_message *call, const uint8_t *b, size_t n) {
        _cleanup_(sd_bus_message_unrefp) sd_bus_message *reply = NULL;
        int r;

        r = sd_bus_message_new_method_return(call, &reply);
        if (r < 0)
                return r;
        r = sd_bus_message_append_array(reply, 'y', b, n);
        if (r < 0)
                return r;
        return sd_bus_send(NULL, reply, NULL);
}

static bool gatt_ready(const Dev *d) {
        return d->link == LINK_UP && d->resolved;
}

/* The cached Value changes, and PropertiesChanged carries it (also when equal: a notification). */
static void attr_store(Attr *a, const uint8_t *b, size_t n) {
        if (n > sizeof a->value)
                n = sizeof a->value;
        memcpy(a->value, b, n);
        a->value_len = n;
        props_changed(a->dev->m, a->path, a->kind == K_DESC ? "org.bluez.GattDescriptor1" :
                      "org.bluez.GattCharacteristic1", "Value");
}

static int method_read_value(sd_bus_message *msg, void *userdata, sd_bus_error *error) {
        Attr *a = userdata;
        Dev *d = a->dev;
        uint16_t offset = 0;
        uint8_t b[64];
        size_t n;

        if (d->link != LINK_UP || !d->resolved)
                return sd_bus_reply_method_errorf(msg, ERR "Failed", "Not connected");
        if (parse_options(msg, &offset, NULL) < 0)
                return sd_bus_reply_method_errorf(msg, ERR "InvalidArguments", "Invalid arguments in method call");

        if (a->kind == K_DESC) {
                Attr *c = a->parent;
                uint16_t v = n_subs(c) > 0 || (c->role == R_BATTERY && d->battery_shown) ?
                        ((c->props & P_NOTIFY) ? 1 : 2) : 0;
                le16_put(b, v);
                n = 2;
        } else {
                if (!(a->props & P_READ))
                        return sd_bus_reply_method_errorf(msg, ERR "NotPermitted", "Read not permitted");
                n = peer_read(d, a, b, sizeof b);
                fw_kick(d);
        }
        if (offset > n)
                return sd_bus_reply_method_errorf(msg, ERR "InvalidArguments", "Invalid offset");
        attr_store(a, b + offset, n - offset);
        return reply_bytes(msg, b + offset, n - offset);
}

static void log_cp(Mock *m, Dev *d, const uint8_t *b, size_t n, uint8_t result) {
        LogEntry *e = realloc(m->log, (m->n_log + 1) * sizeof *e);
        if (!e)
                return;
        m->log = e;
        e = &m->log[m->n_log++];
        *e = (LogEntry) { .t_usec = (int64_t) fw_now(), .result = result };
        memcpy(e->address, d->address, sizeof e->address);
        for (size_t i = 0; i < n && i < 64; i++)
                snprintf(e->hex + 2 * i, 3, "%02x", b[i]);
}

/* The write reaches the peripheral: the ATT write response, then what the wrap sends. */
static void write_deliver(Attr *a) {
        Dev *d = a->dev;

        if (a->role == R_CP && d->fw) {
                uint8_t result = wrapfw_write_cp(d->fw, a->write_buf, a->write_len, fw_now(), NULL);
                log_cp(d->m, d, a->write_buf, a->write_len, result);
                log_wrap(LOG_INFO, d->address, "control point write of %zu bytes: %s",
                         a->write_len, wire_result_to_string(result));
        }
        reply_ok(&a->write_msg);
        fw_kick(d);
}

static void pair_start(Dev *d);

static int method_write_value(sd_bus_message *msg, void *userdata, sd_bus_error *error) {
        Attr *a = userdata;
        Dev *d = a->dev;
        const void *v;
        size_t n;
        uint16_t offset = 0;
        const char *type = NULL;
        int r;

        if (d->link != LINK_UP || !d->resolved)
                return sd_bus_reply_method_errorf(msg, ERR "Failed", "Not connected");
        if (a->write_msg)
                return sd_bus_reply_method_errorf(msg, ERR "InProgress", "In Progress");
        r = sd_bus_message_read_array(msg, 'y', &v, &n);
        if (r < 0 || parse_options(msg, &offset, &type) < 0)
                return sd_bus_reply_method_errorf(msg, ERR "InvalidArguments", "Invalid arguments in method call");

        if (a->kind == K_DESC) {
                /* CCCDs belong to StartNotify/StopNotify. */
                if (streq(a->uuid, UUID_CCCD))
                        return sd_bus_reply_method_errorf(msg, ERR "NotPermitted", "Write not permitted");
                return sd_bus_reply_method_errorf(msg, ERR "NotPermitted", "Write not permitted");
        }

        if (type && strcasecmp(type, "command") == 0) {
                /* A write command is sent whatever the flags say; the peripheral drops what it
                 * does not support, and nobody hears back. */
                if (offset)
                        return sd_bus_reply_method_errorf(msg, ERR "Failed", "Failed to initiate write");
                if (a->props & P_WWR && a->role == R_CP && d->fw)
                        (void) wrapfw_write_cp(d->fw, v, n, fw_now(), NULL);
                log_wrap(LOG_INFO, d->address, "write command to %s ignored by the peripheral", a->uuid);
                return sd_bus_reply_method_return(msg, NULL);
        }
        if (type && strcasecmp(type, "request") && strcasecmp(type, "reliable"))
                return sd_bus_reply_method_errorf(msg, ERR "NotSupported", "Operation is not supported");
        if (!type && !(a->props & P_WRITE))
                return sd_bus_reply_method_errorf(msg, ERR "NotSupported", "Operation is not supported");
        if (!(a->props & P_WRITE))
                return sd_bus_reply_method_errorf(msg, ERR "NotPermitted", "Write not permitted");
        if (n > sizeof a->write_buf)
                return sd_bus_reply_method_errorf(msg, ERR "InvalidArguments", "Invalid Length");

        memcpy(a->write_buf, v, n);
        a->write_len = n;
        a->write_msg = sd_bus_message_ref(msg);

        if (a->encrypted_write && !d->encrypted) {
                /* ATT says "insufficient encryption"; the kernel raises security (pairs) and
                 * bluez resends the request. */
                log_wrap(LOG_INFO, d->address, "encrypted write on an open link: pairing first");
                if (!d->t_pair)
                        pair_start(d);
                return 1;
        }
        write_deliver(a);
        return 1;
}

static void notify_recompute(Attr *a) {
        bool want = n_subs(a) > 0;

        if (want == a->notifying)
                return;
        /* Like 5.66: Notifying turns true once the CCCD write succeeded, i.e. when connected. */
        if (want && !gatt_ready(a->dev))
                return;
        a->notifying = want;
        props_changed(a->dev->m, a->path, "org.bluez.GattCharacteristic1", "Notifying");
}

static int method_start_notify(sd_bus_message *msg, void *userdata, sd_bus_error *error) {
        Attr *a = userdata;
        const char *owner = sd_bus_message_get_sender(msg);

        if (a->dev->link == LINK_DISCONNECTING)
                return sd_bus_reply_method_errorf(msg, ERR "NotConnected", "Not Connected");
        if (!(a->props & (P_NOTIFY | P_INDICATE)))
                return sd_bus_reply_method_errorf(msg, ERR "NotSupported", "Operation is not supported");
        if (a->notify_fd >= 0)
                return sd_bus_reply_method_errorf(msg, ERR "NotPermitted", "Notify acquired");
        if (has_sub(a, owner))
                return sd_bus_reply_method_return(msg, NULL);
        for (size_t i = 0; i < MAX_SUBS; i++)
                if (!a->subs[i]) {
                        a->subs[i] = strdup(owner);
                        if (!a->subs[i])
                                return -ENOMEM;
                        /* Not connected: success now, registered when the link is back. */
                        notify_recompute(a);
                        return sd_bus_reply_method_return(msg, NULL);
                }
        return sd_bus_reply_method_errorf(msg, ERR "Failed", "Failed allocate notify session");
}

static bool sub_remove(Attr *a, const char *owner) {
        for (size_t i = 0; i < MAX_SUBS; i++)
                if (a->subs[i] && streq(a->subs[i], owner)) {
                        a->subs[i] = mfree_str(a->subs[i]);
                        return true;
                }
        return false;
}

static void notify_release(Attr *a);

static int method_stop_notify(sd_bus_message *msg, void *userdata, sd_bus_error *error) {
        Attr *a = userdata;

        if (a->notify_fd >= 0) {
                notify_release(a);
                return sd_bus_reply_method_return(msg, NULL);
        }
        if (!sub_remove(a, sd_bus_message_get_sender(msg)))
                return sd_bus_reply_method_errorf(msg, ERR "Failed", "No notify session started");
        if (n_subs(a) == 0 && a->notifying) {
                a->notifying = false;
                props_changed(a->dev->m, a->path, "org.bluez.GattCharacteristic1", "Notifying");
        }
        return sd_bus_reply_method_return(msg, NULL);
}

static int method_acquire_write(sd_bus_message *msg, void *userdata, sd_bus_error *error) {
        Attr *a = userdata;

        if (a->dev->link != LINK_UP)
                return sd_bus_reply_method_errorf(msg, ERR "Failed", "Not connected");
        /* AcquireWrite needs write-without-response, which no characteristic here has. */
        return sd_bus_reply_method_errorf(msg, ERR "NotSupported", "Operation is not supported");
}

static void notify_release(Attr *a) {
        if (a->notify_fd < 0)
                return;
        a->notify_io = sd_event_source_disable_unref(a->notify_io);
        close(a->notify_fd);
        a->notify_fd = -1;
        props_changed(a->dev->m, a->path, "org.bluez.GattCharacteristic1", "NotifyAcquired");
}

static int on_notify_hup(sd_event_source *s, int fd, uint32_t revents, void *userdata) {
        /* The client closed its end: that is how it releases the lock. */
        notify_release(userdata);
        return 0;
}

static int method_acquire_notify(sd_bus_message *msg, void *userdata, sd_bus_error *error) {
        Attr *a = userdata;
        int fds[2], r;

        if (!gatt_ready(a->dev))
                return sd_bus_reply_method_errorf(msg, ERR "Failed", "Not connected");
        if (a->notify_fd >= 0)
                return sd_bus_reply_method_errorf(msg, ERR "NotPermitted", "Notify acquired");
        if (n_subs(a) > 0)
                return sd_bus_reply_method_errorf(msg, ERR "InProgress", "In Progress");
        if (!(a->props & P_NOTIFY))
                return sd_bus_reply_method_errorf(msg, ERR "NotSupported", "Operation is not supported");
        if (socketpair(AF_UNIX, SOCK_SEQPACKET | SOCK_NONBLOCK | SOCK_CLOEXEC, 0, fds) < 0)
                return sd_bus_reply_method_errorf(msg, ERR "Failed", "%s", strerror(errno));
        r = sd_event_add_io(a->dev->m->ev, &a->notify_io, fds[0], EPOLLRDHUP, on_notify_hup, a);
        if (r >= 0)
                r = sd_bus_reply_method_return(msg, "hq", fds[1], (uint16_t) 247);
        close(fds[1]);
        if (r < 0) {
                a->notify_io = sd_event_source_disable_unref(a->notify_io);
                close(fds[0]);
                return r;
        }
        a->notify_fd = fds[0];
        props_changed(a->dev->m, a->path, "org.bluez.GattCharacteristic1", "NotifyAcquired");
        return 1;
}

static int prop_uuid(sd_bus *bus, const char *path, const char *iface, const char *prop,
                     sd_bus_message *reply, void *userdata, sd_bus_error *error) {
        Attr *a = userdata;
        return sd_bus_message_append(reply, "s", a->uuid);
}

static int prop_parent(sd_bus *bus, const char *path, const char *iface, const char *prop,
                       sd_bus_message *reply, void *userdata, sd_bus_error *error) {
        Attr *a = userdata;
        return sd_bus_message_append(reply, "o", a->parent ? a->parent->path : a->dev->path);
}

static int prop_primary(sd_bus *bus, const char *path, const char *iface, const char *prop,
                        sd_bus_message *reply, void *userdata, sd_bus_error *error) {
        return sd_bus_message_append(reply, "b", 1);
}

static int prop_includes(sd_bus *bus, const char *path, const char *iface, const char *prop,
                         sd_bus_message *reply, void *userdata, sd_bus_error *error) {
        return sd_bus_message_append(reply, "ao", 0);
}

static int prop_value(sd_bus *bus, const char *path, const char *iface, const char *prop,
                      sd_bus_message *reply, void *userdata, sd_bus_error *error) {
        Attr *a = userdata;
        return sd_bus_message_append_array(reply, 'y', a->value, a->value_len);
}

static int prop_notifying(sd_bus *bus, const char *path, const char *iface, const char *prop,
                          sd_bus_message *reply, void *userdata, sd_bus_error *error) {
        Attr *a = userdata;
        return sd_bus_message_append(reply, "b", a->notifying);
}

static int prop_flags(sd_bus *bus, const char *path, const char *iface, const char *prop,
                      sd_bus_message *reply, void *userdata, sd_bus_error *error) {
        /* The client sees the properties byte only: "encrypt-write" is a server-side permission. */
        static const struct { uint8_t bit; const char *name; } map[] = {
                { P_BROADCAST, "broadcast" }, { P_READ, "read" }, { P_WWR, "write-without-response" },
                { P_WRITE, "write" }, { P_NOTIFY, "notify" }, { P_INDICATE, "indicate" },
        };
        Attr *a = userdata;
        int r = sd_bus_message_open_container(reply, 'a', "s");
        for (size_t i = 0; r >= 0 && i < ELEMENTSOF(map); i++)
                if (a->props & map[i].bit)
                        r = sd_bus_message_append(reply, "s", map[i].name);
        return r < 0 ? r : sd_bus_message_close_container(reply);
}

static int prop_notify_acquired(sd_bus *bus, const char *path, const char *iface, const char *prop,
                                sd_bus_message *reply, void *userdata, sd_bus_error *error) {
        Attr *a = userdata;
        return sd_bus_message_append(reply, "b", a->notify_fd >= 0);
}

static int prop_mtu(sd_bus *bus, const char *path, const char *iface, const char *prop,
                    sd_bus_message *reply, void *userdata, sd_bus_error *error) {
        return sd_bus_message_append(reply, "q", (uint16_t) 247);
}

static const sd_bus_vtable service_vtable[] = {
        SD_BUS_VTABLE_START(0),
        SD_BUS_PROPERTY("UUID", "s", prop_uuid, 0, SD_BUS_VTABLE_PROPERTY_CONST),
        SD_BUS_PROPERTY("Device", "o", prop_parent, 0, SD_BUS_VTABLE_PROPERTY_CONST),
        SD_BUS_PROPERTY("Primary", "b", prop_primary, 0, SD_BUS_VTABLE_PROPERTY_CONST),
        SD_BUS_PROPERTY("Includes", "ao", prop_includes, 0, SD_BUS_VTABLE_PROPERTY_EMITS_CHANGE),
        SD_BUS_VTABLE_END
};

#define CHR_METHODS \
        SD_BUS_METHOD_WITH_ARGS("ReadValue", SD_BUS_ARGS("a{sv}", options), SD_BUS_RESULT("ay", value), \
                                method_read_value, 0), \
        SD_BUS_METHOD_WITH_ARGS("WriteValue", SD_BUS_ARGS("ay", value, "a{sv}", options), SD_BUS_NO_RESULT, \
                                method_write_value, 0), \
        SD_BUS_METHOD_WITH_ARGS("AcquireWrite", SD_BUS_ARGS("a{sv}", options), SD_BUS_RESULT("h", fd, "q", mtu), \
                                method_acquire_write, 0), \
        SD_BUS_METHOD_WITH_ARGS("AcquireNotify", SD_BUS_ARGS("a{sv}", options), SD_BUS_RESULT("h", fd, "q", mtu), \
                                method_acquire_notify, 0), \
        SD_BUS_METHOD("StartNotify", "", "", method_start_notify, 0), \
        SD_BUS_METHOD("StopNotify", "", "", method_stop_notify, 0), \
        SD_BUS_PROPERTY("UUID", "s", prop_uuid, 0, SD_BUS_VTABLE_PROPERTY_CONST), \
        SD_BUS_PROPERTY("Service", "o", prop_parent, 0, SD_BUS_VTABLE_PROPERTY_CONST), \
        SD_BUS_PROPERTY("Value", "ay", prop_value, 0, SD_BUS_VTABLE_PROPERTY_EMITS_CHANGE)

/* As 5.66: Notifying exists where notify or indicate is set, NotifyAcquired where notify is. */
static const sd_bus_vtable chr_vtable_notify[] = {
        SD_BUS_VTABLE_START(0),
        CHR_METHODS,
        SD_BUS_PROPERTY("Notifying", "b", prop_notifying, 0, SD_BUS_VTABLE_PROPERTY_EMITS_CHANGE),
        SD_BUS_PROPERTY("Flags", "as", prop_flags, 0, SD_BUS_VTABLE_PROPERTY_CONST),
        SD_BUS_PROPERTY("NotifyAcquired", "b", prop_notify_acquired, 0, SD_BUS_VTABLE_PROPERTY_EMITS_CHANGE),
        SD_BUS_VTABLE_END
};

static const sd_bus_vtable chr_vtable_indicate[] = {
        SD_BUS_VTABLE_START(0),
        CHR_METHODS,
        SD_BUS_PROPERTY("Notifying", "b", prop_notifying, 0, SD_BUS_VTABLE_PROPERTY_EMITS_CHANGE),
        SD_BUS_PROPERTY("Flags", "as", prop_flags, 0, SD_BUS_VTABLE_PROPERTY_CONST),
        SD_BUS_VTABLE_END
};

static const sd_bus_vtable chr_vtable_plain[] = {
        SD_BUS_VTABLE_START(0),
        CHR_METHODS,
        SD_BUS_PROPERTY("Flags", "as", prop_flags, 0, SD_BUS_VTABLE_PROPERTY_CONST),
        SD_BUS_VTABLE_END
};

/* MTU exists only while connected: a second vtable of the same interface, added and removed. */
static const sd_bus_vtable chr_vtable_mtu[] = {
        SD_BUS_VTABLE_START(0),
        SD_BUS_PROPERTY("MTU", "q", prop_mtu, 0, SD_BUS_VTABLE_PROPERTY_EMITS_CHANGE),
        SD_BUS_VTABLE_END
};

static const sd_bus_vtable desc_vtable[] = {
        SD_BUS_VTABLE_START(0),
        SD_BUS_METHOD_WITH_ARGS("ReadValue", SD_BUS_ARGS("a{sv}", options), SD_BUS_RESULT("ay", value),
                                method_read_value, 0),
        SD_BUS_METHOD_WITH_ARGS("WriteValue", SD_BUS_ARGS("ay", value, "a{sv}", options), SD_BUS_NO_RESULT,
                                method_write_value, 0),
        SD_BUS_PROPERTY("UUID", "s", prop_uuid, 0, SD_BUS_VTABLE_PROPERTY_CONST),
        SD_BUS_PROPERTY("Characteristic", "o", prop_parent, 0, SD_BUS_VTABLE_PROPERTY_CONST),
        SD_BUS_PROPERTY("Value", "ay", prop_value, 0, SD_BUS_VTABLE_PROPERTY_EMITS_CHANGE),
        SD_BUS_VTABLE_END
};

static void mtu_show(Dev *d, bool on) {
        Mock *m = d->m;

        for (size_t i = 0; i < d->n_attrs; i++) {
                Attr *a = &d->attrs[i];
                if (a->kind != K_CHR || !a->slot)
                        continue;
                if (on && !a->slot_mtu && m->bz) {
                        if (sd_bus_add_object_vtable(m->bz, &a->slot_mtu, a->path, "org.bluez.GattCharacteristic1",
                                                     chr_vtable_mtu, &a->value_len) >= 0)
                                props_changed(m, a->path, "org.bluez.GattCharacteristic1", "MTU");
                } else if (!on && a->slot_mtu) {
                        a->slot_mtu = sd_bus_slot_unref(a->slot_mtu);
                        prop_invalidated(m, a->path, "org.bluez.GattCharacteristic1", "MTU");
                }
        }
}

static void gatt_export(Dev *d) {
        Mock *m = d->m;

        if (d->gatt_exported || !m->bz)
                return;
        for (size_t i = 0; i < d->n_attrs; i++) {
                Attr *a = &d->attrs[i];
                const char *iface;
                const sd_bus_vtable *vt;
                int r;

                if (!a->exported)
                        continue;
                if (a->kind == K_SVC) {
                        iface = "org.bluez.GattService1";
                        vt = service_vtable;
                } else if (a->kind == K_CHR) {
                        iface = "org.bluez.GattCharacteristic1";
                        vt = a->props & P_NOTIFY ? chr_vtable_notify :
                             a->props & P_INDICATE ? chr_vtable_indicate : chr_vtable_plain;
                } else {
                        iface = "org.bluez.GattDescriptor1";
                        vt = desc_vtable;
                }
                r = sd_bus_add_object_vtable(m->bz, &a->slot, a->path, iface, vt, a);
                if (r < 0) {
                        log_error_errno(r, "Failed to export %s: %s", a->path, strerror(abs(r)));
                        continue;
                }
                if (a->kind == K_CHR && d->link == LINK_UP)
                        (void) sd_bus_add_object_vtable(m->bz, &a->slot_mtu, a->path, "org.bluez.GattCharacteristic1",
                                                        chr_vtable_mtu, &a->value_len);
                (void) sd_bus_emit_object_added(m->bz, a->path);
        }
        d->gatt_exported = true;
}

static void gatt_unexport(Dev *d) {
        for (size_t i = d->n_attrs; i > 0; i--) {
                Attr *a = &d->attrs[i - 1];
                if (!a->slot)
                        continue;
                if (d->m->bz)
                        (void) sd_bus_emit_object_removed(d->m->bz, a->path);
                notify_release(a);
                a->slot_mtu = sd_bus_slot_unref(a->slot_mtu);
                a->slot = sd_bus_slot_unref(a->slot);
                reply_err(&a->write_msg, ERR "Failed", "Operation failed");
                a->notifying = false;
                a->value_len = 0;
        }
        d->gatt_exported = false;
}

/* ---- Battery1 (profiles/battery) ---- */

static int prop_percentage(sd_bus *bus, const char *path, const char *iface, const char *prop,
                           sd_bus_message *reply, void *userdata, sd_bus_error *error) {
        Dev *d = userdata;
        return sd_bus_message_append(reply, "y", d->battery_pct);
}

static int prop_source(sd_bus *bus, const char *path, const char *iface, const char *prop,
                       sd_bus_message *reply, void *userdata, sd_bus_error *error) {
        return sd_bus_message_append(reply, "s", "GATT Battery Service");
}

static const sd_bus_vtable battery_vtable[] = {
        SD_BUS_VTABLE_START(0),
        SD_BUS_PROPERTY("Percentage", "y", prop_percentage, 0, SD_BUS_VTABLE_PROPERTY_EMITS_CHANGE),
        SD_BUS_PROPERTY("Source", "s", prop_source, 0, SD_BUS_VTABLE_PROPERTY_CONST),
        SD_BUS_VTABLE_END
};

static void battery_show(Dev *d, bool on) {
        Mock *m = d->m;

        if (on && !d->battery_shown && m->bz && attr_by_role(d, R_BATTERY)) {
                uint8_t b[4];
                /* The plugin reads the level, enables notifications, then registers Battery1. */
                if (peer_read(d, attr_by_role(d, R_BATTERY), b, sizeof b) == 1)
                        d->battery_pct = b[0];
                if (sd_bus_add_object_vtable(m->bz, &d->slot_batt, d->path, "org.bluez.Battery1",
                                             battery_vtable, d) >= 0) {
                        const char *ifs[] = { "org.bluez.Battery1", NULL };
                        (void) sd_bus_emit_interfaces_added_strv(m->bz, d->path, (char **) ifs);
                        d->battery_shown = true;
                }
        } else if (!on && d->battery_shown) {
                const char *ifs[] = { "org.bluez.Battery1", NULL };
                if (m->bz)
                        (void) sd_bus_emit_interfaces_removed_strv(m->bz, d->path, (char **) ifs);
                d->slot_batt = sd_bus_slot_unref(d->slot_batt);
                d->battery_shown = false;
        }
}

/* ---- the wrap's firmware and what it sends ---- */

/*
 * 5.66 registers one ATT notify callback per D-Bus client session, and each one stores the
 * value and flushes PropertiesChanged: with two subscribed clients, every notification is
 * signalled twice. Reproduced, since a gateway must cope with it.
 */
static void notify_clients(Attr *a, const uint8_t *b, size_t n) {
        size_t k = n_subs(a);

        if (!a->slot)
                return;
        if (a->notify_fd >= 0) {
                /* Acquired: the value goes down the socket, and Value is left alone. */
                (void) send(a->notify_fd, b, n, MSG_NOSIGNAL | MSG_DONTWAIT);
                return;
        }
        for (size_t i = 0; i < k; i++)
                attr_store(a, b, n);
}

static void fw_emit(const WrapFwOutput *o, void *userdata) {
        Dev *d = userdata;
        static const Role roles[] = {
                [WRAPFW_STATUS] = R_STATUS, [WRAPFW_BUTTON] = R_BUTTON, [WRAPFW_CONTROL_POINT] = R_CP,
                [WRAPFW_TEMPERATURE] = R_TEMP, [WRAPFW_BATTERY] = R_BATTERY,
        };
        Attr *a = attr_by_role(d, roles[o->channel]);

        /* Only a connected, subscribed central hears anything; the rest is lost in the air. */
        if (!a || !gatt_ready(d))
                return;
        if (a->role == R_BATTERY && d->battery_shown && o->value[0] != d->battery_pct) {
                d->battery_pct = o->value[0];
                props_changed(d->m, d->path, "org.bluez.Battery1", "Percentage");
        }
        notify_clients(a, o->value, o->size);
}

static int on_fw_timer(sd_event_source *s, uint64_t usec, void *userdata) {
        fw_kick(userdata);
        return 0;
}

static void fw_kick(Dev *d) {
        uint64_t next;

        if (!d->fw)
                return;
        wrapfw_advance(d->fw, fw_now(), fw_emit, d);
        next = wrapfw_next_deadline(d->fw);
        if (next == UINT64_MAX) {
                timer_stop(&d->fw_timer);
                return;
        }
        /* The firmware runs on the scaled clock; sd-event wants the real one. */
        d->fw_timer = sd_event_source_disable_unref(d->fw_timer);
        (void) sd_event_add_time(d->m->ev, &d->fw_timer, CLOCK_MONOTONIC,
                                 clock_mono_to_real_usec(next), 0, on_fw_timer, d);
}

/* ---- Device1 (src/device.c) ---- */

#define DEV_PROP(fn, sig, expr) \
        static int fn(sd_bus *bus, const char *path, const char *iface, const char *prop, \
                      sd_bus_message *reply, void *userdata, sd_bus_error *error) { \
                Dev *d = userdata; \
                return sd_bus_message_append(reply, sig, expr); \
        }

DEV_PROP(prop_dev_address, "s", d->address)
DEV_PROP(prop_dev_address_type, "s", d->random_address ? "random" : "public")
DEV_PROP(prop_dev_name, "s", d->name)
DEV_PROP(prop_dev_alias, "s", d->alias[0] ? d->alias : d->name)
DEV_PROP(prop_dev_paired, "b", d->paired)
DEV_PROP(prop_dev_bonded, "b", d->bonded)
DEV_PROP(prop_dev_trusted, "b", d->trusted)
DEV_PROP(prop_dev_blocked, "b", d->blocked)
DEV_PROP(prop_dev_legacy, "b", d->legacy)
DEV_PROP(prop_dev_connected, "b", d->link == LINK_UP || d->link == LINK_DISCONNECTING)
DEV_PROP(prop_dev_resolved, "b", d->resolved)

static int prop_dev_rssi(sd_bus *bus, const char *path, const char *iface, const char *prop,
                         sd_bus_message *reply, void *userdata, sd_bus_error *error) {
        const int16_t *rssi = userdata;
        return sd_bus_message_append(reply, "n", *rssi);
}

static int prop_dev_adapter(sd_bus *bus, const char *path, const char *iface, const char *prop,
                            sd_bus_message *reply, void *userdata, sd_bus_error *error) {
        return sd_bus_message_append(reply, "o", ADAPTER_PATH);
}

static int prop_dev_uuids(sd_bus *bus, const char *path, const char *iface, const char *prop,
                          sd_bus_message *reply, void *userdata, sd_bus_error *error) {
        Dev *d = userdata;
        const char *list[MAX_ATTRS];
        size_t n = 0;
        int r;

        if (d->resolved || d->db_cached) {
                /* All primary services, sorted, once they were discovered. */
                for (size_t i = 0; i < d->n_attrs; i++) {
                        bool dup = false;
                        if (d->attrs[i].kind != K_SVC)
                                continue;
                        for (size_t j = 0; j < n; j++)
                                dup = dup || streq(list[j], d->attrs[i].uuid);
                        if (!dup)
                                list[n++] = d->attrs[i].uuid;
                }
                for (size_t i = 1; i < n; i++)
                        for (size_t j = i; j > 0 && strcmp(list[j - 1], list[j]) > 0; j--) {
                                const char *t = list[j];
                                list[j] = list[j - 1];
                                list[j - 1] = t;
                        }
        } else
                for (size_t i = 0; i < ELEMENTSOF(d->adv_uuids) && d->adv_uuids[i]; i++)
                        list[n++] = d->adv_uuids[i];

        r = sd_bus_message_open_container(reply, 'a', "s");
        for (size_t i = 0; r >= 0 && i < n; i++)
                r = sd_bus_message_append(reply, "s", list[i]);
        return r < 0 ? r : sd_bus_message_close_container(reply);
}

static int set_dev_bool(sd_bus *bus, const char *path, const char *iface, const char *prop,
                        sd_bus_message *value, void *userdata, sd_bus_error *error) {
        Dev *d = userdata;
        int b, r;

        r = sd_bus_message_read(value, "b", &b);
        if (r < 0)
                return r;
        if (streq(prop, "Trusted"))
                d->trusted = b;
        else {
                d->blocked = b;
                if (b && d->link != LINK_DOWN)
                        link_lost(d, true);
        }
        props_changed(d->m, d->path, "org.bluez.Device1", prop);
        return 0;
}

static int set_dev_alias(sd_bus *bus, const char *path, const char *iface, const char *prop,
                         sd_bus_message *value, void *userdata, sd_bus_error *error) {
        Dev *d = userdata;
        const char *s;
        int r;

        r = sd_bus_message_read(value, "s", &s);
        if (r < 0)
                return r;
        snprintf(d->alias, sizeof d->alias, "%s", s);   /* "" resets to the name */
        props_changed(d->m, d->path, "org.bluez.Device1", "Alias");
        return 0;
}

static void connect_start(Dev *d);

/* ---- the adapter's mgmt queue: bluetoothd sends the kernel one mgmt command at a time ---- */

static bool mgmt_busy(Mock *m, const Dev *self) {
        for (Dev *d = m->devs; d; d = d->next)
                if (d != self && d->pair_msg)
                        return true;
        return false;
}

/*
 * While another device's Pair (mgmt Pair Device) is in flight, a call that needs the mgmt
 * queue waits for it: it is queued here and handled again when the Pair is answered.
 * Returns true when queued.
 */
static bool mgmt_wait(Mock *m, Dev *self, sd_bus_message *msg, sd_bus_message_handler_t fn, void *userdata) {
        Queued *q;

        if (!mgmt_busy(m, self))
                return false;
        q = realloc(m->queue, (m->n_queue + 1) * sizeof *q);
        if (!q)
                return false;
        m->queue = q;
        m->queue[m->n_queue++] = (Queued) { .msg = sd_bus_message_ref(msg), .fn = fn, .userdata = userdata, .dev = self };
        log_debug("%s.%s waits for a Pair in flight", sd_bus_message_get_interface(msg), sd_bus_message_get_member(msg));
        return true;
}

static int on_mgmt_drain(sd_event_source *s, void *userdata) {
        Mock *m = userdata;
        Queued *q = m->queue;
        size_t n = m->n_queue;

        /* Handled in order; whatever finds a new Pair in flight queues itself again. */
        m->t_drain = sd_event_source_disable_unref(m->t_drain);
        m->queue = NULL;
        m->n_queue = 0;
        for (size_t i = 0; i < n; i++) {
                int r;

                if (q[i].dev && !q[i].dev->published)
                        r = sd_bus_reply_method_errorf(q[i].msg, "org.freedesktop.DBus.Error.UnknownObject",
                                                       "Unknown object '%s'.", sd_bus_message_get_path(q[i].msg));
                else
                        r = q[i].fn(q[i].msg, q[i].userdata, NULL);
                if (r < 0)
                        (void) sd_bus_reply_method_errno(q[i].msg, r, NULL);
                sd_bus_message_unref(q[i].msg);
        }
        free(q);
        return 0;
}

static void mgmt_kick(Mock *m) {
        if (m->n_queue > 0 && !m->t_drain)
                (void) sd_event_add_defer(m->ev, &m->t_drain, on_mgmt_drain, m);
}

static void mgmt_drop(Mock *m) {
        for (size_t i = 0; i < m->n_queue; i++)
                sd_bus_message_unref(m->queue[i].msg);
        m->queue = mfree_ptr(m->queue);
        m->n_queue = 0;
        m->t_drain = sd_event_source_disable_unref(m->t_drain);
}

/* The Pair call is answered (error NULL: it succeeded), and the mgmt queue moves on. */
static void pair_reply(Dev *d, const char *error, const char *text) {
        if (!d->pair_msg)
                return;
        if (error)
                reply_err(&d->pair_msg, error, text);
        else
                reply_ok(&d->pair_msg);
        mgmt_kick(d->m);
}

static int method_connect(sd_bus_message *msg, void *userdata, sd_bus_error *error) {
        Dev *d = userdata;

        if (d->link == LINK_UP)
                return sd_bus_reply_method_return(msg, NULL);
        if (d->link == LINK_CONNECTING || d->connect_msg)
                return sd_bus_reply_method_errorf(msg, ERR "Failed", "%s", strerror(EALREADY));
        /* The device stops being temporary at once; only the link waits for the mgmt queue. */
        d->temporary = false;
        timer_stop(&d->t_temp);
        if (mgmt_wait(d->m, d, msg, method_connect, d))
                return 1;
        if (!d->m->powered)
                return sd_bus_reply_method_errorf(msg, ERR "Failed", "%s", strerror(EIO));
        d->connect_msg = sd_bus_message_ref(msg);
        connect_start(d);
        return 1;
}

static void disconnect_request(Dev *d, sd_bus_message *msg);

static int method_disconnect(sd_bus_message *msg, void *userdata, sd_bus_error *error) {
        disconnect_request(userdata, msg);
        return 1;
}

static int method_pair(sd_bus_message *msg, void *userdata, sd_bus_error *error) {
        Dev *d = userdata;

        d->temporary = false;
        timer_stop(&d->t_temp);
        if (d->pair_msg)
                return sd_bus_reply_method_errorf(msg, ERR "InProgress", "In Progress");
        if (d->bonded)
                return sd_bus_reply_method_errorf(msg, ERR "AlreadyExists", "Already Exists");
        if (!d->m->powered)
                return sd_bus_reply_method_errorf(msg, ERR "Failed", "%s", strerror(EIO));
        if (mgmt_wait(d->m, d, msg, method_pair, d))
                return 1;
        d->pair_msg = sd_bus_message_ref(msg);
        if (d->link == LINK_DOWN)
                connect_start(d);           /* pairing starts once the ATT link is up */
        else if (d->link == LINK_UP && !d->t_pair)
                pair_start(d);
        return 1;
}

static int method_cancel_pairing(sd_bus_message *msg, void *userdata, sd_bus_error *error) {
        Dev *d = userdata;

        if (!d->pair_msg)
                return sd_bus_reply_method_errorf(msg, ERR "DoesNotExist", "Does Not Exist");
        timer_stop(&d->t_pair);
        pair_reply(d, ERR "AuthenticationCanceled", "Authentication Canceled");
        return sd_bus_reply_method_return(msg, NULL);
}

static int method_profile_stub(sd_bus_message *msg, void *userdata, sd_bus_error *error) {
        return sd_bus_reply_method_errorf(msg, ERR "NotAvailable", "Operation currently not available");
}

static const sd_bus_vtable device_vtable[] = {
        SD_BUS_VTABLE_START(0),
        SD_BUS_METHOD("Disconnect", "", "", method_disconnect, 0),
        SD_BUS_METHOD("Connect", "", "", method_connect, 0),
        SD_BUS_METHOD_WITH_ARGS("ConnectProfile", SD_BUS_ARGS("s", UUID), SD_BUS_NO_RESULT, method_profile_stub, 0),
        SD_BUS_METHOD_WITH_ARGS("DisconnectProfile", SD_BUS_ARGS("s", UUID), SD_BUS_NO_RESULT, method_profile_stub, 0),
        SD_BUS_METHOD("Pair", "", "", method_pair, 0),
        SD_BUS_METHOD("CancelPairing", "", "", method_cancel_pairing, 0),
        SD_BUS_PROPERTY("Address", "s", prop_dev_address, 0, SD_BUS_VTABLE_PROPERTY_CONST),
        SD_BUS_PROPERTY("AddressType", "s", prop_dev_address_type, 0, SD_BUS_VTABLE_PROPERTY_CONST),
        SD_BUS_PROPERTY("Name", "s", prop_dev_name, 0, SD_BUS_VTABLE_PROPERTY_EMITS_CHANGE),
        SD_BUS_WRITABLE_PROPERTY("Alias", "s", prop_dev_alias, set_dev_alias, 0, SD_BUS_VTABLE_PROPERTY_EMITS_CHANGE),
        SD_BUS_PROPERTY("Paired", "b", prop_dev_paired, 0, SD_BUS_VTABLE_PROPERTY_EMITS_CHANGE),
        SD_BUS_PROPERTY("Bonded", "b", prop_dev_bonded, 0, SD_BUS_VTABLE_PROPERTY_EMITS_CHANGE),
        SD_BUS_WRITABLE_PROPERTY("Trusted", "b", prop_dev_trusted, set_dev_bool, 0, SD_BUS_VTABLE_PROPERTY_EMITS_CHANGE),
        SD_BUS_WRITABLE_PROPERTY("Blocked", "b", prop_dev_blocked, set_dev_bool, 0, SD_BUS_VTABLE_PROPERTY_EMITS_CHANGE),
        SD_BUS_PROPERTY("LegacyPairing", "b", prop_dev_legacy, 0, SD_BUS_VTABLE_PROPERTY_EMITS_CHANGE),
        SD_BUS_PROPERTY("Connected", "b", prop_dev_connected, 0, SD_BUS_VTABLE_PROPERTY_EMITS_CHANGE),
        SD_BUS_PROPERTY("UUIDs", "as", prop_dev_uuids, 0, SD_BUS_VTABLE_PROPERTY_EMITS_CHANGE),
        SD_BUS_PROPERTY("Adapter", "o", prop_dev_adapter, 0, SD_BUS_VTABLE_PROPERTY_CONST),
        SD_BUS_PROPERTY("ServicesResolved", "b", prop_dev_resolved, 0, SD_BUS_VTABLE_PROPERTY_EMITS_CHANGE),
        SD_BUS_VTABLE_END
};

/* RSSI exists only while the device is seen by a discovery: its own vtable, added and removed. */
static const sd_bus_vtable device_rssi_vtable[] = {
        SD_BUS_VTABLE_START(0),
        SD_BUS_PROPERTY("RSSI", "n", prop_dev_rssi, 0, SD_BUS_VTABLE_PROPERTY_EMITS_CHANGE),
        SD_BUS_VTABLE_END
};

static void rssi_show(Dev *d, bool on) {
        Mock *m = d->m;

        if (on == d->rssi_shown || !m->bz || !d->published)
                return;
        if (on) {
                /* A different userdata pointer lets sd-bus hold two vtables of Device1. */
                if (sd_bus_add_object_vtable(m->bz, &d->slot_rssi, d->path, "org.bluez.Device1",
                                             device_rssi_vtable, &d->rssi) < 0)
                        return;
                props_changed(m, d->path, "org.bluez.Device1", "RSSI");
        } else {
                /* device_set_rssi(dev, 0): the property no longer exists, it is invalidated. */
                d->slot_rssi = sd_bus_slot_unref(d->slot_rssi);
                prop_invalidated(m, d->path, "org.bluez.Device1", "RSSI");
        }
        d->rssi_shown = on;
}

/* btd_device_device_set_name(): Name, and Alias while no alias is set, in one signal. */
static void name_set(Dev *d, const char *name) {
        const char *props[] = { "Name", d->alias[0] ? NULL : "Alias", NULL };

        if (streq(d->name, name))
                return;
        snprintf(d->name, sizeof d->name, "%s", name);
        if (d->published)
                props_changed_list(d->m, d->path, "org.bluez.Device1", props);
}

/* bluetoothd's deviceinfo plugin reads the PnP ID and sets Modalias from it (kept afterwards). */
static int prop_dev_modalias(sd_bus *bus, const char *path, const char *iface, const char *prop,
                             sd_bus_message *reply, void *userdata, sd_bus_error *error) {
        return sd_bus_message_append(reply, "s", "usb:v1D6Bp0246d0100");
}

static const sd_bus_vtable device_modalias_vtable[] = {
        SD_BUS_VTABLE_START(0),
        SD_BUS_PROPERTY("Modalias", "s", prop_dev_modalias, 0, SD_BUS_VTABLE_PROPERTY_EMITS_CHANGE),
        SD_BUS_VTABLE_END
};

/* emit false: loaded from storage with the device, nothing changed. */
static void modalias_show(Dev *d, bool emit) {
        if (d->slot_modalias || !d->m->bz || !d->published || !attr_by_role(d, R_PNP))
                return;
        if (sd_bus_add_object_vtable(d->m->bz, &d->slot_modalias, d->path, "org.bluez.Device1",
                                     device_modalias_vtable, &d->slot_modalias) >= 0 && emit)
                props_changed(d->m, d->path, "org.bluez.Device1", "Modalias");
}

static void dev_publish(Dev *d, bool with_rssi) {
        Mock *m = d->m;
        int r;

        if (d->published || !m->bz || !m->adapter_present)
                return;
        r = sd_bus_add_object_vtable(m->bz, &d->slot_dev, d->path, "org.bluez.Device1", device_vtable, d);
        if (r < 0) {
                log_error_errno(r, "Failed to export %s: %s", d->path, strerror(abs(r)));
                return;
        }
        if (with_rssi &&
            sd_bus_add_object_vtable(m->bz, &d->slot_rssi, d->path, "org.bluez.Device1",
                                     device_rssi_vtable, &d->rssi) >= 0)
                d->rssi_shown = true;
        d->published = true;
        (void) sd_bus_emit_object_added(m->bz, d->path);
}

static void dev_forget_bluez_state(Dev *d) {
        d->paired = d->bonded = d->trusted = d->blocked = false;
        d->encrypted = false;
        d->db_cached = d->svc_resolved = d->pending_paired = false;
        d->pair_after_gatt = false;
        d->temporary = false;
        d->alias[0] = 0;
}

static void dev_unpublish(Dev *d) {
        Mock *m = d->m;

        if (!d->published)
                return;
        link_lost(d, false);
        gatt_unexport(d);
        battery_show(d, false);
        timer_stop(&d->t_temp);
        if (m->bz)
                (void) sd_bus_emit_object_removed(m->bz, d->path);
        d->slot_rssi = sd_bus_slot_unref(d->slot_rssi);
        d->slot_modalias = sd_bus_slot_unref(d->slot_modalias);
        d->slot_dev = sd_bus_slot_unref(d->slot_dev);
        d->rssi_shown = false;
        d->published = false;
        for (size_t i = 0; i < d->n_attrs; i++)
                for (size_t j = 0; j < MAX_SUBS; j++)
                        d->attrs[i].subs[j] = mfree_str(d->attrs[i].subs[j]);
}

/* ---- links: connect, resolve, pair, disconnect ---- */

static void set_resolved(Dev *d, bool on) {
        if (d->resolved == on)
                return;
        d->resolved = on;
        props_changed(d->m, d->path, "org.bluez.Device1", "ServicesResolved");
}

/* Subscriptions made while away are registered again, then the plugins run: battery, gap
 * (reads the Device Name), deviceinfo (Modalias from the PnP ID). */
static int on_pair_done(sd_event_source *s, uint64_t usec, void *userdata);

static void gatt_client_ready(Dev *d) {
        for (size_t i = 0; i < d->n_attrs; i++)
                if (d->attrs[i].kind == K_CHR)
                        notify_recompute(&d->attrs[i]);
        battery_show(d, true);
        name_set(d, d->gap_name[0] ? d->gap_name : d->adv_name);
        modalias_show(d, true);
        fw_kick(d);
        if (d->pair_after_gatt) {
                d->pair_after_gatt = false;
                (void) on_pair_done(NULL, 0, d);
        }
}

static int on_services_late(sd_event_source *s, uint64_t usec, void *userdata) {
        Dev *d = userdata;

        timer_stop(&d->t_services);
        gatt_export(d);
        gatt_client_ready(d);
        return 0;
}

static int on_services(sd_event_source *s, uint64_t usec, void *userdata) {
        Dev *d = userdata;
        Mock *m = d->m;
        bool first = !d->gatt_exported;
        const char *props[4];
        size_t n = 0;

        timer_stop(&d->t_services);
        /* One signal: UUIDs when discovery learnt them (a cached reconnect changes nothing),
         * ServicesResolved, and a Paired that waited for the services (pending_paired). */
        if (!d->db_cached)
                props[n++] = "UUIDs";
        props[n++] = "ServicesResolved";
        if (d->pending_paired)
                props[n++] = "Paired";
        props[n] = NULL;
        d->db_cached = d->svc_resolved = true;
        d->pending_paired = false;
        if (first && d->services_late) {
                /* Observed on real links: ServicesResolved first, the objects 30 ms to 2.6 s later. */
                d->resolved = true;
                props_changed_list(m, d->path, "org.bluez.Device1", props);
                (void) timer_arm(m, &d->t_services, ms(m->late_ms), on_services_late, d);
                return 0;
        }
        log_wrap(LOG_DEBUG, d->address, "services resolved");
        gatt_export(d);
        d->resolved = true;
        props_changed_list(m, d->path, "org.bluez.Device1", props);
        gatt_client_ready(d);
        return 0;
}

static int on_stall_drop(sd_event_source *s, uint64_t usec, void *userdata) {
        Dev *d = userdata;

        log_wrap(LOG_INFO, d->address, "stalled connection: link lost (supervision timeout)");
        link_lost(d, true);
        return 0;
}

static int on_connect_done(sd_event_source *s, uint64_t usec, void *userdata) {
        Dev *d = userdata;
        Mock *m = d->m;

        timer_stop(&d->t_link);
        if (!d->advertising || d->fail_connects > 0 || d->blocked) {
                if (d->fail_connects > 0)
                        d->fail_connects--;
                d->link = LINK_DOWN;
                log_wrap(LOG_INFO, d->address, "connection attempt failed");
                reply_err(&d->connect_msg, ERR "Failed", "le-connection-abort-by-local");
                pair_reply(d, ERR "Failed", strerror(ECONNABORTED));
                return 0;
        }

        log_wrap(LOG_INFO, d->address, "connected%s", d->stall_next ? " (stalling)" : "");
        d->link = LINK_UP;
        d->encrypted = d->paired;       /* a bonded peer encrypts the link at once */
        /* 5.66 on a bonded device: att_connect_cb sets le_state.connected before mgmt's Device
         * Connected event, so device_add_connection finds it connected and emits nothing.
         * Connected reads true all the same. */
        if (!d->bonded)
                props_changed(m, d->path, "org.bluez.Device1", "Connected");
        rssi_show(d, false);
        reply_ok(&d->connect_msg);
        mtu_show(d, true);

        if (d->stall_next) {
                d->stall_next = false;
                (void) timer_arm(m, &d->t_link, ms(m->stall_drop_ms), on_stall_drop, d);
                return 0;
        }
        (void) timer_arm(m, &d->t_services, ms(d->gatt_exported ? m->cached_ms : m->discover_ms), on_services, d);
        if (d->pair_msg && !d->t_pair)
                pair_start(d);
        return 0;
}

static void connect_start(Dev *d) {
        Mock *m = d->m;
        bool ok = d->advertising && d->fail_connects == 0 && !d->blocked;

        log_wrap(LOG_DEBUG, d->address, "connecting (%s)", ok ? "will succeed" : "will fail");
        d->link = LINK_CONNECTING;
        (void) timer_arm(m, &d->t_link, ms(ok ? m->connect_ms : m->connect_timeout_ms), on_connect_done, d);
}

static int on_pair_done(sd_event_source *s, uint64_t usec, void *userdata) {
        Dev *d = userdata;
        Mock *m = d->m;

        timer_stop(&d->t_pair);
        if (d->link != LINK_UP)
                return 0;
        if (!d->gatt_exported && d->t_services) {
                /* As on 5.66, a first connection's pairing ends after its GATT objects and
                 * Modalias: held until they are there, by causality rather than by two timers
                 * that a busy host fires in either order. */
                d->pair_after_gatt = true;
                return 0;
        }
        if (is_wrap(d) && d->peer_bonded) {
                /* The wrap keeps one bond and accepts no other until its bond is cleared. */
                log_wrap(LOG_INFO, d->address, "pairing refused by the wrap: it holds a bond");
                pair_reply(d, ERR "AuthenticationFailed", "Authentication Failed");
                for (size_t i = 0; i < d->n_attrs; i++)
                        reply_err(&d->attrs[i].write_msg, ERR "NotPermitted", "Not paired");
                return 0;
        }
        log_wrap(LOG_INFO, d->address, "paired and bonded");
        d->paired = d->bonded = true;
        d->encrypted = true;
        d->peer_bonded = true;
        /* device_set_paired() holds the Paired signal back until services are resolved. */
        if (d->svc_resolved) {
                const char *props[] = { "Bonded", "Paired", NULL };
                props_changed_list(m, d->path, "org.bluez.Device1", props);
        } else {
                props_changed(m, d->path, "org.bluez.Device1", "Bonded");
                d->pending_paired = true;
        }
        pair_reply(d, NULL, NULL);
        for (size_t i = 0; i < d->n_attrs; i++)
                if (d->attrs[i].write_msg)
                        write_deliver(&d->attrs[i]);
        return 0;
}

static void pair_start(Dev *d) {
        (void) timer_arm(d->m, &d->t_pair, ms(d->m->pair_ms), on_pair_done, d);
}

/* The link is gone (or never came): everything that waited on it is answered. */
static void link_lost(Dev *d, bool emit) {
        Mock *m = d->m;
        bool was_connected = d->link == LINK_UP || d->link == LINK_DISCONNECTING;

        timer_stop(&d->t_link);
        timer_stop(&d->t_services);
        timer_stop(&d->t_pair);
        d->pair_after_gatt = false;
        if (d->link == LINK_DOWN && !d->connect_msg && !d->pair_msg && !d->n_disconnect_msgs)
                return;
        if (was_connected)
                log_wrap(LOG_INFO, d->address, "disconnected");
        d->link = LINK_DOWN;
        d->encrypted = false;
        reply_err(&d->connect_msg, ERR "Failed", "br-connection-canceled");
        pair_reply(d, ERR "AuthenticationCanceled", "Authentication Canceled");
        for (size_t i = 0; i < d->n_attrs; i++) {
                reply_err(&d->attrs[i].write_msg, ERR "Failed", "Operation failed");
                notify_release(&d->attrs[i]);     /* bluez shuts the sockets down: HUP */
        }
        battery_show(d, false);
        mtu_show(d, false);
        if (!d->gatt_exported)
                d->db_cached = false;       /* a stalled first connection learnt nothing */
        if (emit) {
                set_resolved(d, false);
                if (was_connected)
                        props_changed(m, d->path, "org.bluez.Device1", "Connected");
        } else
                d->resolved = false;
        for (size_t i = 0; i < d->n_disconnect_msgs; i++)
                reply_ok(&d->disconnect_msgs[i]);
        d->n_disconnect_msgs = 0;
        if (d->remove_after_disconnect) {
                d->remove_after_disconnect = false;
                dev_unpublish(d);
                dev_forget_bluez_state(d);
        }
}

static int on_disconnect_done(sd_event_source *s, uint64_t usec, void *userdata) {
        link_lost(userdata, true);
        return 0;
}

static void disconnect_request(Dev *d, sd_bus_message *msg) {
        if (d->link == LINK_CONNECTING) {
                timer_stop(&d->t_link);
                d->link = LINK_DOWN;
                reply_err(&d->connect_msg, ERR "Failed", "br-connection-canceled");
                pair_reply(d, ERR "AuthenticationCanceled", "Authentication Canceled");
        }
        if (d->link == LINK_DOWN) {
                if (msg)
                        (void) sd_bus_reply_method_return(msg, NULL);
                if (d->remove_after_disconnect)
                        link_lost(d, true);
                return;
        }
        if (msg && d->n_disconnect_msgs < ELEMENTSOF(d->disconnect_msgs))
                d->disconnect_msgs[d->n_disconnect_msgs++] = sd_bus_message_ref(msg);
        if (d->link == LINK_DISCONNECTING)
                return;
        /* bluetoothd gives profiles DISCONNECT_TIMER (2 s) before it drops the link. */
        d->link = LINK_DISCONNECTING;
        timer_stop(&d->t_services);
        timer_stop(&d->t_pair);
        (void) timer_arm(d->m, &d->t_link, ms(d->m->disconnect_ms), on_disconnect_done, d);
}

/* ---- Adapter1 (src/adapter.c) and discovery ---- */

static DiscoveryClient *client_find(Mock *m, const char *owner) {
        for (size_t i = 0; i < m->n_clients; i++)
                if (streq(m->clients[i].owner, owner))
                        return &m->clients[i];
        return NULL;
}

static void client_free(DiscoveryClient *c) {
        free(c->owner);
        for (size_t i = 0; i < c->n_uuids; i++)
                free(c->uuids[i]);
        free(c->pattern);
        *c = (DiscoveryClient) { 0 };
}

static void client_remove(Mock *m, DiscoveryClient *c) {
        client_free(c);
        *c = m->clients[--m->n_clients];
        m->clients[m->n_clients] = (DiscoveryClient) { 0 };
}

static bool filter_match(Mock *m, Dev *d) {
        for (size_t i = 0; i < m->n_clients; i++) {
                DiscoveryClient *c = &m->clients[i];
                bool match = c->n_uuids == 0;

                if (!c->discovering || c->bredr_only)
                        continue;
                for (size_t j = 0; j < c->n_uuids && !match; j++)
                        for (size_t k = 0; k < ELEMENTSOF(d->adv_uuids) && d->adv_uuids[k]; k++)
                                match = match || streq(c->uuids[j], d->adv_uuids[k]);
                if (match && c->rssi_min != INT16_MIN && d->rssi < c->rssi_min)
                        match = false;
                if (match && c->pattern && *c->pattern &&
                    strncmp(d->address, c->pattern, strlen(c->pattern)) != 0 &&
                    strncmp(d->name, c->pattern, strlen(c->pattern)) != 0)
                        match = false;
                if (match)
                        return true;
        }
        return false;
}

static int on_temp_expire(sd_event_source *s, uint64_t usec, void *userdata) {
        Dev *d = userdata;

        timer_stop(&d->t_temp);
        if (d->temporary && d->link == LINK_DOWN && !d->m->discovering) {
                log_wrap(LOG_DEBUG, d->address, "removing temporary device");
                dev_unpublish(d);
                dev_forget_bluez_state(d);
        }
        return 0;
}

static void set_discovering(Mock *m) {
        bool any = false;

        for (size_t i = 0; i < m->n_clients; i++)
                any = any || m->clients[i].discovering;
        if (any == m->discovering)
                return;
        m->discovering = any;
        props_changed(m, ADAPTER_PATH, "org.bluez.Adapter1", "Discovering");
        if (any) {
                scan_now(m);
                return;
        }
        timer_stop(&m->t_scan);
        for (Dev *d = m->devs; d; d = d->next) {
                rssi_show(d, false);
                if (d->published && d->temporary)
                        (void) timer_arm(m, &d->t_temp, ms(m->temp_timeout_ms), on_temp_expire, d);
        }
}

/* One round of advertisements heard while some client discovers. */
static int on_scan(sd_event_source *s, uint64_t usec, void *userdata) {
        Mock *m = userdata;

        if (!m->discovering || !m->bz)
                return 0;
        for (Dev *d = m->devs; d; d = d->next) {
                if (!d->advertising || d->link != LINK_DOWN || !filter_match(m, d))
                        continue;
                name_set(d, d->adv_name);       /* a complete name in the advertisement wins */
                if (!d->published) {
                        d->temporary = true;
                        dev_publish(d, true);
                } else
                        rssi_show(d, true);
                timer_stop(&d->t_temp);
        }
        (void) timer_arm(m, &m->t_scan, ms(m->scan_ms), on_scan, m);
        return 0;
}

static void scan_now(Mock *m) {
        if (m->discovering)
                (void) timer_arm(m, &m->t_scan, ms(50), on_scan, m);
}

static int method_start_discovery(sd_bus_message *msg, void *userdata, sd_bus_error *error) {
        Mock *m = userdata;
        const char *owner = sd_bus_message_get_sender(msg);
        DiscoveryClient *c;

        if (!m->powered)
                return sd_bus_reply_method_errorf(msg, ERR "NotReady", "Resource Not Ready");
        c = client_find(m, owner);
        if (c && c->discovering)
                return sd_bus_reply_method_errorf(msg, ERR "InProgress", "Operation already in progress");
        if (mgmt_wait(m, NULL, msg, method_start_discovery, m))
                return 1;
        if (!c) {
                if (m->n_clients >= MAX_CLIENTS)
                        return sd_bus_reply_method_errorf(msg, ERR "Failed", "Too many clients");
                c = &m->clients[m->n_clients++];
                *c = (DiscoveryClient) { .owner = strdup(owner), .rssi_min = INT16_MIN };
                if (!c->owner)
                        return -ENOMEM;
        }
        c->discovering = true;
        set_discovering(m);
        scan_now(m);
        return sd_bus_reply_method_return(msg, NULL);
}

static int method_stop_discovery(sd_bus_message *msg, void *userdata, sd_bus_error *error) {
        Mock *m = userdata;
        DiscoveryClient *c;

        if (!m->powered)
                return sd_bus_reply_method_errorf(msg, ERR "NotReady", "Resource Not Ready");
        c = client_find(m, sd_bus_message_get_sender(msg));
        if (!c || !c->discovering)
                return sd_bus_reply_method_errorf(msg, ERR "Failed", "No discovery started");
        if (mgmt_wait(m, NULL, msg, method_stop_discovery, m))
                return 1;
        /* A client that set a filter keeps it for its next StartDiscovery. */
        if (c->has_filter)
                c->discovering = false;
        else
                client_remove(m, c);
        set_discovering(m);
        return sd_bus_reply_method_return(msg, NULL);
}

static int filter_entry(sd_bus_message *msg, const char *key, const char *contents, void *userdata) {
        DiscoveryClient *f = userdata;
        int r;

        f->has_filter = true;
        if (streq(key, "UUIDs")) {
                if (!streq(contents, "as"))
                        return -EINVAL;
                r = sd_bus_message_enter_container(msg, 'v', "as");
                if (r < 0)
                        return r;
                r = sd_bus_message_enter_container(msg, 'a', "s");
                if (r < 0)
                        return r;
                const char *u;
                while ((r = sd_bus_message_read(msg, "s", &u)) > 0) {
                        char norm[37];
                        if (uuid_normalize(u, norm) < 0 || f->n_uuids >= ELEMENTSOF(f->uuids))
                                return -EINVAL;
                        f->uuids[f->n_uuids] = strdup(norm);
                        if (!f->uuids[f->n_uuids++])
                                return -ENOMEM;
                }
                if (r < 0)
                        return r;
                r = sd_bus_message_exit_container(msg);
                if (r >= 0)
                        r = sd_bus_message_exit_container(msg);
        } else if (streq(key, "RSSI")) {
                if (!streq(contents, "n"))
                        return -EINVAL;
                r = sd_bus_message_read(msg, "v", "n", &f->rssi_min);
        } else if (streq(key, "Pathloss")) {
                uint16_t pl;
                if (!streq(contents, "q"))
                        return -EINVAL;
                r = sd_bus_message_read(msg, "v", "q", &pl);
        } else if (streq(key, "Transport")) {
                const char *s;
                if (!streq(contents, "s"))
                        return -EINVAL;
                r = sd_bus_message_read(msg, "v", "s", &s);
                if (r >= 0 && !streq(s, "le") && !streq(s, "bredr") && !streq(s, "auto"))
                        return -EINVAL;
                if (r >= 0)
                        f->bredr_only = streq(s, "bredr");
        } else if (streq(key, "DuplicateData") || streq(key, "Discoverable")) {
                int b;
                if (!streq(contents, "b"))
                        return -EINVAL;
                r = sd_bus_message_read(msg, "v", "b", &b);
        } else if (streq(key, "Pattern")) {
                const char *s;
                if (!streq(contents, "s"))
                        return -EINVAL;
                r = sd_bus_message_read(msg, "v", "s", &s);
                if (r >= 0) {
                        free(f->pattern);
                        f->pattern = strdup(s);
                }
        } else
                return -EINVAL;
        return r < 0 ? r : 1;
}

static int parse_filter(sd_bus_message *msg, DiscoveryClient *f) {
        *f = (DiscoveryClient) { .rssi_min = INT16_MIN };
        return bus_message_read_dict(msg, filter_entry, f);
}

static int method_set_discovery_filter(sd_bus_message *msg, void *userdata, sd_bus_error *error) {
        Mock *m = userdata;
        const char *owner = sd_bus_message_get_sender(msg);
        DiscoveryClient f, *c;
        int r;

        if (!m->powered)
                return sd_bus_reply_method_errorf(msg, ERR "NotReady", "Resource Not Ready");
        r = parse_filter(msg, &f);
        if (r < 0) {
                client_free(&f);
                return sd_bus_reply_method_errorf(msg, ERR "InvalidArguments", "Invalid arguments in method call");
        }
        c = client_find(m, owner);
        if (!c) {
                if (!f.has_filter)
                        return sd_bus_reply_method_return(msg, NULL);
                if (m->n_clients >= MAX_CLIENTS) {
                        client_free(&f);
                        return sd_bus_reply_method_errorf(msg, ERR "Failed", "Too many clients");
                }
                c = &m->clients[m->n_clients++];
                *c = (DiscoveryClient) { 0 };
        }
        bool discovering = c->discovering;
        client_free(c);
        *c = f;
        c->owner = strdup(owner);
        c->discovering = discovering;
        if (!c->owner)
                return -ENOMEM;
        if (!c->has_filter && !c->discovering)
                client_remove(m, c);            /* clearing a pre-set filter */
        scan_now(m);
        return sd_bus_reply_method_return(msg, NULL);
}

static int method_get_discovery_filters(sd_bus_message *msg, void *userdata, sd_bus_error *error) {
        return sd_bus_reply_method_return(msg, "as", 7, "UUIDs", "RSSI", "Pathloss", "Transport",
                                          "DuplicateData", "Discoverable", "Pattern");
}

static int method_remove_device(sd_bus_message *msg, void *userdata, sd_bus_error *error) {
        Mock *m = userdata;
        const char *path;
        Dev *d;
        int r;

        r = sd_bus_message_read(msg, "o", &path);
        if (r < 0)
                return sd_bus_reply_method_errorf(msg, ERR "InvalidArguments", "Invalid arguments in method call");
        d = dev_by_path(m, path);
        if (!d)
                return sd_bus_reply_method_errorf(msg, ERR "DoesNotExist", "Does Not Exist");
        if (!m->powered)
                return sd_bus_reply_method_errorf(msg, ERR "NotReady", "Resource Not Ready");
        /* Our keys go; the wrap keeps its side of the bond (wrap-profile.md). */
        if (d->link != LINK_DOWN) {
                d->remove_after_disconnect = true;
                disconnect_request(d, msg);
                return 1;
        }
        dev_unpublish(d);
        dev_forget_bluez_state(d);
        return sd_bus_reply_method_return(msg, NULL);
}

static int method_connect_device(sd_bus_message *msg, void *userdata, sd_bus_error *error) {
        return sd_bus_reply_method_errorf(msg, "org.freedesktop.DBus.Error.UnknownMethod",
                                          "ConnectDevice is experimental in bluez 5.66");
}

#define AD_PROP(fn, sig, expr) \
        static int fn(sd_bus *bus, const char *path, const char *iface, const char *prop, \
                      sd_bus_message *reply, void *userdata, sd_bus_error *error) { \
                Mock *m = userdata; \
                (void) m; \
                return sd_bus_message_append(reply, sig, expr); \
        }

AD_PROP(prop_ad_address, "s", "B8:27:EB:4B:57:01")
AD_PROP(prop_ad_address_type, "s", "public")
AD_PROP(prop_ad_name, "s", "kneewrap-gw")
AD_PROP(prop_ad_alias, "s", m->adapter_alias[0] ? m->adapter_alias : "kneewrap-gw")
AD_PROP(prop_ad_class, "u", (uint32_t) 0x6c0000)
AD_PROP(prop_ad_powered, "b", m->powered)
AD_PROP(prop_ad_discoverable, "b", m->discoverable)
AD_PROP(prop_ad_discoverable_timeout, "u", (uint32_t) 180)
AD_PROP(prop_ad_pairable, "b", m->pairable)
AD_PROP(prop_ad_pairable_timeout, "u", (uint32_t) 0)
AD_PROP(prop_ad_discovering, "b", m->discovering)
AD_PROP(prop_ad_modalias, "s", "usb:v1D6Bp0246d0542")

static int prop_ad_uuids(sd_bus *bus, const char *path, const char *iface, const char *prop,
                         sd_bus_message *reply, void *userdata, sd_bus_error *error) {
        int r = sd_bus_message_open_container(reply, 'a', "s");
        for (size_t i = 0; r >= 0 && i < ELEMENTSOF(adapter_uuids); i++)
                r = sd_bus_message_append(reply, "s", adapter_uuids[i]);
        return r < 0 ? r : sd_bus_message_close_container(reply);
}

static int prop_ad_roles(sd_bus *bus, const char *path, const char *iface, const char *prop,
                         sd_bus_message *reply, void *userdata, sd_bus_error *error) {
        return sd_bus_message_append(reply, "as", 2, "central", "peripheral");
}

static void set_powered(Mock *m, bool on) {
        if (on == m->powered)
                return;
        m->powered = on;
        if (!on) {
                for (size_t i = m->n_clients; i > 0; i--)
                        client_remove(m, &m->clients[i - 1]);
                set_discovering(m);
                for (Dev *d = m->devs; d; d = d->next)
                        link_lost(d, true);
        }
        props_changed(m, ADAPTER_PATH, "org.bluez.Adapter1", "Powered");
}

static int set_ad_prop(sd_bus *bus, const char *path, const char *iface, const char *prop,
                       sd_bus_message *value, void *userdata, sd_bus_error *error) {
        Mock *m = userdata;
        int r;

        if (streq(prop, "Alias")) {
                const char *s;
                r = sd_bus_message_read(value, "s", &s);
                if (r < 0)
                        return r;
                snprintf(m->adapter_alias, sizeof m->adapter_alias, "%s", s);
        } else if (streq(prop, "DiscoverableTimeout") || streq(prop, "PairableTimeout")) {
                uint32_t u;
                return sd_bus_message_read(value, "u", &u);
        } else {
                int b;
                r = sd_bus_message_read(value, "b", &b);
                if (r < 0)
                        return r;
                if (streq(prop, "Powered")) {
                        set_powered(m, b);
                        return 0;
                }
                if (streq(prop, "Discoverable"))
                        m->discoverable = b;
                else
                        m->pairable = b;
        }
        props_changed(m, ADAPTER_PATH, "org.bluez.Adapter1", prop);
        return 0;
}

static const sd_bus_vtable adapter_vtable[] = {
        SD_BUS_VTABLE_START(0),
        SD_BUS_METHOD("StartDiscovery", "", "", method_start_discovery, 0),
        SD_BUS_METHOD_WITH_ARGS("SetDiscoveryFilter", SD_BUS_ARGS("a{sv}", properties), SD_BUS_NO_RESULT,
                                method_set_discovery_filter, 0),
        SD_BUS_METHOD("StopDiscovery", "", "", method_stop_discovery, 0),
        SD_BUS_METHOD_WITH_ARGS("RemoveDevice", SD_BUS_ARGS("o", device), SD_BUS_NO_RESULT, method_remove_device, 0),
        SD_BUS_METHOD_WITH_ARGS("GetDiscoveryFilters", SD_BUS_NO_ARGS, SD_BUS_RESULT("as", filters),
                                method_get_discovery_filters, 0),
        SD_BUS_METHOD_WITH_ARGS("ConnectDevice", SD_BUS_ARGS("a{sv}", properties), SD_BUS_NO_RESULT,
                                method_connect_device, SD_BUS_VTABLE_HIDDEN),
        SD_BUS_PROPERTY("Address", "s", prop_ad_address, 0, SD_BUS_VTABLE_PROPERTY_CONST),
        SD_BUS_PROPERTY("AddressType", "s", prop_ad_address_type, 0, SD_BUS_VTABLE_PROPERTY_CONST),
        SD_BUS_PROPERTY("Name", "s", prop_ad_name, 0, SD_BUS_VTABLE_PROPERTY_CONST),
        SD_BUS_WRITABLE_PROPERTY("Alias", "s", prop_ad_alias, set_ad_prop, 0, SD_BUS_VTABLE_PROPERTY_EMITS_CHANGE),
        SD_BUS_PROPERTY("Class", "u", prop_ad_class, 0, SD_BUS_VTABLE_PROPERTY_EMITS_CHANGE),
        SD_BUS_WRITABLE_PROPERTY("Powered", "b", prop_ad_powered, set_ad_prop, 0, SD_BUS_VTABLE_PROPERTY_EMITS_CHANGE),
        SD_BUS_WRITABLE_PROPERTY("Discoverable", "b", prop_ad_discoverable, set_ad_prop, 0,
                                 SD_BUS_VTABLE_PROPERTY_EMITS_CHANGE),
        SD_BUS_WRITABLE_PROPERTY("DiscoverableTimeout", "u", prop_ad_discoverable_timeout, set_ad_prop, 0,
                                 SD_BUS_VTABLE_PROPERTY_EMITS_CHANGE),
        SD_BUS_WRITABLE_PROPERTY("Pairable", "b", prop_ad_pairable, set_ad_prop, 0, SD_BUS_VTABLE_PROPERTY_EMITS_CHANGE),
        SD_BUS_WRITABLE_PROPERTY("PairableTimeout", "u", prop_ad_pairable_timeout, set_ad_prop, 0,
                                 SD_BUS_VTABLE_PROPERTY_EMITS_CHANGE),
        SD_BUS_PROPERTY("Discovering", "b", prop_ad_discovering, 0, SD_BUS_VTABLE_PROPERTY_EMITS_CHANGE),
        SD_BUS_PROPERTY("UUIDs", "as", prop_ad_uuids, 0, SD_BUS_VTABLE_PROPERTY_EMITS_CHANGE),
        SD_BUS_PROPERTY("Modalias", "s", prop_ad_modalias, 0, SD_BUS_VTABLE_PROPERTY_EMITS_CHANGE),
        SD_BUS_PROPERTY("Roles", "as", prop_ad_roles, 0, SD_BUS_VTABLE_PROPERTY_CONST),
        SD_BUS_VTABLE_END
};

/* ---- AgentManager1, ProfileManager1 (src/agent.c, src/profile.c) ---- */

static char **agent_slot(Mock *m, const char *owner) {
        size_t n = strlen(owner);
        for (size_t i = 0; i < MAX_CLIENTS; i++)
                if (m->agents[i] && strncmp(m->agents[i], owner, n) == 0 && m->agents[i][n] == ' ')
                        return &m->agents[i];
        return NULL;
}

static int method_register_agent(sd_bus_message *msg, void *userdata, sd_bus_error *error) {
        static const char *const caps[] = { "", "DisplayOnly", "DisplayYesNo", "KeyboardOnly",
                                            "NoInputNoOutput", "KeyboardDisplay" };
        Mock *m = userdata;
        const char *owner = sd_bus_message_get_sender(msg), *path, *cap;
        bool ok = false;
        int r;

        r = sd_bus_message_read(msg, "os", &path, &cap);
        if (r < 0)
                return sd_bus_reply_method_errorf(msg, ERR "InvalidArguments", "Invalid arguments in method call");
        if (agent_slot(m, owner))
                return sd_bus_reply_method_errorf(msg, ERR "AlreadyExists", "Already Exists");
        for (size_t i = 0; i < ELEMENTSOF(caps); i++)
                ok = ok || streq(cap, caps[i]);
        if (!ok)
                return sd_bus_reply_method_errorf(msg, ERR "InvalidArguments", "Invalid arguments in method call");
        for (size_t i = 0; i < MAX_CLIENTS; i++)
                if (!m->agents[i]) {
                        if (asprintf(&m->agents[i], "%s %s", owner, path) < 0)
                                return -ENOMEM;
                        return sd_bus_reply_method_return(msg, NULL);
                }
        return sd_bus_reply_method_errorf(msg, ERR "Failed", "Too many agents");
}

static int method_unregister_agent(sd_bus_message *msg, void *userdata, sd_bus_error *error) {
        Mock *m = userdata;
        const char *path;
        char **a;
        int r;

        r = sd_bus_message_read(msg, "o", &path);
        if (r < 0)
                return sd_bus_reply_method_errorf(msg, ERR "InvalidArguments", "Invalid arguments in method call");
        a = agent_slot(m, sd_bus_message_get_sender(msg));
        if (!a || !streq(strchr(*a, ' ') + 1, path))
                return sd_bus_reply_method_errorf(msg, ERR "DoesNotExist", "Does Not Exist");
        if (m->default_agent == *a)
                m->default_agent = NULL;
        *a = mfree_str(*a);
        return sd_bus_reply_method_return(msg, NULL);
}

static int method_request_default_agent(sd_bus_message *msg, void *userdata, sd_bus_error *error) {
        Mock *m = userdata;
        const char *path;
        char **a;
        int r;

        r = sd_bus_message_read(msg, "o", &path);
        if (r < 0)
                return sd_bus_reply_method_errorf(msg, ERR "InvalidArguments", "Invalid arguments in method call");
        a = agent_slot(m, sd_bus_message_get_sender(msg));
        if (!a || !streq(strchr(*a, ' ') + 1, path))
                return sd_bus_reply_method_errorf(msg, ERR "DoesNotExist", "Does Not Exist");
        m->default_agent = *a;
        return sd_bus_reply_method_return(msg, NULL);
}

static const sd_bus_vtable agent_manager_vtable[] = {
        SD_BUS_VTABLE_START(0),
        SD_BUS_METHOD_WITH_ARGS("RegisterAgent", SD_BUS_ARGS("o", agent, "s", capability), SD_BUS_NO_RESULT,
                                method_register_agent, 0),
        SD_BUS_METHOD_WITH_ARGS("UnregisterAgent", SD_BUS_ARGS("o", agent), SD_BUS_NO_RESULT,
                                method_unregister_agent, 0),
        SD_BUS_METHOD_WITH_ARGS("RequestDefaultAgent", SD_BUS_ARGS("o", agent), SD_BUS_NO_RESULT,
                                method_request_default_agent, 0),
        SD_BUS_VTABLE_END
};

static int method_register_profile(sd_bus_message *msg, void *userdata, sd_bus_error *error) {
        /* Accepted and otherwise ignored: no classic profile reaches a wrap. */
        return sd_bus_reply_method_return(msg, NULL);
}

static const sd_bus_vtable profile_manager_vtable[] = {
        SD_BUS_VTABLE_START(0),
        SD_BUS_METHOD_WITH_ARGS("RegisterProfile", SD_BUS_ARGS("o", profile, "s", UUID, "a{sv}", options),
                                SD_BUS_NO_RESULT, method_register_profile, 0),
        SD_BUS_METHOD_WITH_ARGS("UnregisterProfile", SD_BUS_ARGS("o", profile), SD_BUS_NO_RESULT,
                                method_register_profile, 0),
        SD_BUS_VTABLE_END
};

/* A D-Bus client went away: its discovery, notify sessions and agent go with it. */
static int on_name_owner_changed(sd_bus_message *msg, void *userdata, sd_bus_error *error) {
        Mock *m = userdata;
        const char *name, *old, *new;

        if (sd_bus_message_read(msg, "sss", &name, &old, &new) < 0 || name[0] != ':' || *new)
                return 0;
        DiscoveryClient *c = client_find(m, name);
        if (c) {
                client_remove(m, c);
                set_discovering(m);
        }
        char **a = agent_slot(m, name);
        if (a) {
                if (m->default_agent == *a)
                        m->default_agent = NULL;
                *a = mfree_str(*a);
        }
        for (Dev *d = m->devs; d; d = d->next)
                for (size_t i = 0; i < d->n_attrs; i++)
                        if (sub_remove(&d->attrs[i], name) && n_subs(&d->attrs[i]) == 0 &&
                            d->attrs[i].notifying) {
                                d->attrs[i].notifying = false;
                                props_changed(m, d->attrs[i].path, "org.bluez.GattCharacteristic1", "Notifying");
                        }
        return 0;
}

/* ---- publishing org.bluez (start, restart, adapter plugged) ---- */

static void adapter_publish(Mock *m) {
        if (m->slot_adapter || !m->bz || !m->adapter_present)
                return;
        if (sd_bus_add_object_vtable(m->bz, &m->slot_adapter, ADAPTER_PATH, "org.bluez.Adapter1",
                                     adapter_vtable, m) < 0)
                return;
        (void) sd_bus_emit_object_added(m->bz, ADAPTER_PATH);
        /* Bonded devices come back from storage (UUIDs and all); their GATT objects only on the
         * next connection. load_ltks() sets Paired before any service is resolved: its signal
         * waits for ServicesResolved. */
        for (Dev *d = m->devs; d; d = d->next)
                if (d->paired) {
                        d->pending_paired = true;
                        dev_publish(d, false);
                        if (d->db_cached)
                                modalias_show(d, false);
                }
}

static void adapter_unpublish(Mock *m) {
        for (size_t i = m->n_clients; i > 0; i--)
                client_remove(m, &m->clients[i - 1]);
        m->discovering = false;
        timer_stop(&m->t_scan);
        for (Dev *d = m->devs; d; d = d->next) {
                dev_unpublish(d);
                d->svc_resolved = false;
                if (!d->paired)
                        dev_forget_bluez_state(d);
        }
        if (m->slot_adapter && m->bz)
                (void) sd_bus_emit_object_removed(m->bz, ADAPTER_PATH);
        m->slot_adapter = sd_bus_slot_unref(m->slot_adapter);
}

static int bluez_connect(Mock *m) {
        int r;

        r = sd_bus_open_system(&m->bz);
        if (r < 0)
                return log_error_errno(r, "Failed to connect to the system bus: %s", strerror(abs(r)));
        r = sd_bus_attach_event(m->bz, m->ev, 0);
        if (r < 0)
                return r;
        r = sd_bus_add_object_manager(m->bz, &m->slot_om, "/");
        if (r < 0)
                return r;
        r = sd_bus_add_object_vtable(m->bz, &m->slot_mgr, "/org/bluez", "org.bluez.AgentManager1",
                                     agent_manager_vtable, m);
        if (r < 0)
                return r;
        r = sd_bus_add_object_vtable(m->bz, &m->slot_prof, "/org/bluez", "org.bluez.ProfileManager1",
                                     profile_manager_vtable, m);
        if (r < 0)
                return r;
        r = sd_bus_match_signal(m->bz, &m->slot_noc, "org.freedesktop.DBus", "/org/freedesktop/DBus",
                                "org.freedesktop.DBus", "NameOwnerChanged", on_name_owner_changed, m);
        if (r < 0)
                return r;
        r = sd_bus_request_name(m->bz, BLUEZ_NAME, 0);
        if (r < 0)
                return log_error_errno(r, "Failed to own %s: %s", BLUEZ_NAME, strerror(abs(r)));
        adapter_publish(m);
        return 0;
}

static void bluez_disconnect(Mock *m) {
        mgmt_drop(m);
        adapter_unpublish(m);
        for (size_t i = 0; i < MAX_CLIENTS; i++)
                m->agents[i] = mfree_str(m->agents[i]);
        m->default_agent = NULL;
        m->slot_noc = sd_bus_slot_unref(m->slot_noc);
        m->slot_prof = sd_bus_slot_unref(m->slot_prof);
        m->slot_mgr = sd_bus_slot_unref(m->slot_mgr);
        m->slot_om = sd_bus_slot_unref(m->slot_om);
        m->bz = sd_bus_flush_close_unref(m->bz);
}

static int on_restart(sd_event_source *s, uint64_t usec, void *userdata) {
        Mock *m = userdata;

        timer_stop(&m->t_restart);
        if (bluez_connect(m) < 0)
                return sd_event_exit(m->ev, EXIT_FAILURE);
        log_info("org.bluez is back");
        return 0;
}

/* ---- org.kneewrap.Mock1: the test controls ---- */

static Dev *dev_new(Mock *m, const char *address, bool wrap, char **uuids, int *ret_err) {
        char norm[BDADDR_STR_MAX];
        Dev *d;

        if (bdaddr_normalize(address, norm) < 0) {
                *ret_err = -EINVAL;
                return NULL;
        }
        if (dev_by_address(m, norm)) {
                *ret_err = -EEXIST;
                return NULL;
        }
        d = calloc(1, sizeof *d);
        if (!d) {
                *ret_err = -ENOMEM;
                return NULL;
        }
        d->m = m;
        memcpy(d->address, norm, sizeof norm);
        snprintf(d->path, sizeof d->path, ADAPTER_PATH "/dev_%c%c_%c%c_%c%c_%c%c_%c%c_%c%c",
                 norm[0], norm[1], norm[3], norm[4], norm[6], norm[7], norm[9], norm[10],
                 norm[12], norm[13], norm[15], norm[16]);
        d->advertising = true;
        d->rssi = -60;
        d->random_address = wrap;
        d->services_late = true;        /* first connections: the objects after ServicesResolved */
        d->pnp = true;
        d->handle_base = 1;
        d->battery_pct = 100;
        if (wrap) {
                snprintf(d->name, sizeof d->name, "KneeWrap-%c%c%c%c", norm[12], norm[13], norm[15], norm[16]);
                d->adv_uuids[0] = strdup(WIRE_UUID_THERAPY_SERVICE);
                d->fw = wrapfw_new(norm, fw_now());
        } else {
                snprintf(d->name, sizeof d->name, "Peripheral-%c%c%c%c", norm[12], norm[13], norm[15], norm[16]);
                for (size_t i = 0; uuids && uuids[i] && i < ELEMENTSOF(d->adv_uuids); i++) {
                        char u[37];
                        if (uuid_normalize(uuids[i], u) == 0)
                                d->adv_uuids[i] = strdup(u);
                }
        }
        memcpy(d->adv_name, d->name, sizeof d->adv_name);
        db_build(d);
        d->next = m->devs;
        m->devs = d;
        fw_kick(d);
        scan_now(m);
        *ret_err = 0;
        return d;
}

static int reply_errno(sd_bus_message *msg, int r, const char *what) {
        return sd_bus_reply_method_errorf(msg, "org.kneewrap.Mock.Error", "%s: %s", what, strerror(-r));
}

static int get_dev(sd_bus_message *msg, Mock *m, Dev **ret) {
        const char *address;
        int r = sd_bus_message_read(msg, "s", &address);
        if (r < 0)
                return r;
        *ret = dev_by_address(m, address);
        return *ret ? 0 : -ENOENT;
}

#define WITH_DEV(msg, m, d) \
        Dev *d; \
        do { \
                int _r = get_dev(msg, m, &d); \
                if (_r < 0) \
                        return reply_errno(msg, _r, "no such simulated device"); \
        } while (0)

/* One AddWrapWith option: any key not known here is refused. */
static int wrap_option(sd_bus_message *msg, const char *key, _unused_ const char *contents, void *userdata) {
        Dev *d = userdata;
        int r;

        if (streq(key, "handle_base"))
                r = sd_bus_message_read(msg, "v", "q", &d->handle_base);
        else if (streq(key, "pnp")) {
                int b;
                r = sd_bus_message_read(msg, "v", "b", &b);
                d->pnp = b;
        } else if (streq(key, "services_late")) {
                int b;
                r = sd_bus_message_read(msg, "v", "b", &b);
                d->services_late = b;
        } else if (streq(key, "public_address")) {
                int b;
                r = sd_bus_message_read(msg, "v", "b", &b);
                d->random_address = !b;
        } else if (streq(key, "advertising")) {
                int b;
                r = sd_bus_message_read(msg, "v", "b", &b);
                d->advertising = b;
        } else if (streq(key, "rssi"))
                r = sd_bus_message_read(msg, "v", "n", &d->rssi);
        else if (streq(key, "name")) {
                const char *s;
                r = sd_bus_message_read(msg, "v", "s", &s);
                if (r >= 0) {
                        snprintf(d->adv_name, sizeof d->adv_name, "%s", s);
                        memcpy(d->name, d->adv_name, sizeof d->name);
                }
        } else if (streq(key, "gap_name")) {
                const char *s;
                r = sd_bus_message_read(msg, "v", "s", &s);
                if (r >= 0)
                        snprintf(d->gap_name, sizeof d->gap_name, "%s", s);
        } else if (streq(key, "model")) {
                const void *v;
                size_t n;
                r = sd_bus_message_enter_container(msg, 'v', "ay");
                if (r >= 0)
                        r = sd_bus_message_read_array(msg, 'y', &v, &n);
                if (r >= 0 && (n == 0 || n > sizeof d->model))
                        r = -EINVAL;
                if (r >= 0) {
                        memcpy(d->model, v, n);
                        d->model_len = n;
                        r = sd_bus_message_exit_container(msg);
                }
        } else
                r = -EINVAL;
        return r < 0 ? r : 1;
}

static int ctl_add_wrap_with(sd_bus_message *msg, void *userdata, sd_bus_error *error) {
        Mock *m = userdata;
        const char *address;
        int r, err;

        r = sd_bus_message_read(msg, "s", &address);
        if (r < 0)
                return r;
        Dev *d = dev_new(m, address, true, NULL, &err);
        if (!d)
                return reply_errno(msg, err, "AddWrap");
        if (streq(sd_bus_message_get_member(msg), "AddWrapWith")) {
                r = bus_message_read_dict(msg, wrap_option, d);
                if (r < 0)
                        return reply_errno(msg, r, "AddWrapWith options");
                db_build(d);
        }
        log_wrap(LOG_INFO, d->address, "simulated wrap added");
        return sd_bus_reply_method_return(msg, "o", d->path);
}

static int ctl_add_peripheral(sd_bus_message *msg, void *userdata, sd_bus_error *error) {
        Mock *m = userdata;
        const char *address;
        char **uuids = NULL;
        int r, err;

        r = sd_bus_message_read(msg, "s", &address);
        if (r >= 0)
                r = sd_bus_message_read_strv(msg, &uuids);
        if (r < 0)
                return r;
        Dev *d = dev_new(m, address, false, uuids, &err);
        for (size_t i = 0; uuids && uuids[i]; i++)
                free(uuids[i]);
        free(uuids);
        if (!d)
                return reply_errno(msg, err, "AddPeripheral");
        return sd_bus_reply_method_return(msg, "o", d->path);
}

static int ctl_press(sd_bus_message *msg, void *userdata, sd_bus_error *error) {
        uint8_t ev;
        WITH_DEV(msg, userdata, d);
        if (sd_bus_message_read(msg, "y", &ev) < 0 || !d->fw || wrapfw_press(d->fw, ev, fw_now()) < 0)
                return reply_errno(msg, -EINVAL, "PressButton");
        fw_kick(d);
        return sd_bus_reply_method_return(msg, NULL);
}

static int ctl_set_skin(sd_bus_message *msg, void *userdata, sd_bus_error *error) {
        double c;
        WITH_DEV(msg, userdata, d);
        if (sd_bus_message_read(msg, "d", &c) < 0 || !d->fw)
                return reply_errno(msg, -EINVAL, "SetSkin");
        /* NaN releases the pinned value back to the model. */
        if (isnan(c))
                wrapfw_set_skin(d->fw, 3300, false, fw_now());
        else if (c < -300 || c > 300)
                return reply_errno(msg, -ERANGE, "SetSkin");
        else
                wrapfw_set_skin(d->fw, (int16_t) lround(c * 100), true, fw_now());
        fw_kick(d);
        return sd_bus_reply_method_return(msg, NULL);
}

static int ctl_set_fault(sd_bus_message *msg, void *userdata, sd_bus_error *error) {
        uint8_t flags = 0;
        WITH_DEV(msg, userdata, d);
        if (!d->fw || (streq(sd_bus_message_get_member(msg), "SetFault") && sd_bus_message_read(msg, "y", &flags) < 0))
                return reply_errno(msg, -EINVAL, "SetFault");
        wrapfw_set_fault(d->fw, flags, fw_now());
        fw_kick(d);
        return sd_bus_reply_method_return(msg, NULL);
}

/* R5's blind spots, in the wrap's firmware: a silent thermometer, a Status that misreports. */
static int ctl_set_thermometer(sd_bus_message *msg, void *userdata, sd_bus_error *error) {
        int on;
        WITH_DEV(msg, userdata, d);
        if (!d->fw || sd_bus_message_read(msg, "b", &on) < 0)
                return reply_errno(msg, -EINVAL, "SetThermometer");
        wrapfw_set_thermometer_silent(d->fw, !on, fw_now());
        fw_kick(d);
        return sd_bus_reply_method_return(msg, NULL);
}

static int ctl_report_mode(sd_bus_message *msg, void *userdata, sd_bus_error *error) {
        int16_t mode;
        WITH_DEV(msg, userdata, d);
        if (!d->fw || sd_bus_message_read(msg, "n", &mode) < 0 || mode < -1 || mode > 2)
                return reply_errno(msg, -EINVAL, "ReportMode");
        wrapfw_set_reported_mode(d->fw, mode, fw_now());
        fw_kick(d);
        return sd_bus_reply_method_return(msg, NULL);
}

static int ctl_set_battery(sd_bus_message *msg, void *userdata, sd_bus_error *error) {
        uint8_t pct;
        WITH_DEV(msg, userdata, d);
        if (sd_bus_message_read(msg, "y", &pct) < 0 || pct > 100)
                return reply_errno(msg, -EINVAL, "SetBattery");
        if (d->fw)
                wrapfw_set_battery(d->fw, pct, fw_now());
        else
                d->battery_pct = pct;
        fw_kick(d);
        return sd_bus_reply_method_return(msg, NULL);
}

static int ctl_drop_link(sd_bus_message *msg, void *userdata, sd_bus_error *error) {
        int stay_away;
        WITH_DEV(msg, userdata, d);
        if (sd_bus_message_read(msg, "b", &stay_away) < 0)
                return reply_errno(msg, -EINVAL, "DropLink");
        if (stay_away)
                d->advertising = false;
        if (d->link == LINK_CONNECTING) {
                /* The attempt goes on until it times out, as the peer is gone. */
                d->fail_connects = d->fail_connects ? d->fail_connects : 1;
        } else
                link_lost(d, true);
        return sd_bus_reply_method_return(msg, NULL);
}

static int ctl_set_advertising(sd_bus_message *msg, void *userdata, sd_bus_error *error) {
        int on;
        WITH_DEV(msg, userdata, d);
        if (sd_bus_message_read(msg, "b", &on) < 0)
                return reply_errno(msg, -EINVAL, "SetAdvertising");
        d->advertising = on;
        scan_now(d->m);
        return sd_bus_reply_method_return(msg, NULL);
}

static int ctl_set_rssi(sd_bus_message *msg, void *userdata, sd_bus_error *error) {
        int16_t rssi;
        WITH_DEV(msg, userdata, d);
        if (sd_bus_message_read(msg, "n", &rssi) < 0)
                return reply_errno(msg, -EINVAL, "SetRssi");
        d->rssi = rssi;
        if (d->rssi_shown)
                props_changed(d->m, d->path, "org.bluez.Device1", "RSSI");
        return sd_bus_reply_method_return(msg, NULL);
}

static int ctl_fail_connect(sd_bus_message *msg, void *userdata, sd_bus_error *error) {
        uint32_t n;
        WITH_DEV(msg, userdata, d);
        if (sd_bus_message_read(msg, "u", &n) < 0)
                return reply_errno(msg, -EINVAL, "FailConnect");
        d->fail_connects = n;
        return sd_bus_reply_method_return(msg, NULL);
}

static int ctl_stall_next(sd_bus_message *msg, void *userdata, sd_bus_error *error) {
        WITH_DEV(msg, userdata, d);
        d->stall_next = true;
        return sd_bus_reply_method_return(msg, NULL);
}

static int ctl_set_services_late(sd_bus_message *msg, void *userdata, sd_bus_error *error) {
        int on;
        WITH_DEV(msg, userdata, d);
        if (sd_bus_message_read(msg, "b", &on) < 0)
                return reply_errno(msg, -EINVAL, "SetServicesLate");
        d->services_late = on;
        return sd_bus_reply_method_return(msg, NULL);
}

static int ctl_set_handle_base(sd_bus_message *msg, void *userdata, sd_bus_error *error) {
        uint16_t base;
        WITH_DEV(msg, userdata, d);
        if (sd_bus_message_read(msg, "q", &base) < 0 || base == 0 || base > 0xff00)
                return reply_errno(msg, -EINVAL, "SetHandleBase");
        /* A firmware update: the link drops, and the next connection finds new handles. */
        link_lost(d, true);
        gatt_unexport(d);
        for (size_t i = 0; i < d->n_attrs; i++)
                for (size_t j = 0; j < MAX_SUBS; j++)
                        d->attrs[i].subs[j] = mfree_str(d->attrs[i].subs[j]);
        d->handle_base = base;
        d->db_cached = false;
        db_build(d);
        if (d->published)
                props_changed(d->m, d->path, "org.bluez.Device1", "UUIDs");
        return sd_bus_reply_method_return(msg, NULL);
}

static int ctl_reset_bond(sd_bus_message *msg, void *userdata, sd_bus_error *error) {
        WITH_DEV(msg, userdata, d);
        /* The 10-second stop press: the wrap forgets its bond and pairs again. */
        d->peer_bonded = false;
        if (d->paired && d->link != LINK_DOWN)
                link_lost(d, true);
        return sd_bus_reply_method_return(msg, NULL);
}

static int ctl_send_raw(sd_bus_message *msg, void *userdata, sd_bus_error *error) {
        const char *uuid;
        const void *v;
        size_t n;
        char norm[37];
        WITH_DEV(msg, userdata, d);
        if (sd_bus_message_read(msg, "s", &uuid) < 0 || sd_bus_message_read_array(msg, 'y', &v, &n) < 0 ||
            uuid_normalize(uuid, norm) < 0 || n > WRAPFW_VALUE_MAX)
                return reply_errno(msg, -EINVAL, "SendRaw");
        for (size_t i = 0; i < d->n_attrs; i++) {
                Attr *a = &d->attrs[i];
                if (a->kind == K_CHR && streq(a->uuid, norm)) {
                        WrapFwOutput o = { .size = n };
                        memcpy(o.value, v, n);
                        if (a->role == R_BATTERY || !gatt_ready(d) || (!n_subs(a) && a->notify_fd < 0) || !a->slot)
                                return sd_bus_reply_method_return(msg, "b", 0);
                        notify_clients(a, o.value, o.size);
                        return sd_bus_reply_method_return(msg, "b", 1);
                }
        }
        return reply_errno(msg, -ENOENT, "SendRaw: no such characteristic");
}

/* One SetTiming key: every value is a u of milliseconds, and an unknown key is refused. */
static int timing_entry(sd_bus_message *msg, const char *key, _unused_ const char *contents, void *userdata) {
        Mock *m = userdata;
        struct { const char *key; uint64_t *field; } map[] = {
                { "connect_ms", &m->connect_ms }, { "connect_timeout_ms", &m->connect_timeout_ms },
                { "disconnect_ms", &m->disconnect_ms }, { "pair_ms", &m->pair_ms },
                { "discover_ms", &m->discover_ms }, { "late_ms", &m->late_ms },
                { "cached_ms", &m->cached_ms }, { "stall_drop_ms", &m->stall_drop_ms },
                { "temp_timeout_ms", &m->temp_timeout_ms }, { "scan_ms", &m->scan_ms },
        };
        uint32_t v;
        int r;

        r = sd_bus_message_read(msg, "v", "u", &v);
        if (r < 0)
                return r;
        for (size_t i = 0; i < ELEMENTSOF(map); i++)
                if (streq(key, map[i].key)) {
                        *map[i].field = v;
                        return 1;
                }
        return -EINVAL;
}

static int ctl_set_timing(sd_bus_message *msg, void *userdata, sd_bus_error *error) {
        int r = bus_message_read_dict(msg, timing_entry, userdata);
        if (r < 0)
                return reply_errno(msg, r, "SetTiming (keys take u, milliseconds)");
        return sd_bus_reply_method_return(msg, NULL);
}

static int ctl_restart_bluez(sd_bus_message *msg, void *userdata, sd_bus_error *error) {
        Mock *m = userdata;
        uint32_t down_ms;

        if (sd_bus_message_read(msg, "u", &down_ms) < 0)
                return reply_errno(msg, -EINVAL, "RestartBluez");
        if (!m->bz)
                return reply_errno(msg, -EALREADY, "RestartBluez");
        log_info("org.bluez goes away for %" PRIu32 " ms", down_ms);
        /* The daemon dies: links drop with it, nothing is said on the bus about them. */
        for (Dev *d = m->devs; d; d = d->next)
                link_lost(d, false);
        bluez_disconnect(m);
        (void) timer_arm(m, &m->t_restart, ms(down_ms), on_restart, m);
        return sd_bus_reply_method_return(msg, NULL);
}

static int ctl_adapter(sd_bus_message *msg, void *userdata, sd_bus_error *error) {
        Mock *m = userdata;
        bool add = streq(sd_bus_message_get_member(msg), "AddAdapter");

        if (add == m->adapter_present)
                return reply_errno(msg, -EALREADY, sd_bus_message_get_member(msg));
        if (add) {
                m->adapter_present = true;
                m->powered = true;
                adapter_publish(m);
        } else {
                for (Dev *d = m->devs; d; d = d->next)
                        link_lost(d, false);
                adapter_unpublish(m);
                m->adapter_present = false;
        }
        return sd_bus_reply_method_return(msg, NULL);
}

static int ctl_get_log(sd_bus_message *msg, void *userdata, sd_bus_error *error) {
        _cleanup_(sd_bus_message_unrefp) sd_bus_message *reply = NULL;
        Mock *m = userdata;
        int r;

        r = sd_bus_message_new_method_return(msg, &reply);
        if (r >= 0)
                r = sd_bus_message_open_container(reply, 'a', "(sxsy)");
        for (size_t i = 0; r >= 0 && i < m->n_log; i++)
                r = sd_bus_message_append(reply, "(sxsy)", m->log[i].address, m->log[i].t_usec,
                                          m->log[i].hex, m->log[i].result);
        if (r >= 0)
                r = sd_bus_message_close_container(reply);
        if (r < 0)
                return r;
        return sd_bus_send(NULL, reply, NULL);
}

static int ctl_clear_log(sd_bus_message *msg, void *userdata, sd_bus_error *error) {
        Mock *m = userdata;
        m->log = mfree_ptr(m->log);
        m->n_log = 0;
        return sd_bus_reply_method_return(msg, NULL);
}

static int ctl_get_wrap(sd_bus_message *msg, void *userdata, sd_bus_error *error) {
        _cleanup_(sd_bus_message_unrefp) sd_bus_message *reply = NULL;
        WrapFwInfo i = { 0 };
        int r;
        WITH_DEV(msg, userdata, d);

        if (d->fw)
                wrapfw_get_info(d->fw, fw_now(), &i);
        r = sd_bus_message_new_method_return(msg, &reply);
        if (r < 0)
                return r;
        r = sd_bus_message_append(reply, "a{sv}", 19,
                "state", "y", i.state, "mode", "y", i.mode, "setpoint", "n", i.setpoint,
                "skin", "n", i.skin, "pack", "n", i.pack, "faults", "y", i.faults,
                "session_seq", "y", i.session_seq, "press_seq", "y", i.press_seq,
                "battery", "y", d->fw ? i.battery : d->battery_pct,
                "elapsed", "q", i.elapsed_s, "remaining", "q", i.remaining_s,
                "no_gateway", "u", i.no_gateway_count, "completed", "u", i.sessions_completed,
                "connected", "b", d->link == LINK_UP || d->link == LINK_DISCONNECTING,
                "paired", "b", d->paired, "peer_bonded", "b", d->peer_bonded,
                "advertising", "b", d->advertising, "published", "b", d->published,
                "path", "s", d->path);
        if (r < 0)
                return r;
        return sd_bus_send(NULL, reply, NULL);
}

static int ctl_time(sd_bus_message *msg, void *userdata, sd_bus_error *error) {
        return sd_bus_reply_method_return(msg, "tu", fw_now(), clock_scale());
}

static const sd_bus_vtable mock_vtable[] = {
        SD_BUS_VTABLE_START(0),
        SD_BUS_METHOD_WITH_ARGS("AddWrap", SD_BUS_ARGS("s", address), SD_BUS_RESULT("o", path), ctl_add_wrap_with, 0),
        SD_BUS_METHOD_WITH_ARGS("AddWrapWith", SD_BUS_ARGS("s", address, "a{sv}", options), SD_BUS_RESULT("o", path),
                                ctl_add_wrap_with, 0),
        SD_BUS_METHOD_WITH_ARGS("AddPeripheral", SD_BUS_ARGS("s", address, "as", uuids), SD_BUS_RESULT("o", path),
                                ctl_add_peripheral, 0),
        SD_BUS_METHOD_WITH_ARGS("PressButton", SD_BUS_ARGS("s", address, "y", event), SD_BUS_NO_RESULT, ctl_press, 0),
        SD_BUS_METHOD_WITH_ARGS("SetSkin", SD_BUS_ARGS("s", address, "d", celsius), SD_BUS_NO_RESULT, ctl_set_skin, 0),
        SD_BUS_METHOD_WITH_ARGS("SetFault", SD_BUS_ARGS("s", address, "y", flags), SD_BUS_NO_RESULT, ctl_set_fault, 0),
        SD_BUS_METHOD_WITH_ARGS("ClearFault", SD_BUS_ARGS("s", address), SD_BUS_NO_RESULT, ctl_set_fault, 0),
        SD_BUS_METHOD_WITH_ARGS("SetThermometer", SD_BUS_ARGS("s", address, "b", on), SD_BUS_NO_RESULT,
                                ctl_set_thermometer, 0),
        SD_BUS_METHOD_WITH_ARGS("ReportMode", SD_BUS_ARGS("s", address, "n", mode), SD_BUS_NO_RESULT,
                                ctl_report_mode, 0),
        SD_BUS_METHOD_WITH_ARGS("SetBattery", SD_BUS_ARGS("s", address, "y", percent), SD_BUS_NO_RESULT,
                                ctl_set_battery, 0),
        SD_BUS_METHOD_WITH_ARGS("DropLink", SD_BUS_ARGS("s", address, "b", stay_away), SD_BUS_NO_RESULT,
                                ctl_drop_link, 0),
        SD_BUS_METHOD_WITH_ARGS("SetAdvertising", SD_BUS_ARGS("s", address, "b", on), SD_BUS_NO_RESULT,
                                ctl_set_advertising, 0),
        SD_BUS_METHOD_WITH_ARGS("SetRssi", SD_BUS_ARGS("s", address, "n", rssi), SD_BUS_NO_RESULT, ctl_set_rssi, 0),
        SD_BUS_METHOD_WITH_ARGS("FailConnect", SD_BUS_ARGS("s", address, "u", n), SD_BUS_NO_RESULT,
                                ctl_fail_connect, 0),
        SD_BUS_METHOD_WITH_ARGS("StallNextConnect", SD_BUS_ARGS("s", address), SD_BUS_NO_RESULT, ctl_stall_next, 0),
        SD_BUS_METHOD_WITH_ARGS("SetServicesLate", SD_BUS_ARGS("s", address, "b", on), SD_BUS_NO_RESULT,
                                ctl_set_services_late, 0),
        SD_BUS_METHOD_WITH_ARGS("SetHandleBase", SD_BUS_ARGS("s", address, "q", base), SD_BUS_NO_RESULT,
                                ctl_set_handle_base, 0),
        SD_BUS_METHOD_WITH_ARGS("ResetBond", SD_BUS_ARGS("s", address), SD_BUS_NO_RESULT, ctl_reset_bond, 0),
        SD_BUS_METHOD_WITH_ARGS("SendRaw", SD_BUS_ARGS("s", address, "s", char_uuid, "ay", value),
                                SD_BUS_RESULT("b", delivered), ctl_send_raw, 0),
        SD_BUS_METHOD_WITH_ARGS("SetTiming", SD_BUS_ARGS("a{sv}", timing), SD_BUS_NO_RESULT, ctl_set_timing, 0),
        SD_BUS_METHOD_WITH_ARGS("RestartBluez", SD_BUS_ARGS("u", down_ms), SD_BUS_NO_RESULT, ctl_restart_bluez, 0),
        SD_BUS_METHOD("RemoveAdapter", "", "", ctl_adapter, 0),
        SD_BUS_METHOD("AddAdapter", "", "", ctl_adapter, 0),
        SD_BUS_METHOD_WITH_ARGS("GetLog", SD_BUS_NO_ARGS, SD_BUS_RESULT("a(sxsy)", writes), ctl_get_log, 0),
        SD_BUS_METHOD("ClearLog", "", "", ctl_clear_log, 0),
        SD_BUS_METHOD_WITH_ARGS("GetWrap", SD_BUS_ARGS("s", address), SD_BUS_RESULT("a{sv}", info), ctl_get_wrap, 0),
        SD_BUS_METHOD_WITH_ARGS("GetTime", SD_BUS_NO_ARGS, SD_BUS_RESULT("t", mono_usec, "u", scale), ctl_time, 0),
        SD_BUS_VTABLE_END
};

/* ---- main ---- */

static Mock *mock_free(Mock *m) {
        if (!m)
                return NULL;
        if (m->bz)
                bluez_disconnect(m);
        while (m->devs) {
                Dev *d = m->devs;
                m->devs = d->next;
                timer_stop(&d->fw_timer);
                wrapfw_free(d->fw);
                for (size_t i = 0; i < ELEMENTSOF(d->adv_uuids); i++)
                        free(d->adv_uuids[i]);
                free(d);
        }
        timer_stop(&m->t_scan);
        timer_stop(&m->t_restart);
        m->ctl = sd_bus_flush_close_unref(m->ctl);
        m->ev = sd_event_unref(m->ev);
        free(m->log);
        free(m);
        return NULL;
}

static void mock_freep(Mock **m) {
        mock_free(*m);
}

int main(int argc, char *argv[]) {
        _cleanup_(mock_freep) Mock *m = NULL;
        int r;

        log_setup(getenv("KNEEWRAP_MOCK_DEBUG") ? LOG_DEBUG : LOG_INFO);
        if (argc > 1) {
                fprintf(stderr, "Usage: %s\n  Serves org.bluez (as bluez 5.66) and org.kneewrap.Mock on the bus "
                        "named by DBUS_SYSTEM_BUS_ADDRESS.\n", argv[0]);
                return streq(argv[1], "--help") ? EXIT_SUCCESS : EXIT_FAILURE;
        }
        r = clock_setup();
        if (r < 0)
                return log_error_errno(r, "Invalid KNEEWRAP_TIME_SCALE"), EXIT_FAILURE;

        m = calloc(1, sizeof *m);
        if (!m)
                return EXIT_FAILURE;
        /* pair_ms outlasts discover_ms + late_ms: as observed, a first connection's pairing
         * ends after its GATT objects are there. */
        *m = (Mock) {
                .adapter_present = true, .powered = true, .pairable = true,
                .connect_ms = 150, .connect_timeout_ms = 5000, .disconnect_ms = 2000, .pair_ms = 700,
                .discover_ms = 400, .late_ms = 120, .cached_ms = 100, .stall_drop_ms = 2500,
                .temp_timeout_ms = 30000, .scan_ms = 1000,
        };

        r = sd_event_default(&m->ev);
        if (r < 0)
                return log_error_errno(r, "Failed to get the event loop: %s", strerror(abs(r))), EXIT_FAILURE;
        sigset_t ss;
        sigemptyset(&ss);
        sigaddset(&ss, SIGTERM);
        sigaddset(&ss, SIGINT);
        sigprocmask(SIG_BLOCK, &ss, NULL);
        (void) sd_event_add_signal(m->ev, NULL, SIGTERM, NULL, NULL);
        (void) sd_event_add_signal(m->ev, NULL, SIGINT, NULL, NULL);

        r = sd_bus_open_system(&m->ctl);
        if (r < 0)
                return log_error_errno(r, "Failed to connect to the system bus: %s", strerror(abs(r))), EXIT_FAILURE;
        r = sd_bus_attach_event(m->ctl, m->ev, 0);
        if (r >= 0)
                r = sd_bus_add_object_vtable(m->ctl, NULL, MOCK_PATH, MOCK_IFACE, mock_vtable, m);
        if (r < 0)
                return log_error_errno(r, "Failed to set up the controls: %s", strerror(abs(r))), EXIT_FAILURE;

        r = bluez_connect(m);
        if (r < 0)
                return EXIT_FAILURE;
        /* The controls' name last: when it appears, org.bluez is already there. */
        r = sd_bus_request_name(m->ctl, MOCK_NAME, 0);
        if (r < 0)
                return log_error_errno(r, "Failed to own %s: %s", MOCK_NAME, strerror(abs(r))), EXIT_FAILURE;

        log_info("mock bluez 5.66 ready (time scale %u)", clock_scale());
        r = sd_event_loop(m->ev);
        if (r < 0)
                return log_error_errno(r, "Event loop failed: %s", strerror(abs(r))), EXIT_FAILURE;
        return EXIT_SUCCESS;
}
