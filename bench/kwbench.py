# kwbench: what the Python benches share: a private system bus, a notify socket, kneewrapd runs, stats.
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time

HERE = os.path.dirname(os.path.abspath(__file__))
SRCDIR = os.path.dirname(HERE)
BUILDDIR = os.environ.get('KW_BUILDDIR', os.path.join(SRCDIR, 'build-bench'))
KNEEWRAPD = os.environ.get('KNEEWRAPD', os.path.join(BUILDDIR, 'kneewrapd'))
FILL_STORE = os.environ.get('KW_FILL_STORE', os.path.join(BUILDDIR, 'bench', 'bench-fill-store'))

# The private bus, and the mock BlueZ for the benches with wraps, are the integration tests' own.
sys.path.insert(0, os.path.join(SRCDIR, 'tests', 'integration'))
import privatebus  # noqa: E402

PrivateBus = privatebus.PrivateBus      # kwbench.PrivateBus(workdir)


def percentile(values, p):
    """Nearest rank, as bench-hotpath.c does."""
    v = sorted(values)
    k = max(1, -(-len(v) * p // 100))
    return v[int(k) - 1]


def summary(key, value, unit, target=''):
    """One line for scripts/bench's closing table."""
    path = os.environ.get('KW_BENCH_SUMMARY')
    if path:
        with open(path, 'a') as f:
            f.write(f'{key}\t{value:.1f}\t{unit}\t{target}\n')


def fs_of(path):
    """(fstype, source) of the mount holding path."""
    real = os.path.realpath(path)
    best = ('', '?', '?')
    with open('/proc/self/mountinfo') as f:
        for line in f:
            left, _, right = line.partition(' - ')
            mp = left.split()[4]
            ft, src = right.split()[:2]
            if (real == mp or real.startswith(mp.rstrip('/') + '/')) and len(mp) >= len(best[0]):
                best = (mp, ft, src)
    return best[1], best[2]


class Workdir:
    """A temporary directory the bench removes at the end."""

    def __init__(self, prefix='kw-bench-'):
        self.path = tempfile.mkdtemp(prefix=prefix)

    def join(self, *p):
        return os.path.join(self.path, *p)

    def __fspath__(self):
        return self.path

    def close(self):
        shutil.rmtree(self.path, ignore_errors=True)


class Notify:
    """The $NOTIFY_SOCKET side of sd_notify, drained all the time by a thread.

    sd_notify() blocks while the receiver's queue is full (net.unix.max_dgram_qlen, often 10
    datagrams), as it never does under systemd: a bench that stopped reading after READY=1
    would freeze the daemon at its next STATUS= change.
    """

    def __init__(self, workdir):
        self.path = workdir.join(f'notify-{time.monotonic_ns()}')
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sock.bind(self.path)
        self.messages = []          # (time.monotonic_ns(), line)
        self.cond = threading.Condition()
        self.closed = False
        self.thread = threading.Thread(target=self._reader, daemon=True)
        self.thread.start()

    def _reader(self):
        while True:
            try:
                data = self.sock.recv(4096)
            except OSError:
                return
            t = time.monotonic_ns()
            with self.cond:
                if self.closed:
                    return
                for line in data.decode(errors='replace').split('\n'):
                    if line:
                        self.messages.append((t, line))
                self.cond.notify_all()

    def mark(self):
        """An index to pass as wait_for(after=...): only later messages count."""
        with self.cond:
            return len(self.messages)

    def wait_for(self, line, timeout=10.0, after=None):
        """time.monotonic_ns() when `line` arrived (after index `after`; default: any not yet seen)."""
        end = time.monotonic() + timeout
        with self.cond:
            start = self._seen if after is None else after
            while True:
                for i in range(start, len(self.messages)):
                    if self.messages[i][1] == line:
                        self._seen = i + 1
                        return self.messages[i][0]
                left = end - time.monotonic()
                if left <= 0:
                    raise TimeoutError(f'no {line} in {timeout} s')
                self.cond.wait(left)

    _seen = 0

    def drain(self):
        """Forget what came so far: the next wait_for() looks only at later messages."""
        with self.cond:
            self._seen = len(self.messages)

    def close(self):
        with self.cond:
            self.closed = True
        try:
            self.sock.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass
        self.sock.close()
        try:
            os.unlink(self.path)
        except FileNotFoundError:
            pass


def write_config(workdir, store, extra='', name='kneewrapd.conf'):
    conf = workdir.join(name)
    with open(conf, 'w') as f:
        f.write(f'[daemon]\nlog_level = info\n[store]\npath = {store}\n{extra}')
    return conf


def daemon_env(bus_address, notify, watchdog_usec=None, env=None):
    e = dict(os.environ)
    for k in ('JOURNAL_STREAM', 'WATCHDOG_USEC', 'WATCHDOG_PID', 'LISTEN_FDS', 'LISTEN_PID',
              'KNEEWRAP_TIME_SCALE'):
        e.pop(k, None)
    e['DBUS_SYSTEM_BUS_ADDRESS'] = bus_address
    e['NOTIFY_SOCKET'] = notify.path
    if watchdog_usec:
        # No WATCHDOG_PID: sd_watchdog_enabled() then accepts WATCHDOG_USEC for any pid.
        e['WATCHDOG_USEC'] = str(watchdog_usec)
    e.update(env or {})
    return e


def start_daemon(conf, env, log):
    return subprocess.Popen([KNEEWRAPD, '--config', conf], env=env, stdin=subprocess.DEVNULL,
                            stdout=log, stderr=log)


def stop(proc, timeout=5):
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def fill_store(path, sessions, wraps=8):
    subprocess.run([FILL_STORE, path, str(sessions), str(wraps)], check=True)


def proc_status(pid):
    """/proc/<pid>/status as a dict of strings."""
    out = {}
    with open(f'/proc/{pid}/status') as f:
        for line in f:
            k, _, v = line.partition(':')
            out[k] = v.strip()
    return out


def ctxt_switches(pid):
    """Voluntary and involuntary context switches of every thread of pid."""
    vol = invol = 0
    for tid in os.listdir(f'/proc/{pid}/task'):
        try:
            s = proc_status(f'{pid}/task/{tid}')
        except FileNotFoundError:
            continue
        vol += int(s['voluntary_ctxt_switches'])
        invol += int(s['nonvoluntary_ctxt_switches'])
    return vol, invol


def memory_kib(pid):
    """VmRSS, VmHWM from status; Pss, Private_* from smaps_rollup (KiB)."""
    s = proc_status(pid)
    out = {'VmRSS': int(s['VmRSS'].split()[0]), 'VmHWM': int(s['VmHWM'].split()[0])}
    with open(f'/proc/{pid}/smaps_rollup') as f:
        for line in f:
            parts = line.split()
            if len(parts) >= 3 and parts[2] == 'kB':
                out[parts[0].rstrip(':')] = int(parts[1])
    return out


# ---- the mock BlueZ (tests/mock-bluez), for the benches with wraps ----

def mock_bus(time_scale=None):
    """A private bus with kneewrap-mock-bluez on it (tests/integration/mockbluez.py)."""
    os.environ.setdefault('KW_BUILDDIR', BUILDDIR)
    from mockbluez import MockBluez
    return MockBluez(time_scale=time_scale)


def wrap_addresses(n):
    return ['AA:BB:CC:00:00:%02X' % (0x10 + i) for i in range(n)]


def start_kneewrapd_with_wraps(bus, workdir, addresses, notify, log, env=None, store=None):
    """kneewrapd allowed to adopt `addresses` (already added to the mock), MQTT off."""
    store = store or workdir.join('kneewrapd.db')
    allow = ('allow = ' + ' '.join(addresses) + '\n') if addresses else ''
    conf = write_config(workdir, store, extra=f'[bluetooth]\n{allow}', name='wraps.conf')
    e = daemon_env(bus.address, notify, env=env)
    return start_daemon(conf, e, log)


def wait_log(logpath, pattern, count, timeout, proc=None):
    """Waits until `pattern` (a regex) occurs `count` times in the log file."""
    rx = re.compile(pattern)
    end = time.monotonic() + timeout
    while True:
        with open(logpath, errors='replace') as f:
            text = f.read()
        if len(rx.findall(text)) >= count:
            return text
        if proc is not None and proc.poll() is not None:
            raise RuntimeError(f'exited {proc.returncode}; see {logpath}')
        if time.monotonic() > end:
            raise TimeoutError(f'{pattern!r} x{count} not in {logpath} after {timeout} s')
        time.sleep(0.05)


def wait_connected(logpath, addresses, timeout, proc=None):
    """Every address logged "connected, notifications on" by kneewrapd."""
    end = time.monotonic() + timeout
    for a in addresses:
        wait_log(logpath, re.escape(a) + r': connected, notifications on', 1,
                 max(0.1, end - time.monotonic()), proc)


def smaps_by_file(pid):
    """{mapping name: [Rss, Pss, Private] KiB} from /proc/<pid>/smaps, [heap], [stack] and anon included."""
    out = {}
    name = None
    with open(f'/proc/{pid}/smaps') as f:
        for line in f:
            parts = line.split()
            if not parts:
                continue
            if not parts[0].endswith(':') or '-' in parts[0]:
                # a mapping header: "start-end perms offset dev inode [path]"
                name = parts[5] if len(parts) >= 6 else '[anon]'
                out.setdefault(name, [0, 0, 0])
            elif name and parts[0] == 'Rss:':
                out[name][0] += int(parts[1])
            elif name and parts[0] == 'Pss:':
                out[name][1] += int(parts[1])
            elif name and parts[0] in ('Private_Clean:', 'Private_Dirty:'):
                out[name][2] += int(parts[1])
    return out


def contention():
    """'load 1.2 1.3 1.1, CPU pressure 12% io 0.3% (avg60)': how busy the machine was, for the record."""
    out = 'load ' + ' '.join(open('/proc/loadavg').read().split()[:3])
    psi = []
    for kind in ('cpu', 'io'):
        try:
            with open(f'/proc/pressure/{kind}') as f:
                some = f.readline().split()
            avg60 = [x for x in some if x.startswith('avg60=')][0].split('=')[1]
            psi.append(f'{kind} {float(avg60):.0f}%')
        except (OSError, IndexError, ValueError):
            pass
    if psi:
        out += ', pressure ' + ' '.join(psi) + ' (avg60)'
    return out
