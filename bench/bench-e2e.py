#!/usr/bin/python3
# bench-e2e: button -> START latency through D-Bus on the mock BlueZ, kneewrapd beside the Python gateway.
"""
Each press: the bench asks the mock (org.kneewrap.Mock1.PressButton) to press a wrap's heat
button; the mock's firmware emits the Button Event notification before it answers; the
gateway under test writes START to the Control Point, and the mock logs that write with its
own clock (GetLog). The mock runs at KNEEWRAP_TIME_SCALE=1, where its clock is the system's
CLOCK_MONOTONIC, the same one the bench reads, so:

  latency = mock's write timestamp - the bench's clock just before it called PressButton

which counts the PressButton call reaching the mock (one D-Bus hop, tens of µs) on top of
notification -> gateway -> WriteValue -> mock. A stop press follows, so the next heat press on
that wrap starts a new session; heat without an injury is always allowed (R2/R3) and has no
rest interval (R6 is cold only), so no rule refuses. Presses go round-robin over the wraps.
"""
import argparse
import os
import re
import subprocess
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import kwbench  # noqa: E402

import dbus.mainloop.glib  # noqa: E402
from gi.repository import GLib  # noqa: E402

# Before the mock's connection is made, so it delivers signals to the GLib loop.
dbus.mainloop.glib.DBusGMainLoop(set_as_default=True)

HEAT, STOP = 2, 3
TARGET_MS = 5.0
GATEWAY = os.path.join(kwbench.HERE, 'python-gateway.py')


class Indications:
    """Control Point indications (0x80, opcode, result) as the mock emits them, heard passively.

    The bench never calls the mock while a press is in flight: polling GetLog would compete
    with the write for the mock's loop and the CPU, and its cost would land in the numbers.
    """

    def __init__(self, conn):
        self.events = []            # (address, opcode)
        self.match = conn.add_signal_receiver(self._on_props, 'PropertiesChanged',
                                              'org.freedesktop.DBus.Properties', path_keyword='path')

    def _on_props(self, iface, changed, invalidated, path=None):
        v = changed.get('Value')
        if iface != 'org.bluez.GattCharacteristic1' or v is None or len(v) != 3 or int(v[0]) != 0x80:
            return
        m = re.search(r'/dev_([0-9A-F_]{17})/', str(path))
        if m:
            self.events.append((m.group(1).replace('_', ':'), int(v[1])))

    def wait(self, address, opcodes, timeout=5.0):
        ctx = GLib.MainContext.default()
        end = time.monotonic() + timeout
        while True:
            while ctx.iteration(False):
                pass
            for i, (a, op) in enumerate(self.events):
                if a == address and op in opcodes:
                    del self.events[:i + 1]
                    return op
            if time.monotonic() > end:
                raise TimeoutError(f'no indication {opcodes} from {address} in {timeout} s')
            time.sleep(0.0005)


def drive(bus, addrs, presses, gap):
    """Presses heat then stop on each wrap in turn; returns per-press (address, kind, t0, call)."""
    ind = Indications(bus.conn)
    done = []
    for i in range(presses):
        a = addrs[i % len(addrs)]
        for event, opcodes in ((HEAT, (0x01, 0x03)), (STOP, (0x02,))):
            t0 = time.monotonic_ns() // 1000
            bus.mock.PressButton(a, event)
            call = time.monotonic_ns() // 1000 - t0
            ind.wait(a, opcodes)
            done.append((a, event, t0, call))
            time.sleep(gap)
    ind.match.remove()
    return done


def match_log(bus, done):
    """Pairs every press with its control-point write in the mock's log, wrap by wrap, in order."""
    seen = set(a for a, _, _, _ in done)
    writes = {a: [e for e in bus.cp_log() if e[0] == a] for a in seen}
    taken = {a: 0 for a in seen}
    starts, stops, calls, denied = [], [], [], 0
    for a, event, t0, call in done:
        lst = writes[a]
        # Skip writes no press of ours asked for (none expected, but never pair them wrongly).
        while taken[a] < len(lst) and not (lst[taken[a]][1] >= t0 and
                                           lst[taken[a]][2][:2] in (('01', '03') if event == HEAT else ('02',))):
            taken[a] += 1
        if taken[a] >= len(lst):
            raise RuntimeError(f'no control-point write to {a} for a press at {t0}')
        _, t, h, _ = lst[taken[a]]
        taken[a] += 1
        if event == HEAT:
            calls.append(call)
            if h.startswith('03'):
                denied += 1
            else:
                starts.append(t - t0)
        else:
            stops.append(t - t0)
    return starts, stops, calls, denied


def own_measure(logpath):
    with open(logpath, errors='replace') as f:
        return [int(v) for v in re.findall(r'button answered in (\d+) µs', f.read())]


def run(kind, n_wraps, presses, gap, timeout, store_dir):
    wd = kwbench.Workdir()
    sd = kwbench.Workdir() if not store_dir else None
    store_parent = store_dir or sd.path
    db = os.path.join(store_parent, f'kw-e2e-{os.getpid()}-{kind}.db')
    bus = kwbench.mock_bus()
    notify = kwbench.Notify(wd)
    addrs = kwbench.wrap_addresses(n_wraps)
    p = None
    try:
        for a in addrs:
            bus.mock.AddWrap(a)
        logpath = wd.join(f'{kind}.log')
        with open(logpath, 'w') as log:
            if kind == 'kneewrapd':
                p = kwbench.start_kneewrapd_with_wraps(bus, wd, addrs, notify, log, store=db)
            else:
                env = kwbench.daemon_env(bus.address, notify)
                p = subprocess.Popen(['/usr/bin/python3', GATEWAY, '--db', db, *addrs],
                                     env=env, stdout=log, stderr=log)
        if kind == 'kneewrapd':
            notify.wait_for('READY=1', timeout=10)
            connected = []
            end = time.monotonic() + timeout
            for a in addrs:
                try:
                    kwbench.wait_connected(logpath, [a], max(0.1, end - time.monotonic()), p)
                    connected.append(a)
                except TimeoutError:
                    pass
            if not connected:
                raise RuntimeError(f'kneewrapd connected no wrap in {timeout} s; see {logpath}')
        else:
            notify.wait_for('READY=1', timeout=timeout)
            connected = addrs
        time.sleep(1.0)
        done = drive(bus, connected, presses, gap)
        starts, stops, calls, denied = match_log(bus, done)
        mem = kwbench.memory_kib(p.pid)
        return {'starts': starts, 'stops': stops, 'calls': calls, 'denied': denied,
                'own': own_measure(logpath), 'wraps': len(connected), 'mem': mem}
    finally:
        if p:
            kwbench.stop(p)
        notify.close()
        bus.stop()
        for suffix in ('', '-wal', '-shm'):
            try:
                os.unlink(db + suffix)
            except FileNotFoundError:
                pass
        if sd:
            sd.close()
        if not os.environ.get('KW_BENCH_KEEP'):
            wd.close()


def fmt(v):
    if not v:
        return f'{"-":>8} {"-":>8} {"-":>8}'
    return (f'{kwbench.percentile(v, 50) / 1000:8.2f} {kwbench.percentile(v, 99) / 1000:8.2f} '
            f'{max(v) / 1000:8.2f}')


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument('-n', '--wraps', type=int, default=8)
    ap.add_argument('-p', '--presses', type=int, default=400)
    ap.add_argument('--gap', type=float, default=0.01, help='seconds between presses')
    ap.add_argument('--timeout', type=float, default=60.0, help='for the wraps to connect')
    ap.add_argument('--only', choices=('kneewrapd', 'python'))
    ap.add_argument('--store-dir', help='where both gateways keep their database (default: $TMPDIR)')
    args = ap.parse_args()

    results = []
    for kind in ('kneewrapd', 'python'):
        if args.only and kind != args.only:
            continue
        try:
            results.append((kind, run(kind, args.wraps, args.presses, args.gap, args.timeout, args.store_dir)))
        except (TimeoutError, RuntimeError) as e:
            print(f'bench-e2e: {kind}: {e}', file=sys.stderr)

    print(f'bench-e2e: button -> control point write through D-Bus on the mock BlueZ, {args.presses} heat presses '
          f'(each followed by a stop press), ms (target: START < {TARGET_MS:.0f} ms p99, not counting BlueZ)')
    fstype, src = kwbench.fs_of(args.store_dir or os.environ.get('TMPDIR') or '/tmp')
    print(f'  databases on {fstype} ({src}), SQLite synchronous=FULL in both; {kwbench.contention()}')
    print(f'  {"gateway":12} {"wraps":>5} {"measured":34} {"p50":>8} {"p99":>8} {"max":>8}')
    for kind, r in results:
        name = 'kneewrapd' if kind == 'kneewrapd' else 'python-gw'
        print(f'  {name:12} {r["wraps"]:5d} {"press -> START written (mock clock)":34} {fmt(r["starts"])}')
        print(f'  {"":12} {"":5} {"press -> STOP written":34} {fmt(r["stops"])}')
        print(f'  {"":12} {"":5} {"(bench: PressButton round trip)":34} {fmt(r["calls"])}')
        print(f'  {"":12} {"":5} {"own: notification in -> START out":34} {fmt(r["own"])}')
        if r['denied']:
            print(f'  {"":12} {"":5} DENY instead of START: {r["denied"]}')
        print(f'  {"":12} {"":5} after the run: VmRSS {r["mem"]["VmRSS"] / 1024:.2f} MiB, '
              f'Pss {r["mem"]["Pss"] / 1024:.2f} MiB, VmHWM {r["mem"]["VmHWM"] / 1024:.2f} MiB')
        tag = '' if not args.store_dir else '_' + fstype
        if kind == 'kneewrapd' and r['starts']:
            kwbench.summary(f'e2e_start_p99_ms{tag}', kwbench.percentile(r['starts'], 99) / 1000, 'ms',
                            f'< {TARGET_MS:.0f} (incl. mock D-Bus)')
            if r['own']:
                kwbench.summary(f'e2e_own_p99_ms{tag}', kwbench.percentile(r['own'], 99) / 1000, 'ms',
                                f'< {TARGET_MS:.0f}')
        if kind == 'python' and r['starts']:
            kwbench.summary(f'python_gateway_start_p99_ms{tag}', kwbench.percentile(r['starts'], 99) / 1000, 'ms', '')
    print('  "own" is each gateway\'s log of its in-process time (kneewrapd: "button answered in N µs").')


if __name__ == '__main__':
    main()
