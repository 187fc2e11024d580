#!/usr/bin/python3
# bench-idle: how often an idle kneewrapd wakes up (no wraps, MQTT off), without and with the watchdog.
import argparse
import os
import shutil
import subprocess
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import kwbench  # noqa: E402

"""
A process blocked in epoll_wait that wakes up and blocks again makes one voluntary context
switch, so the growth of voluntary_ctxt_switches (summed over its threads) over a window is
its wakeups, counted without a tracer disturbing it. With --strace a second run of each case
lists the syscalls made in the window (strace -c), to say what the wakeups were.
"""


def one(bus, wd, window, watchdog_usec, use_strace, wraps=()):
    notify = kwbench.Notify(wd)
    logpath = wd.join('kneewrapd.log')
    if wraps:
        with open(logpath, 'a') as log:
            p = kwbench.start_kneewrapd_with_wraps(bus, wd, list(wraps), notify, log)
    else:
        conf = kwbench.write_config(wd, wd.join('idle.db'), name='idle.conf')
        env = kwbench.daemon_env(bus.address, notify, watchdog_usec=watchdog_usec)
        with open(logpath, 'a') as log:
            p = kwbench.start_daemon(conf, env, log)
    try:
        notify.wait_for('READY=1', timeout=10)
        if wraps:
            kwbench.wait_connected(logpath, wraps, 30, p)
        time.sleep(1.0)                      # let start-up's last replies settle
        st = None
        if use_strace:
            st = subprocess.Popen(['strace', '-f', '-c', '-q', '-p', str(p.pid), '-o', wd.join('strace.txt')],
                                  stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            time.sleep(0.5)
        v0, i0 = kwbench.ctxt_switches(p.pid)
        t0 = time.monotonic()
        time.sleep(window)
        v1, i1 = kwbench.ctxt_switches(p.pid)
        dt = time.monotonic() - t0
        calls = ''
        if st:
            st.terminate()
            st.wait(timeout=10)
            calls = summarize_strace(wd.join('strace.txt'))
        if p.poll() is not None:
            sys.exit(f'bench-idle: kneewrapd exited {p.returncode}; see {wd.join("kneewrapd.log")}')
        return (v1 - v0), (i1 - i0), dt, calls
    finally:
        kwbench.stop(p)
        notify.close()


def summarize_strace(path):
    """'epoll_wait 2, write 1' from strace -c's table."""
    out = []
    try:
        with open(path) as f:
            for line in f:
                parts = line.split()
                if len(parts) >= 5 and parts[0].replace('.', '').isdigit() and parts[-1] != 'total':
                    calls = parts[3]
                    out.append(f'{parts[-1]} {calls}')
    except FileNotFoundError:
        return '(no strace output)'
    return ', '.join(out) if out else 'none'


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument('-w', '--window', type=float, default=20.0, help='seconds idle per case')
    ap.add_argument('--strace', action='store_true', help='also list the syscalls (a second, traced run)')
    ap.add_argument('--watchdog-window', type=float, default=60.0, help='seconds idle with the watchdog')
    ap.add_argument('--no-wrap', action='store_true', help='skip the case with one wrap on the mock BlueZ')
    args = ap.parse_args()

    wd = kwbench.Workdir()
    bus = kwbench.PrivateBus(wd)
    try:
        cases = [('watchdog off', None), ('WATCHDOG_USEC=30 s', 30_000_000)]
        rows = []
        for name, wdog in cases:
            # A 20 s window holds 0 or 1 of the pings 15-22 s apart: the watchdog case runs longer.
            window = args.watchdog_window if wdog else args.window
            v, i, dt, _ = one(bus, wd, window, wdog, False)
            calls = ''
            if args.strace:
                calls = one(bus, wd, window, wdog, True)[3]
            rows.append((name, v, i, dt, calls))
        if not args.no_wrap:
            # A connected, idle wrap notifies on its own (temperature every 60 s, battery): those
            # wakeups are the wrap's, not the daemon's. The mock's own bus, so BlueZ is there.
            mb = kwbench.mock_bus()
            try:
                a = kwbench.wrap_addresses(1)
                mb.mock.AddWrap(a[0])
                v, i, dt, _ = one(mb, wd, args.window, None, False, wraps=a)
                rows.append(('1 wrap connected', v, i, dt, ''))
            except (TimeoutError, RuntimeError) as e:
                print(f'bench-idle: 1 wrap connected: {e}', file=sys.stderr)
            finally:
                mb.stop()

        print('bench-idle: idle kneewrapd (MQTT off; no BlueZ on the bus unless a wrap is)')
        print('  wakeups = voluntary context switches (one per return from epoll_wait); ' + kwbench.contention())
        print(f'  {"case":22} {"window":>7} {"wakeups":>8} {"per min":>8} {"preempted":>9}')
        for name, v, i, dt, calls in rows:
            print(f'  {name:22} {dt:6.0f}s {v:8d} {v * 60 / dt:8.1f} {i:9d}')
            if calls:
                print(f'  {"":22} syscalls traced in the window: {calls}')
        print('  target: none while idle except the watchdog (sd-event pings at about half of WatchdogSec)')
        kwbench.summary('idle_wakeups_per_min', rows[0][1] * 60 / rows[0][3], '/min', '0')
        kwbench.summary('idle_wakeups_per_min_watchdog30s', rows[1][1] * 60 / rows[1][3], '/min', '~2-4 (pings)')
    finally:
        bus.close()
        shutil.rmtree(wd.path, ignore_errors=True)


if __name__ == '__main__':
    main()
