/* bluez: the BLE central, a BlueZ client over sd-bus: objects, adapter, discovery, adoption, links. */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <systemd/sd-bus.h>
#include <systemd/sd-event.h>

#include "bluez.h"
#include "bus-util.h"
#include "clock.h"
#include "log.h"
#include "util.h"
#include "wire.h"

#define BZ_NAME            "org.bluez"
#define BZ_ADAPTER         "org.bluez.Adapter1"
#define BZ_DEVICE          "org.bluez.Device1"
#define BZ_SERVICE         "org.bluez.GattService1"
#define BZ_CHAR            "org.bluez.GattCharacteristic1"
#define BZ_BATTERY         "org.bluez.Battery1"
#define BZ_AGENT_MANAGER   "org.bluez.AgentManager1"
#define AGENT_PATH         "/org/kneewrap1/agent"
#define AGENT_CAPABILITY   "NoInputNoOutput"

/* Real-time limits (see bluez.h: BLE runs in real time). */
#define CONNECT_TIMEOUT_USEC    (30 * USEC_PER_SEC)  /* BlueZ gives up on an LE connect before this */
#define PAIR_TIMEOUT_USEC       (60 * USEC_PER_SEC)
#define CALL_TIMEOUT_USEC       (10 * USEC_PER_SEC)
#define RESOLVE_TIMEOUT_USEC    (15 * USEC_PER_SEC)  /* GATT objects after Connect */
#define BACKOFF_MIN_USEC        (1 * USEC_PER_SEC)
#define BACKOFF_MAX_USEC        (60 * USEC_PER_SEC)
#define ADOPT_RETRY_USEC        (30 * USEC_PER_SEC)
#define DISCOVERY_RETRY_USEC    (5 * USEC_PER_SEC)
#define POWER_RETRY_USEC        (10 * USEC_PER_SEC)

enum {
        IF_ADAPTER = 1 << 0,
        IF_DEVICE  = 1 << 1,
        IF_SERVICE = 1 << 2,
        IF_CHAR    = 1 << 3,
        IF_BATTERY = 1 << 4,
};

/* One org.bluez object, with the properties of the interfaces we use. */
typedef struct BzObj {
        struct BzObj *next;
        char *path;
        unsigned ifaces;

        /* Adapter1, Device1 */
        char address[BDADDR_STR_MAX];
        /* Adapter1 */
        bool powered;
        bool discovering;
        /* Device1 */
        char *adapter;
        char name[64];
        bool therapy;                 /* the therapy service UUID is in UUIDs */
        bool connected;
        bool resolved;                /* ServicesResolved */
        bool paired;
        bool trusted;
        /* Battery1 */
        int battery;
        /* GattService1, GattCharacteristic1 */
        char uuid[40];
        char *parent;                 /* service: its Device; characteristic: its Service */

        /* Adoption, for devices. */
        bool adopting;
        unsigned adopt_failures;
        uint64_t adopt_after;         /* real CLOCK_MONOTONIC */
        bool neighbour_logged;
} BzObj;

typedef enum LinkState {
        LINK_WAITING,                 /* no device object, adapter down, or waiting to retry */
        LINK_CONNECTING,              /* Device1.Connect sent */
        LINK_RESOLVING,               /* connected: waiting for ServicesResolved and the objects */
        LINK_SETUP,                   /* StartNotify sent */
        LINK_READY,
} LinkState;

enum {
        CH_STATUS,
        CH_BUTTON,
        CH_CP,
        CH_TEMP,
        CH_MANUFACTURER,
        CH_MODEL,
        CH_SERIAL,
        CH_FIRMWARE,
        _CH_MAX,
        _CH_REQUIRED = CH_MANUFACTURER,
};

static const struct {
        const char *service;
        const char *uuid;
        const char *name;
} chars[_CH_MAX] = {
        [CH_STATUS]       = { WIRE_UUID_THERAPY_SERVICE, WIRE_UUID_STATUS, "Therapy Status" },
        [CH_BUTTON]       = { WIRE_UUID_THERAPY_SERVICE, WIRE_UUID_BUTTON, "Button Event" },
        [CH_CP]           = { WIRE_UUID_THERAPY_SERVICE, WIRE_UUID_CONTROL_POINT, "Control Point" },
        [CH_TEMP]         = { WIRE_UUID_HEALTH_THERMO, WIRE_UUID_TEMP_MEASUREMENT, "Temperature Measurement" },
        [CH_MANUFACTURER] = { WIRE_UUID_DEVICE_INFO, WIRE_UUID_MANUFACTURER, "Manufacturer Name" },
        [CH_MODEL]        = { WIRE_UUID_DEVICE_INFO, WIRE_UUID_MODEL, "Model Number" },
        [CH_SERIAL]       = { WIRE_UUID_DEVICE_INFO, WIRE_UUID_SERIAL, "Serial Number" },
        [CH_FIRMWARE]     = { WIRE_UUID_DEVICE_INFO, WIRE_UUID_FIRMWARE, "Firmware Revision" },
};

typedef struct BzLink BzLink;

struct BzLink {
        struct BzLink *next;
        Bluez *b;
        char address[BDADDR_STR_MAX];
        LinkState state;
        unsigned failures;            /* since the last link that came up */
        sd_event_source *timer;       /* retry, or the resolve timeout */
        char *dev;                    /* the device's object path while it exists */
        char *ch[_CH_MAX];
        unsigned notify_pending;
        WrapInfo info;
        unsigned info_pending;
};

typedef struct BzCall BzCall;
typedef void (*BzReplyFn)(Bluez *b, BzCall *c, sd_bus_message *reply, const sd_bus_error *e);

/* An outstanding method call; cancelled (slot unref'd) when its owner goes away. */
struct BzCall {
        BzCall *next, *prev;
        Bluez *b;
        sd_bus_slot *slot;
        BzReplyFn fn;
        BzLink *link;                 /* NULL: owned by the client */
        char *path;
        int arg;
};

struct Bluez {
        sd_event *event;
        sd_bus *bus;
        const Config *config;
        BluezHooks hooks;
        int64_t adoption_until;       /* Unix seconds, scaled clock; 0 = closed */
        sd_bus_slot *matches[7];
        sd_bus_slot *agent_slot;
        sd_bus_slot *owner_call;
        sd_event_source *update;      /* deferred re-evaluation */
        sd_event_source *adoption_timer;
        sd_event_source *discovery_timer;
        sd_event_source *power_timer;
        sd_event_source *adopt_timer;
        sd_event_source *sync_timer;

        char *owner;                  /* bluetoothd's unique name; NULL while it is gone */
        bool synced;                  /* GetManagedObjects answered */
        bool agent_registered;
        BzObj *objs;
        char *adapter;                /* the adapter we use */
        char adapter_why[128];        /* why none is usable */
        bool powering;

        bool discovery_ours;          /* our StartDiscovery succeeded */
        bool discovery_busy;          /* a Set/Start/Stop call is outstanding */
        bool discovery_failed;        /* wait for discovery_timer */

        BzLink *links;
        BzCall *calls;
};

/* Reports up through the daemon's hooks; a hook it did not set is skipped. */
#define HOOK(b, name, ...) do { if ((b)->hooks.name) (b)->hooks.name((b)->hooks.userdata, __VA_ARGS__); } while (0)
#define HOOK0(b, name) do { if ((b)->hooks.name) (b)->hooks.name((b)->hooks.userdata); } while (0)

/* ---- Objects ---- */

static BzObj *obj_find(Bluez *b, const char *path) {
        for (BzObj *o = b->objs; o; o = o->next)
                if (streq(o->path, path))
                        return o;
        return NULL;
}

static BzObj *obj_get(Bluez *b, const char *path) {
        BzObj *o = obj_find(b, path);

        if (o)
                return o;
        o = calloc(1, sizeof *o);
        if (!o)
                return NULL;
        o->path = strdup(path);
        if (!o->path) {
                free(o);
                return NULL;
        }
        o->battery = -1;
        o->next = b->objs;
        b->objs = o;
        return o;
}

static void obj_free(BzObj *o) {
        free(o->path);
        free(o->adapter);
        free(o->parent);
        free(o);
}

static void objs_drop_unused(Bluez *b) {
        for (BzObj **p = &b->objs; *p;) {
                BzObj *o = *p;
                if (o->ifaces == 0) {
                        *p = o->next;
                        obj_free(o);
                } else
                        p = &o->next;
        }
}

static void objs_free_all(Bluez *b) {
        while (b->objs) {
                BzObj *o = b->objs;
                b->objs = o->next;
                obj_free(o);
        }
}

static BzObj *adapter_obj(Bluez *b) {
        BzObj *o = b->adapter ? obj_find(b, b->adapter) : NULL;
        return o && (o->ifaces & IF_ADAPTER) ? o : NULL;
}

static bool device_on_adapter(Bluez *b, const BzObj *d) {
        size_t n;

        if (!b->adapter || !(d->ifaces & IF_DEVICE))
                return false;
        if (d->adapter)
                return streq(d->adapter, b->adapter);
        n = strlen(b->adapter);
        return strncmp(d->path, b->adapter, n) == 0 && d->path[n] == '/';
}

static BzObj *device_by_address(Bluez *b, const char *address) {
        for (BzObj *o = b->objs; o; o = o->next)
                if ((o->ifaces & IF_DEVICE) && streq(o->address, address) && device_on_adapter(b, o))
                        return o;
        return NULL;
}

/* A characteristic by UUID inside a service with the right UUID on this device: never by
 * path, and a second service with the same UUID (a 0x180A with only PnP ID) is harmless. */
static const char *find_char(Bluez *b, const char *dev, const char *service_uuid, const char *char_uuid) {
        for (BzObj *c = b->objs; c; c = c->next) {
                BzObj *s;

                if (!(c->ifaces & IF_CHAR) || !c->parent || strcasecmp(c->uuid, char_uuid) != 0)
                        continue;
                s = obj_find(b, c->parent);
                if (s && (s->ifaces & IF_SERVICE) && s->parent && streq(s->parent, dev) &&
                    strcasecmp(s->uuid, service_uuid) == 0)
                        return c->path;
        }
        return NULL;
}

/* ---- Calls ---- */

static void call_unlink(BzCall *c) {
        if (c->prev)
                c->prev->next = c->next;
        else if (c->b->calls == c)
                c->b->calls = c->next;
        if (c->next)
                c->next->prev = c->prev;
        c->next = c->prev = NULL;
}

static void call_free(BzCall *c) {
        call_unlink(c);
        sd_bus_slot_unref(c->slot);
        free(c->path);
        free(c);
}

static int call_reply(sd_bus_message *reply, void *userdata, sd_bus_error *ret_error) {
        BzCall *c = userdata;
        const sd_bus_error *e = sd_bus_message_get_error(reply);

        /* Off the list first: the handler may cancel its link's calls (link_down). */
        call_unlink(c);
        c->fn(c->b, c, reply, e);
        sd_bus_slot_unref(c->slot);
        free(c->path);
        free(c);
        return 0;
}

static void calls_cancel(Bluez *b, BzLink *l) {
        for (BzCall *c = b->calls, *n; c; c = n) {
                n = c->next;
                if (c->link == l)
                        call_free(c);
        }
}

/* Sends `msg` and tracks the call; fn gets the reply or the error (a timeout included). */
static int call_send(Bluez *b, BzLink *l, sd_bus_message *msg, uint64_t timeout, BzReplyFn fn,
                     const char *path, int arg) {
        BzCall *c = calloc(1, sizeof *c);
        int r;

        if (!c)
                return -ENOMEM;
        *c = (BzCall) { .b = b, .fn = fn, .link = l, .arg = arg };
        if (path && !(c->path = strdup(path))) {
                free(c);
                return -ENOMEM;
        }
        r = sd_bus_call_async(b->bus, &c->slot, msg, call_reply, c, timeout);
        if (r < 0) {
                free(c->path);
                free(c);
                return r;
        }
        c->next = b->calls;
        if (c->next)
                c->next->prev = c;
        b->calls = c;
        return 0;
}

static int call_simple(Bluez *b, BzLink *l, const char *path, const char *iface, const char *method,
                       uint64_t timeout, BzReplyFn fn, int arg) {
        sd_bus_message *msg = NULL;
        int r;

        r = sd_bus_message_new_method_call(b->bus, &msg, BZ_NAME, path, iface, method);
        if (r >= 0)
                r = call_send(b, l, msg, timeout, fn, path, arg);
        sd_bus_message_unref(msg);
        return r;
}

static int set_bool_property(Bluez *b, const char *path, const char *iface, const char *prop, bool v,
                             BzReplyFn fn) {
        sd_bus_message *msg = NULL;
        int r;

        r = sd_bus_message_new_method_call(b->bus, &msg, BZ_NAME, path, "org.freedesktop.DBus.Properties", "Set");
        if (r >= 0)
                r = sd_bus_message_append(msg, "ssv", iface, prop, "b", (int) v);
        if (r >= 0)
                r = call_send(b, NULL, msg, CALL_TIMEOUT_USEC, fn, path, 0);
        sd_bus_message_unref(msg);
        return r;
}

static const char *error_name(const sd_bus_error *e) {
        return e && e->name ? e->name : "?";
}

static const char *error_text(const sd_bus_error *e) {
        return e && e->message ? e->message : error_name(e);
}

/* ---- Property parsing ---- */

static int read_variant(sd_bus_message *msg, const char *sig, void *ret) {
        const char *contents;
        char type;
        int r;

        r = sd_bus_message_peek_type(msg, &type, &contents);
        if (r < 0)
                return r;
        if (type != 'v' || !streq(contents, sig))
                return sd_bus_message_skip(msg, "v") < 0 ? -EBADMSG : 0;
        r = sd_bus_message_read(msg, "v", sig, ret);
        return r < 0 ? r : 1;
}

static int read_bool(sd_bus_message *msg, bool *ret) {
        int v, r = read_variant(msg, "b", &v);
        if (r > 0)
                *ret = v;
        return r;
}

static int read_string(sd_bus_message *msg, const char *sig, char *buf, size_t size) {
        const char *s;
        int r = read_variant(msg, sig, &s);
        if (r > 0)
                snprintf(buf, size, "%s", s);
        return r;
}

static int read_strdup(sd_bus_message *msg, const char *sig, char **ret) {
        const char *s;
        char *d;
        int r = read_variant(msg, sig, &s);
        if (r <= 0)
                return r;
        d = strdup(s);
        if (!d)
                return -ENOMEM;
        free(*ret);
        *ret = d;
        return 1;
}

static int read_uuids_has_therapy(sd_bus_message *msg, bool *ret) {
        const char *contents, *u;
        char type;
        bool found = false;
        int r;

        r = sd_bus_message_peek_type(msg, &type, &contents);
        if (r < 0)
                return r;
        if (type != 'v' || !streq(contents, "as"))
                return sd_bus_message_skip(msg, "v");
        r = sd_bus_message_enter_container(msg, 'v', "as");
        if (r < 0)
                return r;
        r = sd_bus_message_enter_container(msg, 'a', "s");
        if (r < 0)
                return r;
        while ((r = sd_bus_message_read(msg, "s", &u)) > 0)
                if (strcasecmp(u, WIRE_UUID_THERAPY_SERVICE) == 0)
                        found = true;
        if (r < 0)
                return r;
        r = sd_bus_message_exit_container(msg);
        if (r >= 0)
                r = sd_bus_message_exit_container(msg);
        if (r < 0)
                return r;
        *ret = found;
        return 1;
}

static void on_value(Bluez *b, const char *path, const uint8_t *v, size_t n);

typedef struct {
        Bluez *b;
        BzObj *o;
        const char *path;
        unsigned iface;
} PropsCtx;

/* One property of parse_props(); > 0 once the variant is read (the read_* helpers skip a wrong type). */
static int parse_prop(sd_bus_message *msg, const char *name, _unused_ const char *contents, void *userdata) {
        PropsCtx *c = userdata;
        BzObj *o = c->o;
        unsigned iface = c->iface;
        int r;

        if ((iface & (IF_ADAPTER | IF_DEVICE)) && streq(name, "Address")) {
                char a[BDADDR_STR_MAX] = "";
                r = read_string(msg, "s", a, sizeof a);
                if (r > 0 && bdaddr_normalize(a, o->address) < 0)
                        o->address[0] = '\0';
        } else if (iface == IF_ADAPTER && streq(name, "Powered"))
                r = read_bool(msg, &o->powered);
        else if (iface == IF_ADAPTER && streq(name, "Discovering"))
                r = read_bool(msg, &o->discovering);
        else if (iface == IF_DEVICE && streq(name, "Adapter"))
                r = read_strdup(msg, "o", &o->adapter);
        else if (iface == IF_DEVICE && (streq(name, "Name") || (streq(name, "Alias") && !o->name[0])))
                r = read_string(msg, "s", o->name, sizeof o->name);
        else if (iface == IF_DEVICE && streq(name, "UUIDs"))
                r = read_uuids_has_therapy(msg, &o->therapy);
        else if (iface == IF_DEVICE && streq(name, "Connected"))
                r = read_bool(msg, &o->connected);
        else if (iface == IF_DEVICE && streq(name, "ServicesResolved"))
                r = read_bool(msg, &o->resolved);
        else if (iface == IF_DEVICE && streq(name, "Paired"))
                r = read_bool(msg, &o->paired);
        else if (iface == IF_DEVICE && streq(name, "Trusted"))
                r = read_bool(msg, &o->trusted);
        else if (iface == IF_BATTERY && streq(name, "Percentage")) {
                uint8_t p;
                r = read_variant(msg, "y", &p);
                if (r > 0)
                        o->battery = p <= 100 ? p : -1;
        } else if ((iface & (IF_SERVICE | IF_CHAR)) && streq(name, "UUID"))
                r = read_string(msg, "s", o->uuid, sizeof o->uuid);
        else if (iface == IF_SERVICE && streq(name, "Device"))
                r = read_strdup(msg, "o", &o->parent);
        else if (iface == IF_CHAR && streq(name, "Service"))
                r = read_strdup(msg, "o", &o->parent);
        else if (iface == IF_CHAR && streq(name, "Value") && c->path) {
                const void *v;
                size_t n;

                r = sd_bus_message_enter_container(msg, 'v', "ay");
                if (r == 0 || r == -ENXIO)
                        return 0;
                if (r > 0) {
                        r = sd_bus_message_read_array(msg, 'y', &v, &n);
                        if (r >= 0)
                                r = sd_bus_message_exit_container(msg);
                        if (r >= 0)
                                on_value(c->b, c->path, v, n);
                }
        } else
                return 0;
        return r < 0 ? r : 1;
}

/* Reads an a{sv} of `iface` into o. `path` is the object's (for characteristic values). */
static int parse_props(Bluez *b, BzObj *o, const char *path, unsigned iface, sd_bus_message *msg) {
        PropsCtx c = { .b = b, .o = o, .path = path, .iface = iface };

        return bus_message_read_dict(msg, parse_prop, &c);
}

static unsigned iface_bit(const char *iface) {
        if (streq(iface, BZ_ADAPTER))
                return IF_ADAPTER;
        if (streq(iface, BZ_DEVICE))
                return IF_DEVICE;
        if (streq(iface, BZ_SERVICE))
                return IF_SERVICE;
        if (streq(iface, BZ_CHAR))
                return IF_CHAR;
        if (streq(iface, BZ_BATTERY))
                return IF_BATTERY;
        return 0;
}

/* Reads a{sa{sv}} for `path` (GetManagedObjects, InterfacesAdded). */
static int parse_interfaces(Bluez *b, const char *path, sd_bus_message *msg) {
        int r;

        r = sd_bus_message_enter_container(msg, 'a', "{sa{sv}}");
        if (r < 0)
                return r;
        while ((r = sd_bus_message_enter_container(msg, 'e', "sa{sv}")) > 0) {
                const char *iface;
                unsigned bit;

                r = sd_bus_message_read(msg, "s", &iface);
                if (r < 0)
                        return r;
                bit = iface_bit(iface);
                if (bit) {
                        BzObj *o = obj_get(b, path);
                        if (!o)
                                return -ENOMEM;
                        o->ifaces |= bit;
                        /* A new object's cached Value is not a notification. */
                        r = parse_props(b, o, NULL, bit, msg);
                        if (bit == IF_DEVICE && o->resolved)
                                o->connected = true;
                } else
                        r = sd_bus_message_skip(msg, "a{sv}");
                if (r < 0)
                        return r;
                r = sd_bus_message_exit_container(msg);
                if (r < 0)
                        return r;
        }
        if (r < 0)
                return r;
        return sd_bus_message_exit_container(msg);
}

/* ---- Links ---- */

static BzLink *link_find(Bluez *b, const char *address) {
        char a[BDADDR_STR_MAX];

        if (!b || !address)
                return NULL;
        for (BzLink *l = b->links; l; l = l->next)
                if (streq(l->address, address))
                        return l;
        /* Not in its normal form: the caller's spelling. */
        if (bdaddr_normalize(address, a) < 0)
                return NULL;
        for (BzLink *l = b->links; l; l = l->next)
                if (streq(l->address, a))
                        return l;
        return NULL;
}

static void link_clear_chars(BzLink *l) {
        for (size_t i = 0; i < _CH_MAX; i++) {
                free(l->ch[i]);
                l->ch[i] = NULL;
        }
}

static void schedule_update(Bluez *b);
static void link_try(BzLink *l);

static int on_link_timer(sd_event_source *s, uint64_t usec, void *userdata);

static int link_arm(BzLink *l, uint64_t delay_usec) {
        Bluez *b = l->b;
        uint64_t now;
        int r;

        sd_event_now(b->event, CLOCK_MONOTONIC, &now);
        if (l->timer) {
                r = sd_event_source_set_time(l->timer, now + delay_usec);
                if (r >= 0)
                        r = sd_event_source_set_enabled(l->timer, SD_EVENT_ONESHOT);
                return r;
        }
        return sd_event_add_time(b->event, &l->timer, CLOCK_MONOTONIC, now + delay_usec,
                                 10 * USEC_PER_MSEC, on_link_timer, l);
}

static void link_disarm(BzLink *l) {
        if (l->timer)
                sd_event_source_set_enabled(l->timer, SD_EVENT_OFF);
}

/* Backoff before connect attempt n+1 (n failures so far): real time, the one backoff in util. */
static uint64_t link_backoff_usec(unsigned failures) {
        return backoff_usec(failures, BACKOFF_MIN_USEC, BACKOFF_MAX_USEC, random_u64());
}

/* The link is gone or failed: tell the wrap, forget the GATT paths, retry after a while. */
static void link_down(BzLink *l, uint64_t delay_usec) {
        bool was_ready = l->state == LINK_READY;

        calls_cancel(l->b, l);
        link_clear_chars(l);
        l->notify_pending = l->info_pending = 0;
        l->state = LINK_WAITING;
        if (delay_usec > 0)
                link_arm(l, delay_usec);
        else
                link_disarm(l);
        if (was_ready)
                HOOK(l->b, link_down, l->address);
        schedule_update(l->b);
}

static void link_failed(BzLink *l, const char *what, const sd_bus_error *e) {
        uint64_t delay = link_backoff_usec(l->failures);

        l->failures++;
        if (e)
                log_wrap(LOG_WARNING, l->address, "%s failed (%s: %s), attempt %u; retrying in %.1f s",
                         what, error_name(e), error_text(e), l->failures, (double) delay / USEC_PER_SEC);
        else
                log_wrap(LOG_WARNING, l->address, "%s failed, attempt %u; retrying in %.1f s",
                         what, l->failures, (double) delay / USEC_PER_SEC);
        link_down(l, delay);
}

static void on_disconnect_reply(Bluez *b, BzCall *c, sd_bus_message *reply, const sd_bus_error *e) {
        if (e)
                log_debug("Disconnect %s: %s", c->path, error_text(e));
}

/* Drop the connection without waiting: BlueZ takes about 2 s to disconnect. */
static void link_disconnect(BzLink *l) {
        if (l->dev)
                call_simple(l->b, NULL, l->dev, BZ_DEVICE, "Disconnect", CALL_TIMEOUT_USEC, on_disconnect_reply, 0);
}

static void link_setup_done(BzLink *l);

static void on_info_read(Bluez *b, BzCall *c, sd_bus_message *reply, const sd_bus_error *e) {
        BzLink *l = c->link;
        const void *v;
        size_t n = 0;
        char *dst;

        if (!e && sd_bus_message_read_array(reply, 'y', &v, &n) >= 0) {
                dst = c->arg == CH_MANUFACTURER ? l->info.manufacturer :
                      c->arg == CH_MODEL ? l->info.model :
                      c->arg == CH_SERIAL ? l->info.serial : l->info.firmware;
                /* Valid UTF-8 only: the strings go into JSON, which takes nothing else. */
                (void) wire_info_string(v, n, dst, sizeof l->info.manufacturer);
        } else if (e)
                log_wrap(LOG_INFO, l->address, "reading %s failed: %s", chars[c->arg].name, error_text(e));
        if (l->info_pending > 0 && --l->info_pending == 0) {
                l->info.have = true;
                HOOK(b, info, l->address, &l->info);
        }
}

static void on_status_read(Bluez *b, BzCall *c, sd_bus_message *reply, const sd_bus_error *e) {
        BzLink *l = c->link;
        const void *v;
        size_t n;

        if (e) {
                log_wrap(LOG_WARNING, l->address, "reading Therapy Status failed: %s", error_text(e));
                return;
        }
        if (sd_bus_message_read_array(reply, 'y', &v, &n) < 0)
                return;
        if (l->ch[CH_STATUS])
                on_value(b, l->ch[CH_STATUS], v, n);
}

static int read_value(BzLink *l, int ch, BzReplyFn fn) {
        sd_bus_message *msg = NULL;
        int r;

        if (!l->ch[ch])
                return -ENOTCONN;
        r = sd_bus_message_new_method_call(l->b->bus, &msg, BZ_NAME, l->ch[ch], BZ_CHAR, "ReadValue");
        if (r >= 0)
                r = sd_bus_message_append(msg, "a{sv}", 0);
        if (r >= 0)
                r = call_send(l->b, l, msg, CALL_TIMEOUT_USEC, fn, l->ch[ch], ch);
        sd_bus_message_unref(msg);
        return r;
}

static void link_setup_done(BzLink *l) {
        BzObj *d = l->dev ? obj_find(l->b, l->dev) : NULL;
        Bluez *b = l->b;
        char address[BDADDR_STR_MAX];

        snprintf(address, sizeof address, "%s", l->address);

        l->state = LINK_READY;
        l->failures = 0;
        link_disarm(l);
        log_wrap(LOG_INFO, l->address, "connected, notifications on");
        HOOK(l->b, link_up, l->address);
        /* The hook may have dropped the link (bluez_link_remove): look it up again. */
        if (!(l = link_find(b, address)))
                return;
        if (d && (d->ifaces & IF_BATTERY) && d->battery >= 0)
                HOOK(b, battery, l->address, d->battery);
        /* The Status read reconciles a session that was running while we were away. */
        if (read_value(l, CH_STATUS, on_status_read) < 0)
                log_wrap(LOG_WARNING, l->address, "cannot read Therapy Status");
        if (!l->info.have && l->info_pending == 0) {
                memset(&l->info, 0, sizeof l->info);
                for (int i = CH_MANUFACTURER; i <= CH_FIRMWARE; i++)
                        if (read_value(l, i, on_info_read) >= 0)
                                l->info_pending++;
        }
        schedule_update(l->b);
}

static void on_notify_reply(Bluez *b, BzCall *c, sd_bus_message *reply, const sd_bus_error *e) {
        BzLink *l = c->link;

        /* InProgress: a notify session is already being set up, which is what we asked for. */
        if (e && !sd_bus_error_has_name(e, "org.bluez.Error.InProgress")) {
                link_disconnect(l);
                link_failed(l, chars[c->arg].name, e);
                return;
        }
        if (l->notify_pending > 0 && --l->notify_pending == 0 && l->state == LINK_SETUP)
                link_setup_done(l);
}

/* Connected and resolved, and the objects are there: turn notifications on. */
static void link_check_gatt(BzLink *l) {
        Bluez *b = l->b;
        BzObj *d;

        if (l->state != LINK_RESOLVING || !l->dev)
                return;
        d = obj_find(b, l->dev);
        if (!d || !d->connected || !d->resolved)
                return;
        for (int i = 0; i < _CH_MAX; i++) {
                const char *p = find_char(b, l->dev, chars[i].service, chars[i].uuid);
                if (!p) {
                        if (i < _CH_REQUIRED)
                                return;       /* not yet: InterfacesAdded may come after ServicesResolved */
                        continue;
                }
                free(l->ch[i]);
                if (!(l->ch[i] = strdup(p))) {
                        link_clear_chars(l);
                        return;
                }
        }
        l->state = LINK_SETUP;
        l->notify_pending = 0;
        for (int i = 0; i < _CH_REQUIRED; i++) {
                if (call_simple(b, l, l->ch[i], BZ_CHAR, "StartNotify", CALL_TIMEOUT_USEC, on_notify_reply, i) < 0) {
                        link_disconnect(l);
                        link_failed(l, "StartNotify", NULL);
                        return;
                }
                l->notify_pending++;
        }
}

static void on_connect_reply(Bluez *b, BzCall *c, sd_bus_message *reply, const sd_bus_error *e) {
        BzLink *l = c->link;
        BzObj *d;

        if (e && !sd_bus_error_has_name(e, "org.bluez.Error.AlreadyConnected")) {
                /* Timeouts, Failed, le-connection-abort-by-local: all retried with backoff. */
                link_failed(l, "Connect", e);
                return;
        }
        if (l->state != LINK_CONNECTING)
                return;
        /* bluetoothd 5.66 does not always signal Connected=true on a reconnect: its reply says it. */
        d = l->dev ? obj_find(b, l->dev) : NULL;
        if (d)
                d->connected = true;
        l->state = LINK_RESOLVING;
        link_arm(l, RESOLVE_TIMEOUT_USEC);
        link_check_gatt(l);
}

/* Connects when the device is there, the adapter is up and the link is not busy or waiting. */
static void link_try(BzLink *l) {
        Bluez *b = l->b;
        BzObj *a = adapter_obj(b), *d;
        int r;

        if (l->state != LINK_WAITING || (l->timer && sd_event_source_get_enabled(l->timer, NULL) > 0))
                return;
        if (!b->synced || !a || !a->powered)
                return;
        d = device_by_address(b, l->address);
        if (!d)
                return;                       /* discovery will bring it */
        if (d->adopting)
                return;                       /* Pair is connecting it */
        free(l->dev);
        if (!(l->dev = strdup(d->path)))
                return;
        if (d->connected) {
                /* bluetoothd kept the connection (we restarted), or Pair made it. */
                l->state = LINK_RESOLVING;
                link_arm(l, RESOLVE_TIMEOUT_USEC);
                link_check_gatt(l);
                return;
        }
        r = call_simple(b, l, d->path, BZ_DEVICE, "Connect", CONNECT_TIMEOUT_USEC, on_connect_reply, 0);
        if (r < 0) {
                link_failed(l, "Connect", NULL);
                return;
        }
        l->state = LINK_CONNECTING;
        log_wrap(LOG_DEBUG, l->address, "connecting (attempt %u)", l->failures + 1);
}

static int on_link_timer(sd_event_source *s, uint64_t usec, void *userdata) {
        BzLink *l = userdata;

        if (l->state == LINK_RESOLVING || l->state == LINK_SETUP) {
                BzObj *d = l->dev ? obj_find(l->b, l->dev) : NULL;
                log_wrap(LOG_WARNING, l->address,
                         "GATT objects not there %.0f s after connecting (connected=%d resolved=%d); disconnecting",
                         (double) RESOLVE_TIMEOUT_USEC / USEC_PER_SEC, d && d->connected, d && d->resolved);
                link_disconnect(l);
                link_failed(l, "service resolution", NULL);
                return 0;
        }
        link_disarm(l);
        link_try(l);
        return 0;
}

int bluez_link_add(Bluez *b, const char *address) {
        BzLink *l;
        char a[BDADDR_STR_MAX];

        if (!b)
                return -EINVAL;
        if (bdaddr_normalize(address, a) < 0)
                return -EINVAL;
        if (link_find(b, a))
                return 0;
        l = calloc(1, sizeof *l);
        if (!l)
                return -ENOMEM;
        l->b = b;
        memcpy(l->address, a, sizeof a);
        l->next = b->links;
        b->links = l;
        schedule_update(b);
        return 0;
}

static void link_free(Bluez *b, BzLink *l) {
        calls_cancel(b, l);
        for (BzLink **p = &b->links; *p; p = &(*p)->next)
                if (*p == l) {
                        *p = l->next;
                        break;
                }
        sd_event_source_disable_unref(l->timer);
        link_clear_chars(l);
        free(l->dev);
        free(l);
}

bool bluez_link_ready(Bluez *b, const char *address) {
        BzLink *l = link_find(b, address);
        return l && l->state == LINK_READY;
}

static void on_write_reply(Bluez *b, BzCall *c, sd_bus_message *reply, const sd_bus_error *e) {
        if (!e)
                return;
        log_wrap(LOG_WARNING, c->link->address, "writing the Control Point (opcode 0x%02x) failed: %s: %s",
                 (unsigned) c->arg, error_name(e), error_text(e));
        HOOK(b, write_failed, c->link->address, (uint8_t) c->arg,
             sd_bus_error_get_errno(e) > 0 ? -sd_bus_error_get_errno(e) : -EIO);
}

int bluez_write_request(Bluez *b, const char *address, const WireRequest *req) {
        BzLink *l = link_find(b, address);
        uint8_t buf[WIRE_CP_MAX_SIZE];
        sd_bus_message *msg = NULL;
        size_t n;
        int r;

        if (!l || l->state != LINK_READY || !l->ch[CH_CP])
                return -ENOTCONN;
        n = wire_request_encode(req, buf);
        if (n == 0)
                return -EINVAL;
        r = sd_bus_message_new_method_call(b->bus, &msg, BZ_NAME, l->ch[CH_CP], BZ_CHAR, "WriteValue");
        if (r >= 0)
                r = sd_bus_message_append_array(msg, 'y', buf, n);
        if (r >= 0)
                r = sd_bus_message_append(msg, "a{sv}", 1, "type", "s", "request");
        if (r >= 0)
                r = call_send(b, l, msg, CALL_TIMEOUT_USEC, on_write_reply, NULL, req->opcode);
        sd_bus_message_unref(msg);
        return r;
}

/* A characteristic's new value: decode it with wire.h and hand it to the wrap. */
static void on_value(Bluez *b, const char *path, const uint8_t *v, size_t n) {
        /* Real time: the button latency is measured on the wall clock, whatever the scale. */
        uint64_t now = mono_usec();

        for (BzLink *l = b->links; l; l = l->next) {
                const char *why = NULL;
                int i, r;

                if (l->state != LINK_READY && l->state != LINK_SETUP)
                        continue;
                for (i = 0; i < _CH_REQUIRED; i++)
                        if (l->ch[i] && streq(l->ch[i], path))
                                break;
                if (i == _CH_REQUIRED)
                        continue;

                switch (i) {
                case CH_STATUS: {
                        WireStatus s;
                        r = wire_status_decode(v, n, &s, &why);
                        if (r < 0)
                                HOOK(b, malformed, l->address, WRAP_VALUE_STATUS, why);
                        else
                                HOOK(b, status, l->address, &s);
                        break;
                }
                case CH_BUTTON: {
                        WireButton e;
                        r = wire_button_decode(v, n, &e, &why);
                        if (r < 0)
                                HOOK(b, malformed, l->address, WRAP_VALUE_BUTTON, why);
                        else
                                HOOK(b, button, l->address, &e, now);
                        break;
                }
                case CH_CP: {
                        WireResponse resp;
                        r = wire_response_decode(v, n, &resp, &why);
                        if (r < 0)
                                HOOK(b, malformed, l->address, WRAP_VALUE_CONTROL_POINT, why);
                        else
                                HOOK(b, response, l->address, &resp);
                        break;
                }
                case CH_TEMP: {
                        WireTemperature t;
                        r = wire_temperature_decode(v, n, &t, &why);
                        if (r < 0)
                                HOOK(b, malformed, l->address, WRAP_VALUE_TEMPERATURE, why);
                        else
                                HOOK(b, temperature, l->address, &t);
                        break;
                }
                }
                return;
        }
}

/* ---- Adapter, power, discovery ---- */

static const char *adapter_name(const char *path) {
        const char *s = strrchr(path, '/');
        return s ? s + 1 : path;
}

static BzObj *pick_adapter(Bluez *b) {
        const char *want = b->config->adapter;
        BzObj *first = NULL, *powered = NULL;
        char a[BDADDR_STR_MAX];

        for (BzObj *o = b->objs; o; o = o->next) {
                if (!(o->ifaces & IF_ADAPTER))
                        continue;
                if (want) {
                        if (streq(adapter_name(o->path), want) ||
                            (bdaddr_normalize(want, a) >= 0 && streq(a, o->address)))
                                return o;
                        continue;
                }
                /* Prefer the lowest hciN for a stable choice; the list is in arrival order. */
                if (!first || strcmp(o->path, first->path) < 0)
                        first = o;
                if (o->powered && (!powered || strcmp(o->path, powered->path) < 0))
                        powered = o;
        }
        if (want)
                return NULL;
        return powered ? powered : first;
}

static void on_power_reply(Bluez *b, BzCall *c, sd_bus_message *reply, const sd_bus_error *e) {
        uint64_t now;

        b->powering = false;
        if (!e) {
                log_info("Bluetooth adapter %s powered on", adapter_name(c->path));
                return;
        }
        snprintf(b->adapter_why, sizeof b->adapter_why, "adapter %s cannot be powered on: %s",
                 adapter_name(c->path), error_text(e));
        log_error("Bluetooth %s", b->adapter_why);
        sd_event_now(b->event, CLOCK_MONOTONIC, &now);
        sd_event_source_set_time(b->power_timer, now + POWER_RETRY_USEC);
        sd_event_source_set_enabled(b->power_timer, SD_EVENT_ONESHOT);
        HOOK0(b, status_changed);
}

/* The wait after a failed power-on or adoption is over: look again. */
static int on_power_timer(sd_event_source *s, uint64_t usec, void *userdata) {
        schedule_update(userdata);
        return 0;
}

static bool adoption_open(Bluez *b) {
        return b->adoption_until > clock_real_sec();
}

/* Discover while an adopted (or allowed) wrap is not connected, or while adoption is open. */
static bool discovery_wanted(Bluez *b) {
        BzObj *a = adapter_obj(b);

        if (!a || !a->powered)
                return false;
        /* Allowed wraps not adopted yet are missing too; auto_adopt looks for new ones. */
        if (adoption_open(b) || b->config->auto_adopt)
                return true;
        for (unsigned i = 0; i < b->config->n_allow; i++)
                if (!link_find(b, b->config->allow[i]))
                        return true;
        for (BzLink *l = b->links; l; l = l->next)
                if (l->state == LINK_WAITING || l->state == LINK_CONNECTING) {
                        BzObj *d = device_by_address(b, l->address);
                        if (!d || !d->connected)
                                return true;
                }
        return false;
}

static void discovery_retry_later(Bluez *b) {
        uint64_t now;

        b->discovery_failed = true;
        sd_event_now(b->event, CLOCK_MONOTONIC, &now);
        sd_event_source_set_time(b->discovery_timer, now + DISCOVERY_RETRY_USEC);
        sd_event_source_set_enabled(b->discovery_timer, SD_EVENT_ONESHOT);
}

static void on_start_discovery(Bluez *b, BzCall *c, sd_bus_message *reply, const sd_bus_error *e) {
        b->discovery_busy = false;
        /* InProgress: this client's session already exists. */
        if (!e || sd_bus_error_has_name(e, "org.bluez.Error.InProgress")) {
                if (!b->discovery_ours)
                        log_info("discovery started on %s", adapter_name(c->path));
                b->discovery_ours = true;
        } else {
                log_warning("StartDiscovery on %s failed: %s: %s; retrying", adapter_name(c->path),
                            error_name(e), error_text(e));
                discovery_retry_later(b);
        }
        schedule_update(b);
}

static void on_set_filter(Bluez *b, BzCall *c, sd_bus_message *reply, const sd_bus_error *e) {
        if (e && !sd_bus_error_has_name(e, "org.bluez.Error.InProgress")) {
                b->discovery_busy = false;
                log_warning("SetDiscoveryFilter on %s failed: %s: %s; retrying", adapter_name(c->path),
                            error_name(e), error_text(e));
                discovery_retry_later(b);
                return;
        }
        if (call_simple(b, NULL, c->path, BZ_ADAPTER, "StartDiscovery", CALL_TIMEOUT_USEC, on_start_discovery, 0) < 0) {
                b->discovery_busy = false;
                discovery_retry_later(b);
        }
}

static void on_stop_discovery(Bluez *b, BzCall *c, sd_bus_message *reply, const sd_bus_error *e) {
        b->discovery_busy = false;
        /* Failed "No discovery started" and NotReady both mean it is not ours any more. */
        if (e && !sd_bus_error_has_name(e, "org.bluez.Error.Failed") &&
            !sd_bus_error_has_name(e, "org.bluez.Error.NotReady") &&
            !sd_bus_error_has_name(e, "org.bluez.Error.NotAuthorized")) {
                log_warning("StopDiscovery failed: %s: %s", error_name(e), error_text(e));
                discovery_retry_later(b);
                return;
        }
        if (b->discovery_ours)
                log_info("discovery stopped");
        b->discovery_ours = false;
        schedule_update(b);
}

static int on_discovery_timer(sd_event_source *s, uint64_t usec, void *userdata) {
        Bluez *b = userdata;

        b->discovery_failed = false;
        schedule_update(b);
        return 0;
}

static void discovery_update(Bluez *b) {
        bool want = discovery_wanted(b);
        sd_bus_message *msg = NULL;
        int r;

        if (b->discovery_busy || b->discovery_failed || want == b->discovery_ours)
                return;
        if (!want) {
                if (b->adapter && call_simple(b, NULL, b->adapter, BZ_ADAPTER, "StopDiscovery", CALL_TIMEOUT_USEC,
                                              on_stop_discovery, 0) >= 0)
                        b->discovery_busy = true;
                else
                        b->discovery_ours = false;
                return;
        }
        r = sd_bus_message_new_method_call(b->bus, &msg, BZ_NAME, b->adapter, BZ_ADAPTER, "SetDiscoveryFilter");
        if (r >= 0)
                r = sd_bus_message_append(msg, "a{sv}", 2,
                                          "UUIDs", "as", 1, WIRE_UUID_THERAPY_SERVICE,
                                          "Transport", "s", "le");
        if (r >= 0)
                r = call_send(b, NULL, msg, CALL_TIMEOUT_USEC, on_set_filter, b->adapter, 0);
        sd_bus_message_unref(msg);
        if (r < 0) {
                log_warning_errno(r, "cannot start discovery: %m");
                discovery_retry_later(b);
                return;
        }
        b->discovery_busy = true;
}

/* ---- Adoption ---- */

static bool address_allowed(Bluez *b, const char *address) {
        const Config *c = b->config;

        for (unsigned i = 0; i < c->n_allow; i++)
                if (streq(c->allow[i], address))
                        return true;
        return false;
}

/* Look at the device again after `delay` (real time). */
static void adopt_later(Bluez *b, BzObj *d, uint64_t delay) {
        uint64_t now;

        d->adopting = false;
        d->adopt_after = mono_usec() + delay;
        sd_event_now(b->event, CLOCK_MONOTONIC, &now);
        sd_event_source_set_time(b->adopt_timer, now + delay + USEC_PER_SEC / 10);
        sd_event_source_set_enabled(b->adopt_timer, SD_EVENT_ONESHOT);
}

static void adoption_failed(Bluez *b, BzObj *d, const char *what, const sd_bus_error *e) {
        uint64_t delay = link_backoff_usec(d->adopt_failures + 1);

        d->adopt_failures++;
        adopt_later(b, d, delay);
        /* Loud, but not once a minute forever: the 1st, 2nd, 4th, 8th ... failure. */
        log_wrap((d->adopt_failures & (d->adopt_failures - 1)) == 0 ? LOG_ERR : LOG_DEBUG, d->address,
                 "adoption failed: %s%s%s%s; retrying in %.0f s. If the wrap was bonded to "
                 "another gateway, clear its bond (hold its stop button 10 s)",
                 what, e ? " (" : "", e ? error_text(e) : "", e ? ")" : "", (double) delay / USEC_PER_SEC);
        schedule_update(b);
}

static void on_trust_reply(Bluez *b, BzCall *c, sd_bus_message *reply, const sd_bus_error *e) {
        if (e)
                log_warning("setting Trusted on %s failed: %s", c->path, error_text(e));
}

static void adoption_finish(Bluez *b, BzObj *d) {
        int r;

        d->adopting = false;
        if (!d->trusted)
                set_bool_property(b, d->path, BZ_DEVICE, "Trusted", true, on_trust_reply);
        /* The daemon records the wrap and adds its link; this client only pairs. */
        r = b->hooks.adopt ? b->hooks.adopt(b->hooks.userdata, d->address, d->name) : -EOPNOTSUPP;
        if (r < 0) {
                adoption_failed(b, d, r == -EAGAIN ? "the store is unavailable" : "the daemon could not record it", NULL);
                return;
        }
        log_wrap(LOG_NOTICE, d->address, "adopted %s (paired, trusted)", d->name[0] ? d->name : "wrap");
        HOOK0(b, status_changed);
}

static void on_pair_reply(Bluez *b, BzCall *c, sd_bus_message *reply, const sd_bus_error *e) {
        BzObj *d = obj_find(b, c->path);

        if (!d || !(d->ifaces & IF_DEVICE))
                return;
        if (e && sd_bus_error_has_name(e, "org.bluez.Error.InProgress")) {
                /* An earlier Pair (one whose call timed out) is still running: wait for Paired. */
                adopt_later(b, d, 2 * USEC_PER_SEC);
                log_wrap(LOG_INFO, d->address, "pairing already in progress; waiting for it");
                schedule_update(b);
                return;
        }
        if (e && !sd_bus_error_has_name(e, "org.bluez.Error.AlreadyExists")) {
                adoption_failed(b, d, "pairing failed", e);
                return;
        }
        adoption_finish(b, d);
        schedule_update(b);
}

static void maybe_adopt(Bluez *b, BzObj *d) {
        bool allowed;

        if (!d->therapy || d->adopting || !d->address[0] || link_find(b, d->address))
                return;
        allowed = address_allowed(b, d->address) || b->config->auto_adopt || adoption_open(b);
        if (!allowed) {
                /* A neighbour's wrap: never connect, pair or write. */
                if (!d->neighbour_logged)
                        log_wrap(LOG_INFO, d->address, "wrap seen, not adopted (not in [bluetooth] allow, adoption closed)");
                d->neighbour_logged = true;
                return;
        }
        if (mono_usec() < d->adopt_after)
                return;
        if (b->hooks.may_adopt && !b->hooks.may_adopt(b->hooks.userdata)) {
                log_wrap(LOG_WARNING, d->address, "cannot adopt while the store is unavailable");
                adopt_later(b, d, ADOPT_RETRY_USEC);
                return;
        }
        d->adopting = true;
        if (d->paired) {
                adoption_finish(b, d);
                return;
        }
        log_wrap(LOG_INFO, d->address, "adopting: pairing (LE Secure Connections, Just Works)");
        if (call_simple(b, NULL, d->path, BZ_DEVICE, "Pair", PAIR_TIMEOUT_USEC, on_pair_reply, 0) < 0)
                adoption_failed(b, d, "cannot call Pair", NULL);
}

/* ---- Re-evaluation ---- */

static void update_now(Bluez *b) {
        BzObj *a;
        char *old = b->adapter;

        if (!b->owner || !b->synced) {
                HOOK0(b, status_changed);
                return;
        }

        a = pick_adapter(b);
        if (!a) {
                if (b->config->adapter)
                        snprintf(b->adapter_why, sizeof b->adapter_why, "adapter %s not found", b->config->adapter);
                else
                        snprintf(b->adapter_why, sizeof b->adapter_why, "no Bluetooth adapter found");
        }
        if (!a || !streq_ptr(a->path, old)) {
                if (old) {
                        log_warning("Bluetooth adapter %s is gone", adapter_name(old));
                        b->discovery_ours = false;
                        for (BzLink *l = b->links; l; l = l->next)
                                if (l->state != LINK_WAITING)
                                        link_down(l, BACKOFF_MIN_USEC);
                }
                free(old);
                b->adapter = a ? strdup(a->path) : NULL;
                if (b->adapter)
                        log_info("using Bluetooth adapter %s (%s)", adapter_name(b->adapter), a->address);
                else
                        log_error("no usable Bluetooth adapter: %s", b->adapter_why);
                HOOK0(b, bridge_changed);
        }

        if (a && !a->powered) {
                if (!b->config->power_on)
                        snprintf(b->adapter_why, sizeof b->adapter_why,
                                 "adapter %s is powered off and [bluetooth] power_on = no", adapter_name(a->path));
                else if (!b->powering && sd_event_source_get_enabled(b->power_timer, NULL) <= 0) {
                        snprintf(b->adapter_why, sizeof b->adapter_why, "adapter %s is powered off", adapter_name(a->path));
                        log_info("powering on Bluetooth adapter %s", adapter_name(a->path));
                        if (set_bool_property(b, a->path, BZ_ADAPTER, "Powered", true, on_power_reply) >= 0)
                                b->powering = true;
                }
        }

        if (a && a->powered) {
                for (BzObj *o = b->objs; o; o = o->next)
                        if ((o->ifaces & IF_DEVICE) && device_on_adapter(b, o))
                                maybe_adopt(b, o);
                for (BzLink *l = b->links; l; l = l->next)
                        link_try(l);
        }
        discovery_update(b);
        HOOK0(b, status_changed);
}

static int on_update(sd_event_source *s, void *userdata) {
        update_now(userdata);
        return 0;
}

static void schedule_update(Bluez *b) {
        if (b->update)
                sd_event_source_set_enabled(b->update, SD_EVENT_ONESHOT);
}

/* ---- bluetoothd coming and going ---- */

static void bluez_vanished(Bluez *b) {
        if (!b->owner)
                return;
        log_warning("bluetoothd left the bus: every wrap is unavailable until it returns");
        free(b->owner);
        b->owner = NULL;
        b->synced = false;
        b->agent_registered = false;
        b->discovery_ours = b->discovery_busy = b->powering = false;
        calls_cancel(b, NULL);
        for (BzLink *l = b->links; l; l = l->next) {
                calls_cancel(b, l);
                l->failures = 0;
                link_down(l, 0);
        }
        objs_free_all(b);
        free(b->adapter);
        b->adapter = NULL;
        snprintf(b->adapter_why, sizeof b->adapter_why, "bluetoothd is not running");
        HOOK0(b, status_changed);
}

static void on_managed_objects(Bluez *b, BzCall *c, sd_bus_message *reply, const sd_bus_error *e) {
        int r;

        if (e) {
                uint64_t now;

                log_error("GetManagedObjects from bluetoothd failed: %s; asking again in 1 s", error_text(e));
                sd_event_now(b->event, CLOCK_MONOTONIC, &now);
                sd_event_source_set_time(b->sync_timer, now + USEC_PER_SEC);
                sd_event_source_set_enabled(b->sync_timer, SD_EVENT_ONESHOT);
                return;
        }
        r = sd_bus_message_enter_container(reply, 'a', "{oa{sa{sv}}}");
        while (r >= 0 && (r = sd_bus_message_enter_container(reply, 'e', "oa{sa{sv}}")) > 0) {
                const char *path;

                r = sd_bus_message_read(reply, "o", &path);
                if (r >= 0)
                        r = parse_interfaces(b, path, reply);
                if (r >= 0)
                        r = sd_bus_message_exit_container(reply);
        }
        if (r < 0)
                log_error_errno(r, "cannot parse bluetoothd's objects: %m");
        b->synced = true;
        log_info("bluetoothd's objects loaded");
        update_now(b);
}

static void on_register_agent(Bluez *b, BzCall *c, sd_bus_message *reply, const sd_bus_error *e) {
        if (e && !sd_bus_error_has_name(e, "org.bluez.Error.AlreadyExists")) {
                log_error("registering the pairing agent failed: %s; adoption will fail", error_text(e));
                return;
        }
        b->agent_registered = true;
}

static void ask_objects(Bluez *b) {
        int r = call_simple(b, NULL, "/", "org.freedesktop.DBus.ObjectManager", "GetManagedObjects",
                            CALL_TIMEOUT_USEC, on_managed_objects, 0);
        if (r < 0)
                log_error_errno(r, "cannot ask bluetoothd for its objects: %m");
}

static int on_sync_timer(sd_event_source *s, uint64_t usec, void *userdata) {
        Bluez *b = userdata;

        if (b->owner && !b->synced)
                ask_objects(b);
        return 0;
}

static void bluez_appeared(Bluez *b, const char *owner) {
        sd_bus_message *msg = NULL;
        int r;

        if (b->owner && streq(b->owner, owner))
                return;
        if (b->owner)
                bluez_vanished(b);
        b->owner = strdup(owner);
        if (!b->owner)
                return;
        log_info("bluetoothd is on the bus (%s)", owner);
        ask_objects(b);

        r = sd_bus_message_new_method_call(b->bus, &msg, BZ_NAME, "/org/bluez", BZ_AGENT_MANAGER, "RegisterAgent");
        if (r >= 0)
                r = sd_bus_message_append(msg, "os", AGENT_PATH, AGENT_CAPABILITY);
        if (r >= 0)
                r = call_send(b, NULL, msg, CALL_TIMEOUT_USEC, on_register_agent, NULL, 0);
        sd_bus_message_unref(msg);
        if (r < 0)
                log_error_errno(r, "cannot register the pairing agent: %m");
}

static int on_get_name_owner(sd_bus_message *reply, void *userdata, sd_bus_error *ret_error) {
        Bluez *b = userdata;
        const char *owner;

        b->owner_call = sd_bus_slot_unref(b->owner_call);
        if (sd_bus_message_is_method_error(reply, NULL)) {
                snprintf(b->adapter_why, sizeof b->adapter_why, "bluetoothd is not running");
                log_warning("bluetoothd is not running; waiting for it");
                HOOK0(b, status_changed);
                return 0;
        }
        if (sd_bus_message_read(reply, "s", &owner) >= 0)
                bluez_appeared(b, owner);
        return 0;
}

static int on_name_owner_changed(sd_bus_message *msg, void *userdata, sd_bus_error *ret_error) {
        Bluez *b = userdata;
        const char *name, *old, *new;

        if (sd_bus_message_read(msg, "sss", &name, &old, &new) < 0 || !streq(name, BZ_NAME))
                return 0;
        if (*old)
                bluez_vanished(b);
        if (*new)
                bluez_appeared(b, new);
        return 0;
}

static bool from_bluez(Bluez *b, sd_bus_message *msg) {
        const char *s = sd_bus_message_get_sender(msg);
        return b->owner && b->synced && s && streq(s, b->owner);
}

static int on_interfaces_added(sd_bus_message *msg, void *userdata, sd_bus_error *ret_error) {
        Bluez *b = userdata;
        const char *path;
        int r;

        if (!from_bluez(b, msg))
                return 0;
        r = sd_bus_message_read(msg, "o", &path);
        if (r >= 0)
                r = parse_interfaces(b, path, msg);
        if (r < 0)
                log_warning_errno(r, "cannot parse InterfacesAdded: %m");
        /* GATT objects may arrive after ServicesResolved: check waiting links now. */
        for (BzLink *l = b->links; l; l = l->next)
                link_check_gatt(l);
        schedule_update(b);
        return 0;
}

static int on_interfaces_removed(sd_bus_message *msg, void *userdata, sd_bus_error *ret_error) {
        Bluez *b = userdata;
        const char *path, *iface;
        BzObj *o;
        int r;

        if (!from_bluez(b, msg))
                return 0;
        r = sd_bus_message_read(msg, "o", &path);
        if (r < 0 || !(o = obj_find(b, path)))
                return 0;
        r = sd_bus_message_enter_container(msg, 'a', "s");
        while (r >= 0 && (r = sd_bus_message_read(msg, "s", &iface)) > 0) {
                unsigned bit = iface_bit(iface);
                o->ifaces &= ~bit;
                if (bit == IF_BATTERY)
                        o->battery = -1;
                if (bit == IF_DEVICE) {
                        for (BzLink *l = b->links; l; l = l->next)
                                if (l->dev && streq(l->dev, path) && l->state != LINK_WAITING) {
                                        log_wrap(LOG_WARNING, l->address, "device object removed");
                                        link_down(l, BACKOFF_MIN_USEC);
                                }
                }
                if (bit == IF_CHAR) {
                        /* The wrap's GATT database changed under a live link: start over. */
                        for (BzLink *l = b->links; l; l = l->next)
                                for (int i = 0; i < _CH_REQUIRED; i++)
                                        if (l->ch[i] && streq(l->ch[i], path) &&
                                            (l->state == LINK_READY || l->state == LINK_SETUP)) {
                                                log_wrap(LOG_WARNING, l->address,
                                                         "%s went away; reconnecting", chars[i].name);
                                                link_disconnect(l);
                                                link_down(l, BACKOFF_MIN_USEC);
                                                break;
                                        }
                }
        }
        objs_drop_unused(b);
        schedule_update(b);
        return 0;
}

static int on_properties_changed(sd_bus_message *msg, void *userdata, sd_bus_error *ret_error) {
        Bluez *b = userdata;
        const char *path = sd_bus_message_get_path(msg), *iface;
        unsigned bit;
        BzObj *o;
        bool was_connected, was_powered;
        int r;

        if (!from_bluez(b, msg) || !path)
                return 0;
        r = sd_bus_message_read(msg, "s", &iface);
        if (r < 0 || !(bit = iface_bit(iface)))
                return 0;
        if (bit == IF_CHAR) {
                /* Notifications: the hot path, no object lookup before the value. */
                o = obj_find(b, path);
                if (o)
                        (void) parse_props(b, o, path, IF_CHAR, msg);
                return 0;
        }
        o = obj_find(b, path);
        if (!o || !(o->ifaces & bit))
                return 0;
        was_connected = o->connected;
        was_powered = o->powered;
        r = parse_props(b, o, path, bit, msg);
        if (r < 0) {
                log_warning_errno(r, "cannot parse PropertiesChanged on %s: %m", path);
                return 0;
        }
        /* Resolved services mean a connection, whether or not Connected=true was signalled. */
        if (bit == IF_DEVICE && o->resolved)
                o->connected = true;

        if (bit == IF_DEVICE) {
                for (BzLink *l = b->links; l; l = l->next) {
                        if (!l->dev || !streq(l->dev, path))
                                continue;
                        if (was_connected && !o->connected && l->state != LINK_WAITING && l->state != LINK_CONNECTING) {
                                /* A stall (connected, no services, dropped) is retried after 1 s. */
                                if (l->state == LINK_READY)
                                        log_wrap(LOG_WARNING, l->address, "link lost");
                                else
                                        l->failures++;
                                link_down(l, l->state == LINK_READY ? BACKOFF_MIN_USEC
                                                                    : link_backoff_usec(l->failures - 1));
                        } else
                                link_check_gatt(l);
                }
        } else if (bit == IF_BATTERY) {
                for (BzLink *l = b->links; l; l = l->next)
                        if (l->dev && streq(l->dev, path) && l->state == LINK_READY && o->battery >= 0)
                                HOOK(b, battery, l->address, o->battery);
        } else if (bit == IF_ADAPTER && was_powered != o->powered) {
                log_info("Bluetooth adapter %s powered %s", adapter_name(path), o->powered ? "on" : "off");
                if (!o->powered && b->adapter && streq(b->adapter, path)) {
                        b->discovery_ours = false;
                        for (BzLink *l = b->links; l; l = l->next)
                                if (l->state != LINK_WAITING)
                                        link_down(l, BACKOFF_MIN_USEC);
                }
        }
        schedule_update(b);
        return 0;
}

/* ---- The pairing agent (org.bluez.Agent1), NoInputNoOutput ---- */

static bool agent_caller_ok(Bluez *b, sd_bus_message *msg) {
        const char *s = sd_bus_message_get_sender(msg);
        return b->owner && s && streq(s, b->owner);
}

/* Only a wrap we are adopting or have adopted may pair; everything else is refused. */
static bool agent_device_ok(Bluez *b, const char *path) {
        BzObj *d = obj_find(b, path);
        return d && (d->ifaces & IF_DEVICE) && d->therapy && device_on_adapter(b, d) &&
               (d->adopting || link_find(b, d->address));
}

static int agent_reject(sd_bus_message *msg, sd_bus_error *ret_error) {
        return sd_bus_error_set(ret_error, "org.bluez.Error.Rejected", "kneewrapd pairs only wraps it adopts");
}

static int agent_confirm(sd_bus_message *msg, void *userdata, sd_bus_error *ret_error) {
        Bluez *b = userdata;
        const char *path;

        if (!agent_caller_ok(b, msg))
                return sd_bus_error_set(ret_error, SD_BUS_ERROR_ACCESS_DENIED, "not bluetoothd");
        if (sd_bus_message_read(msg, "o", &path) < 0 || !agent_device_ok(b, path))
                return agent_reject(msg, ret_error);
        return sd_bus_reply_method_return(msg, NULL);
}

static int agent_refuse(sd_bus_message *msg, void *userdata, sd_bus_error *ret_error) {
        if (!agent_caller_ok(userdata, msg))
                return sd_bus_error_set(ret_error, SD_BUS_ERROR_ACCESS_DENIED, "not bluetoothd");
        return agent_reject(msg, ret_error);
}

static int agent_ok(sd_bus_message *msg, void *userdata, sd_bus_error *ret_error) {
        if (!agent_caller_ok(userdata, msg))
                return sd_bus_error_set(ret_error, SD_BUS_ERROR_ACCESS_DENIED, "not bluetoothd");
        return sd_bus_reply_method_return(msg, NULL);
}

static const sd_bus_vtable agent_vtable[] = {
        SD_BUS_VTABLE_START(0),
        SD_BUS_METHOD("Release", "", "", agent_ok, 0),
        SD_BUS_METHOD("RequestPinCode", "o", "s", agent_refuse, 0),
        SD_BUS_METHOD("DisplayPinCode", "os", "", agent_ok, 0),
        SD_BUS_METHOD("RequestPasskey", "o", "u", agent_refuse, 0),
        SD_BUS_METHOD("DisplayPasskey", "ouq", "", agent_ok, 0),
        SD_BUS_METHOD("RequestConfirmation", "ou", "", agent_confirm, 0),
        SD_BUS_METHOD("RequestAuthorization", "o", "", agent_confirm, 0),
        SD_BUS_METHOD("AuthorizeService", "os", "", agent_confirm, 0),
        SD_BUS_METHOD("Cancel", "", "", agent_ok, 0),
        SD_BUS_VTABLE_END,
};

/* ---- Public ---- */

static const char *const match_rules[] = {
        "type='signal',sender='org.freedesktop.DBus',path='/org/freedesktop/DBus',"
        "interface='org.freedesktop.DBus',member='NameOwnerChanged',arg0='org.bluez'",
        "type='signal',sender='org.bluez',interface='org.freedesktop.DBus.ObjectManager',member='InterfacesAdded'",
        "type='signal',sender='org.bluez',interface='org.freedesktop.DBus.ObjectManager',member='InterfacesRemoved'",
        "type='signal',sender='org.bluez',interface='org.freedesktop.DBus.Properties',member='PropertiesChanged',"
        "arg0='org.bluez.Adapter1'",
        "type='signal',sender='org.bluez',interface='org.freedesktop.DBus.Properties',member='PropertiesChanged',"
        "arg0='org.bluez.Device1'",
        "type='signal',sender='org.bluez',interface='org.freedesktop.DBus.Properties',member='PropertiesChanged',"
        "arg0='org.bluez.GattCharacteristic1'",
        "type='signal',sender='org.bluez',interface='org.freedesktop.DBus.Properties',member='PropertiesChanged',"
        "arg0='org.bluez.Battery1'",
};

static int on_adoption_timer(sd_event_source *s, uint64_t usec, void *userdata) {
        Bluez *b = userdata;

        log_info("adoption window closed");
        HOOK0(b, bridge_changed);
        schedule_update(b);
        return 0;
}

/* A timer that waits disabled until armed. */
static int timer_new(Bluez *b, sd_event_source **ret, sd_event_time_handler_t fn) {
        int r = sd_event_add_time(b->event, ret, CLOCK_MONOTONIC, UINT64_MAX, 0, fn, b);
        return r < 0 ? r : sd_event_source_set_enabled(*ret, SD_EVENT_OFF);
}

int bluez_new(sd_event *event, sd_bus *bus, const Config *config, const BluezHooks *hooks, Bluez **ret) {
        sd_bus_message_handler_t handlers[ELEMENTSOF(match_rules)] = {
                on_name_owner_changed, on_interfaces_added, on_interfaces_removed,
                on_properties_changed, on_properties_changed, on_properties_changed, on_properties_changed,
        };
        Bluez *b;
        int r;

        if (!event || !bus || !config || !ret)
                return -EINVAL;
        b = calloc(1, sizeof *b);
        if (!b)
                return log_error_errno(ENOMEM, "BlueZ client: out of memory");
        b->event = sd_event_ref(event);
        b->bus = sd_bus_ref(bus);
        b->config = config;
        if (hooks)
                b->hooks = *hooks;
        snprintf(b->adapter_why, sizeof b->adapter_why, "bluetoothd not seen yet");

        /* Each step logs what failed, once: the daemon only passes the error on. */
        r = sd_event_add_defer(event, &b->update, on_update, b);
        if (r >= 0)
                r = sd_event_source_set_enabled(b->update, SD_EVENT_OFF);
        if (r < 0) {
                log_error_errno(r, "BlueZ client: cannot add the update source: %m");
                goto fail;
        }
        if ((r = timer_new(b, &b->adoption_timer, on_adoption_timer)) < 0 ||
            (r = timer_new(b, &b->discovery_timer, on_discovery_timer)) < 0 ||
            (r = timer_new(b, &b->power_timer, on_power_timer)) < 0 ||
            (r = timer_new(b, &b->adopt_timer, on_power_timer)) < 0 ||
            (r = timer_new(b, &b->sync_timer, on_sync_timer)) < 0) {
                log_error_errno(r, "BlueZ client: cannot add its timers: %m");
                goto fail;
        }
        for (size_t i = 0; i < ELEMENTSOF(match_rules); i++) {
                r = sd_bus_add_match_async(b->bus, &b->matches[i], match_rules[i], handlers[i], NULL, b);
                if (r < 0) {
                        log_error_errno(r, "BlueZ client: cannot add the match %s: %m", match_rules[i]);
                        goto fail;
                }
        }
        r = sd_bus_add_object_vtable(b->bus, &b->agent_slot, AGENT_PATH, "org.bluez.Agent1", agent_vtable, b);
        if (r < 0) {
                log_error_errno(r, "BlueZ client: cannot register the pairing agent at %s: %m", AGENT_PATH);
                goto fail;
        }
        r = sd_bus_call_method_async(b->bus, &b->owner_call, "org.freedesktop.DBus", "/org/freedesktop/DBus",
                                     "org.freedesktop.DBus", "GetNameOwner", on_get_name_owner, b, "s", BZ_NAME);
        if (r < 0) {
                log_error_errno(r, "BlueZ client: cannot ask who owns %s: %m", BZ_NAME);
                goto fail;
        }
        *ret = b;
        return 0;
fail:
        bluez_free(b);
        return r;
}

Bluez *bluez_free(Bluez *b) {
        if (!b)
                return NULL;
        while (b->links)
                link_free(b, b->links);
        while (b->calls)
                call_free(b->calls);
        /* Discovery belongs to our connection: bluetoothd ends it when we leave the bus. */
        for (size_t i = 0; i < ELEMENTSOF(b->matches); i++)
                sd_bus_slot_unref(b->matches[i]);
        sd_bus_slot_unref(b->agent_slot);
        sd_bus_slot_unref(b->owner_call);
        sd_event_source_disable_unref(b->update);
        sd_event_source_disable_unref(b->adoption_timer);
        sd_event_source_disable_unref(b->discovery_timer);
        sd_event_source_disable_unref(b->power_timer);
        sd_event_source_disable_unref(b->adopt_timer);
        sd_event_source_disable_unref(b->sync_timer);
        objs_free_all(b);
        free(b->adapter);
        free(b->owner);
        sd_bus_unref(b->bus);
        sd_event_unref(b->event);
        free(b);
        return NULL;
}

void bluez_set_adoption(Bluez *b, int64_t until) {
        int64_t now;
        uint64_t mono;

        if (!b)
                return;
        b->adoption_until = until;
        now = clock_real_sec();
        if (until > now) {
                log_info("adoption open for %lld s", (long long) (until - now));
                sd_event_now(b->event, CLOCK_MONOTONIC, &mono);
                sd_event_source_set_time(b->adoption_timer,
                                         mono + clock_wait_usec((uint64_t) (until - now) * USEC_PER_SEC));
                sd_event_source_set_enabled(b->adoption_timer, SD_EVENT_ONESHOT);
        } else
                sd_event_source_set_enabled(b->adoption_timer, SD_EVENT_OFF);
        /* Devices seen while closed may be adopted now. */
        for (BzObj *o = b->objs; o; o = o->next)
                o->adopt_after = 0;
        schedule_update(b);
}

static void on_remove_device(Bluez *b, BzCall *c, sd_bus_message *reply, const sd_bus_error *e) {
        if (e)
                log_warning("RemoveDevice %s failed: %s", c->path, error_text(e));
        else
                log_info("bond removed: %s", c->path);
}

void bluez_link_remove(Bluez *b, const char *address, bool forget) {
        sd_bus_message *msg = NULL;
        BzLink *l = link_find(b, address);
        char a[BDADDR_STR_MAX];
        BzObj *d;
        int r;

        if (!l)
                return;
        memcpy(a, l->address, sizeof a);
        link_free(b, l);
        schedule_update(b);

        d = forget ? device_by_address(b, a) : NULL;
        if (!d || !b->adapter)
                return;
        d->adopt_after = mono_usec() + ADOPT_RETRY_USEC;
        r = sd_bus_message_new_method_call(b->bus, &msg, BZ_NAME, b->adapter, BZ_ADAPTER, "RemoveDevice");
        if (r >= 0)
                r = sd_bus_message_append(msg, "o", d->path);
        if (r >= 0)
                r = call_send(b, NULL, msg, CALL_TIMEOUT_USEC, on_remove_device, d->path, 0);
        sd_bus_message_unref(msg);
        if (r < 0)
                log_wrap_errno(LOG_WARNING, r, a, "cannot remove the Bluetooth bond: %m");
}

const char *bluez_status(Bluez *b, char *buf, size_t size) {
        unsigned n = 0, up = 0;
        BzObj *a;

        if (!b) {
                snprintf(buf, size, "BLE client not running");
                return buf;
        }
        a = adapter_obj(b);
        if (!b->owner)
                snprintf(buf, size, "bluetoothd is not running");
        else if (!a || !a->powered)
                snprintf(buf, size, "no usable Bluetooth adapter: %s", b->adapter_why);
        else {
                for (BzLink *l = b->links; l; l = l->next) {
                        n++;
                        up += l->state == LINK_READY;
                }
                snprintf(buf, size, "%s: %u/%u wraps connected%s%s", adapter_name(a->path), up, n,
                         b->discovery_ours ? ", discovering" : "",
                         adoption_open(b) ? ", adoption open" : "");
        }
        return buf;
}
