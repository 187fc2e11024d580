# test_authority: who may do what over D-Bus, enforced by kneewrapd from the caller's
# credentials (the bus policy is checked in test_unit.py). Callers are real processes of
# other users (setpriv), on a private bus whose own policy lets anyone through, so that
# only the daemon's check stands between them and the method.
import os
import subprocess
import time

import pytest

from kwmqtt import SEED, wrap_id
from kwtestutil import daemon_running, private_bus, until_decided, write_config  # noqa: F401

A = 'AA:BB:CC:00:12:20'
NOBODY, NOGROUP, USERS = 65534, 65534, 100

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason='calling as other users needs root (setpriv)')


def call(address, uid, gid, groups, method, sig='', *args):
    """busctl as uid:gid with the supplementary groups given: (returncode, output)."""
    cmd = ['setpriv', f'--reuid={uid}', f'--regid={gid}']
    cmd += [f'--groups={",".join(map(str, groups))}'] if groups else ['--clear-groups']
    cmd += ['busctl', f'--address={address}', 'call', 'org.kneewrap1', '/org/kneewrap1', 'org.kneewrap1.Manager',
            method]
    if sig:
        cmd += [sig, *args]
    r = until_decided(lambda: subprocess.run(cmd, capture_output=True, text=True, timeout=10))
    return r.returncode, r.stdout + r.stderr


def seeded_config(tmp_path):
    """A store with wrap A adopted, and a config whose clinic group is nogroup (a group every
    Debian machine has): (store path, wrap id, config path)."""
    db = tmp_path / 'kneewrap.db'
    subprocess.run([SEED, str(db), 'wrap', A, 'Left knee', str(int(time.time()) - 86400)], check=True)
    return db, wrap_id(A), write_config(tmp_path, extra='[daemon]\nclinic_group = nogroup\n')


def test_dbus_authority(tmp_path, private_bus):  # noqa: F811
    # Another user must reach the bus socket: open the private bus's directory to them.
    sock = private_bus.split('path=', 1)[1].split(',')[0]
    os.chmod(os.path.dirname(sock), 0o755)
    db, w, conf = seeded_config(tmp_path)
    with daemon_running(tmp_path, conf, private_bus) as (d, notify):
        notify.wait_for('READY=1', timeout=10)

        # A member of neither group (uid nobody, group users): reads, sessions, diary.
        rc, out = call(private_bus, NOBODY, USERS, [], 'ListWraps')
        assert rc == 0 and w in out, out
        rc, out = call(private_bus, NOBODY, USERS, [], 'AddDiary', 'sysas', w, '3', 'front', '0')
        assert 'AccessDenied' not in out, out
        rc, out = call(private_bus, NOBODY, USERS, [], 'StartSession', 'ss', w, 'cold')
        assert 'AccessDenied' not in out, out          # refused for other reasons (no BlueZ), not by authority

        # Injuries, prescriptions, profile, alerts, adoption, removal: refused, and nothing changed.
        refused = [('SetInjury', 'ss', w, '2026-01-02'), ('SetInjury', 'ss', w, ''),
                   ('SetPrescription', 'sa{sv}', w, '1', 'cold_s', 'u', '600'), ('ClearPrescription', 's', w),
                   ('OpenAdoption', 'u', '3600'), ('RemoveWrap', 's', w), ('AcknowledgeAlert', 'x', '1')]
        for method, sig, *args in refused:
            rc, out = call(private_bus, NOBODY, USERS, [], method, sig, *args)
            assert rc != 0 and 'needs root or group nogroup' in out, (method, out)
        assert d.log().count('D-Bus: SetInjury refused for uid 65534') == 2
        import sqlite3
        c = sqlite3.connect(str(db))
        assert c.execute('select count(*) from injuries').fetchone()[0] == 0
        assert c.execute('select count(*) from wraps').fetchone()[0] == 1
        c.close()

        # The clinic group, as the primary group or a supplementary one, and root.
        rc, out = call(private_bus, NOBODY, NOGROUP, [], 'SetInjury', 'ss', w, '2026-01-02')
        assert rc == 0, out
        rc, out = call(private_bus, NOBODY, USERS, [NOGROUP], 'SetInjury', 'ss', w, '')
        assert rc == 0, out
        rc, out = call(private_bus, 0, 0, [], 'OpenAdoption', 'u', '60')
        assert rc == 0, out
        rc, out = call(private_bus, 0, 0, [], 'OpenAdoption', 'u', '0')     # closing is never limited
        assert rc == 0, out
        rc, out = call(private_bus, 0, 0, [], 'OpenAdoption', 'u', '0')     # closed already: nothing to record
        assert rc == 0, out
        assert d.poll() is None

        # Every change went into the append-only history, with the caller's uid; none of the
        # refused ones did.
        from kwtestutil import KNEEWRAPCTL
        r = subprocess.run([KNEEWRAPCTL, '--config', str(conf), 'history', '--json'], capture_output=True, text=True,
                           env=dict(os.environ, DBUS_SYSTEM_BUS_ADDRESS=private_bus), timeout=10)
        assert r.returncode == 0, r.stderr
        import json
        h = [(e['what'], e['wrap'], e['source'], e['uid'], e['detail']) for e in json.loads(r.stdout)]
        assert h == [('injury', w, 'dbus', NOBODY, '2026-01-02'), ('injury_resolved', w, 'dbus', NOBODY, ''),
                     ('adoption', None, 'dbus', 0, 'open 60 s'), ('adoption', None, 'dbus', 0, 'closed')], h
        r = subprocess.run([KNEEWRAPCTL, '--config', str(conf), 'history', w], capture_output=True, text=True,
                           env=dict(os.environ, DBUS_SYSTEM_BUS_ADDRESS=private_bus), timeout=10)
        assert 'injury_resolved' in r.stdout and 'uid 65534' in r.stdout, r.stdout
        c = sqlite3.connect(str(db))
        for sql in ('update audit set uid = 0', 'delete from audit'):
            with pytest.raises(sqlite3.DatabaseError, match='append-only'):
                c.execute(sql)
        c.close()


def test_shipped_bus_policy(tmp_path):
    """The shipped org.kneewrap1.conf, enforced by a real dbus-daemon: its group names are
    swapped for groups every Debian machine has (kneewrap -> users, kneewrap-clinic -> nogroup)
    and the owner kneewrap for root, who runs the daemon here."""
    from kwtestutil import SRCDIR
    text = open(os.path.join(SRCDIR, 'systemd', 'org.kneewrap1.conf')).read()
    assert text.count('group="kneewrap"') == 1 and text.count('group="kneewrap-clinic"') == 1
    policy = tmp_path / 'policy.conf'
    policy.write_text(text.replace('group="kneewrap-clinic"', 'group="nogroup"')
                      .replace('group="kneewrap"', 'group="users"').replace('user="kneewrap"', 'user="root"'))
    from privatebus import OPEN_POLICY, PrivateBus
    bus = PrivateBus(config=OPEN_POLICY.replace('</busconfig>', f'<include>{policy}</include>\n</busconfig>'))
    os.chmod(bus.dir, 0o755)                            # reachable by other users, unlike tmp_path
    address = bus.address
    try:
        db, w, kconf = seeded_config(tmp_path)
        with daemon_running(tmp_path, kconf, address) as (d, notify):
            notify.wait_for('READY=1', timeout=10)
            # Group kneewrap (users): what the policy lists.
            rc, out = call(address, NOBODY, USERS, [], 'ListWraps')
            assert rc == 0 and w in out, out
            rc, out = call(address, NOBODY, USERS, [], 'AddDiary', 'sysas', w, '2', 'front', '0')
            assert rc == 0, out
            # The bus itself refuses the rest: the daemon never sees the call.
            for method, sig, *args in [('SetInjury', 'ss', w, ''), ('OpenAdoption', 'u', '60'), ('RemoveWrap', 's', w)]:
                rc, out = call(address, NOBODY, USERS, [], method, sig, *args)
                assert rc != 0 and 'needs root' not in out, (method, out)
            assert 'refused for uid' not in d.log()
            # Neither group: nothing at all.
            rc, out = call(address, NOBODY, NOBODY - 1, [], 'ListWraps')
            assert rc != 0, out
            # kneewrap-clinic (nogroup), also alongside kneewrap: everything.
            rc, out = call(address, NOBODY, USERS, [NOGROUP], 'SetInjury', 'ss', w, '2026-01-02')
            assert rc == 0, out
            rc, out = call(address, NOBODY, NOGROUP, [], 'OpenAdoption', 'u', '0')
            assert rc == 0, out
    finally:
        bus.close()
