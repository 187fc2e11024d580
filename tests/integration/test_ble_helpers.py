# test_ble_helpers: a kneewrapd (the shipped binary) on the mock BlueZ's private bus, for the BLE tests.
# No tests here: the test_ble_*.py modules import it.
import json
import os
import re
import sqlite3
import subprocess
import threading
import time

from kwtestutil import KNEEWRAPCTL, Notify, start_daemon, stop_daemon, until_decided

STATUS = "fac50002-c475-4e93-816c-09c2563ceaf2"
BUTTON = "fac50003-c475-4e93-816c-09c2563ceaf2"
CP = "fac50004-c475-4e93-816c-09c2563ceaf2"
TEMP = "00002a1c-0000-1000-8000-00805f9b34fb"

COLD, HEAT, STOP = 1, 2, 3
SCALE = 100


def addr(i):
    return "AA:BB:CC:00:11:%02X" % (0x20 + i)


def wrap_id(address):
    return "wrap_" + address.replace(":", "").lower()


class Gateway:
    """kneewrapd with a store in tmp_path, on `bus` (a MockBluez), at KNEEWRAP_TIME_SCALE=100."""

    def __init__(self, bus, tmp_path, allow=(), extra="", scale=SCALE, db=None, env=None):
        self.bus = bus
        self.env = env or {}
        self.tmp = tmp_path
        self.db = db or os.path.join(str(tmp_path), "kneewrap.db")
        self.conf = tmp_path / "kneewrapd.conf"
        allow_line = ("allow = " + " ".join(allow) + "\n") if allow else ""
        self.conf.write_text("[daemon]\nlog_level = debug\n"
                             f"[bluetooth]\n{allow_line}{extra}"
                             f"[store]\npath = {self.db}\n")
        self.scale = scale
        self.notify = Notify(tmp_path)
        self.proc = None
        self.logs = []
        # systemd always reads NOTIFY_SOCKET; a full datagram queue would block sd_notify().
        self._draining = True
        self._drainer = threading.Thread(target=self._drain, daemon=True)
        self._drainer.start()

    def _drain(self):
        while self._draining:
            try:
                self.notify._drain(0.05)
            except OSError:
                return

    def start(self):
        env = {"KNEEWRAP_TIME_SCALE": str(self.scale)} if self.scale else {}
        env.update(self.env)
        self.proc = start_daemon(self.tmp, self.conf, self.bus.address, self.notify, env=env)
        self.logs.append(self.proc.logpath)
        return self

    def stop(self, sig=None):
        if self.proc is None:
            return
        if sig is not None:
            self.proc.send_signal(sig)
            self.proc.wait(10)
        else:
            stop_daemon(self.proc)
        self.proc = None

    def alive(self):
        return self.proc is not None and self.proc.poll() is None

    def log(self):
        out = ""
        for p in self.logs:
            with open(p, errors="replace") as f:
                out += f.read()
        return out

    def wait_log(self, pattern, timeout=15.0, count=1):
        rx = re.compile(pattern)
        end = time.monotonic() + timeout
        while True:
            n = len(rx.findall(self.log()))
            if n >= count:
                return n
            assert self.alive(), "kneewrapd exited:\n" + self.log()[-4000:]
            if time.monotonic() > end:
                raise AssertionError(f"no {pattern!r} x{count} in {timeout} s; log:\n" + self.log()[-4000:])
            time.sleep(0.05)

    def wait_connected(self, address, count=1, timeout=20.0):
        return self.wait_log(re.escape(address) + r": connected, notifications on", timeout, count)

    def ctl(self, *args, check=True):
        p = until_decided(lambda: subprocess.run([KNEEWRAPCTL, "--config", str(self.conf), "--db", self.db, *args],
                                                 capture_output=True, text=True, timeout=20, env=self.bus.env()))
        if check:
            assert p.returncode == 0, f"kneewrapctl {args}: {p.returncode}\n{p.stdout}\n{p.stderr}"
        return p

    def sessions(self, address=None):
        p = self.ctl("sessions", *([address] if address else []), "--json", check=False)
        if p.returncode != 0 and "has any sessions" in p.stderr:
            return []
        assert p.returncode == 0, p.stderr
        out = p.stdout
        return [json.loads(line) for line in out.splitlines() if line.strip()]

    def wait_session(self, address, outcome, timeout=20.0, n=1):
        end = time.monotonic() + timeout
        while True:
            done = [s for s in self.sessions(address) if s["outcome"] == outcome]
            if len(done) >= n:
                return done
            assert self.alive(), "kneewrapd exited:\n" + self.log()[-4000:]
            if time.monotonic() > end:
                raise AssertionError(f"no {outcome} session for {address} in {timeout} s: {self.sessions(address)}\n"
                                     + self.log()[-4000:])
            time.sleep(0.1)

    def sql(self, query, *args):
        c = sqlite3.connect(self.db, timeout=5)
        try:
            return c.execute(query, args).fetchall()
        finally:
            c.close()

    def cp(self, address):
        """Control-point writes to one wrap, as hex strings, oldest first."""
        return [h for _, _, h, _ in self.bus.cp_log(address)]

    def wait_cp(self, address, hexvalue, timeout=15.0, count=1):
        end = time.monotonic() + timeout
        while True:
            got = self.cp(address)
            if sum(1 for h in got if h == hexvalue) >= count:
                return [e for e in self.bus.cp_log(address) if e[2] == hexvalue]
            if time.monotonic() > end:
                raise AssertionError(f"no {hexvalue} x{count} to {address} in {timeout} s: {got}\n"
                                     + self.log()[-3000:])
            time.sleep(0.02)

    def close(self):
        self.stop()
        self._draining = False
        self._drainer.join(2)
        self.notify.close()


def press(bus, address, event):
    bus.mock.PressButton(address, event)


def deny_minutes(hexvalue):
    b = bytes.fromhex(hexvalue)
    assert b[0] == 0x03 and len(b) == 4
    return b[1], b[2] | (b[3] << 8)
