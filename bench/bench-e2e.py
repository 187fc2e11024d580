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

HEAT, STOP = 2, 3
TARGET_MS = 5.0
GATEWAY = os.path.join(kwbench.HERE, 'python-gateway.py')


def wait_cp(bus, seen, address, prefix, timeout=5.0):
    """The first control-point write to `address` starting with `prefix` beyond the first `seen` entries."""
    end = time.monotonic() + timeout
    while True:
        log = bus.cp_log()
        for i in range(seen, len(log)):
            a, t, h, _ = log[i]
            if a == address and h.startswith(prefix):
                return log[i], len(log)
        if time.monotonic() > end:
            raise TimeoutError(f'no {prefix}.. write to {address} in {timeout} s: {log[seen:]}')
        time.sleep(0.002)


def drive(bus, addrs, presses, gap):
    starts, stops, calls, denied = [], [], [], 0
    seen = len(bus.cp_log())
    for i in range(presses):
        a = addrs[i % len(addrs)]
        t0 = time.monotonic_ns() // 1000
        bus.mock.PressButton(a, HEAT)
        calls.append(time.monotonic_ns() // 1000 - t0)
        e, seen = wait_cp(bus, seen, a, '0')
        if e[2].startswith('03'):
            denied += 1
        else:
            starts.append(e[1] - t0)
        time.sleep(gap)
        t0 = time.monotonic_ns() // 1000
        bus.mock.PressButton(a, STOP)
        e, seen = wait_cp(bus, seen, a, '02')
        stops.append(e[1] - t0)
        time.sleep(gap)
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
        starts, stops, calls, denied = drive(bus, connected, presses, gap)
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
    ap.add_argument('-p', '--presses', type=int, default=200)
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
    print(f'  databases on {fstype} ({src}), SQLite synchronous=FULL in both; load {open("/proc/loadavg").read()[:14]}')
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
