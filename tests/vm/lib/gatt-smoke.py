#!/usr/bin/python3
# A two-sided GATT round trip through real bluetoothd, for the VM harness's smoke scenario.
# "peripheral" serves a test service from one adapter (GattManager1 + LEAdvertisingManager1);
# "central" discovers it from the other adapter, connects, reads, subscribes, writes, checks
# the notification, pairs (Just Works) and reads an encrypt-read characteristic.
# Both sides talk to the same bluetoothd, so every object path is qualified by its adapter.

import argparse
import sys
import time

import dbus
import dbus.mainloop.glib
import dbus.service
from gi.repository import GLib

BLUEZ = "org.bluez"
OM = "org.freedesktop.DBus.ObjectManager"
PROPS = "org.freedesktop.DBus.Properties"
SVC_UUID = "6b7e0001-3c1a-4d6e-9b7e-5a1d2c3b4a50"
ECHO_UUID = "6b7e0002-3c1a-4d6e-9b7e-5a1d2c3b4a50"    # read, write, notify
SECRET_UUID = "6b7e0003-3c1a-4d6e-9b7e-5a1d2c3b4a50"  # encrypt-read
INITIAL = b"kneewrap-smoke"
SECRET = b"bonded-only"

T0 = time.monotonic()


def say(role, msg):
    print(f"{role} [{time.monotonic() - T0:6.3f}] {msg}", flush=True)


class Failed(Exception):
    pass


def pump_until(pred, timeout, what):
    """Runs the GLib loop until pred() is true; the loop must keep running so that bluetoothd
    can call back into this process while we wait."""
    ctx = GLib.MainContext.default()
    end = time.monotonic() + timeout
    tick = GLib.timeout_add(50, lambda: True)
    try:
        while True:
            v = pred()
            if v:
                return v
            if time.monotonic() > end:
                raise Failed(f"timed out after {timeout} s waiting for {what}")
            ctx.iteration(True)
    finally:
        GLib.source_remove(tick)


def call(iface_obj, method, *args, timeout=25):
    """An asynchronous D-Bus call waited for with the loop running (a blocking call would
    deadlock whenever bluetoothd calls back into us before replying)."""
    res = {}
    getattr(iface_obj, method)(*args,
                               reply_handler=lambda *r: res.setdefault("ok", r),
                               error_handler=lambda e: res.setdefault("err", e),
                               timeout=timeout)
    pump_until(lambda: res, timeout + 5, method)
    if "err" in res:
        raise Failed(f"{method}: {res['err'].get_dbus_name()}: {res['err'].get_dbus_message()}")
    r = res["ok"]
    return r[0] if len(r) == 1 else (r or None)


# ---- peripheral -------------------------------------------------------------------------

class Application(dbus.service.Object):
    def __init__(self, bus, path):
        super().__init__(bus, path)
        self.path = path
        self.children = []

    @dbus.service.method(OM, out_signature="a{oa{sa{sv}}}")
    def GetManagedObjects(self):
        return {c.path: c.props() for c in self.children}


class Service(dbus.service.Object):
    def __init__(self, bus, path, uuid):
        super().__init__(bus, path)
        self.path, self.uuid = path, uuid

    def props(self):
        return {"org.bluez.GattService1": {"UUID": self.uuid, "Primary": True}}

    @dbus.service.method(PROPS, in_signature="s", out_signature="a{sv}")
    def GetAll(self, iface):
        return self.props()[iface]


class Characteristic(dbus.service.Object):
    IFACE = "org.bluez.GattCharacteristic1"

    def __init__(self, bus, path, service, uuid, flags, value, on_write=None):
        super().__init__(bus, path)
        self.path, self.service, self.uuid, self.flags = path, service, uuid, flags
        self.value = bytes(value)
        self.on_write = on_write
        self.notifying = False

    def props(self):
        return {self.IFACE: {
            "Service": dbus.ObjectPath(self.service.path),
            "UUID": self.uuid,
            "Flags": dbus.Array(self.flags, signature="s"),
        }}

    @dbus.service.method(PROPS, in_signature="s", out_signature="a{sv}")
    def GetAll(self, iface):
        return self.props()[iface]

    @dbus.service.signal(PROPS, signature="sa{sv}as")
    def PropertiesChanged(self, iface, changed, invalidated):
        pass

    @dbus.service.method(IFACE, in_signature="a{sv}", out_signature="ay")
    def ReadValue(self, options):
        say("peripheral", f"read {self.uuid[:8]} from {options.get('device', '?')}")
        return dbus.ByteArray(self.value)

    @dbus.service.method(IFACE, in_signature="aya{sv}")
    def WriteValue(self, value, options):
        self.value = bytes(value)
        say("peripheral", f"write {self.uuid[:8]} {self.value.hex()}")
        if self.on_write:
            self.on_write(self)

    @dbus.service.method(IFACE)
    def StartNotify(self):
        say("peripheral", f"notify on for {self.uuid[:8]}")
        self.notifying = True

    @dbus.service.method(IFACE)
    def StopNotify(self):
        self.notifying = False

    def notify(self, value):
        self.value = bytes(value)
        if self.notifying:
            self.PropertiesChanged(self.IFACE, {"Value": dbus.ByteArray(self.value)}, [])


class Advertisement(dbus.service.Object):
    IFACE = "org.bluez.LEAdvertisement1"

    def __init__(self, bus, path):
        super().__init__(bus, path)
        self.path = path

    @dbus.service.method(PROPS, in_signature="s", out_signature="a{sv}")
    def GetAll(self, iface):
        return {
            "Type": "peripheral",
            "ServiceUUIDs": dbus.Array([SVC_UUID], signature="s"),
            "LocalName": "KW-Smoke",
        }

    @dbus.service.method(IFACE)
    def Release(self):
        pass


def peripheral(args):
    bus = dbus.SystemBus()
    apath = f"/org/bluez/{args.adapter}"
    adapter = bus.get_object(BLUEZ, apath)
    app = Application(bus, "/kw/smoke")
    svc = Service(bus, "/kw/smoke/service0", SVC_UUID)
    # The echo characteristic answers a write with a notification of the bytes reversed, so
    # the central can tell the notification is the peripheral's reaction, not its own write.
    echo = Characteristic(bus, "/kw/smoke/service0/char0", svc, ECHO_UUID,
                          ["read", "write", "notify"], INITIAL,
                          on_write=lambda c: c.notify(c.value[::-1]))
    secret = Characteristic(bus, "/kw/smoke/service0/char1", svc, SECRET_UUID,
                            ["encrypt-read"], SECRET)
    app.children = [svc, echo, secret]
    adv = Advertisement(bus, "/kw/smoke/adv0")

    call(dbus.Interface(adapter, "org.bluez.GattManager1"), "RegisterApplication",
         dbus.ObjectPath(app.path), {})
    say("peripheral", f"GATT application registered on {args.adapter}")
    advm = dbus.Interface(adapter, "org.bluez.LEAdvertisingManager1")
    state = {"adv": False, "busy": False}
    om = dbus.Interface(bus.get_object(BLUEZ, "/"), OM)

    def connected():
        for path, ifaces in om.GetManagedObjects().items():
            dev = ifaces.get("org.bluez.Device1")
            if dev and path.startswith(apath + "/") and dev.get("Connected"):
                return True
        return False

    def done(*_):
        state["busy"] = False

    def registered(*_):
        state["adv"] = True
        state["busy"] = False

    def err(e):
        say("peripheral", f"advertising: {e.get_dbus_name()}: {e.get_dbus_message()}")
        state["busy"] = False

    # btvirt delivers an advertising report only when scanning or advertising is switched
    # on, so while nobody is connected the advertisement is re-registered every few seconds.
    def readvertise():
        if state["busy"]:
            return True
        if connected():
            return True
        state["busy"] = True
        if state["adv"]:
            state["adv"] = False
            advm.UnregisterAdvertisement(dbus.ObjectPath(adv.path),
                                         reply_handler=lambda: advm.RegisterAdvertisement(
                                             dbus.ObjectPath(adv.path), {},
                                             reply_handler=registered, error_handler=err),
                                         error_handler=err)
        else:
            advm.RegisterAdvertisement(dbus.ObjectPath(adv.path), {},
                                       reply_handler=registered, error_handler=err)
        return True

    readvertise()
    GLib.timeout_add(2000, readvertise)
    say("peripheral", "advertising")
    GLib.MainLoop().run()


# ---- central ----------------------------------------------------------------------------

class Agent(dbus.service.Object):
    """NoInputNoOutput; as the default agent of the one bluetoothd it answers for both sides,
    so it accepts the responder's Just Works confirmation too."""
    IFACE = "org.bluez.Agent1"

    @dbus.service.method(IFACE)
    def Release(self):
        pass

    @dbus.service.method(IFACE, in_signature="o")
    def RequestAuthorization(self, device):
        say("agent", f"authorize {device}")

    @dbus.service.method(IFACE, in_signature="ou")
    def RequestConfirmation(self, device, passkey):
        say("agent", f"confirm {device} {passkey:06d}")

    @dbus.service.method(IFACE, in_signature="os")
    def AuthorizeService(self, device, uuid):
        say("agent", f"authorize service {device} {uuid}")

    @dbus.service.method(IFACE)
    def Cancel(self):
        say("agent", "cancel")


def central(args):
    bus = dbus.SystemBus()
    apath = f"/org/bluez/{args.adapter}"
    dpath = apath + "/dev_" + args.peer.replace(":", "_")
    om = dbus.Interface(bus.get_object(BLUEZ, "/"), OM)

    agent = Agent(bus, "/kw/smoke/agent")
    am = dbus.Interface(bus.get_object(BLUEZ, "/org/bluez"), "org.bluez.AgentManager1")
    call(am, "RegisterAgent", dbus.ObjectPath(agent._object_path), "NoInputNoOutput")
    call(am, "RequestDefaultAgent", dbus.ObjectPath(agent._object_path))

    adapter = dbus.Interface(bus.get_object(BLUEZ, apath), "org.bluez.Adapter1")
    call(adapter, "SetDiscoveryFilter", {"UUIDs": dbus.Array([SVC_UUID], signature="s"),
                                         "Transport": "le"})
    # Discovery lasts as long as this process (the client that started it) is on the bus.
    call(adapter, "StartDiscovery")
    say("central", f"discovering on {args.adapter}")
    t = time.monotonic()

    def objects():
        return om.GetManagedObjects()

    def found():
        dev = objects().get(dpath, {}).get("org.bluez.Device1")
        return dev if dev and SVC_UUID in [str(u) for u in dev.get("UUIDs", [])] else None

    dev = pump_until(found, 30, f"{dpath} advertising {SVC_UUID}")
    say("central", f"found {dev.get('Name', '?')} {dev['Address']} "
        f"after {time.monotonic() - t:.2f} s")
    call(adapter, "StopDiscovery")

    devobj = bus.get_object(BLUEZ, dpath)
    device = dbus.Interface(devobj, "org.bluez.Device1")
    t = time.monotonic()
    call(device, "Connect", timeout=30)

    def prop(path, iface, name):
        return objects().get(path, {}).get(iface, {}).get(name)

    pump_until(lambda: prop(dpath, "org.bluez.Device1", "ServicesResolved"), 30,
               "ServicesResolved")
    say("central", f"connected, services resolved in {time.monotonic() - t:.2f} s")

    def char_path(uuid):
        for path, ifaces in objects().items():
            c = ifaces.get("org.bluez.GattCharacteristic1")
            if c and path.startswith(dpath + "/") and str(c["UUID"]) == uuid:
                return path
        return None

    echo_path = pump_until(lambda: char_path(ECHO_UUID), 10, "the echo characteristic")
    secret_path = pump_until(lambda: char_path(SECRET_UUID), 10, "the secret characteristic")
    echo = dbus.Interface(bus.get_object(BLUEZ, echo_path), "org.bluez.GattCharacteristic1")

    v = bytes(call(echo, "ReadValue", {}))
    if v != INITIAL:
        raise Failed(f"read {v!r}, expected {INITIAL!r}")
    say("central", f"read {v!r}")

    notes = []

    def on_changed(iface, changed, invalidated, path=None):
        if iface == "org.bluez.GattCharacteristic1" and "Value" in changed:
            notes.append((time.monotonic(), bytes(changed["Value"])))

    bus.add_signal_receiver(on_changed, "PropertiesChanged", PROPS, BLUEZ, echo_path,
                            path_keyword="path")
    call(echo, "StartNotify")
    pump_until(lambda: prop(echo_path, "org.bluez.GattCharacteristic1", "Notifying"), 10,
               "Notifying")
    payload = bytes(range(1, 9))
    t = time.monotonic()
    call(echo, "WriteValue", dbus.ByteArray(payload), {"type": "request"})
    pump_until(lambda: notes, 10, "the notification")
    if notes[0][1] != payload[::-1]:
        raise Failed(f"notified {notes[0][1].hex()}, expected {payload[::-1].hex()}")
    say("central", f"write {payload.hex()} -> notify {notes[0][1].hex()} "
        f"in {(notes[0][0] - t) * 1000:.1f} ms")

    t = time.monotonic()
    call(device, "Pair", timeout=30)
    pump_until(lambda: prop(dpath, "org.bluez.Device1", "Paired"), 10, "Paired")
    bonded = prop(dpath, "org.bluez.Device1", "Bonded")
    say("central", f"paired in {time.monotonic() - t:.2f} s (Bonded={bonded})")
    if bonded is not None and not bonded:
        raise Failed("paired but not bonded")

    secret = dbus.Interface(bus.get_object(BLUEZ, secret_path), "org.bluez.GattCharacteristic1")
    v = bytes(call(secret, "ReadValue", {}))
    if v != SECRET:
        raise Failed(f"encrypted read {v!r}, expected {SECRET!r}")
    say("central", f"encrypted read {v!r}")

    # The peripheral's side of the same bond: bluetoothd keeps it under the other adapter.
    ppath = f"/org/bluez/{args.peer_adapter}/dev_" + args.own.replace(":", "_")
    pdev = objects().get(ppath, {}).get("org.bluez.Device1", {})
    say("central", f"peripheral side {ppath}: Paired={pdev.get('Paired')} "
        f"Bonded={pdev.get('Bonded')}")
    if not pdev.get("Paired"):
        raise Failed("the peripheral side does not show the pairing")

    call(device, "Disconnect")
    pump_until(lambda: not prop(dpath, "org.bluez.Device1", "Connected"), 10, "disconnect")
    say("central", "disconnected; round trip ok")


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("role", choices=["peripheral", "central"])
    ap.add_argument("--adapter", required=True)
    ap.add_argument("--peer", help="central: the peripheral's address")
    ap.add_argument("--own", default="00:AA:01:00:00:00", help="central: its own address")
    ap.add_argument("--peer-adapter", default="hci1")
    args = ap.parse_args()
    dbus.mainloop.glib.DBusGMainLoop(set_as_default=True)
    try:
        if args.role == "peripheral":
            peripheral(args)
        else:
            central(args)
    except (Failed, dbus.DBusException) as e:
        say(args.role, f"FAIL: {e}")
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
