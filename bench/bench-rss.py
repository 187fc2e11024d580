#!/usr/bin/python3
# bench-rss: memory of kneewrapd with 8 wraps connected (mock BlueZ), beside a minimal Python gateway doing the same.
import argparse
import os
import subprocess
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import kwbench  # noqa: E402

TARGET_MIB = 4.0
GATEWAY = os.path.join(kwbench.HERE, 'python-gateway.py')


def sample(pid, settle):
    time.sleep(settle)
    m = kwbench.memory_kib(pid)
    m['maps'] = kwbench.smaps_by_file(pid)
    return m


def run_kneewrapd(n_wraps, settle, timeout):
    wd = kwbench.Workdir()
    bus = kwbench.mock_bus()
    notify = kwbench.Notify(wd)
    addrs = kwbench.wrap_addresses(n_wraps)
    p = None
    try:
        for a in addrs:
            bus.mock.AddWrap(a)
        logpath = wd.join('kneewrapd.log')
        with open(logpath, 'w') as log:
            p = kwbench.start_kneewrapd_with_wraps(bus, wd, addrs, notify, log)
        notify.wait_for('READY=1', timeout=10)
        t0 = time.monotonic()
        kwbench.wait_connected(logpath, addrs, timeout, p)
        up = time.monotonic() - t0
        return sample(p.pid, settle), up
    finally:
        if p:
            kwbench.stop(p)
        notify.close()
        bus.stop()
        if not os.environ.get('KW_BENCH_KEEP'):
            wd.close()


def run_python(n_wraps, settle, timeout):
    wd = kwbench.Workdir()
    bus = kwbench.mock_bus()
    notify = kwbench.Notify(wd)
    addrs = kwbench.wrap_addresses(n_wraps)
    p = None
    try:
        for a in addrs:
            bus.mock.AddWrap(a)
        env = kwbench.daemon_env(bus.address, notify)
        with open(wd.join('python-gateway.log'), 'w') as log:
            t0 = time.monotonic()
            p = subprocess.Popen(['/usr/bin/python3', GATEWAY, '--db', wd.join('gw.db'), *addrs],
                                 env=env, stdout=log, stderr=log)
        notify.wait_for('READY=1', timeout=timeout)
        up = time.monotonic() - t0
        return sample(p.pid, settle), up
    finally:
        if p:
            kwbench.stop(p)
        notify.close()
        bus.stop()
        wd.close()


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument('-n', '--wraps', type=int, default=8)
    ap.add_argument('--settle', type=float, default=3.0, help='seconds after the last wrap connected')
    ap.add_argument('--timeout', type=float, default=60.0)
    ap.add_argument('--maps', type=int, default=10, help='list the N largest mappings of kneewrapd (0: none)')
    args = ap.parse_args()

    rows = []
    rows.append(('kneewrapd, no wraps', *run_kneewrapd(0, args.settle, args.timeout)))
    try:
        rows.append((f'kneewrapd, {args.wraps} wraps', *run_kneewrapd(args.wraps, args.settle, args.timeout)))
    except (TimeoutError, RuntimeError) as e:
        print(f'bench-rss: kneewrapd did not connect {args.wraps} wraps: {e}', file=sys.stderr)
    rows.append((f'python-gateway.py, {args.wraps} wraps', *run_python(args.wraps, args.settle, args.timeout)))

    mib = 1024.0
    print(f'bench-rss: memory {args.settle:.0f} s after every wrap connected, notifications on (mock BlueZ), MiB '
          f'(target <= {TARGET_MIB:.0f} MiB with 8 wraps)')
    print(f'  {kwbench.contention()}')
    print(f'  {"process":32} {"VmRSS":>7} {"Pss":>7} {"Private":>7} {"VmHWM":>7} {"up in":>7}')
    for name, m, up in rows:
        private = m.get('Private_Clean', 0) + m.get('Private_Dirty', 0)
        print(f'  {name:32} {m["VmRSS"] / mib:7.2f} {m["Pss"] / mib:7.2f} {private / mib:7.2f} '
              f'{m["VmHWM"] / mib:7.2f} {up:6.2f}s')
    print('  Pss shares each shared page among the processes mapping it (libc, libsystemd, libpython...):')
    print('  the honest per-process cost on a box where those libraries are shared; Private is the floor.')
    if args.maps:
        for name, m, _ in rows:
            if not name.startswith('kneewrapd'):
                continue
            top = sorted(m['maps'].items(), key=lambda kv: -kv[1][0])[:args.maps]
            print(f'  where {name}\'s VmRSS goes (KiB: Rss / Pss / Private):')
            for path, (rss, pss, priv) in top:
                print(f'    {os.path.basename(path) or path:40} {rss:6d} {pss:6d} {priv:6d}')
    for name, m, _ in rows:
        if name.startswith(f'kneewrapd, {args.wraps} '):
            kwbench.summary('rss_8_wraps_MiB', m['VmRSS'] / mib, 'MiB', f'<= {TARGET_MIB:.0f}')
            kwbench.summary('pss_8_wraps_MiB', m['Pss'] / mib, 'MiB', '')
        if name.startswith('python-gateway'):
            kwbench.summary('python_gateway_rss_MiB', m['VmRSS'] / mib, 'MiB', '(~40 claimed)')


if __name__ == '__main__':
    main()
