#!/usr/bin/python3
"""bench-uplink: kneewrap-uplink into a real FHIR engine on loopback (Medplum's FHIR router over
its in-memory repository, tests/fhir-server, behind HTTPS): records per second, bytes per
record on the wire, CPU per record on each side, and how long a new record takes to arrive.
Prints numbers; passes or fails nothing. docs/clinic-uplink.md works them out for 1 000 gateways."""
import argparse
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, '..', 'tests', 'integration'))
from fhirserver import FhirServer, Gateway  # noqa: E402

WRAP_ADDR, WRAP, T0 = 'AA:BB:CC:00:11:22', 'wrap_aabbcc001122', 1764000000
TICK = os.sysconf('SC_CLK_TCK')


def cpu_s(pid):
    """User + system CPU seconds of a process so far."""
    with open(f'/proc/{pid}/stat') as f:
        fields = f.read().rsplit(')', 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / TICK


def backlog(server, base, n, batch):
    """n sessions already in the store; `kneewrap-uplink --once` until the server has them all."""
    d = tempfile.mkdtemp(dir=base)
    try:
        g = Gateway(d, server, batch=batch, timeout=60)
        g.seed('wrap', WRAP_ADDR, 'Wrap 1', T0)
        g.seed('sessions', WRAP, n, T0)
        server.reset()
        s0 = cpu_s(server.proc.pid)
        r0 = os.times()
        t0 = time.monotonic()
        r = g.once(timeout=3600)
        wall = time.monotonic() - t0
        r1 = os.times()
        assert r.returncode == 0, r.stderr
        st = server.stats()
        records = n + 1   # and the wrap (its Patient and Device)
        return {
            'records/s': records / wall,
            'wire B/record': st['bytes_in'] / records,
            'Bundles': st['transactions'],
            'uplink CPU ms/record': 1000 * ((r1.children_user - r0.children_user) +
                                            (r1.children_system - r0.children_system)) / records,
            'server CPU ms/record': 1000 * (cpu_s(server.proc.pid) - s0) / records,
        }
    finally:
        shutil.rmtree(d, ignore_errors=True)


def follow(server, base, n):
    """The uplink running: one record committed at a time, and the time until the server has it."""
    d = tempfile.mkdtemp(dir=base)
    g = None
    try:
        g = Gateway(d, server, timeout=60)
        g.seed('wrap', WRAP_ADDR, 'Wrap 1', T0)
        server.reset()
        g.start()
        g.wait_delivered(60)
        lat = []
        for i in range(n):
            g.seed('sessions', WRAP, 1, T0 + (i + 1) * 86400)
            t0 = time.monotonic()   # committed: the seeding process has closed the store
            while g.pending():
                time.sleep(0.002)
            lat.append(1000 * (time.monotonic() - t0))
        return lat
    finally:
        if g:
            g.stop()
        shutil.rmtree(d, ignore_errors=True)


def main():
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument('-n', type=int, default=3000, help='records in the backlog (default 3000)')
    ap.add_argument('--follow', type=int, default=20, help='single records followed (default 20)')
    args = ap.parse_args()
    base = '/dev/shm' if os.path.isdir('/dev/shm') else None
    work = tempfile.mkdtemp()
    server = FhirServer(work)
    try:
        print(f'kneewrap-uplink -> Medplum FHIR router (in-memory) on loopback, HTTPS + OAuth 2; '
              f'{os.cpu_count()} CPUs, load {open("/proc/loadavg").read().split()[0]}')
        rows = {}
        for batch in (8, 3):
            rows[f'batch {batch}'] = backlog(server, base, args.n, batch)
        keys = list(next(iter(rows.values())).keys())
        print(f'\nbacklog of {args.n} sessions, kneewrap-uplink --once ([uplink] batch = entries per Bundle):')
        print(f'{"":24}' + ''.join(f'{k:>12}' for k in rows))
        for k in keys:
            print(f'{k:24}' + ''.join(f'{v[k]:12.1f}' if isinstance(v[k], float) else f'{v[k]:12d}'
                                      for v in rows.values()))
        lat = follow(server, base, args.follow)
        q = statistics.quantiles(lat, n=20)
        print(f'\none new record at a time, commit to on the server ({args.follow} records): '
              f'p50 {statistics.median(lat):.0f} ms, p95 {q[18]:.0f} ms, max {max(lat):.0f} ms')
    finally:
        server.close()
        shutil.rmtree(work, ignore_errors=True)


if __name__ == '__main__':
    main()
