# test_faults: the fault matrix of issue 12, each through real parts (the shipped kneewrapd, a
# real mosquitto, the mock BlueZ's simulated wraps). For every fault: the daemon is alive
# afterwards, no record is lost (every session in the store reached the broker), and the time
# it took to recover is printed ("FAULT <name>: recovered in <s> s"), never asserted.
import json
import os
import resource
import shutil
import sqlite3
import subprocess
import sys
import time

import pytest

import kwmqtt
from kwmqtt import Broker, Collector, Gateway, broker, wrap_id  # noqa: F401
from kwtestutil import after_a_request, private_bus, wait_for  # noqa: F401

COLD, STOP = 1, 3


def report(name, seconds):
    print(f'\nFAULT {name}: recovered in {seconds:.2f} s', flush=True)


def alive(gw):
    assert gw.d.poll() is None, gw.log()[-2000:]


def nothing_lost(gw, col, timeout=30):
    """Every session record in the store reached the broker (by session_id), none twice as different records."""
    def check():
        stored = {r[0] for r in gw.sql('select session_id from sessions')}
        got = {json.loads(p)['session_id'] for t, p, _ in list(col.messages) if t.endswith('/session') and p}
        return stored <= got and (stored, got)
    wait_for(check, timeout)
    stored = {r[0] for r in gw.sql('select session_id from sessions')}
    return len(stored)


def fill_disk(gw):
    """No more room for the store: a file-size limit (RLIMIT_FSIZE, as LimitFSIZE= sets) at the
    store's present size on the running daemon makes every write that grows a file fail."""
    size = max(os.path.getsize(gw.db + s) for s in ('', '-wal') if os.path.exists(gw.db + s))
    resource.prlimit(gw.d.pid, resource.RLIMIT_FSIZE, (size, resource.RLIM_INFINITY))


def online(col):
    return col.last('kneewrap/bridge/state') == b'{"state":"online"}'


def one_session(gw, fast_bus, col, A):  # noqa: N803
    """The wrap connected, one cold session recorded, stopped, and on the broker."""
    col.wait(lambda: online(col))
    gw.wait_log(f'{A}: connected, notifications on')
    fast_bus.mock.PressButton(A, COLD)
    wait_for(lambda: len(gw.sql('select * from sessions')) == 1, 10)
    fast_bus.mock.PressButton(A, STOP)
    nothing_lost(gw, col)


def records_again(gw, fast_bus, col, A):  # noqa: N803
    """After the store came back: a new session is recorded, and every record reached the broker."""
    wait_for(lambda: fast_bus.wrap(A)['state'] == 0, 20)
    n = len(gw.sql('select * from sessions'))
    after_a_request(100)
    fast_bus.mock.PressButton(A, COLD)
    wait_for(lambda: len(gw.sql('select * from sessions')) > n, 20)
    print(f'records on the broker: {nothing_lost(gw, col)}')
    alive(gw)


# ---- 6: a broken store: STATUS= says what it is and what to do ----

def broken_store_case(tmp_path, private_bus, broker, breaker, expect):  # noqa: F811
    col = Collector(broker, topics=('kneewrap/#',))
    gw = Gateway(tmp_path, private_bus, broker)
    try:
        col.wait(lambda: online(col))
        gw.stop()
        breaker(gw.db)
        gw.restart()
        gw.notify.wait_for('READY=1', timeout=10, after=1)
        wait_for(lambda: gw.notify.last_status().startswith('Store unavailable'), 10)
        status = gw.notify.last_status()
        print(f'STATUS={status}')
        assert expect in status and gw.db in status and 'refusing sessions' in status, status
        alive(gw)
        return gw, col
    except BaseException:
        gw.stop()
        col.close()
        raise


def test_store_truncated(tmp_path, private_bus, broker):  # noqa: F811
    def truncate(db):
        size = os.path.getsize(db)
        with open(db, 'r+b') as f:
            f.truncate(size // 3)
        for s in ('-wal', '-shm'):
            if os.path.exists(db + s):
                os.unlink(db + s)
    gw, col = broken_store_case(tmp_path, private_bus, broker, truncate, 'move the file aside')
    try:
        # The administrator does what STATUS= says: the retry picks the new store up.
        t0 = time.monotonic()
        os.rename(gw.db, gw.db + '.broken')
        wait_for(lambda: 'store OK' in gw.notify.last_status(), 70)
        report('6 store truncated', time.monotonic() - t0)
        alive(gw)
    finally:
        gw.stop()
        col.close()


def test_store_newer_schema(tmp_path, private_bus, broker):  # noqa: F811
    def newer(db):
        c = sqlite3.connect(db)
        c.execute('PRAGMA user_version = 9999')
        c.commit()
        c.close()
    gw, col = broken_store_case(tmp_path, private_bus, broker, newer, 'written by a newer kneewrap')
    try:
        assert os.path.exists(gw.db)          # never overwritten nor migrated backwards
        c = sqlite3.connect(gw.db)
        assert c.execute('PRAGMA user_version').fetchone()[0] == 9999
        c.close()
    finally:
        gw.stop()
        col.close()


def test_store_full_without_root(tmp_path, fast_bus, broker):  # noqa: F811
    """A full disk, without root or a namespace: a file-size limit (RLIMIT_FSIZE, what LimitFSIZE=
    sets) on the running daemon makes the store's writes fail as on a full file system."""
    A = 'AA:BB:CC:00:12:01'
    col = Collector(broker, topics=('kneewrap/#',))
    fast_bus.mock.AddWrap(A)
    gw = Gateway(tmp_path, fast_bus.address, broker, seed=(), allow=(A,), scale=100)
    try:
        one_session(gw, fast_bus, col, A)
        before = set(gw.sql('select session_id from sessions'))

        # No more room: every write past the current file sizes fails with EFBIG.
        fill_disk(gw)
        after_a_request(100)
        fast_bus.mock.PressButton(A, COLD)
        wait_for(lambda: gw.notify.last_status().startswith('Store unavailable'), 20)
        status = gw.notify.last_status()
        print(f'STATUS={status}')
        # SQLite reports an EFBIG write as "disk I/O error", not SQLITE_FULL: the store asks the
        # system, and STATUS= gives the full disk's advice with the directory, never "corrupt".
        advice = f'the disk is full: free space on the file system of {os.path.dirname(gw.db)}'
        assert advice in status and 'refusing sessions' in status and gw.db in status, status
        assert 'corrupt' not in status and 'corrupt' not in gw.log(), status
        alive(gw)

        t0 = time.monotonic()
        resource.prlimit(gw.d.pid, resource.RLIMIT_FSIZE, (resource.RLIM_INFINITY, resource.RLIM_INFINITY))
        wait_for(lambda: 'store OK' in gw.notify.last_status(), 70)
        report('6 store full (file size limit)', time.monotonic() - t0)
        assert 'works again' in gw.log()
        # Works again, and nothing recorded before is lost.
        assert before <= set(gw.sql('select session_id from sessions'))
        records_again(gw, fast_bus, col, A)
    finally:
        gw.stop()
        col.close()



def read_only_fs_or_skip(tmp_path):
    """An ext4 image of the store's own, mounted in a private mount namespace. Returns the
    image and the directory it is mounted on (inside the daemon's namespace only)."""
    if os.geteuid() != 0:
        pytest.skip('a read-only file system needs root (a mount namespace and a loop device)')
    for tool in ('unshare', 'nsenter', 'mkfs.ext4', 'e2fsck', 'losetup'):
        if not shutil.which(tool):
            pytest.skip(f'a read-only file system needs {tool}')
    img, mnt = tmp_path / 'store.img', tmp_path / 'store'
    mnt.mkdir()
    with open(img, 'wb') as f:
        f.truncate(32 << 20)
    subprocess.run(['mkfs.ext4', '-q', '-F', str(img)], check=True)
    probe = subprocess.run(['unshare', '-m', '--propagation', 'private', 'mount', '-o', 'loop', str(img), str(mnt)],
                           capture_output=True, text=True)
    if probe.returncode != 0:
        pytest.skip(f'no mount namespace or loop device here: {probe.stderr.strip()}')
    return img, mnt


def test_store_read_only_fs(tmp_path, fast_bus, broker, monkeypatch):  # noqa: F811
    """The store's file system turns read-only under the running daemon, as ext4 does itself
    (errors=remount-ro) when its device fails: an SD card, say. The daemon runs in a mount
    namespace of its own with an ext4 image mounted on the store's directory; an ext4 error
    (trigger_fs_error) makes it read-only with the store open, which no `mount -o remount,ro`
    can do while files are open for writing. The administrator then checks the file system
    and mounts it again, and the daemon picks the store up."""
    import kwtestutil
    img, mnt = read_only_fs_or_skip(tmp_path)
    wrapper = tmp_path / 'kneewrapd-ns'
    wrapper.write_text('#!/bin/sh\n'
                       'exec unshare -m --propagation private sh -c \'mount -o loop,errors=remount-ro "$0" "$1" && '
                       f'shift && exec "$@"\' {img} {mnt} {kwtestutil.KNEEWRAPD} "$@"\n')
    wrapper.chmod(0o755)
    write_config = kwtestutil.write_config
    monkeypatch.setattr(kwtestutil, 'KNEEWRAPD', str(wrapper))
    monkeypatch.setattr(kwtestutil, 'write_config',
                        lambda tp, extra='', **kw: write_config(tp, extra, store=f'{mnt}/kneewrap.db'))

    class NsGateway(Gateway):
        """Reads the store inside the daemon's namespace (SQLite resolves /proc/PID/root away)."""
        db = f'{mnt}/kneewrap.db'

        def sql(self, query, *args):
            r = subprocess.run(['nsenter', '-t', str(self.d.pid), '-m', sys.executable, '-c',
                                'import json, sqlite3, sys; c = sqlite3.connect(sys.argv[1], timeout=5); '
                                'print(json.dumps(c.execute(sys.argv[2], json.loads(sys.argv[3])).fetchall()))',
                                self.db, query, json.dumps(args)], capture_output=True, text=True, timeout=20)
            assert r.returncode == 0, r.stderr
            return [tuple(row) for row in json.loads(r.stdout)]

    def in_ns(gw, script):
        return subprocess.run(['nsenter', '-t', str(gw.d.pid), '-m', 'sh', '-c', script],
                              capture_output=True, text=True, timeout=60)

    def mount_opts(gw):
        with open(f'/proc/{gw.d.pid}/mounts') as f:
            return next(line.split()[3] for line in f if line.split()[1] == str(mnt))

    A = 'AA:BB:CC:00:12:06'
    col = Collector(broker, topics=('kneewrap/#',))
    fast_bus.mock.AddWrap(A)
    gw = NsGateway(tmp_path, fast_bus.address, broker, seed=(), allow=(A,), scale=100)
    try:
        one_session(gw, fast_bus, col, A)
        assert 'rw' in mount_opts(gw).split(',')
        wait_for(lambda: gw.outbox_depth() == 0, 20)
        before = {r[0] for r in gw.sql('select session_id from sessions')}

        # The file system fails: ext4 turns it read-only under the open store.
        os.sync()
        dev = subprocess.run(['losetup', '-n', '-O', 'NAME', '-j', str(img)], capture_output=True, text=True,
                             check=True).stdout.split()[0]
        with open(f'/sys/fs/ext4/{os.path.basename(dev)}/trigger_fs_error', 'w') as f:
            f.write('kneewrap test: the store read-only')
        assert 'ro' in mount_opts(gw).split(',') or 'emergency_ro' in mount_opts(gw), mount_opts(gw)
        fast_bus.mock.PressButton(A, COLD)
        wait_for(lambda: gw.notify.last_status().startswith('Store unavailable'), 20)
        status = gw.notify.last_status()
        print(f'STATUS={status}')
        assert 'read-only file system' in status and 'read-write' in status and str(mnt) in status and 'refusing sessions' in status, status
        alive(gw)
        # Nothing runs unrecorded: a request is refused as store_unavailable.
        wait_for(lambda: fast_bus.wrap(A)['state'] == 0, 20)
        r = gw.ctl('start', gw.wraps[0], 'cold')
        assert r.returncode != 0 and 'refused (store_unavailable)' in r.stderr, (r.returncode, r.stderr)
        assert fast_bus.wrap(A)['state'] == 0
        alive(gw)

        # The administrator checks the file system and mounts it read-write again (an ext4 that
        # failed stays read-only until it is mounted anew).
        t0 = time.monotonic()
        r = in_ns(gw, f'umount -l {mnt} && {{ e2fsck -fy {img} >/dev/null; true; }} && '
                      f'mount -o loop,errors=remount-ro {img} {mnt}')
        assert r.returncode == 0, r.stderr
        assert 'rw' in mount_opts(gw).split(',')
        wait_for(lambda: 'store OK' in gw.notify.last_status(), 70)
        report('6 store on a read-only file system', time.monotonic() - t0)
        # Nothing stored before is lost, and sessions are recorded again.
        assert before <= {r[0] for r in gw.sql('select session_id from sessions')}
        records_again(gw, fast_bus, col, A)
    finally:
        gw.stop()
        col.close()


# ---- 7: TLS: the right CA, another host name ----

def reissue_server_cert(b, san):
    d = b.dir
    (d / 'ext.cnf').write_text(f'subjectAltName={san}\n')
    subprocess.run(['openssl', 'req', '-newkey', 'rsa:2048', '-nodes', '-subj', '/CN=' + san.split(':', 1)[1],
                    '-keyout', 'server.key', '-out', 'server.csr'], check=True, capture_output=True, cwd=d)
    subprocess.run(['openssl', 'x509', '-req', '-in', 'server.csr', '-CA', 'ca.crt', '-CAkey', 'ca.key',
                    '-CAcreateserial', '-days', '2', '-extfile', 'ext.cnf', '-out', 'server.crt'],
                   check=True, capture_output=True, cwd=d)
    b.stop()
    b.start()


def tls_refused_then_fixed(gw, b, refused, right_san, name):
    """The gateway refuses the broker's certificate (its log says `refused`); fixed at the
    broker (a certificate for `right_san`), it gets in by itself. Returns the refusal's line."""
    try:
        gw.wait_log(refused, timeout=20)
        assert 'MQTT: connected' not in gw.log()
        alive(gw)
        t0 = time.monotonic()
        reissue_server_cert(b, right_san)
        gw.wait_log('MQTT: connected', timeout=70)
        report(name, time.monotonic() - t0)
        alive(gw)
        return next(x for x in gw.log().splitlines() if refused in x)
    finally:
        gw.stop()
        b.stop()


def test_tls_other_host_name_refused(tmp_path, private_bus):  # noqa: F811
    b = Broker(tmp_path, tls=True)
    reissue_server_cert(b, 'DNS:broker.elsewhere.example')
    gw = Gateway(tmp_path, private_bus, b, seed=())
    tls_refused_then_fixed(gw, b, 'certificate verify failed', 'IP:127.0.0.1',
                           '7 TLS host name mismatch, then the right certificate')


def test_tls_ca_dir(tmp_path, private_bus):  # noqa: F811
    """tls_ca_dir: a hashed directory of CAs (here one, as /etc/ssl/certs holds the system's)."""
    b = Broker(tmp_path, tls=True)
    cadir = tmp_path / 'cas'
    cadir.mkdir()
    shutil.copy(b.ca, cadir / 'kneewrap-test-ca.pem')
    subprocess.run(['openssl', 'rehash', str(cadir)], check=True, capture_output=True)
    col = Collector(b, topics=('kneewrap/#',))
    gw = Gateway(tmp_path, private_bus, b, seed=(), extra=f'tls_ca_dir = {cadir}\n')
    try:
        col.wait(lambda: online(col), timeout=20)
        col.wait(lambda: col.last_json('kneewrap/bridge/info'))   # published just after the online state
        assert col.last_json('kneewrap/bridge/info')['config']['tls'] is True
        alive(gw)
    finally:
        gw.stop()
        col.close()
        b.stop()


# ---- 8: Device Information strings that are not UTF-8, or cut mid-character ----

@pytest.mark.parametrize('model,shown', [(b'KW-1 \xe5\x86\xb7\xe5\x86', 'KW-1 冷'), (b'K\xfchl', 'Khl')])
def test_device_info_not_utf8(tmp_path, fast_bus, broker, model, shown):  # noqa: F811
    A = 'AA:BB:CC:00:12:08'
    col = Collector(broker, topics=('kneewrap/#', 'homeassistant/#'))
    fast_bus.add_wrap(A, model=model)
    t0 = time.monotonic()
    gw = Gateway(tmp_path, fast_bus.address, broker, seed=(), allow=(A,), scale=100)
    w = gw.wraps[0]
    try:
        # Announced once the strings are read (before, the device shows the defaults).
        topic = f'homeassistant/sensor/{w}/battery/config'
        col.wait(lambda: (col.last_json(topic) or {}).get('device', {}).get('model') == shown, timeout=30)
        report('8 Device Information not UTF-8 (entities announced with it)', time.monotonic() - t0)
        fast_bus.mock.PressButton(A, COLD)
        wait_for(lambda: len(gw.sql('select * from sessions')) == 1, 10)
        nothing_lost(gw, col)
        assert 'json' not in gw.log().lower()
        alive(gw)
    finally:
        gw.stop()
        col.close()


# ---- limits: a payload over 64 KiB is dropped before it is parsed ----

def test_payload_over_64k_dropped(tmp_path, private_bus, broker):  # noqa: F811
    col = Collector(broker, topics=('kneewrap/#',))
    gw = Gateway(tmp_path, private_bus, broker)
    w = gw.wrap
    try:
        col.wait(lambda: online(col))
        big = '[' + ','.join(['1'] * (2 * 1024 * 1024)) + ']'          # 4 MiB of JSON array
        col.publish(f'kneewrap/{w}/set', big)
        col.publish(f'kneewrap/{w}/set', json.dumps({'pain': {'score': 2}, 'transaction': 'x' * 10}) + ' ' * 70000)
        gw.wait_log('larger than 65536 bytes')
        # Not parsed: no answer, not even an error, for either.
        col.publish(f'kneewrap/{w}/set', {'pain': {'score': 2}, 'transaction': 'after'})
        col.wait(lambda: col.on(f'kneewrap/{w}/response'))
        assert [json.loads(p)['transaction'] for p, _ in col.on(f'kneewrap/{w}/response')] == ['after']
        assert gw.log().count('larger than 65536 bytes') == 2
        alive(gw)
    finally:
        gw.stop()
        col.close()


def test_mqtt5_maximum_packet_size(tmp_path, private_bus, broker):  # noqa: F811
    """MQTT 5: CONNECT tells the broker the largest packet the gateway takes, so mosquitto
    drops a larger message itself ("Dropping too large outgoing PUBLISH") and it never
    crosses the network; a 64 KiB payload, what on_message accepts, still arrives."""
    col = Collector(broker, topics=('kneewrap/#',))
    gw = Gateway(tmp_path, private_bus, broker, extra='protocol = 5\n')
    w = gw.wrap
    try:
        col.wait(lambda: online(col))
        col.publish(f'kneewrap/{w}/set', json.dumps({'pain': {'score': 2}, 'transaction': 'big'}) + ' ' * (100 * 1024))
        fits = json.dumps({'pain': {'score': 2}, 'transaction': 'fits'})
        col.publish(f'kneewrap/{w}/set', fits + ' ' * (64 * 1024 - len(fits)))
        # In order from one publisher: had the big one been sent, the daemon would have seen it first.
        col.wait(lambda: col.on(f'kneewrap/{w}/response'), timeout=20)
        assert [json.loads(p)['transaction'] for p, _ in col.on(f'kneewrap/{w}/response')] == ['fits']
        wait_for(lambda: 'Dropping too large outgoing PUBLISH for kneewrap-' in broker.log(), 10)
        assert 'larger than 65536 bytes' not in gw.log()
        alive(gw)
    finally:
        gw.stop()
        col.close()


# ---- limits: a flood of 10 000 requests ----

def store_bytes(db):
    return sum(os.path.getsize(db + s) for s in ('', '-wal') if os.path.exists(db + s))


def rss_kib(pid):
    with open(f'/proc/{pid}/status') as f:
        return int(next(line for line in f if line.startswith('VmRSS:')).split()[1])


FLOOD_KINDS = {
    # kind (as the refusal names it): (the <wrap>/set payload, the table its records go to)
    'session': ('{"action":"start","mode":"heat"}', 'sessions'),
    'diary': ('{"pain":{"score":1}}', 'diary'),
    'run': ('{"run":{}}', 'runs'),
    'injury': ('{"injury":"2026-01-01"}', 'injuries'),
}


def test_request_flood(tmp_path, fast_bus, broker):  # noqa: F811
    """10 000 requests on one wrap, session starts, diary entries, runs and injuries mixed, as
    fast as the broker takes them: at most one of each kind a second is decided and recorded,
    the rest are dropped, answered "too many requests" on <wrap>/response and counted in
    bridge/health; the daemon keeps answering (a D-Bus call), and its store and memory stay
    bounded. Nothing here depends on timing: the bound is per second the test measured, and
    10 000 messages queued at once cannot all be a second apart."""
    A = 'AA:BB:CC:00:12:10'
    w = wrap_id(A)
    # The records and bridge/health, apart from the 10 000 answers: the broker drops a slow
    # subscriber's QoS 1 messages past its queue (max_queued_messages), and a record must not
    # be among them. The flood goes out, and its answers come back, through `asker`.
    col = Collector(broker, topics=('kneewrap/bridge/#', 'kneewrap/+/session'))
    asker = Collector(broker, topics=(f'kneewrap/{w}/response',))
    fast_bus.mock.AddWrap(A)
    # Real time: the limit is one a second of the gateway's clock.
    gw = Gateway(tmp_path, fast_bus.address, broker, seed=(), allow=(A,))
    try:
        col.wait(lambda: online(col))
        gw.wait_log(f'{A}: connected, notifications on')
        rss0 = rss_kib(gw.d.pid)
        db0 = store_bytes(gw.db)
        t0 = time.monotonic()
        n = 10000
        payloads = [p for p, _ in FLOOD_KINDS.values()]
        for i in range(n):
            asker.c.publish(f'kneewrap/{w}/set', payloads[i % len(payloads)], qos=0)
        # Everything reached the daemon: the last message's effect is visible (the drops counted).
        wait_for(lambda: 'dropped since start' in gw.log(), 60)

        # Answering again: a request (never limited) gets its answer. Asked again while its
        # answer may be among those the broker dropped.
        def answered(k):
            asker.publish(f'kneewrap/{w}/set', {'ack_alert': 999999, 'transaction': f'flood-done-{k}'})
            try:
                asker.wait(lambda: any(json.loads(p).get('transaction') == f'flood-done-{k}'
                                       for p, _ in asker.on(f'kneewrap/{w}/response')), timeout=5)
                return True
            except AssertionError:
                return False
        assert any(answered(k) for k in range(24))
        took = time.monotonic() - t0
        report('limits: 10 000 requests flood (answering again)', took)
        secs = int(took) + 2
        answers = [json.loads(p) for p, _ in asker.on(f'kneewrap/{w}/response')]
        for kind, (_, table) in FLOOD_KINDS.items():
            decided = gw.sql(f'select count(*) from {table}')[0][0]
            refused = sum(1 for a in answers if a.get('status') == 'error'
                          and f'at most one {kind} request a second' in (a.get('error') or ''))
            print(f'{kind}: {n // len(FLOOD_KINDS)} requests in {took:.1f} s: {decided} decided and recorded, '
                  f'{refused} answered "too many requests"')
            assert 1 <= decided <= secs, (kind, decided, secs)
            # A dropped request is answered like any refused command (not one by one: the
            # broker may drop QoS 0 messages of a flood on their way, both ways).
            assert refused >= 1, kind

        # Still responsive: D-Bus answers.
        r = gw.ctl('status')
        assert r.returncode == 0, r.stderr
        # Counted in bridge/health (sent again at once when Home Assistant says it is back).
        col.publish('homeassistant/status', 'online')
        col.wait(lambda: any(m.get('requests_dropped', 0) >= 1 for m in col.json_on('kneewrap/bridge/health')),
                 timeout=30)
        rss1 = rss_kib(gw.d.pid)
        print(f'VmRSS {rss0} -> {rss1} KiB, store {db0} -> {store_bytes(gw.db)} bytes')
        assert rss1 - rss0 < 8 * 1024
        assert store_bytes(gw.db) - db0 < 1024 * 1024
        nothing_lost(gw, col)
        alive(gw)
    finally:
        gw.stop()
        col.close()
        asker.close()


# ---- 3: a broker that stops sending PUBACK ----

def _shut(*socks):
    """Both ends of a proxied connection: shut, whatever state each is in."""
    for s in socks:
        try:
            s.shutdown(2)
        except OSError:
            pass


class PubackEater:
    """A TCP proxy in front of the real broker that, while .eat is set, drops every PUBACK
    (packet type 4) the broker sends to the gateway and forwards everything else, PINGRESP
    included: a broker whose sessions are stuck while it still answers pings."""

    def __init__(self, broker_port):
        import socket
        import threading
        self.broker_port = broker_port
        self.eat = False
        self.eaten = 0
        self.srv = socket.socket()
        self.srv.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.srv.bind(('127.0.0.1', 0))
        self.srv.listen(4)
        self.port = self.srv.getsockname()[1]
        self.stop = False
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self):
        import socket
        import threading
        while not self.stop:
            try:
                c, _ = self.srv.accept()
            except OSError:
                return
            b = socket.create_connection(('127.0.0.1', self.broker_port))
            threading.Thread(target=self._pipe, args=(c, b), daemon=True).start()
            threading.Thread(target=self._from_broker, args=(b, c), daemon=True).start()

    @staticmethod
    def _pipe(src, dst):
        try:
            while True:
                d = src.recv(65536)
                if not d:
                    break
                dst.sendall(d)
        except OSError:
            pass
        _shut(src, dst)

    def _from_broker(self, src, dst):
        buf = b''
        try:
            while True:
                d = src.recv(65536)
                if not d:
                    break
                buf += d
                while True:
                    # One whole packet: the fixed header byte, the remaining length (varint), the body.
                    n, mult, i, whole = 0, 1, 1, False
                    while i < len(buf) and i <= 4:
                        n += (buf[i] & 0x7f) * mult
                        mult *= 128
                        i += 1
                        if not (buf[i - 1] & 0x80):
                            whole = True
                            break
                    if not whole or len(buf) < i + n:
                        break
                    pkt, buf = buf[:i + n], buf[i + n:]
                    if self.eat and pkt[0] >> 4 == 4:
                        self.eaten += 1
                        continue
                    dst.sendall(pkt)
        except OSError:
            pass
        _shut(src, dst)

    def close(self):
        self.stop = True
        self.srv.close()


def test_broker_stops_sending_puback(tmp_path, fast_bus, broker):  # noqa: F811
    A = 'AA:BB:CC:00:12:03'
    col = Collector(broker, topics=('kneewrap/#',))
    proxy = PubackEater(broker.port)
    fast_bus.mock.AddWrap(A)

    class Via:                 # the gateway dials the proxy; the collector the broker itself
        port = proxy.port
        tls = False
    gw = Gateway(tmp_path, fast_bus.address, Via, seed=(), allow=(A,), scale=100)   # keepalive 10 s
    try:
        col.wait(lambda: online(col))
        gw.wait_log(f'{A}: connected, notifications on')
        proxy.eat = True
        for i in range(3):
            after_a_request(100)
            fast_bus.mock.PressButton(A, 2)                 # heat, then stop: a closed record each
            wait_for(lambda: fast_bus.wrap(A)['state'] == 2, 10)
            fast_bus.mock.PressButton(A, STOP)
            wait_for(lambda: len(gw.outbox_sessions()) >= i + 1, 10)
        t0 = time.monotonic()
        wait_for(lambda: proxy.eaten >= 3, 20)
        # Published but never acknowledged: the records stay in the outbox.
        assert len(gw.outbox_sessions()) == 3
        proxy.eat = False                                   # the broker recovers; the gateway must notice
        gw.wait_log('No PUBACK for', timeout=30)
        wait_for(lambda: gw.outbox_depth() == 0, 30)
        report('3 broker stopped sending PUBACK (detected, reconnected, outbox empty)', time.monotonic() - t0)
        assert 'Reconnecting' in gw.log() or 'Retrying' in gw.log()
        print(f'records on the broker: {nothing_lost(gw, col)}')
        alive(gw)
    finally:
        gw.stop()
        col.close()
        proxy.close()


# ---- 2: SQLITE_BUSY is not a broken store ----

def test_store_busy_is_not_broken(tmp_path, fast_bus):
    """A PUBACK that arrives while another process holds the store's write lock (longer than
    the store's busy timeout): the acknowledgement waits, the store stays open."""
    A = 'AA:BB:CC:00:12:02'
    b = Broker(tmp_path, persistent=True)
    col = Collector(b, topics=('kneewrap/#',), client_id='kw-faults-busy', persistent=True)
    fast_bus.mock.AddWrap(A)
    gw = Gateway(tmp_path, fast_bus.address, b, seed=(), allow=(A,), scale=100)
    lock = None
    try:
        col.wait(lambda: online(col))
        gw.wait_log(f'{A}: connected, notifications on')
        b.stop()
        fast_bus.mock.PressButton(A, 2)
        wait_for(lambda: fast_bus.wrap(A)['state'] == 2, 10)
        fast_bus.mock.PressButton(A, STOP)
        wait_for(lambda: len(gw.outbox_sessions()) == 1, 10)

        # Another writer (kneewrapctl, a backup) holds the write lock while the broker returns.
        lock = sqlite3.connect(gw.db, isolation_level=None, timeout=5)
        lock.execute('BEGIN IMMEDIATE')
        t0 = time.monotonic()
        b.start()
        col.wait(lambda: col.on(f'kneewrap/{gw.wraps[0]}/session'), timeout=30)
        gw.wait_log('cannot take message', timeout=20)        # SQLITE_BUSY after the busy timeout
        lock.execute('COMMIT')
        lock.close()
        lock = None
        assert not any(s.startswith('Store unavailable') for s in gw.notify.statuses()), gw.notify.statuses()
        assert 'failed (' not in gw.log()
        # Not lost: the record reached the broker, and is acknowledged at the latest on a reconnect.
        report('2 store busy during PUBACK (store kept open)', time.monotonic() - t0)
        print(f'records on the broker: {nothing_lost(gw, col)}')
        alive(gw)
    finally:
        if lock:
            lock.close()
        gw.stop()
        col.close()
        b.stop()


# ---- 1: the store comes back while a session runs ----

def test_store_back_during_session(tmp_path, fast_bus, broker):  # noqa: F811
    """The store fails in the middle of a cold session and is reopened before it ends: the
    running session's open row stays open, and its end closes it as completed, in full."""
    A = 'AA:BB:CC:00:12:01'
    col = Collector(broker, topics=('kneewrap/#',))
    fast_bus.mock.AddWrap(A)
    gw = Gateway(tmp_path, fast_bus.address, broker, seed=(), allow=(A,), scale=100)
    w = gw.wraps[0]
    try:
        col.wait(lambda: online(col))
        gw.wait_log(f'{A}: connected, notifications on')
        fast_bus.mock.PressButton(A, COLD)                        # 15 min: 9 s at scale 100
        wait_for(lambda: fast_bus.wrap(A)['state'] == 1, 10)
        sid = gw.sql("select session_id from sessions where outcome = 'open'")[0][0]

        # The disk fills: the next write (a diary entry) fails and closes the store.
        fill_disk(gw)
        col.publish(f'kneewrap/{w}/set', {'pain': {'score': 2}})
        wait_for(lambda: gw.notify.last_status().startswith('Store unavailable'), 10)
        t0 = time.monotonic()
        resource.prlimit(gw.d.pid, resource.RLIMIT_FSIZE, (resource.RLIM_INFINITY, resource.RLIM_INFINITY))
        wait_for(lambda: 'store OK' in gw.notify.last_status(), 30)
        report('1 store back during a session (session kept)', time.monotonic() - t0)
        assert fast_bus.wrap(A)['state'] == 1, 'the session must still be running'
        assert gw.sql('select outcome from sessions where session_id = ?', sid) == [('open',)]
        assert 'open session closed as interrupted' not in gw.log()

        # It ends by itself, completed, with its whole duration.
        wait_for(lambda: gw.sql('select outcome from sessions where session_id = ?', sid) != [('open',)], 30)
        outcome, duration = gw.sql('select outcome, duration_s from sessions where session_id = ?', sid)[0]
        assert outcome == 'completed' and duration >= 890, (outcome, duration)
        nothing_lost(gw, col)
        alive(gw)
    finally:
        gw.stop()
        col.close()


# ---- 5: a wrap removed while the broker was away ----

def test_wrap_removed_while_broker_away(tmp_path, private_bus):  # noqa: F811
    b = Broker(tmp_path, persistent=True)
    col = Collector(b, topics=('kneewrap/#', 'homeassistant/#'), client_id='kw-faults-removed', persistent=True)
    gw = Gateway(tmp_path, private_bus, b, seed=('AA:BB:CC:DD:EE:05', 'AA:BB:CC:DD:EE:06'))
    gone, kept = gw.wraps
    red_flag = ('diary', gone, '8', '--flags', 'swelling,pop')     # R9: an urgent alert, retained
    try:
        col.wait(lambda: col.on(f'kneewrap/{gone}/state') and col.on(f'homeassistant/sensor/{gone}/battery/config'))
        assert gw.ctl(*red_flag).returncode == 0
        col.wait(lambda: any(p for p, r in col.on(f'kneewrap/{gone}/alert')))
        b.stop()
        # Another alert while the broker is down: it waits in the outbox. Then the wrap is
        # removed, as root over D-Bus.
        assert gw.ctl(*red_flag).returncode == 0
        assert gw.sql("select count(*) from outbox where topic like '%/alert'")[0][0] >= 1
        r = gw.ctl('remove', gone)
        assert r.returncode == 0, r.stderr
        t0 = time.monotonic()
        b.start()
        gw.wait_log(f'cleared the retained topics of {gone}', timeout=60)
        report('5 wrap removed while the broker was away (retained topics cleared)', time.monotonic() - t0)
        # The alert from the outbox is still told, after the clearing, and not retained. Live
        # ones only: col's SUBSCRIBE on reconnecting is handed the first alert again, retained,
        # and counting that one let a fresh subscriber in before the broker had the clears.
        col.wait(lambda: len([p for p, r in col.on(f'kneewrap/{gone}/alert') if p and not r]) >= 2, timeout=30)
        # A new subscriber sees no retained topic of the removed wrap (the alert included), and
        # the kept one's still. The broker queues every retained message at the SUBSCRIBE, so
        # once a message published after it arrives, all of them have.
        fresh = Collector(b, topics=('kneewrap/#', 'homeassistant/#'))
        try:
            fresh.wait(lambda: fresh.on(f'kneewrap/{kept}/state'))
            col.publish('kneewrap/test/marker', 'after')
            fresh.wait(lambda: fresh.on('kneewrap/test/marker'))
            topics = {t for t, p, retained in fresh.messages if retained and p}
            assert not [t for t in topics if gone in t], sorted(t for t in topics if gone in t)
            assert f'kneewrap/{kept}/state' in topics
        finally:
            fresh.close()
        alive(gw)
    finally:
        gw.stop()
        col.close()
        b.stop()


# ---- 4: the broker's name lookup hangs; the loop never waits for it ----

def own_etc_or_skip(tmp_path, monkeypatch, hang, hosts='127.0.0.1 broker.test\n'):
    """kneewrapd with its own /etc/hosts and /etc/nsswitch.conf ("hosts: files"), bind-mounted
    in a user and mount namespace of its own: no root needed. A nested user namespace maps the
    caller's uid back, so that the private bus (EXTERNAL auth) sees who started it.

    hang: /etc/hosts is first a FIFO that nobody writes, so glibc's lookup opens it and waits,
    as one waits on a resolver that never answers, on any machine. Writing a line to etc/fix
    then mounts a real hosts file over it (etc/fixed says when), and opening the FIFO for
    writing lets the waiting lookup end (it fails: a FIFO is no hosts file)."""
    import kwtestutil
    if subprocess.run(['unshare', '-rm', 'true'], capture_output=True).returncode != 0:
        pytest.skip('no user namespaces here (unshare -rm)')
    d = tmp_path / 'etc'
    d.mkdir()
    (d / 'hosts').write_text(hosts)
    (d / 'nsswitch.conf').write_text('hosts: files\n')
    os.mkfifo(d / 'hosts.fifo')
    os.mkfifo(d / 'fix')
    first = d / ('hosts.fifo' if hang else 'hosts')
    # The helper that mounts the fix waits on etc/fix; the test's finally lets it go (release_fifo_if_waiting).
    fix = f'{{ read -r go <{d}/fix && mount --bind {d}/hosts /etc/hosts && : >{d}/fixed; }} </dev/null & ' if hang else ''
    wrapper = tmp_path / 'kneewrapd-etc'
    wrapper.write_text(
        '#!/bin/sh\n'
        'exec unshare -rm sh -c \''
        f'mount --bind {d}/nsswitch.conf /etc/nsswitch.conf && mount --bind {first} /etc/hosts || exit 1; {fix}'
        f'exec unshare --user --map-user={os.getuid()} --map-group={os.getgid()} "$@"\' '
        f'sh {kwtestutil.KNEEWRAPD} "$@"\n')
    wrapper.chmod(0o755)
    monkeypatch.setattr(kwtestutil, 'KNEEWRAPD', str(wrapper))
    mqtt_config = kwmqtt.mqtt_config
    monkeypatch.setattr(kwmqtt, 'mqtt_config', lambda b, extra='', ca=None:
                        mqtt_config(b, extra, ca).replace('host = 127.0.0.1', 'host = broker.test'))
    return d


def release_fifo(path):
    """Opens the FIFO for writing once a reader waits on it, and closes it: the reader goes on."""
    def opened():
        try:
            os.close(os.open(path, os.O_WRONLY | os.O_NONBLOCK))
            return True
        except OSError:
            return False
    return wait_for(opened, 20)


def threads(pid):
    return len(os.listdir(f'/proc/{pid}/task'))


def test_name_lookup_hangs(tmp_path, private_bus, broker, monkeypatch):  # noqa: F811
    import kwtestutil
    d = own_etc_or_skip(tmp_path, monkeypatch, hang=True)
    start_daemon = kwtestutil.start_daemon
    monkeypatch.setattr(kwtestutil, 'start_daemon', lambda *a, **kw: start_daemon(*a, watchdog_usec=200000, **kw))
    col = Collector(broker, topics=('kneewrap/#',))
    gw = Gateway(tmp_path, private_bus, broker, seed=('AA:BB:CC:00:12:04',))
    try:
        # The lookup is under way: its thread waits on the FIFO (kneewrapd has no other thread).
        wait_for(lambda: threads(gw.d.pid) > 1, 20)
        gw.notify.wait_for('READY=1', timeout=20)
        # Meanwhile the loop goes on: D-Bus answers and the watchdog is fed.
        r = gw.ctl('status')
        assert r.returncode == 0 and 'MQTT connecting to broker.test' in r.stdout, (r.returncode, r.stdout, r.stderr)
        n = gw.notify.count('WATCHDOG=1')
        wait_for(lambda: gw.notify.count('WATCHDOG=1') >= n + 3, 20)
        r = gw.ctl('wraps')
        assert r.returncode == 0 and gw.wrap in r.stdout, (r.returncode, r.stdout, r.stderr)
        assert threads(gw.d.pid) > 1, 'the lookup ended by itself'
        assert 'MQTT connecting to broker.test' in gw.notify.last_status()
        assert 'MQTT: connected' not in gw.log()
        alive(gw)

        # Fixed: /etc/hosts names the broker. The waiting lookup ends (in failure) and the next
        # attempt, after the usual backoff, finds the address and connects.
        t0 = time.monotonic()
        with open(d / 'fix', 'w') as f:
            f.write('go\n')
        wait_for(lambda: (d / 'fixed').exists(), 20)
        release_fifo(d / 'hosts.fifo')
        col.wait(lambda: online(col), timeout=70)
        report('4 name lookup hangs, then resolves', time.monotonic() - t0)
        assert 'MQTT connected' in gw.notify.last_status() or wait_for(lambda: 'MQTT connected' in gw.notify.last_status(), 10)
        # The failure is logged with the name, once for each reason, not on every retry.
        lines = [line for line in gw.log().splitlines() if 'cannot look up the broker broker.test' in line]
        assert lines and len(lines) == len(set(lines)), lines
        assert threads(gw.d.pid) == 1
        alive(gw)
    finally:
        gw.stop()
        col.close()
        let_fix_helper_go(d)


def test_reload_and_stop_drop_a_hung_lookup(tmp_path, private_bus, broker, monkeypatch):  # noqa: F811
    """A reload (SIGHUP) drops a lookup that hangs: the broker given by address is connected at
    once, and the dropped lookup's answer, when it comes, changes nothing. Stopping the daemon
    while a lookup hangs does not wait for it."""
    import signal
    d = own_etc_or_skip(tmp_path, monkeypatch, hang=True)
    col = Collector(broker, topics=('kneewrap/#',))
    gw = Gateway(tmp_path, private_bus, broker, seed=())
    try:
        wait_for(lambda: threads(gw.d.pid) > 1, 20)
        t0 = time.monotonic()
        by_name = gw.conf.read_text()
        gw.conf.write_text(by_name.replace('host = broker.test', 'host = 127.0.0.1'))
        gw.d.send_signal(signal.SIGHUP)
        col.wait(lambda: online(col), timeout=20)
        report('4 reload while the name lookup hangs', time.monotonic() - t0)
        release_fifo(d / 'hosts.fifo')               # the dropped lookup ends (in failure)
        wait_for(lambda: threads(gw.d.pid) == 1, 20)
        assert 'cannot look up' not in gw.log()
        assert gw.ctl('status').stdout.count('MQTT connected') == 1
        assert online(col)

        # Back to the name, whose lookup hangs again; then stop.
        gw.conf.write_text(by_name)
        gw.d.send_signal(signal.SIGHUP)
        wait_for(lambda: threads(gw.d.pid) > 1, 20)
        gw.stop()
        assert gw.d.returncode == 0, gw.log()[-2000:]
    finally:
        gw.stop()
        col.close()
        let_fix_helper_go(d)


def test_name_tls_checked_against_name(tmp_path, private_bus, monkeypatch):  # noqa: F811
    """libmosquitto is given the address, yet the certificate must name [mqtt] host: one for
    the address alone is refused. The name has three addresses, two of them without a broker
    (IPv6 among them), tried in turn."""
    own_etc_or_skip(tmp_path, monkeypatch, hang=False,
                    hosts='::1 broker.test\n127.0.0.2 broker.test\n127.0.0.1 broker.test\n')
    b = Broker(tmp_path, tls=True)
    reissue_server_cert(b, 'IP:127.0.0.1')
    gw = Gateway(tmp_path, private_bus, b, seed=())
    line = tls_refused_then_fixed(gw, b, 'certificate verify failed (hostname mismatch)', 'DNS:broker.test',
                                  '4/7 TLS certificate for the address only, then for the name')
    assert 'broker.test' in line and '(3 addresses)' in line, line
    assert 'MQTT: connected to broker.test' in gw.log()


@pytest.mark.parametrize('host,sni', [('broker.test', 'broker.test'), ('127.0.0.1', None)])
def test_tls_sni_names_the_host(tmp_path, private_bus, monkeypatch, host, sni):  # noqa: F811
    """The ClientHello's server name is [mqtt] host, not the address dialled; none for an address."""
    import socket
    import ssl
    import threading
    import types
    if host != '127.0.0.1':
        own_etc_or_skip(tmp_path, monkeypatch, hang=False)
    b = Broker(tmp_path, tls=True)
    b.stop()
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.load_cert_chain(b.dir / 'server.crt', b.dir / 'server.key')
    names = []
    ctx.sni_callback = lambda sock, name, c: names.append(name)
    srv = socket.create_server(('127.0.0.1', 0))

    def serve():
        conn, _ = srv.accept()
        try:
            ctx.wrap_socket(conn, server_side=True).close()
        except (OSError, ssl.SSLError):
            conn.close()
    threading.Thread(target=serve, daemon=True).start()
    fake = types.SimpleNamespace(port=srv.getsockname()[1], tls=True, ca=b.ca)
    gw = Gateway(tmp_path, private_bus, fake, seed=())
    try:
        wait_for(lambda: names, 20)
        assert names[0] == sni, names
        alive(gw)
    finally:
        gw.stop()
        srv.close()


def let_fix_helper_go(d):
    """The wrapper's helper waits on etc/fix unless it mounted the fix: EOF ends it."""
    if not (d / 'fixed').exists():
        release_fifo(d / 'fix')
