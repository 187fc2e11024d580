#!/usr/bin/python3
# python-gateway: the smallest honest Python equivalent of kneewrapd's BLE side, as a point of comparison.
"""
What a typical Python BLE gateway does, and no more: python3-dbus on the GLib main loop (the
usual BlueZ stack), discover the given wraps, pair and connect them, subscribe to Therapy
Status, Button Event, Control Point, Temperature and Battery, and answer a cold/heat press with
START (a stop press with STOP). Like kneewrapd it commits a session row to SQLite (WAL,
synchronous=FULL) before it writes START. No therapy rules, no MQTT: kneewrapd does strictly
more, so the comparison flatters this side.

It tells $NOTIFY_SOCKET READY=1 once every wrap is connected with notifications on, and prints
"button answered in N µs" per START, as kneewrapd logs it.

  python-gateway.py --db /tmp/gw.db AA:BB:CC:00:00:01 AA:BB:CC:00:00:02 ...
"""
import argparse
import os
import socket
import sqlite3
import sys
import time
import uuid

import dbus
import dbus.mainloop.glib
from gi.repository import GLib

THERAPY = 'fac50001-c475-4e93-816c-09c2563ceaf2'
STATUS = 'fac50002-c475-4e93-816c-09c2563ceaf2'
BUTTON = 'fac50003-c475-4e93-816c-09c2563ceaf2'
CP = 'fac50004-c475-4e93-816c-09c2563ceaf2'
TEMP = '00002a1c-0000-1000-8000-00805f9b34fb'
BATTERY = '00002a19-0000-1000-8000-00805f9b34fb'
SUBSCRIBE = (STATUS, BUTTON, CP, TEMP, BATTERY)

DEVICE = 'org.bluez.Device1'
CHAR = 'org.bluez.GattCharacteristic1'
PROPS = 'org.freedesktop.DBus.Properties'
OM = 'org.freedesktop.DBus.ObjectManager'

START = {1: bytes([0x01, 0x01, 0xE8, 0x03, 0x84, 0x03]),     # cold 10.00 °C 900 s
         2: bytes([0x01, 0x02, 0xA0, 0x0F, 0x84, 0x03])}     # heat 40.00 °C 900 s
STOP = bytes([0x02, 0x00])


def notify(msg):
    path = os.environ.get('NOTIFY_SOCKET')
    if not path:
        return
    if path.startswith('@'):
        path = '\0' + path[1:]
    s = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    try:
        s.sendto(msg.encode(), path)
    finally:
        s.close()


class Wrap:
    def __init__(self, address):
        self.address = address
        self.path = None
        self.chars = {}            # uuid -> path
        self.notifying = set()
        self.busy = False          # Pair/Connect in flight
        self.ready = False


class Gateway:
    def __init__(self, bus, addresses, db):
        self.bus = bus
        self.wraps = {a.upper(): Wrap(a.upper()) for a in addresses}
        self.by_char = {}          # char path -> (Wrap, uuid)
        self.announced = False
        self.db = sqlite3.connect(db, isolation_level=None)
        self.db.execute('PRAGMA journal_mode = WAL')
        self.db.execute('PRAGMA synchronous = FULL')
        self.db.execute('CREATE TABLE IF NOT EXISTS sessions (id TEXT PRIMARY KEY, wrap TEXT, mode INTEGER, '
                        'requested_at INTEGER, outcome TEXT)')
        bus.add_signal_receiver(self.on_props, 'PropertiesChanged', PROPS, 'org.bluez', path_keyword='path')
        bus.add_signal_receiver(self.on_added, 'InterfacesAdded', OM, 'org.bluez')

    def obj(self, path, iface):
        return dbus.Interface(self.bus.get_object('org.bluez', path), iface)

    def start(self):
        objs = self.obj('/', OM).GetManagedObjects()
        for path, ifs in objs.items():
            self.on_added(path, ifs)
        adapter = self.obj('/org/bluez/hci0', 'org.bluez.Adapter1')
        adapter.SetDiscoveryFilter({'UUIDs': dbus.Array([THERAPY], signature='s'), 'Transport': 'le'})
        adapter.StartDiscovery()

    def on_added(self, path, ifs):
        path = str(path)
        if DEVICE in ifs:
            w = self.wraps.get(str(ifs[DEVICE].get('Address', '')).upper())
            if w:
                w.path = path
                self.link(w, ifs[DEVICE])
        if CHAR in ifs:
            u = str(ifs[CHAR]['UUID'])
            for w in self.wraps.values():
                if w.path and path.startswith(w.path + '/') and u in SUBSCRIBE:
                    w.chars[u] = path
                    self.by_char[path] = (w, u)
                    self.subscribe(w)

    def link(self, w, props):
        if w.busy:
            return
        dev = self.obj(w.path, DEVICE)
        if not props.get('Paired', False):
            w.busy = True
            dev.Pair(reply_handler=lambda: self.connect(w), error_handler=lambda e: self.retry(w, e))
        elif not props.get('Connected', False):
            self.connect(w)
        elif props.get('ServicesResolved', False):
            self.subscribe(w)

    def connect(self, w):
        w.busy = True
        self.obj(w.path, DEVICE).Connect(reply_handler=lambda: self.connected(w),
                                          error_handler=lambda e: self.retry(w, e))

    def connected(self, w):
        w.busy = False
        self.subscribe(w)

    def retry(self, w, e):
        w.busy = False
        print(f'{w.address}: {e.get_dbus_message()}; retrying', file=sys.stderr)
        GLib.timeout_add(1000, lambda: self.link(w, self.obj(w.path, PROPS).GetAll(DEVICE)) and False)

    def subscribe(self, w):
        for u in SUBSCRIBE:
            p = w.chars.get(u)
            if p and u not in w.notifying:
                w.notifying.add(u)
                self.obj(p, CHAR).StartNotify(reply_handler=lambda: self.check_ready(),
                                              error_handler=lambda e, w=w, u=u: w.notifying.discard(u))

    def check_ready(self):
        for w in self.wraps.values():
            w.ready = len(w.notifying) == len(SUBSCRIBE)
        if not self.announced and all(w.ready for w in self.wraps.values()):
            self.announced = True
            print(f'all {len(self.wraps)} wraps connected, notifications on', flush=True)
            notify('READY=1')

    def on_props(self, iface, changed, invalidated, path=None):
        path = str(path)
        if iface == DEVICE:
            for w in self.wraps.values():
                if w.path == path and 'Connected' in changed and not changed['Connected']:
                    w.notifying.clear()
                    self.link(w, self.obj(w.path, PROPS).GetAll(DEVICE))
            return
        if iface != CHAR or 'Value' not in changed:
            return
        hit = self.by_char.get(path)
        if not hit:
            return
        w, u = hit
        if u == BUTTON:
            self.on_button(w, bytes(changed['Value']), time.monotonic_ns())

    def on_button(self, w, value, t0):
        if len(value) != 2:
            return
        event = value[0]
        if event in START:
            self.db.execute('INSERT INTO sessions VALUES (?, ?, ?, ?, ?)',
                            (str(uuid.uuid4()), w.address, event, int(time.time()), 'open'))
            req = START[event]
        elif event == 3:
            req = STOP
        else:
            return
        self.obj(w.chars[CP], CHAR).WriteValue(dbus.ByteArray(req), {'type': 'request'},
                                               reply_handler=lambda: None,
                                               error_handler=lambda e: print(f'{w.address}: write: {e}',
                                                                             file=sys.stderr))
        if event in START:
            print(f'{w.address}: button answered in {(time.monotonic_ns() - t0) // 1000} µs', flush=True)


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument('--db', required=True)
    ap.add_argument('addresses', nargs='+')
    args = ap.parse_args()

    dbus.mainloop.glib.DBusGMainLoop(set_as_default=True)
    bus = dbus.SystemBus()
    gw = Gateway(bus, args.addresses, args.db)
    gw.start()
    loop = GLib.MainLoop()
    GLib.unix_signal_add(GLib.PRIORITY_DEFAULT, 15, loop.quit)
    GLib.unix_signal_add(GLib.PRIORITY_DEFAULT, 2, loop.quit)
    loop.run()


if __name__ == '__main__':
    main()
