# test_bus_api: kneewrapd's own D-Bus API (org.kneewrap1.Manager) and kneewrapctl over it, on a
# private bus with the mock BlueZ and simulated wraps: every request through the therapy rules.
import datetime
import os
import shutil
import subprocess
import tempfile
import time

import dbus
import pytest
from dbus.mainloop.glib import DBusGMainLoop
from gi.repository import GLib

from kwtestutil import KNEEWRAPCTL, after_a_request, until_decided
from test_ble_helpers import HEAT, Gateway, addr, press, wrap_id

NAME, PATH, IFACE = 'org.kneewrap1', '/org/kneewrap1', 'org.kneewrap1.Manager'
ERR = 'org.kneewrap1.Error.'


class Decided:
    """A D-Bus interface whose calls are made again while kneewrapd answers TooManyRequests."""

    def __init__(self, iface):
        self.iface = iface

    def __getattr__(self, method):
        call = getattr(self.iface, method)
        return lambda *args, **kw: until_decided(lambda: call(*args, **kw))


class Api:
    """A client of org.kneewrap1 that also records PropertiesChanged."""

    def __init__(self, address):
        self.conn = dbus.bus.BusConnection(address, mainloop=DBusGMainLoop())
        end = time.monotonic() + 10
        while not self.conn.name_has_owner(NAME):
            assert time.monotonic() < end, 'kneewrapd did not take org.kneewrap1'
            time.sleep(0.02)
        obj = self.conn.get_object(NAME, PATH)
        self.m = Decided(dbus.Interface(obj, IFACE))
        self.props = dbus.Interface(obj, 'org.freedesktop.DBus.Properties')
        self.changes = []
        self.conn.add_signal_receiver(self._changed, 'PropertiesChanged', 'org.freedesktop.DBus.Properties',
                                      NAME, PATH)

    def _changed(self, iface, changed, invalidated):
        if iface == IFACE:
            self.changes.append({str(k): v for k, v in changed.items()})

    def pump(self):
        ctx = GLib.MainContext.default()
        while ctx.iteration(False):
            pass

    def get(self, name):
        return self.props.Get(IFACE, name)

    def wait_change(self, name, value, timeout=10):
        end = time.monotonic() + timeout
        while True:
            self.pump()
            if any(c.get(name) == value for c in self.changes):
                return
            assert time.monotonic() < end, f'no PropertiesChanged {name}={value}: {self.changes}'
            time.sleep(0.02)

    def error(self, method, *args):
        with pytest.raises(dbus.DBusException) as e:
            getattr(self.m, method)(*args)
        return e.value.get_dbus_name(), e.value.get_dbus_message()

    def close(self):
        self.conn.close()


@pytest.fixture
def gw(fast_bus, tmp_path):
    made = []

    def make(**kw):
        g = Gateway(fast_bus, tmp_path, **kw).start()
        g.api = Api(fast_bus.address)
        made.append(g)
        return g
    yield make
    for g in made:
        g.api.close()
        g.close()


def ctl(g, *args, rc=0):
    """kneewrapctl on the gateway's private bus (DBUS_SYSTEM_BUS_ADDRESS) and store."""
    p = until_decided(lambda: subprocess.run([KNEEWRAPCTL, '--config', str(g.conf), *args], capture_output=True,
                                             text=True, timeout=20, env=g.bus.env()))
    assert p.returncode == rc, f'kneewrapctl {args}: {p.returncode}\n{p.stdout}\n{p.stderr}'
    return p


def test_properties_and_adoption_window(gw):
    g = gw()
    api = g.api
    assert api.get('Version') == ctl(g, '--version').stdout.split()[1]
    assert api.get('StoreAvailable') is not None and bool(api.get('StoreAvailable'))
    assert not api.get('MqttConnected')
    assert list(api.get('Wraps')) == []
    assert not api.get('AdoptionOpen')

    # 300 s at KNEEWRAP_TIME_SCALE=100 is 3 s: open, signalled, and closed by itself, signalled.
    api.m.OpenAdoption(dbus.UInt32(300))
    assert api.get('AdoptionOpen')
    api.wait_change('AdoptionOpen', True, timeout=2)
    api.wait_change('AdoptionOpen', False, timeout=10)
    assert not api.get('AdoptionOpen')

    assert api.error('OpenAdoption', dbus.UInt32(3601)) == (ERR + 'InvalidArgs', 'adoption opens for at most 3600 seconds, not 3601')
    # kneewrapctl: open, see it in status, close.
    assert 'Adoption open for 120 s' in ctl(g, 'adopt').stdout
    st = ctl(g, 'status').stdout
    assert 'adoption: open' in st and 'store: available' in st and 'No wraps adopted yet' in st
    assert 'Adoption closed' in ctl(g, 'adopt', '0').stdout
    assert not api.get('AdoptionOpen')
    assert 'from 0 (close) to 3600' in ctl(g, 'adopt', '9999', rc=1).stderr
    assert g.alive()


def test_bad_requests_get_clear_errors_and_the_daemon_survives(gw):
    a = addr(40)
    g = gw(allow=[a])
    g.bus.mock.AddWrap(a)
    g.wait_connected(a)
    api, w = g.api, wrap_id(a)

    unknown = 'wrap_000000000000'
    assert api.error('StartSession', unknown, 'cold') == (ERR + 'NoSuchWrap', f'no adopted wrap is called "{unknown}"')
    assert api.error('StopSession', unknown)[0] == ERR + 'NoSuchWrap'
    assert api.error('RemoveWrap', unknown)[0] == ERR + 'NoSuchWrap'
    assert api.error('SetInjury', unknown, '2026-01-01')[0] == ERR + 'NoSuchWrap'
    assert api.error('StartSession', w, 'warm') == (ERR + 'InvalidArgs', 'mode must be "cold" or "heat", not "warm"')
    assert api.error('StartSession', '', 'cold') == (ERR + 'InvalidArgs', 'no wrap given')
    # A caller may say "cli" or "dbus", never that it is the wrap's button or the broker.
    for src in ('button', 'mqtt', ''):
        name, msg = api.error('StartSessionAs', w, 'cold', src)
        assert name == ERR + 'InvalidArgs' and 'source must be "cli" or "dbus"' in msg
    assert api.error('StopSession', w) == (ERR + 'NoSession', 'no session is running on this wrap')
    assert api.error('SetInjury', w, 'last week')[0] == ERR + 'InvalidArgs'
    assert 'in the future' in api.error('SetInjury', w, '2999-01-01')[1]
    assert api.error('SetInjury', w, '') == (ERR + 'Failed', f'{w} has no unresolved injury')
    assert api.error('AddDiary', w, dbus.Byte(11), '', dbus.Array([], signature='s'))[0] == ERR + 'InvalidArgs'
    assert 'unknown flag "limp"' in api.error('AddDiary', w, dbus.Byte(3), 'front', ['limp'])[1]
    assert 'unknown place "knee"' in api.error('AddDiary', w, dbus.Byte(3), 'knee', dbus.Array([], signature='s'))[1]
    assert 'unknown key "cold"' in api.error('SetPrescription', w, {'cold': dbus.UInt32(12)})[1]
    assert 'whole number' in api.error('SetPrescription', w, {'cold_minutes': 'twelve'})[1]
    assert 'nothing to prescribe' in api.error('SetPrescription', w, dbus.Dictionary({}, signature='sv'))[1]
    # Outside the rules' bounds: refused, with the field named, never clamped.
    name, msg = api.error('SetPrescription', w, {'cold_minutes': dbus.UInt32(20)})
    assert name == ERR + 'Refused' and 'cold minutes' in msg
    name, msg = api.error('SetPrescription', w, {'heat_wait_days': dbus.UInt32(3)})
    assert name == ERR + 'Refused' and 'heat wait days' in msg
    # 49718 days in seconds passes 2^32: it must saturate (refused), not wrap to 7.7 days.
    name, msg = api.error('SetPrescription', w, {'heat_wait_days': dbus.UInt32(49718)})
    assert name == ERR + 'Refused' and 'heat wait days' in msg
    assert g.sql('SELECT count(*) FROM prescriptions') == [(0,)]
    # A wrong signature is sd-bus's own InvalidArgs.
    with pytest.raises(dbus.DBusException) as e:
        api.m.OpenAdoption('ten', signature='s')
    assert e.value.get_dbus_name() == 'org.freedesktop.DBus.Error.InvalidArgs'

    # kneewrapctl says it plainly, exit 1.
    assert f'no adopted wrap is called "{unknown}"' in ctl(g, 'start', unknown, 'cold', rc=1).stderr
    assert 'usage: start WRAP cold|heat' in ctl(g, 'start', w, 'warm', rc=1).stderr
    assert 'no session is running' in ctl(g, 'stop', w, rc=1).stderr

    # The good ones still work, and nothing of the above was recorded as a session.
    api.m.SetPrescription(w, {'cold_minutes': dbus.UInt32(12), 'cold_setpoint_c': 11.5})
    assert g.sql('SELECT cold_s, cold_setpoint FROM prescriptions') == [(720, 1150)]
    api.m.ClearPrescription(w)
    api.m.AddDiary(w, dbus.Byte(4), 'below', ['swelling'])
    assert g.sql('SELECT score, location, flags FROM diary') == [(4, 'below', 1)]
    assert g.sessions() == []
    assert g.alive()


def test_heat_refused_within_7_days_over_dbus_and_cli_both_recorded(gw):
    a = addr(41)
    g = gw(allow=[a])
    g.bus.mock.AddWrap(a)
    g.wait_connected(a)
    api, w = g.api, wrap_id(a)
    assert list(api.get('Wraps')) == [w]

    two_days = (datetime.datetime.now(datetime.timezone.utc) - datetime.timedelta(days=2)).replace(microsecond=0)
    api.m.SetInjury(w, two_days.isoformat())

    session, outcome, refusal, minutes, message = api.m.StartSession(w, 'heat')
    assert (outcome, refusal) == ('refused', 'heat_too_soon')
    # Five days left, less the few scaled minutes the test has run.
    assert 5 * 1440 - 60 <= minutes <= 5 * 1440, minutes
    assert 'R2' in message

    r = ctl(g, 'start', a, 'heat', rc=1)          # by address, as kneewrapctl takes it
    assert f'{w} heat refused (heat_too_soon, ' in r.stderr and 'min left' in r.stderr

    recs = g.wait_session(a, 'refused', n=2)
    assert [(x['source'], x['mode'], x['refusal']['reason']) for x in recs] == \
        [('dbus', 'heat', 'heat_too_soon'), ('cli', 'heat', 'heat_too_soon')]
    assert recs[0]['session_id'] == session and recs[0]['refusal']['minutes_left'] == minutes
    assert recs[0]['started_at'] is None and 1.9 <= recs[0]['days_since_injury'] <= 2.2
    # Nothing went to the wrap: a refusal asked over D-Bus sends no DENY either.
    assert g.cp(a) == []

    # Marked resolved over D-Bus: heat is allowed (R3), and runs.
    api.m.SetInjury(w, '')
    session, outcome, refusal, minutes, message = api.m.StartSession(w, 'heat')
    assert (outcome, refusal, minutes) == ('started', '', 0)
    assert message == 'heat at 40.00 °C for 15 min'
    g.wait_cp(a, '0102a00f8403', timeout=5)         # START heat 40.00 °C 900 s
    assert g.alive()


def test_ctl_start_stop_round_trip_and_remove(gw):
    a, b = addr(42), addr(43)
    g = gw(allow=[a, b])
    for x in (a, b):
        g.bus.mock.AddWrap(x)
    g.wait_connected(a)
    g.wait_connected(b)
    api, w = g.api, wrap_id(a)

    r = ctl(g, 'start', w, 'cold')
    assert f'{w}: cold session started: cold at 10.00 °C for 15 min (session ' in r.stdout
    g.wait_cp(a, '0101e8038403', timeout=5)        # START cold 10.00 °C 900 s
    st = ctl(g, 'status').stdout
    line = [x for x in st.splitlines() if x.startswith(w)][0]
    assert 'connected' in line and 'cold,' in line and 'left' in line

    # Busy: a second start is refused by the rules (session_active), recorded as cli.
    r = ctl(g, 'start', w, 'heat', rc=1)
    assert 'refused (session_active' in r.stderr

    ctl(g, 'stop', w)
    g.wait_cp(a, '0200', timeout=5)                # STOP, by the user
    [done] = g.wait_session(a, 'stopped_by_user')
    assert done['source'] == 'cli' and done['mode'] == 'cold' and done['ended_at']
    [ref] = g.wait_session(a, 'refused')
    assert ref['source'] == 'cli' and ref['refusal']['reason'] == 'session_active'

    # The same over D-Bus directly: source dbus; and the wrap's own button is not confused.
    _, outcome, _, _, _ = api.m.StartSession(wrap_id(b), 'cold')
    assert outcome == 'started'
    g.wait_cp(b, '0101e8038403', timeout=5)
    api.m.StopSession(wrap_id(b))
    [done] = g.wait_session(b, 'stopped_by_user')
    assert done['source'] == 'dbus'
    after_a_request(g.scale)                        # a press dropped by the limit has no answer to wait for
    press(g.bus, b, HEAT)                           # heat is allowed: no injury (R3)
    g.wait_cp(b, '0102a00f8403', timeout=5)

    # Remove: Wraps changes, signalled; the history stays.
    api.pump()
    api.changes.clear()
    assert 'removed' in ctl(g, 'remove', w).stdout
    api.wait_change('Wraps', dbus.Array([wrap_id(b)], signature='s'))
    assert list(api.get('Wraps')) == [wrap_id(b)]
    assert api.error('StartSession', w, 'cold')[0] == ERR + 'NoSuchWrap'
    assert len(g.sessions(a)) == 2
    assert g.alive()


def test_store_unavailable_is_an_error_and_a_refusal(gw, tmp_path):
    a = addr(44)
    g = gw(allow=[a])
    g.bus.mock.AddWrap(a)
    g.wait_connected(a)
    api, w = g.api, wrap_id(a)

    # The store's directory becomes unwritable under a running daemon is hard to stage
    # portably; instead make the daemon's store go away with a reload to an impossible path.
    conf = g.conf.read_text().replace(f'path = {g.db}', f'path = {tmp_path}/missing/dir/kneewrap.db')
    g.conf.write_text(conf)
    g.proc.send_signal(1)                           # SIGHUP
    end = time.monotonic() + 10
    while api.get('StoreAvailable'):
        assert time.monotonic() < end
        time.sleep(0.05)
    api.wait_change('StoreAvailable', False)

    session, outcome, refusal, minutes, message = api.m.StartSession(w, 'cold')
    assert (outcome, refusal) == ('refused', 'store_unavailable') and 'unavailable' in message
    name, msg = api.error('SetInjury', w, '2026-01-01')
    assert name == ERR + 'StoreUnavailable' and 'store is unavailable' in msg
    r = ctl(g, 'start', w, 'cold', rc=1)
    assert 'refused (store_unavailable)' in r.stderr and 'Recorded' not in r.stderr
    assert 'UNAVAILABLE' in ctl(g, 'status').stdout
    assert g.cp(a) == []                            # nothing runs unrecorded
    assert g.alive()


def test_ctl_without_the_daemon_says_so(fast_bus, tmp_path):
    conf = tmp_path / 'kneewrapd.conf'
    conf.write_text(f'[store]\npath = {tmp_path}/kneewrap.db\n')
    for cmd in (['status'], ['start', 'wrap_aabbcc001122', 'cold'], ['stop', 'wrap_aabbcc001122'], ['adopt'],
                ['remove', 'wrap_aabbcc001122']):
        p = subprocess.run([KNEEWRAPCTL, '--config', str(conf), *cmd], capture_output=True, text=True, timeout=20,
                           env=fast_bus.env())
        assert p.returncode == 1 and 'kneewrapd is not running (nobody owns org.kneewrap1' in p.stderr, (cmd, p.stderr)


POLICY_BUS = '''<!DOCTYPE busconfig PUBLIC "-//freedesktop//DTD D-Bus Bus Configuration 1.0//EN"
 "http://www.freedesktop.org/standards/dbus/1.0/busconfig.dtd">
<busconfig>
  <type>system</type>
  <listen>unix:path={socket}</listen>
  <auth>EXTERNAL</auth>
  <!-- Debian 12's system.conf default policy: holes must be punched per service. -->
  <policy context="default">
    <allow user="*"/>
    <deny own="*"/>
    <deny send_type="method_call"/>
    <allow send_type="signal"/>
    <allow send_requested_reply="true" send_type="method_return"/>
    <allow send_requested_reply="true" send_type="error"/>
    <allow receive_type="method_call"/>
    <allow receive_type="method_return"/>
    <allow receive_type="error"/>
    <allow receive_type="signal"/>
    <allow send_destination="org.freedesktop.DBus" send_interface="org.freedesktop.DBus"/>
  </policy>
  <!-- The test runs the daemon as root, standing in for the user kneewrap. -->
  <policy user="root"><allow own="org.kneewrap1"/></policy>
  <include>{policy}</include>
</busconfig>
'''


@pytest.mark.skipif(os.geteuid() != 0, reason='needs root to call as another user')
def test_shipped_policy_lets_root_call_and_shuts_others_out(tmp_path):
    from kwtestutil import SRCDIR, Notify, start_daemon, stop_daemon, write_config
    from privatebus import PrivateBus
    # The socket where nobody can reach it (pytest's tmp_path is root's alone).
    sockdir = tempfile.mkdtemp(prefix='kw-policy-')
    os.chmod(sockdir, 0o755)
    bus = PrivateBus(sockdir, POLICY_BUS, policy=os.path.join(SRCDIR, 'systemd', 'org.kneewrap1.conf'))
    address = bus.address
    notify = Notify(tmp_path)
    d = None
    try:
        conf = write_config(tmp_path)
        d = start_daemon(tmp_path, conf, address, notify)
        api = Api(address)
        assert not api.get('AdoptionOpen')
        api.close()
        env = {**os.environ, 'DBUS_SYSTEM_BUS_ADDRESS': address}

        def run(*prefix_and_cmd):
            return subprocess.run([*prefix_and_cmd], capture_output=True, text=True, timeout=20, env=env)
        p = run(KNEEWRAPCTL, '--config', str(conf), 'adopt', '30')
        assert p.returncode == 0, p.stderr
        # nobody is neither root nor in the group kneewrap: not even a property read.
        nobody = ['setpriv', '--reuid=65534', '--regid=65534', '--clear-groups']
        for cmd in (['status'], ['start', 'wrap_aabbcc001122', 'cold'], ['adopt', '0']):
            p = run(*nobody, KNEEWRAPCTL, '--config', str(conf), *cmd)
            assert p.returncode == 1 and 'not allowed to talk to kneewrapd' in p.stderr, (cmd, p.stderr)
        p = run(*nobody, 'busctl', f'--address={address}', 'introspect', 'org.kneewrap1', '/org/kneewrap1')
        assert p.returncode != 0 and ('Access denied' in p.stderr or 'AccessDenied' in p.stderr), p.stderr
        assert 'Adoption open' in d.log() and 'Adoption closed' not in d.log()
    finally:
        if d:
            stop_daemon(d)
        notify.close()
        bus.close()
        shutil.rmtree(sockdir, ignore_errors=True)
