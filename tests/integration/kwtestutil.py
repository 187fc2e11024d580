# kwtestutil: running kneewrapd and kneewrapctl in tests: a private system bus, a notify
# socket that records what the daemon tells systemd, configs in a temporary directory.
import contextlib
import os
import signal
import socket
import subprocess
import time

import pytest

from privatebus import PrivateBus

HERE = os.path.dirname(os.path.abspath(__file__))
SRCDIR = os.path.dirname(os.path.dirname(HERE))
# meson test sets these; by hand: KNEEWRAPD=build-x/kneewrapd pytest tests/integration
BUILDDIR = (os.environ.get('KNEEWRAP_BUILD_DIR') or os.environ.get('KW_BUILDDIR')
            or os.path.join(SRCDIR, 'build'))
KNEEWRAPD = os.environ.get('KNEEWRAPD', os.path.join(BUILDDIR, 'kneewrapd'))
KNEEWRAPCTL = os.environ.get('KNEEWRAPCTL', os.path.join(BUILDDIR, 'kneewrapctl'))


def wait_for(cond, timeout, step=0.02):
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if cond():
            return True
        time.sleep(step)
    raise AssertionError(f'timed out after {timeout} s waiting for {cond}')


# kneewrapd decides at most one request of a kind (a session start, a diary entry, a run, an
# injury, a prescription, a profile, the adoption) per wrap per second of its clock (10 ms of
# real time at KNEEWRAP_TIME_SCALE=100); the next within it is dropped. A request with an answer
# (kneewrapctl, D-Bus, MQTT) is answered "too many requests": until_decided() asks again. A press
# of the wrap's button has no answer: after_a_request() waits out the window first.
REQUEST_INTERVAL_S = 1.0


def after_a_request(scale=1):
    """Call once the previous request's decision on a wrap is seen (an answer, a write to the
    wrap, a record): waits out that wrap's window, so the next request is decided, not dropped.
    time.sleep never returns early and the daemon's window is real monotonic time times the
    scale, so this holds on a machine of any speed."""
    time.sleep(REQUEST_INTERVAL_S * 1.2 / (scale or 1))


TOO_MANY = 'too many requests'


def _limited(answer):
    if isinstance(answer, subprocess.CompletedProcess):
        return TOO_MANY in (answer.stderr or '')
    if isinstance(answer, tuple):                       # (returncode, output)
        return any(isinstance(x, str) and ('TooManyRequests' in x or TOO_MANY in x) for x in answer)
    if isinstance(answer, dict):                        # an MQTT response
        return answer.get('status') == 'error' and TOO_MANY in (answer.get('error') or '')
    return False


def until_decided(request, timeout=20):
    """request() again while kneewrapd answers it "too many requests" (its per-wrap limit):
    a test waits for the request to be decided, never for a duration, and never assumes two
    requests are far apart. request() returns a CompletedProcess, (returncode, output) or an
    MQTT response dict, or raises (a D-Bus error: TooManyRequests is retried)."""
    end = time.monotonic() + timeout
    while True:
        try:
            answer = request()
        except Exception as e:  # noqa: BLE001 - only the limit's refusal is retried
            if 'TooManyRequests' not in str(getattr(e, 'get_dbus_name', lambda: '')()) or time.monotonic() > end:
                raise
        else:
            if not _limited(answer) or time.monotonic() > end:
                return answer
        time.sleep(0.02)


@pytest.fixture
def private_bus():
    """A bare dbus-daemon on a private socket, standing in for the system bus (no BlueZ): its address."""
    with PrivateBus() as b:
        yield b.address


class Notify:
    """The $NOTIFY_SOCKET side of sd_notify: every datagram, with when it arrived."""

    def __init__(self, dirpath):
        self.path = os.path.join(str(dirpath), f'notify-{time.monotonic_ns()}')
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sock.bind(self.path)
        self.messages = []          # (monotonic time, "KEY=value")

    def _drain(self, timeout=0.0):
        self.sock.settimeout(timeout if timeout > 0 else None)
        if timeout <= 0:
            self.sock.setblocking(False)
        try:
            while True:
                data = self.sock.recv(4096)
                t = time.monotonic()
                for line in data.decode().split('\n'):
                    if line:
                        self.messages.append((t, line))
                if timeout > 0:
                    return True
        except (BlockingIOError, socket.timeout):
            return False

    def wait_for(self, line, timeout=5, after=0):
        """Waits for the first `line` arriving after index `after`; returns its time."""
        end = time.monotonic() + timeout
        while True:
            self._drain()
            for t, l in self.messages[after:]:
                if l == line:
                    return t
            left = end - time.monotonic()
            if left <= 0:
                raise AssertionError(f'no {line} in {timeout} s; got {self.messages}')
            self._drain(min(left, 0.05))

    def count(self, line):
        self._drain()
        return sum(1 for _, l in self.messages if l == line)

    def statuses(self):
        self._drain()
        return [l[len('STATUS='):] for _, l in self.messages if l.startswith('STATUS=')]

    def last_status(self):
        s = self.statuses()
        return s[-1] if s else ''

    def close(self):
        self.sock.close()
        try:
            os.unlink(self.path)
        except FileNotFoundError:
            pass


def write_config(tmp_path, extra='', name='kneewrapd.conf', store=None):
    store = store or os.path.join(str(tmp_path), 'kneewrap.db')
    conf = tmp_path / name
    conf.write_text(f'[daemon]\nlog_level = info\n[store]\npath = {store}\n{extra}')
    return conf


class Daemon(subprocess.Popen):
    logpath = None

    def log(self):
        with open(self.logpath, errors='replace') as f:
            return f.read()


def start_daemon(tmp_path, conf, bus_address, notify, watchdog_usec=None, env=None, args=()):
    e = dict(os.environ)
    for k in ('JOURNAL_STREAM', 'WATCHDOG_USEC', 'WATCHDOG_PID', 'LISTEN_FDS', 'KNEEWRAP_TIME_SCALE'):
        e.pop(k, None)
    e['DBUS_SYSTEM_BUS_ADDRESS'] = bus_address
    e['NOTIFY_SOCKET'] = notify.path
    # R10: a synchronised clock unless a test says otherwise (the seam of development builds;
    # the host's own sync state is whatever the CI machine has).
    if 'KNEEWRAP_CLOCK' not in (env or {}):
        seam = os.path.join(str(tmp_path), 'clock-seam')
        if not os.path.exists(seam):
            with open(seam, 'w') as f:
                f.write('synced=1\n')
        e['KNEEWRAP_CLOCK'] = seam
    e.update(env or {})
    cmd = [KNEEWRAPD, '--config', str(conf), *args]
    if watchdog_usec:
        # WATCHDOG_PID must be the daemon's own pid: set it in a shell that execs it.
        e['WATCHDOG_USEC'] = str(watchdog_usec)
        cmd = ['/bin/sh', '-c', 'WATCHDOG_PID=$$ exec "$@"', 'sh', *cmd]
    logpath = os.path.join(str(tmp_path), f'kneewrapd-{time.monotonic_ns()}.log')
    with open(logpath, 'w') as log:
        d = Daemon(cmd, env=e, stdin=subprocess.DEVNULL, stdout=log, stderr=log)
    d.logpath = logpath
    return d


def stop_daemon(d):
    if d.poll() is None:
        d.send_signal(signal.SIGTERM)
        try:
            d.wait(timeout=5)
        except subprocess.TimeoutExpired:
            d.kill()
            d.wait()


@contextlib.contextmanager
def daemon_running(tmp_path, conf, bus_address, **kw):
    """start_daemon() with a Notify of its own: yields (daemon, notify) and ends both on the way out."""
    notify = Notify(tmp_path)
    d = start_daemon(tmp_path, conf, bus_address, notify, **kw)
    try:
        yield d, notify
    finally:
        stop_daemon(d)
        notify.close()
