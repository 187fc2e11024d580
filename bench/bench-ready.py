#!/usr/bin/python3
# bench-ready: exec -> READY=1 of kneewrapd, N runs each on a new, an empty and a 10k-session store.
import argparse
import os
import shutil
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import kwbench  # noqa: E402

TARGET_MS = 50


def measure(conf, bus, notify, workdir, runs, before=None):
    """Start kneewrapd `runs` times; ms from just before fork+exec to READY=1 arriving."""
    times = []
    env = kwbench.daemon_env(bus.address, notify)
    for i in range(runs):
        if before:
            before()
        notify.drain()
        with open(workdir.join('kneewrapd.log'), 'a') as log:
            t0 = time.monotonic_ns()
            p = kwbench.start_daemon(conf, env, log)
        try:
            t1 = notify.wait_for('READY=1', timeout=10)
        except TimeoutError:
            kwbench.stop(p)
            sys.exit(f'bench-ready: no READY=1; see {workdir.join("kneewrapd.log")}')
        kwbench.stop(p)
        if p.returncode not in (0, None):
            sys.exit(f'bench-ready: kneewrapd exited {p.returncode}')
        times.append((t1 - t0) / 1e6)
    return times


def main():
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument('-n', '--runs', type=int, default=20)
    ap.add_argument('--sessions', type=int, default=10000)
    args = ap.parse_args()

    wd = kwbench.Workdir()
    bus = kwbench.PrivateBus(wd)
    notify = kwbench.Notify(wd)
    try:
        fstype, src = kwbench.fs_of(wd.path)
        rows = []

        new_db = wd.join('new.db')

        def remove_new():
            for suffix in ('', '-wal', '-shm'):
                try:
                    os.unlink(new_db + suffix)
                except FileNotFoundError:
                    pass
        conf = kwbench.write_config(wd, new_db, name='new.conf')
        rows.append(('new store (created at start)', measure(conf, bus, notify, wd, args.runs, remove_new)))

        empty_db = wd.join('empty.db')
        conf = kwbench.write_config(wd, empty_db, name='empty.conf')
        measure(conf, bus, notify, wd, 1)       # creates it; not counted
        rows.append(('empty store', measure(conf, bus, notify, wd, args.runs)))

        big_db = wd.join('big.db')
        t = time.monotonic()
        kwbench.fill_store(big_db, args.sessions, 8)
        fill_s = time.monotonic() - t
        size_mib = os.path.getsize(big_db) / 2**20
        conf = kwbench.write_config(wd, big_db, name='big.conf')
        rows.append((f'{args.sessions} sessions ({size_mib:.1f} MiB)', measure(conf, bus, notify, wd, args.runs)))

        print(f'bench-ready: fork+exec -> READY=1 of {kwbench.KNEEWRAPD}, {args.runs} runs per row, ms '
              f'(target <= {TARGET_MS} ms)')
        print(f'  store on {fstype} ({src}); private dbus-daemon; MQTT off; no BlueZ on the bus; {kwbench.contention()}')
        print(f'  {"store":34} {"min":>7} {"median":>7} {"p95":>7} {"max":>7}')
        for name, v in rows:
            print(f'  {name:34} {min(v):7.1f} {kwbench.percentile(v, 50):7.1f} '
                  f'{kwbench.percentile(v, 95):7.1f} {max(v):7.1f}')
        print(f'  (filling {args.sessions} sessions through store.h took {fill_s:.1f} s, one commit each)')
        kwbench.summary('ready_empty_p95_ms', kwbench.percentile(rows[1][1], 95), 'ms', f'<= {TARGET_MS}')
        kwbench.summary('ready_10k_p95_ms', kwbench.percentile(rows[2][1], 95), 'ms', f'<= {TARGET_MS}')
    finally:
        notify.close()
        bus.close()
        if os.environ.get('KW_BENCH_KEEP'):
            print(f'  kept {wd.path}')
        else:
            shutil.rmtree(wd.path, ignore_errors=True)


if __name__ == '__main__':
    main()
