# The mock BlueZ checked against the BlueZ 5.66 D-Bus API with a plain client, so the daemon's
# tests can trust it: object layout, discovery, connection, GATT bytes, errors, restarts.
import os
import select
import time

import dbus
import dbus.mainloop.glib
import pytest
from gi.repository import GLib

from mockbluez import MockBluez, device_path  # noqa: F401

WRAP = "AA:BB:CC:00:11:22"
WRAP2 = "AA:BB:CC:00:33:44"
OTHER = "11:22:33:44:55:66"
THERAPY = "fac50001-c475-4e93-816c-09c2563ceaf2"
STATUS = "fac50002-c475-4e93-816c-09c2563ceaf2"
BUTTON = "fac50003-c475-4e93-816c-09c2563ceaf2"
CP = "fac50004-c475-4e93-816c-09c2563ceaf2"
BATTERY_LEVEL = "00002a19-0000-1000-8000-00805f9b34fb"
START_COLD_10C_15MIN = [0x01, 0x01, 0xE8, 0x03, 0x84, 0x03]

dbus.mainloop.glib.DBusGMainLoop(set_as_default=True)


class Client:
    """A plain BlueZ client: its own connection, and every signal it receives, in order."""

    def __init__(self, address):
        self.conn = dbus.bus.BusConnection(address)
        self.events = []
        self.signals = []          # whole signals, in order: ("props", path, iface, {changed}, [invalidated])
        self.conn.add_signal_receiver(self._on_props, "PropertiesChanged",
                                      "org.freedesktop.DBus.Properties", path_keyword="path")
        self.conn.add_signal_receiver(self._on_added, "InterfacesAdded", "org.freedesktop.DBus.ObjectManager")
        self.conn.add_signal_receiver(lambda p, i: self.events.append(("removed", str(p), set(map(str, i)))),
                                      "InterfacesRemoved", "org.freedesktop.DBus.ObjectManager")

    def _on_added(self, path, ifaces):
        self.events.append(("added", str(path), set(map(str, ifaces))))
        self.signals.append(("added", str(path), set(map(str, ifaces))))

    def _on_props(self, iface, changed, invalidated, path=None):
        self.signals.append(("props", str(path), str(iface), {str(k): v for k, v in changed.items()},
                             [str(k) for k in invalidated]))
        for k, v in changed.items():
            self.events.append(("changed", str(path), str(k), v))
        for k in invalidated:
            self.events.append(("invalidated", str(path), str(k), None))

    def pump(self, seconds=0.0):
        end = time.monotonic() + seconds
        ctx = GLib.MainContext.default()
        while True:
            while ctx.iteration(False):
                pass
            if time.monotonic() >= end:
                return
            time.sleep(0.01)

    def wait(self, pred, timeout=10.0):
        end = time.monotonic() + timeout
        while time.monotonic() < end:
            self.pump()
            v = pred()
            if v:
                return v
            time.sleep(0.01)
        raise AssertionError("timed out waiting for %s" % pred)

    def iface(self, path, name):
        return dbus.Interface(self.conn.get_object("org.bluez", path), name)

    def objects(self):
        return self.iface("/", "org.freedesktop.DBus.ObjectManager").GetManagedObjects()

    def prop(self, path, iface, name):
        return self.iface(path, "org.freedesktop.DBus.Properties").Get(iface, name)

    def adapter(self):
        return self.iface("/org/bluez/hci0", "org.bluez.Adapter1")

    def device(self, address=WRAP):
        return self.iface(device_path(address), "org.bluez.Device1")

    def device_signals(self, address=WRAP):
        """Device1 PropertiesChanged as sorted tuples of what changed ("-X": X invalidated),
        "gatt" for a GATT object added under the device, and other interfaces added to it."""
        dev, out = device_path(address), []
        for sig in self.signals:
            if sig[0] == "added" and sig[1].startswith(dev + "/"):
                if not out or out[-1] != "gatt":
                    out.append("gatt")
            elif sig[0] == "added" and sig[1] == dev:
                out.append("+".join(sorted(sig[2])))
            elif sig[0] == "props" and sig[1] == dev and sig[2] == "org.bluez.Device1":
                out.append(tuple(sorted(sig[3])) + tuple("-" + k for k in sig[4]))
        return out

    def call_async(self, method, *args):
        """Starts a call; returns a dict that gets "ok" or "error" and "t" (monotonic) on its answer."""
        r = {}

        def ok(*_):
            r.update(ok=True, t=time.monotonic())

        def err(e):
            r.update(error=e.get_dbus_name(), t=time.monotonic())
        method(*args, reply_handler=ok, error_handler=err, timeout=30)
        return r

    def char_path(self, uuid):
        for p, ifs in self.objects().items():
            c = ifs.get("org.bluez.GattCharacteristic1")
            if c and str(c["UUID"]) == uuid and str(p).startswith(device_path(WRAP)):
                return str(p)
        return None

    def char(self, uuid):
        return self.iface(self.char_path(uuid), "org.bluez.GattCharacteristic1")

    def values(self, path):
        return [list(map(int, e[3])) for e in self.events if e[0] == "changed" and e[1] == path and e[2] == "Value"]

    def discover(self, uuids=(THERAPY,)):
        a = self.adapter()
        a.SetDiscoveryFilter({"UUIDs": dbus.Array(list(uuids), signature="s"), "Transport": "le"})
        a.StartDiscovery()
        self.wait(lambda: device_path(WRAP) in self.objects())
        self.pump(0.05)                 # the signals that came with it, too

    def connect_resolved(self):
        self.device().Connect()
        self.wait(lambda: self.prop(device_path(WRAP), "org.bluez.Device1", "ServicesResolved"))
        self.wait(lambda: self.char_path(CP))
        self.pump(0.1)


def error_of(fn, *args, **kw):
    with pytest.raises(dbus.exceptions.DBusException) as e:
        fn(*args, **kw)
    return e.value.get_dbus_name(), e.value.get_dbus_message()


@pytest.fixture
def quick(bus):
    """BlueZ's own delays shortened, so the suite runs in seconds."""
    bus.set_timing(disconnect_ms=200, connect_timeout_ms=300, stall_drop_ms=400, temp_timeout_ms=500)
    return bus


def test_managed_objects_layout(bus):
    bus.mock.AddWrap(WRAP)
    c = Client(bus.address)
    objs = c.objects()
    assert {"org.bluez.AgentManager1", "org.bluez.ProfileManager1"} <= set(objs["/org/bluez"])
    ad = objs["/org/bluez/hci0"]["org.bluez.Adapter1"]
    for k in ("Address", "AddressType", "Name", "Alias", "Class", "Powered", "Discoverable", "Pairable",
              "Discovering", "UUIDs", "Modalias"):
        assert k in ad
    assert ad["Powered"] and not ad["Discovering"]
    # Nothing advertises into the bus until someone discovers.
    assert not [p for p in objs if "/dev_" in p]
    assert list(c.adapter().GetDiscoveryFilters()) == ["UUIDs", "RSSI", "Pathloss", "Transport",
                                                       "DuplicateData", "Discoverable", "Pattern"]


def test_discovery_filter_and_ownership(quick):
    bus = quick
    bus.mock.AddWrap(WRAP)
    bus.mock.AddPeripheral(OTHER, ["180d"])
    a, b = Client(bus.address), Client(bus.address)
    a.discover()
    dev = a.objects()[device_path(WRAP)]["org.bluez.Device1"]
    assert str(dev["Name"]) == "KneeWrap-1122" and str(dev["AddressType"]) == "random"
    assert int(dev["RSSI"]) == -60 and not dev["Paired"] and not dev["ServicesResolved"]
    assert list(map(str, dev["UUIDs"])) == [THERAPY]
    assert "ManufacturerData" not in dev and "ServiceData" not in dev
    a.pump(0.3)
    assert device_path(OTHER) not in a.objects()     # filtered out by UUID
    # Discovery belongs to its client: another may not stop it, but sees Discovering.
    assert b.prop("/org/bluez/hci0", "org.bluez.Adapter1", "Discovering")
    assert error_of(b.adapter().StopDiscovery) == ("org.bluez.Error.Failed", "No discovery started")
    assert error_of(a.adapter().StartDiscovery)[0] == "org.bluez.Error.InProgress"
    # An unfiltered client sees the other peripheral too.
    b.adapter().StartDiscovery()
    b.wait(lambda: device_path(OTHER) in b.objects())
    b.adapter().StopDiscovery()
    # The owner leaving the bus ends its discovery; RSSI goes, temporary devices expire.
    a.conn.close()
    b.wait(lambda: not b.prop("/org/bluez/hci0", "org.bluez.Adapter1", "Discovering"))
    dev = b.objects().get(device_path(WRAP))          # may already have expired
    assert dev is None or "RSSI" not in dev["org.bluez.Device1"]
    b.wait(lambda: device_path(WRAP) not in b.objects())
    assert error_of(b.adapter().SetDiscoveryFilter, {"Bogus": dbus.Boolean(True)})[0] == \
        "org.bluez.Error.InvalidArguments"


def test_connect_services_late_and_status_read(quick):
    bus = quick
    bus.mock.AddWrap(WRAP)
    c = Client(bus.address)
    c.discover()
    c.events.clear()
    c.connect_resolved()
    dev = device_path(WRAP)
    order = [e for e in c.events if (e[0] == "changed" and e[2] in ("Connected", "ServicesResolved"))
             or (e[0] == "added" and "org.bluez.GattService1" in e[2])]
    assert order[0][2] == "Connected" and order[1][2] == "ServicesResolved" and order[2][0] == "added"
    objs = c.objects()
    # Battery1 on the device and the 0x180F GATT objects both; a second 0x180A with the PnP ID.
    assert int(objs[dev]["org.bluez.Battery1"]["Percentage"]) == 87
    svcs = [str(ifs["org.bluez.GattService1"]["UUID"]) for p, ifs in objs.items() if "org.bluez.GattService1" in ifs]
    assert "0000180f-0000-1000-8000-00805f9b34fb" in svcs and svcs.count("0000180a-0000-1000-8000-00805f9b34fb") == 2
    assert "00001800-0000-1000-8000-00805f9b34fb" not in svcs          # GAP belongs to bluetoothd
    assert str(objs[dev]["org.bluez.Device1"]["Modalias"]) == "usb:v1D6Bp0246d0100"   # from the PnP ID
    uuids = list(map(str, objs[dev]["org.bluez.Device1"]["UUIDs"]))
    assert uuids == sorted(uuids) and THERAPY in uuids and "00001800-0000-1000-8000-00805f9b34fb" in uuids
    cp = objs[c.char_path(CP)]["org.bluez.GattCharacteristic1"]
    assert list(map(str, cp["Flags"])) == ["write", "indicate"] and not cp["Notifying"]
    assert set(cp) == {"UUID", "Service", "Value", "Notifying", "Flags", "MTU"}
    status = list(map(int, c.char(STATUS).ReadValue({})))
    assert len(status) == 12 and status[0] == 0 and status[11] == 0
    c.wait(lambda: c.values(c.char_path(STATUS))[-1:] == [status])    # a read updates the cached Value
    # Reconnecting finds the cached objects: no InterfacesAdded again.
    c.device().Disconnect()
    assert not c.prop(dev, "org.bluez.Device1", "Connected")
    c.events.clear()
    c.connect_resolved()
    c.pump(0.3)
    assert not [e for e in c.events if e[0] == "added" and "org.bluez.GattService1" in e[2]]


def test_button_notification_and_start_indication(quick):
    bus = quick
    bus.mock.AddWrap(WRAP)
    c = Client(bus.address)
    c.discover()
    c.connect_resolved()
    for u in (BUTTON, CP, STATUS):
        c.char(u).StartNotify()
    c.wait(lambda: c.prop(c.char_path(CP), "org.bluez.GattCharacteristic1", "Notifying"))
    bus.mock.PressButton(WRAP, 1)
    c.wait(lambda: c.values(c.char_path(BUTTON)) == [[1, 1]])
    # The Control Point needs encryption: the link pairs by itself, then the write goes through.
    assert not c.prop(device_path(WRAP), "org.bluez.Device1", "Paired")
    c.char(CP).WriteValue(START_COLD_10C_15MIN, {"type": "request"})
    assert c.prop(device_path(WRAP), "org.bluez.Device1", "Paired")
    assert c.prop(device_path(WRAP), "org.bluez.Device1", "Bonded")
    c.wait(lambda: c.values(c.char_path(CP)) == [[0x80, 0x01, 0x01]])
    c.wait(lambda: c.values(c.char_path(STATUS)))
    st = c.values(c.char_path(STATUS))[-1]
    assert st[0] == 1 and st[1] == 1 and st[2:4] == [0xE8, 0x03] and st[11] == 1
    log = bus.cp_log(WRAP)
    assert [e[2] for e in log] == ["0101e8038403"] and log[0][3] == 1
    # A second START while it runs: busy.
    c.char(CP).WriteValue(START_COLD_10C_15MIN, {"type": "request"})
    c.wait(lambda: c.values(c.char_path(CP))[-1:] == [[0x80, 0x01, 0x04]])
    # Malformed bytes a test injects arrive as they are.
    assert bus.mock.SendRaw(WRAP, BUTTON, dbus.ByteArray(b"\x07"))
    c.wait(lambda: c.values(c.char_path(BUTTON))[-1] == [7])
    # Like 5.66, each subscribed client's session signals the value: two clients, two signals.
    d = Client(bus.address)
    d.char(BUTTON).StartNotify()
    c.events.clear()
    bus.mock.PressButton(WRAP, 3)
    c.wait(lambda: len(c.values(c.char_path(BUTTON))) == 2)
    c.pump(0.2)
    assert c.values(c.char_path(BUTTON)) == [[3, 2], [3, 2]]
    # A client leaving the bus ends its session.
    d.conn.close()
    c.pump(0.3)
    assert bus.mock.SendRaw(WRAP, BUTTON, dbus.ByteArray(b"\x03\x09"))
    c.pump(0.3)
    assert c.values(c.char_path(BUTTON))[2:] == [[3, 9]]


def test_fail_safe_end(fast_bus):
    bus = fast_bus
    bus.set_timing(disconnect_ms=200)
    bus.mock.AddWrap(WRAP)
    c = Client(bus.address)
    c.discover()
    c.connect_resolved()
    c.char(STATUS).StartNotify()
    c.device().Pair()
    c.char(CP).WriteValue([0x01, 0x02, 0xA0, 0x0F, 0x3C, 0x00], {"type": "request"})  # heat 40 °C, 60 s
    c.wait(lambda: [s[0] for s in c.values(c.char_path(STATUS))][-1:] == [0], timeout=5)
    states = [s[0] for s in c.values(c.char_path(STATUS))]
    assert states[0] == 2 and 3 in states and states.index(3) < len(states) - 1
    done = [s for s in c.values(c.char_path(STATUS)) if s[0] == 3][0]
    assert done[6] | done[7] << 8 == 60 and done[8:10] == [0, 0]
    assert bus.wrap(WRAP)["completed"] == 1


def test_errors_named_like_bluez(quick):
    bus = quick
    bus.mock.AddWrap(WRAP)
    c = Client(bus.address)
    c.discover()
    assert error_of(c.adapter().RemoveDevice, dbus.ObjectPath("/org/bluez/hci0/dev_00_00_00_00_00_01")) == \
        ("org.bluez.Error.DoesNotExist", "Does Not Exist")
    assert error_of(c.device().CancelPairing)[0] == "org.bluez.Error.DoesNotExist"
    c.connect_resolved()
    assert error_of(c.char(CP).ReadValue, {}) == ("org.bluez.Error.NotPermitted", "Read not permitted")
    cccd = [p for p in c.objects() if p.startswith(c.char_path(STATUS) + "/desc")][0]
    assert error_of(c.iface(cccd, "org.bluez.GattDescriptor1").WriteValue, [1, 0], {})[0] == \
        "org.bluez.Error.NotPermitted"
    assert error_of(c.char(STATUS).StopNotify) == ("org.bluez.Error.Failed", "No notify session started")
    c.device().Pair()
    assert error_of(c.device().Pair)[0] == "org.bluez.Error.AlreadyExists"
    t = time.monotonic()
    c.device().Disconnect()
    assert time.monotonic() - t >= 0.15                  # bluez waits before it drops the link
    assert error_of(c.char(STATUS).ReadValue, {}) == ("org.bluez.Error.Failed", "Not connected")
    bus.mock.FailConnect(WRAP, 1)
    assert error_of(c.device().Connect) == ("org.bluez.Error.Failed", "le-connection-abort-by-local")
    c.adapter().StopDiscovery()
    c.iface("/org/bluez/hci0", "org.freedesktop.DBus.Properties").Set("org.bluez.Adapter1", "Powered",
                                                                       dbus.Boolean(False))
    assert error_of(c.adapter().StartDiscovery)[0] == "org.bluez.Error.NotReady"


def test_stalled_first_connection(quick):
    bus = quick
    bus.mock.AddWrap(WRAP)
    c = Client(bus.address)
    c.discover()
    bus.mock.StallNextConnect(WRAP)
    c.device().Connect()
    assert c.prop(device_path(WRAP), "org.bluez.Device1", "Connected")
    c.wait(lambda: not c.prop(device_path(WRAP), "org.bluez.Device1", "Connected"))
    assert not c.char_path(STATUS)
    assert not [e for e in c.events if e[0] == "changed" and e[2] == "ServicesResolved" and e[3]]
    c.connect_resolved()                                   # the next attempt works


def test_remove_device_and_the_wraps_bond(quick):
    bus = quick
    bus.mock.AddWrap(WRAP)
    c = Client(bus.address)
    c.discover()
    c.device().Pair()
    assert c.prop(device_path(WRAP), "org.bluez.Device1", "Bonded")
    c.adapter().StopDiscovery()
    c.adapter().RemoveDevice(dbus.ObjectPath(device_path(WRAP)))
    assert not [p for p in c.objects() if p.startswith(device_path(WRAP))]
    c.adapter().StartDiscovery()
    c.wait(lambda: device_path(WRAP) in c.objects())      # seen again, unpaired
    assert not c.prop(device_path(WRAP), "org.bluez.Device1", "Paired")
    # The wrap still holds its bond: it refuses until its stop button clears it.
    assert error_of(c.device().Pair) == ("org.bluez.Error.AuthenticationFailed", "Authentication Failed")
    bus.mock.ResetBond(WRAP)
    c.device().Pair()
    assert c.prop(device_path(WRAP), "org.bluez.Device1", "Paired")


def test_restart_bluez_and_adapter_unplug(quick):
    bus = quick
    bus.mock.AddWrap(WRAP)
    c = Client(bus.address)
    c.discover()
    c.connect_resolved()
    c.device().Pair()
    old = c.conn.get_name_owner("org.bluez")
    bus.mock.RestartBluez(200)
    c.wait(lambda: c.conn.name_has_owner("org.bluez") and c.conn.get_name_owner("org.bluez") != old)
    c.wait(lambda: device_path(WRAP) in c.objects())
    dev = c.objects()[device_path(WRAP)]
    assert dev["org.bluez.Device1"]["Paired"] and not dev["org.bluez.Device1"]["Connected"]
    assert not c.char_path(STATUS)                         # GATT objects only after a connection
    assert "org.bluez.Battery1" not in dev
    c.connect_resolved()
    bus.mock.RemoveAdapter()
    c.wait(lambda: "/org/bluez/hci0" not in c.objects())
    bus.mock.AddAdapter()
    c.wait(lambda: device_path(WRAP) in c.objects())


def test_handle_base_names_the_paths(quick):
    bus = quick
    bus.add_wrap(WRAP, handle_base=0x40, pnp=False, services_late=False)
    c = Client(bus.address)
    c.discover()
    c.connect_resolved()
    paths = [p for p in c.objects() if p.startswith(device_path(WRAP) + "/")]
    assert device_path(WRAP) + "/service0040" in paths
    assert all(int(p.split("/service")[1][:4], 16) >= 0x40 for p in paths)
    svcs = [ifs["org.bluez.GattService1"]["UUID"] for ifs in c.objects().values() if "org.bluez.GattService1" in ifs]
    assert [str(s) for s in svcs].count("0000180a-0000-1000-8000-00805f9b34fb") == 1
    assert "Modalias" not in c.objects()[device_path(WRAP)]["org.bluez.Device1"]
    # A firmware update moves the handles: the link drops, the next connection finds new paths.
    c.device().Pair()
    bus.mock.SetHandleBase(WRAP, 0x10)
    c.wait(lambda: not c.prop(device_path(WRAP), "org.bluez.Device1", "Connected"))
    assert not c.char_path(STATUS)
    c.connect_resolved()
    assert c.char_path(STATUS).startswith(device_path(WRAP) + "/service00")
    assert device_path(WRAP) + "/service0010" in c.objects()


def test_acquire_notify(quick):
    bus = quick
    bus.mock.AddWrap(WRAP)
    c = Client(bus.address)
    c.discover()
    c.connect_resolved()
    objs = c.objects()
    assert "NotifyAcquired" in objs[c.char_path(BUTTON)]["org.bluez.GattCharacteristic1"]
    assert "NotifyAcquired" not in objs[c.char_path(CP)]["org.bluez.GattCharacteristic1"]   # indicate only
    assert "WriteAcquired" not in objs[c.char_path(CP)]["org.bluez.GattCharacteristic1"]
    fd, mtu = c.char(BUTTON).AcquireNotify({})
    fd = fd.take()
    assert int(mtu) >= 23
    assert c.prop(c.char_path(BUTTON), "org.bluez.GattCharacteristic1", "NotifyAcquired")
    assert error_of(c.char(BUTTON).StartNotify) == ("org.bluez.Error.NotPermitted", "Notify acquired")
    assert error_of(c.char(CP).AcquireNotify, {})[0] == "org.bluez.Error.NotSupported"
    bus.mock.PressButton(WRAP, 2)
    assert select.select([fd], [], [], 5)[0]
    assert list(os.read(fd, 64)) == [2, 1]
    os.close(fd)
    c.wait(lambda: not c.prop(c.char_path(BUTTON), "org.bluez.GattCharacteristic1", "NotifyAcquired"))
    c.char(BUTTON).StartNotify()


# What real bluetoothd 5.66 was seen doing in the VM, and the mock does by default.

def test_first_connection_and_pairing_signal_order(quick):
    bus = quick
    bus.mock.AddWrap(WRAP)
    c = Client(bus.address)
    c.discover()
    c.signals.clear()
    c.device().Pair()                  # connects, discovers, pairs: the daemon's adoption
    c.wait(lambda: c.char_path(CP) and "Modalias" in c.objects()[device_path(WRAP)]["org.bluez.Device1"])
    c.iface(device_path(WRAP), "org.freedesktop.DBus.Properties").Set("org.bluez.Device1", "Trusted",
                                                                       dbus.Boolean(True))
    c.pump(0.3)
    seq = [s for s in c.device_signals() if s not in (("-RSSI",), "org.bluez.Battery1")]
    # Connected, ONE signal with UUIDs and ServicesResolved, the objects, Modalias, ONE signal
    # with Bonded and Paired, Trusted. No Name change: the GAP name is the advertised one.
    assert seq == [("Connected",), ("ServicesResolved", "UUIDs"), "gatt", ("Modalias",),
                   ("Bonded", "Paired"), ("Trusted",)]
    resolved = [s for s in c.signals if s[0] == "props" and "ServicesResolved" in s[3]][0]
    assert resolved[3]["ServicesResolved"] and THERAPY in list(map(str, resolved[3]["UUIDs"]))


def test_bonded_reconnect_signals_no_connected(quick):
    bus = quick
    bus.mock.AddWrap(WRAP)
    c = Client(bus.address)
    c.discover()
    c.device().Pair()
    c.wait(lambda: c.char_path(CP))
    c.signals.clear()
    c.device().Disconnect()
    c.pump(0.1)
    # Disconnects are signalled; the objects stay (GATT cache), ServicesResolved toggles.
    assert ("Connected",) in c.device_signals() and ("ServicesResolved",) in c.device_signals()
    gone = [s[3] for s in c.signals if s[0] == "props" and "Connected" in s[3]]
    assert gone == [{"Connected": False}]
    assert c.char_path(CP)
    c.signals.clear()
    c.device().Connect()
    c.wait(lambda: c.prop(device_path(WRAP), "org.bluez.Device1", "ServicesResolved"))
    c.pump(0.3)
    # Only ServicesResolved=true: no Connected=true, no UUIDs, no InterfacesAdded, yet Connected reads true.
    ignored = (("-RSSI",), ("RSSI",), "org.bluez.Battery1")     # Battery1 comes back with each link
    assert [s for s in c.device_signals() if s not in ignored] == [("ServicesResolved",)]
    assert c.prop(device_path(WRAP), "org.bluez.Device1", "Connected")
    assert c.objects()[device_path(WRAP)]["org.bluez.Device1"]["Connected"]
    c.char(STATUS).ReadValue({})


def test_restart_then_paired_arrives_with_services_resolved(quick):
    bus = quick
    bus.mock.AddWrap(WRAP)
    c = Client(bus.address)
    c.discover()
    c.device().Pair()
    c.wait(lambda: c.char_path(CP))
    c.adapter().StopDiscovery()
    old = c.conn.get_name_owner("org.bluez")
    bus.mock.RestartBluez(200)
    c.wait(lambda: c.conn.name_has_owner("org.bluez") and c.conn.get_name_owner("org.bluez") != old)
    c.wait(lambda: device_path(WRAP) in c.objects())
    dev = c.objects()[device_path(WRAP)]["org.bluez.Device1"]
    assert dev["Paired"] and dev["Bonded"] and THERAPY in list(map(str, dev["UUIDs"]))   # from storage
    assert not c.char_path(CP)
    c.signals.clear()
    c.device().Connect()
    c.wait(lambda: c.char_path(CP))
    c.pump(0.2)
    seq = [s for s in c.device_signals() if s not in (("-RSSI",), "org.bluez.Battery1", ("Modalias",))]
    assert seq == [("Paired", "ServicesResolved"), "gatt"]
    resolved = [s[3] for s in c.signals if s[0] == "props" and "ServicesResolved" in s[3]]
    assert resolved == [{"Paired": True, "ServicesResolved": True}]


def test_pair_in_flight_holds_the_adapter(quick):
    bus = quick
    bus.set_timing(pair_ms=800)
    bus.mock.AddWrap(WRAP)
    bus.mock.AddWrap(WRAP2)
    c, other = Client(bus.address), Client(bus.address)
    c.discover()
    c.wait(lambda: device_path(WRAP2) in c.objects())
    c.adapter().StopDiscovery()
    t0 = time.monotonic()
    pair = c.call_async(c.device().Pair)
    c.pump(0.05)
    # The daemon's Pair timed out and it retries: bluetoothd still pairs, says so.
    assert error_of(c.device().Pair) == ("org.bluez.Error.InProgress", "In Progress")
    waiting = [c.call_async(c.device(WRAP2).Connect), c.call_async(other.adapter().StartDiscovery)]
    c.pump(0.3)
    assert not any(waiting)                                   # held while Pair is in flight
    c.wait(lambda: all(waiting) and pair)
    assert pair.get("ok") and all(w.get("ok") for w in waiting), (pair, waiting)
    assert all(w["t"] - t0 > 0.8 for w in waiting)            # connect 0.15 s + pair 0.8 s
    assert c.prop(device_path(WRAP2), "org.bluez.Device1", "Connected")
    # Another device's Pair waits too; StopDiscovery likewise.
    c.device(WRAP2).Disconnect()
    t0 = time.monotonic()
    pair = c.call_async(c.device(WRAP2).Pair)
    c.pump(0.05)
    stop = c.call_async(other.adapter().StopDiscovery)
    c.pump(0.3)
    assert not stop
    c.wait(lambda: stop and pair, timeout=15)
    assert stop.get("ok") and pair.get("ok") and stop["t"] - t0 > 0.8


def test_pnp_id_in_a_separate_device_information_service(quick):
    bus = quick
    bus.mock.AddWrap(WRAP)
    c = Client(bus.address)
    c.discover()
    c.connect_resolved()
    objs = c.objects()
    dev = device_path(WRAP)
    services = {str(p): str(ifs["org.bluez.GattService1"]["UUID"])[4:8]
                for p, ifs in objs.items() if "org.bluez.GattService1" in ifs and str(p).startswith(dev)}
    chars = {}
    for p, ifs in objs.items():
        ch = ifs.get("org.bluez.GattCharacteristic1")
        if ch and str(ch["Service"]) in services:
            chars.setdefault(str(ch["Service"]), set()).add(str(ch["UUID"])[4:8])
    dis = sorted((sorted(chars[p]) for p, u in services.items() if u == "180a"), key=len)
    assert dis == [["2a50"], ["2a24", "2a25", "2a26", "2a29"]]
    assert "1801" in services.values() and "1800" not in services.values()   # GAP is bluetoothd's own
    gatt = [p for p, u in services.items() if u == "1801"][0]
    assert min(services, key=lambda p: int(p[-4:], 16)) == gatt       # the peer's own services first
    assert str(objs[dev]["org.bluez.Device1"]["Modalias"]).startswith("usb:v1D6Bp0246")


def test_gap_name_replaces_the_advertised_name(quick):
    bus = quick
    bus.add_wrap(WRAP, gap_name="kw-sim-host")
    c = Client(bus.address)
    c.discover()
    assert str(c.prop(device_path(WRAP), "org.bluez.Device1", "Name")) == "KneeWrap-1122"
    c.signals.clear()
    c.connect_resolved()
    c.wait(lambda: str(c.prop(device_path(WRAP), "org.bluez.Device1", "Name")) == "kw-sim-host")
    assert str(c.prop(device_path(WRAP), "org.bluez.Device1", "Alias")) == "kw-sim-host"
    named = [s[3] for s in c.signals if s[0] == "props" and "Name" in s[3]]
    assert [{k: str(v) for k, v in n.items()} for n in named] == [{"Name": "kw-sim-host", "Alias": "kw-sim-host"}]
    # Seen advertising again: the advertised complete name wins.
    c.device().Disconnect()
    c.wait(lambda: str(c.prop(device_path(WRAP), "org.bluez.Device1", "Name")) == "KneeWrap-1122")


def test_rssi_invalidated_on_connect(quick):
    bus = quick
    bus.mock.AddWrap(WRAP)
    c = Client(bus.address)
    c.discover()
    assert int(c.prop(device_path(WRAP), "org.bluez.Device1", "RSSI")) == -60
    c.signals.clear()
    c.connect_resolved()
    assert ("-RSSI",) in c.device_signals()
    assert c.device_signals().index(("-RSSI",)) == 1           # right after Connected
    assert "RSSI" not in c.objects()[device_path(WRAP)]["org.bluez.Device1"]
    c.pump(1.2)                                                 # discovery goes on, the device is connected
    assert "RSSI" not in c.objects()[device_path(WRAP)]["org.bluez.Device1"]
