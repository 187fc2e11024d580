"""mockbluez: a private system-like D-Bus with kneewrap-mock-bluez on it, and its test controls.

Usage (with /usr/bin/python3, which has python3-dbus):

    from mockbluez import MockBluez
    with MockBluez(time_scale=100) as bus:     # or the `bus` pytest fixture in conftest.py
        bus.mock.AddWrap("AA:BB:CC:00:11:22")
        env = bus.env()                         # DBUS_SYSTEM_BUS_ADDRESS=... for a daemon under test
        ...
        bus.cp_log()                            # [(address, t_usec, "0101e8038403", result), ...]

`bus.mock` is a dbus proxy of org.kneewrap.Mock1 (see tests/mock-bluez/mock-bluez.c for the list):
AddWrap(s) AddWrapWith(s, a{sv}) AddPeripheral(s, as) PressButton(s, y) SetSkin(s, d) SetFault(s, y)
ClearFault(s) SetThermometer(s, b on) ReportMode(s, n mode or -1) SetBattery(s, y) DropLink(s, b stay_away) SetAdvertising(s, b) SetRssi(s, n)
FailConnect(s, u) StallNextConnect(s) SetServicesLate(s, b) SetHandleBase(s, q) ResetBond(s)
SendRaw(s, s uuid, ay) SetTiming(a{sv} of u ms) RestartBluez(u down_ms) RemoveAdapter() AddAdapter()
GetLog() ClearLog() GetWrap(s) GetTime().
AddWrapWith options (add_wrap(address, **options)): handle_base (q), pnp (b, default true: a
BlueZ-based peer with its own GAP/GATT/PnP-ID services), services_late (b, default true),
public_address (b), advertising (b), rssi (n), name (s, advertised), gap_name (s, the GAP Device
Name bluetoothd reads after connecting; default the advertised name), model (bytes, the raw Model
Number String, valid UTF-8 or not; default "KW-1").

A wrap keeps its bond after Adapter1.RemoveDevice, as the profile says: call ResetBond (the
10-second stop press) before pairing it again.
"""
import os
import shutil
import subprocess
import tempfile
import time

import dbus

from privatebus import PrivateBus

MOCK_NAME = "org.kneewrap.Mock"
MOCK_PATH = "/org/kneewrap/mock"
MOCK_IFACE = "org.kneewrap.Mock1"

def build_dir():
    d = os.environ.get("KNEEWRAP_BUILD_DIR") or os.environ.get("KW_BUILDDIR")
    if d:
        return d
    here = os.path.dirname(os.path.abspath(__file__))
    return os.path.join(here, "..", "..", "build")


def mock_binary():
    return os.path.join(build_dir(), "tests", "mock-bluez", "kneewrap-mock-bluez")


class MockBluez:
    """A private bus with the mock BlueZ on it. stop() ends both; usable as a context manager."""

    def __init__(self, time_scale=None, binary=None, log_path=None):
        self.tmp = tempfile.mkdtemp(prefix="kw-mockbus-")
        self.time_scale = time_scale
        self.binary = binary or mock_binary()
        self.log_path = log_path or os.path.join(self.tmp, "mock-bluez.log")
        self.bus = None
        self.proc = None
        self.address = None
        self.conn = None
        self.mock = None
        self._start()

    def _start(self):
        self.bus = PrivateBus(self.tmp)
        self.address = self.bus.address
        self.start_mock()

    def env(self, extra=None):
        """The environment for a program that should talk to this bus as its system bus."""
        e = dict(os.environ)
        e["DBUS_SYSTEM_BUS_ADDRESS"] = self.address
        if self.time_scale:
            e["KNEEWRAP_TIME_SCALE"] = str(self.time_scale)
        if extra:
            e.update(extra)
        return e

    def start_mock(self):
        self._log = open(self.log_path, "a")
        self.proc = subprocess.Popen([self.binary], env=self.env(), stdout=self._log, stderr=self._log)
        self.conn = dbus.bus.BusConnection(self.address)
        deadline = time.monotonic() + 10
        while not self.conn.name_has_owner(MOCK_NAME):
            if self.proc.poll() is not None:
                raise RuntimeError("kneewrap-mock-bluez exited: see " + self.log_path)
            if time.monotonic() > deadline:
                raise RuntimeError("kneewrap-mock-bluez did not come up")
            time.sleep(0.02)
        self.mock = dbus.Interface(self.conn.get_object(MOCK_NAME, MOCK_PATH), MOCK_IFACE)

    def stop_mock(self):
        if self.proc and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(5)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.proc = None

    def stop(self):
        self.stop_mock()
        if self.conn is not None:
            self.conn.close()
            self.conn = None
        if self.bus is not None:
            self.bus.close()
        shutil.rmtree(self.tmp, ignore_errors=True)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.stop()

    # Conveniences over the raw controls.

    def cp_log(self, address=None):
        """Control-point writes as (address, t_usec, hex, result), oldest first."""
        out = [(str(a), int(t), str(h), int(r)) for a, t, h, r in self.mock.GetLog()]
        return [e for e in out if address is None or e[0] == address.upper()]

    def wrap(self, address):
        """The simulated wrap's state as a plain dict (state, mode, skin, faults, paired, ...)."""
        return {str(k): (str(v) if isinstance(v, dbus.String) else int(v)) for k, v in self.mock.GetWrap(address).items()}

    def set_timing(self, **ms):
        self.mock.SetTiming({k: dbus.UInt32(v) for k, v in ms.items()})

    def add_wrap(self, address, **options):
        types = {"handle_base": dbus.UInt16, "rssi": dbus.Int16, "name": dbus.String, "gap_name": dbus.String,
                 "model": lambda b: dbus.ByteArray(bytes(b))}
        opts = {k: types.get(k, dbus.Boolean)(v) for k, v in options.items()}
        return str(self.mock.AddWrapWith(address, dbus.Dictionary(opts, signature="sv")))

    def wait_until(self, predicate, timeout=10.0, interval=0.02):
        deadline = time.monotonic() + timeout
        while True:
            v = predicate()
            if v:
                return v
            if time.monotonic() > deadline:
                raise TimeoutError("condition not met in %.1f s" % timeout)
            time.sleep(interval)


def device_path(address):
    return "/org/bluez/hci0/dev_" + address.upper().replace(":", "_")
