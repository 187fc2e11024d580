/* fuzz-bus-props: the a{sv} reader (bus_message_read_dict) and BlueZ's property parsing
 * (bluez.c's parse_props, included here so the target runs the shipped static function) on
 * dictionaries built from the input: every key BlueZ sends, under every type, and any other. */
#include <sys/socket.h>
#include <unistd.h>

#include "../../src/ble/bluez.c"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

#define CHECK(x) do { if (!(x)) abort(); } while (0)

static const char *const keys[] = {
        "Address", "Powered", "Discovering", "Adapter", "Name", "Alias", "UUIDs", "Connected",
        "ServicesResolved", "Paired", "Trusted", "Percentage", "UUID", "Device", "Service", "Value",
        "RSSI", "ManufacturerData", "",
};
static const char *const strings[] = {
        "AA:BB:CC:00:11:22", "aa:bb:cc:00:11:2", "/org/bluez/hci0", "/org/bluez/hci0/dev_AA_BB_CC_00_11_22",
        WIRE_UUID_THERAPY_SERVICE, WIRE_UUID_STATUS, "KneeWrap", "",
};

typedef struct {
        const uint8_t *p;
        size_t n;
} Input;

static uint8_t take(Input *in) {
        if (in->n == 0)
                return 0;
        in->n--;
        return *in->p++;
}

/* A string: one of the known ones, or up to 63 bytes of input (sd-bus refuses bad UTF-8 itself). */
static void take_string(Input *in, char buf[static 64]) {
        uint8_t k = take(in);
        size_t len;

        if (k < 128) {
                snprintf(buf, 64, "%s", strings[k % ELEMENTSOF(strings)]);
                return;
        }
        len = k % 64;
        if (len > in->n)
                len = in->n;
        memcpy(buf, in->p, len);
        buf[len] = 0;
        in->p += len;
        in->n -= len;
}

static int append_value(sd_bus_message *m, Input *in, unsigned depth) {
        char s[64];
        uint8_t t = take(in);
        int r;

        switch (t % 12) {
        case 0: return sd_bus_message_append(m, "v", "b", (int) (take(in) & 1));
        case 1: take_string(in, s); return sd_bus_message_append(m, "v", "s", s);
        case 2: take_string(in, s); return sd_bus_message_append(m, "v", "o", sd_bus_object_path_is_valid(s) ? s : "/");
        case 3: return sd_bus_message_append(m, "v", "y", take(in));
        case 4: return sd_bus_message_append(m, "v", "n", (int16_t) (take(in) << 8 | take(in)));
        case 5: return sd_bus_message_append(m, "v", "u", (uint32_t) take(in));
        case 6: {
                uint8_t k = take(in) % 4;
                char a[4][64];
                for (uint8_t i = 0; i < k; i++)
                        take_string(in, a[i]);
                return sd_bus_message_append(m, "v", "as", (int) k, a[0], a[1], a[2], a[3]);
        }
        case 7: {
                size_t len = take(in) % 32;
                if (len > in->n)
                        len = in->n;
                r = sd_bus_message_open_container(m, 'v', "ay");
                if (r >= 0)
                        r = sd_bus_message_append_array(m, 'y', in->p, len);
                if (r >= 0)
                        r = sd_bus_message_close_container(m);
                in->p += len;
                in->n -= len;
                return r;
        }
        case 8:
                if (depth > 2)
                        return sd_bus_message_append(m, "v", "b", 0);
                /* A nested a{sv}: the walk must skip it whole. */
                r = sd_bus_message_open_container(m, 'v', "a{sv}");
                if (r >= 0)
                        r = sd_bus_message_open_container(m, 'a', "{sv}");
                for (uint8_t k = take(in) % 3; r >= 0 && k > 0; k--) {
                        r = sd_bus_message_open_container(m, 'e', "sv");
                        if (r >= 0)
                                r = sd_bus_message_append(m, "s", keys[take(in) % ELEMENTSOF(keys)]);
                        if (r >= 0)
                                r = append_value(m, in, depth + 1);
                        if (r >= 0)
                                r = sd_bus_message_close_container(m);
                }
                if (r >= 0)
                        r = sd_bus_message_close_container(m);
                if (r >= 0)
                        r = sd_bus_message_close_container(m);
                return r;
        case 9: return sd_bus_message_append(m, "v", "(sb)", "x", 1);
        case 10: return sd_bus_message_append(m, "v", "d", (double) take(in) / 3.0);
        default: return sd_bus_message_append(m, "v", "t", (uint64_t) take(in) << 40);
        }
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
        static const unsigned ifaces[] = { IF_ADAPTER, IF_DEVICE, IF_BATTERY, IF_SERVICE, IF_CHAR };
        Input in = { data, size };
        sd_bus *bus = NULL;
        sd_bus_message *m = NULL;
        Bluez b = { 0 };
        BzObj o = { .battery = -1 };
        unsigned iface;
        int fds[2], r;

        if (size < 1)
                return 0;
        iface = ifaces[take(&in) % ELEMENTSOF(ifaces)];

        /* sd-bus builds messages only on a started bus: one end of a socketpair will do. */
        CHECK(socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0, fds) == 0);
        CHECK(sd_bus_new(&bus) >= 0);
        CHECK(sd_bus_set_fd(bus, fds[0], fds[0]) >= 0);
        CHECK(sd_bus_start(bus) >= 0);
        CHECK(sd_bus_message_new_signal(bus, &m, "/org/bluez/hci0", "org.freedesktop.DBus.Properties",
                                        "PropertiesChanged") >= 0);
        r = sd_bus_message_open_container(m, 'a', "{sv}");
        for (unsigned i = 0; r >= 0 && in.n > 0 && i < 32; i++) {
                char k[64];
                uint8_t pick = take(&in);

                if (pick < 200)
                        snprintf(k, sizeof k, "%s", keys[pick % ELEMENTSOF(keys)]);
                else
                        take_string(&in, k);
                r = sd_bus_message_open_container(m, 'e', "sv");
                if (r >= 0)
                        r = sd_bus_message_append(m, "s", k);
                if (r >= 0)
                        r = append_value(m, &in, 0);
                if (r >= 0)
                        r = sd_bus_message_close_container(m);
        }
        if (r >= 0)
                r = sd_bus_message_close_container(m);
        if (r >= 0 && sd_bus_message_seal(m, 1, 0) >= 0 && sd_bus_message_rewind(m, true) >= 0) {
                r = parse_props(&b, &o, "/org/bluez/hci0/dev_AA_BB_CC_00_11_22/service0010/char0011", iface, m);
                CHECK(r >= 0 || r == -EBADMSG || r == -ENXIO || r == -EINVAL || r == -ENOMEM);
                /* Whatever it read is in range and terminated. */
                CHECK(memchr(o.address, 0, sizeof o.address) && memchr(o.name, 0, sizeof o.name) &&
                      memchr(o.uuid, 0, sizeof o.uuid));
                CHECK(o.address[0] == 0 || strlen(o.address) == 17);
                CHECK(o.battery >= -1 && o.battery <= 100);
        }
        free(o.adapter);
        free(o.parent);
        sd_bus_message_unref(m);
        sd_bus_close_unref(bus);
        close(fds[1]);
        return 0;
}
