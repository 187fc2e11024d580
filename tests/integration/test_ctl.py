# test_ctl: kneewrapctl: injuries, the diary (R9 alert with its outbox message) and
# prescriptions inside the rules' bounds, through the running daemon's D-Bus API (on a private
# bus with the mock BlueZ); wraps, history, export and compliance read from the store.
import json
import os
import sqlite3
import subprocess
import time

import pytest

from kwtestutil import BUILDDIR, KNEEWRAPCTL, until_decided
from test_ble_helpers import Gateway

SEED = os.environ.get('KW_STORE_SEED', os.path.join(BUILDDIR, 'tests', 'integration', 'kw-store-seed'))
ADDR = 'AA:BB:CC:00:11:22'
WRAP = 'wrap_aabbcc001122'
RECORD_FIELDS = {'session_id', 'wrap', 'mode', 'source', 'requested_at', 'started_at', 'ended_at',
                 'prescribed_s', 'duration_s', 'outcome', 'compliant', 'refusal', 'skin_c',
                 'days_since_injury', 'clock_synced'}


class Ctl:
    """kneewrapctl on a store in tmp_path; with `bus`, also the daemon on that bus (start())."""

    def __init__(self, tmp_path, mqtt=False, bus=None):
        self.db = tmp_path / 'kneewrap.db'
        self.conf = tmp_path / 'kneewrapd.conf'
        self.gw = None
        # R10: a synchronised clock (the test seam), whatever the host's is.
        self.seam = tmp_path / 'clock-seam'
        self.seam.write_text('synced=1\n')
        self.env = {**os.environ, 'TZ': 'UTC', 'KNEEWRAP_CLOCK': str(self.seam)}
        if bus:
            self.gw = Gateway(bus, tmp_path, db=str(self.db), scale=None)
            self.env = {**bus.env(), 'TZ': 'UTC', 'KNEEWRAP_CLOCK': str(self.seam)}
            self.env.pop('KNEEWRAP_TIME_SCALE', None)
        else:
            self.conf.write_text(f'[store]\npath = {self.db}\n')
        if mqtt:
            # No broker: what the daemon would publish waits in the outbox.
            self.conf.write_text(self.conf.read_text() + '[mqtt]\nhost = 127.0.0.1\nport = 1\nbase_topic = kw\n')

    def start(self):
        self.gw.start()
        self.gw.wait_log('kneewrapd started')
        return self

    def stop(self):
        if self.gw:
            self.gw.close()

    def __call__(self, *args, rc=0):
        r = until_decided(lambda: subprocess.run([KNEEWRAPCTL, '--config', str(self.conf), *args],
                                                 capture_output=True, text=True, timeout=10, env=self.env))
        if r.returncode != rc:
            print(r.stdout, r.stderr)
        assert r.returncode == rc
        return r

    def seed(self, *args):
        subprocess.run([SEED, str(self.db), *map(str, args)], check=True, timeout=10)

    def sql(self, query):
        with sqlite3.connect(self.db) as c:
            return c.execute(query).fetchall()


@pytest.fixture
def ctl(tmp_path):
    c = Ctl(tmp_path)
    c.seed('wrap', ADDR, 'Left knee', int(time.time()) - 86400)
    return c


@pytest.fixture
def live(fast_bus, tmp_path):
    """A seeded wrap and the daemon running: the commands that change state go to it."""
    made = []

    def make(mqtt=False):
        c = Ctl(tmp_path, mqtt=mqtt, bus=fast_bus)
        c.seed('wrap', ADDR, 'Left knee', int(time.time()) - 86400)
        made.append(c.start())
        return c
    yield make
    for c in made:
        c.stop()


def test_help_version_and_usage(tmp_path):
    c = Ctl(tmp_path)
    assert 'prescribe WRAP' in c('--help').stdout
    assert c('--version').stdout.startswith('kneewrapctl ')
    assert 'no command' in c(rc=1).stderr
    assert 'unknown command "frob"' in c('frob', rc=1).stderr


def test_wraps(tmp_path):
    c = Ctl(tmp_path)
    assert 'No wraps adopted' in c('wraps').stdout
    c.seed('wrap', ADDR, 'Left knee', 1763700000)
    out = c('wraps').stdout
    assert WRAP in out and ADDR in out and 'Left knee' in out


def test_needs_daemon(ctl, tmp_path):
    # No bus at all: said plainly, exit 1 (test_bus_api.py covers these with the daemon).
    env = {**os.environ, 'DBUS_SYSTEM_BUS_ADDRESS': f'unix:path={tmp_path}/no-such-socket'}
    for cmd in (['start', WRAP, 'cold'], ['stop', WRAP], ['adopt'], ['remove', WRAP], ['status'],
                ['injury', WRAP, '2026-01-01'], ['diary', WRAP, '3'], ['prescribe', WRAP, '--cold-minutes', '12']):
        r = subprocess.run([KNEEWRAPCTL, '--config', str(ctl.conf), *cmd], capture_output=True, text=True,
                           timeout=10, env=env)
        assert r.returncode == 1 and 'cannot connect to the system bus' in r.stderr, (cmd, r.stderr)


def test_injury(live):
    ctl = live()
    assert 'no adopted wrap is called "wrap_000000000000"' in ctl('injury', 'wrap_000000000000', '2026-01-01', rc=1).stderr
    assert 'is not a date' in ctl('injury', WRAP, 'last week', rc=1).stderr
    assert 'in the future' in ctl('injury', WRAP, '2999-01-01', rc=1).stderr
    assert 'in the future' in ctl('injury', WRAP, '2999-01-01T10:00Z', rc=1).stderr
    assert ctl.sql('select count(*) from injuries') == [(0,)]

    today = time.strftime('%Y-%m-%d', time.gmtime())
    # By address as well as by id.
    ctl('injury', ADDR, today)
    rows = ctl.sql('select date, resolved_at from injuries')
    assert rows == [(today, None)]

    ctl('injury', WRAP, '--resolved')
    assert ctl.sql('select resolved_at is not null from injuries') == [(1,)]
    assert 'no unresolved injury' in ctl('injury', WRAP, '--resolved', rc=1).stderr
    # The daemon heard of it at once: its log has every one, as the one door says it.
    ctl.gw.wait_log('Injury recorded')
    ctl.gw.wait_log('Injury marked resolved')


def test_diary_and_red_flag_with_mqtt(live):
    c = live(mqtt=True)
    r = c('diary', WRAP, '4', '--where', 'below')
    assert 'pain 4/10, below' in r.stdout
    assert c.sql('select count(*) from alerts') == [(0,)]
    assert c.sql('select count(*) from outbox') == [(0,)]

    # R9: swelling after a pop: the alert row and its MQTT message, with the entry.
    r = c('diary', WRAP, '7', '--flags', 'swelling,pop', '--where', 'inner')
    assert 'URGENT' in r.stdout
    assert c.sql('select score, location, flags from diary order by id') == [(4, 'below', 0), (7, 'inner', 3)]
    assert c.sql('select wrap, kind from alerts') == [(WRAP, 'red_flag')]
    topic, payload = c.sql('select topic, payload from outbox')[0]
    assert topic == f'kw/{WRAP}/alert'
    assert json.loads(payload)['alert'] == 'red_flag'
    # Acted on now, not at the next health tick.
    c.gw.wait_log(r'red_flag\)', timeout=2)

    # Swelling alone is no red flag.
    c('diary', WRAP, '5', '--flags', 'swelling')
    assert c.sql('select count(*) from alerts') == [(1,)]


def test_diary_red_flag_without_mqtt(live):
    ctl = live()
    ctl('diary', WRAP, '8', '--flags', 'pop,swelling')
    assert ctl.sql('select kind from alerts') == [('red_flag',)]
    assert ctl.sql('select count(*) from outbox') == [(0,)]


def test_diary_refusals(live):
    ctl = live()
    assert '0 to 10' in ctl('diary', WRAP, '11', rc=1).stderr
    assert 'unknown place' in ctl('diary', WRAP, '3', '--where', 'elbow', rc=1).stderr
    assert 'unknown flag "click"' in ctl('diary', WRAP, '3', '--flags', 'pop,click', rc=1).stderr
    assert 'no adopted wrap' in ctl('diary', 'wrap_000000000000', '3', rc=1).stderr
    assert ctl.sql('select count(*) from diary') == [(0,)]


def test_prescribe(live):
    ctl = live()
    r = ctl('prescribe', WRAP, '--cold-minutes', '12', '--heat-wait-days', '14')
    assert 'cold 12 min' in r.stdout and 'heat waits 14 days' in r.stdout
    # A second call changes only what it names.
    r = ctl('prescribe', '--heat-setpoint', '41.5', WRAP)
    assert 'cold 12 min' in r.stdout and '41.50 °C' in r.stdout and '14 days' in r.stdout
    assert ctl.sql('select cold_s, heat_setpoint, heat_wait_s from prescriptions') == [(720, 4150, 14 * 86400)]

    # Out of bounds: refused naming the field, never clamped; nothing changes.
    for opt, val, field in (('--cold-minutes', '16', 'cold minutes'), ('--cold-minutes', '9', 'cold minutes'),
                            ('--heat-minutes', '21', 'heat minutes'), ('--heat-setpoint', '43', 'heat setpoint'),
                            ('--cold-setpoint', '7.5', 'cold setpoint'), ('--heat-wait-days', '6', 'heat wait days'),
                            ('--rest-minutes', '30', 'rest minutes')):
        r = ctl('prescribe', WRAP, opt, val, rc=1)
        assert f'refused: {field}' in r.stderr, r.stderr
    assert ctl.sql('select cold_s, heat_setpoint, heat_wait_s from prescriptions') == [(720, 4150, 14 * 86400)]

    assert 'nothing to prescribe' in ctl('prescribe', WRAP, rc=1).stderr
    assert '--clear takes no other' in ctl('prescribe', WRAP, '--clear', '--cold-minutes', '10', rc=1).stderr
    ctl('prescribe', WRAP, '--clear')
    assert ctl.sql('select count(*) from prescriptions') == [(0,)]


def test_sessions_export_compliance(ctl):
    now = int(time.time())
    ctl.seed('session', WRAP, 'cold', 'completed', now - 7200, 900)
    ctl.seed('session', WRAP, 'cold', 'stopped_by_user', now - 5000, 300)
    ctl.seed('session', WRAP, 'heat', 'refused', now - 4000, 0, 'heat_too_soon', 1234)
    ctl.seed('session', WRAP, 'cold', 'completed', now - 40 * 86400, 900)

    out = ctl('sessions').stdout.strip().split('\n')
    assert len(out) == 5  # header + 4
    assert 'heat_too_soon, 1234 min' in out[4]  # oldest first

    lines = ctl('export', WRAP).stdout.strip().split('\n')
    recs = [json.loads(line) for line in lines]
    assert len(recs) == 4
    for rec in recs:
        assert set(rec) == RECORD_FIELDS
    assert [r['outcome'] for r in recs] == ['completed', 'completed', 'stopped_by_user', 'refused']
    assert recs[3]['refusal'] == {'reason': 'heat_too_soon', 'minutes_left': 1234}
    assert recs[1]['compliant'] is True and recs[2]['compliant'] is False

    since = time.strftime('%Y-%m-%d', time.gmtime(now - 10 * 86400))
    recent = ctl('sessions', '--since', since, '--json').stdout.strip().split('\n')
    assert len(recent) == 3
    assert 'not a date' in ctl('export', '--since', 'soon', rc=1).stderr

    out = ctl('compliance', WRAP).stdout
    print(out)
    assert 'cold sessions completed (>= 10 min): 1' in out
    assert 'stopped early (< 10 min, R7): 1' in out
    assert 'heat requests refused: 1' in out
    assert '(7 local days)' in out
    out30 = ctl('compliance', WRAP, '--days', '30').stdout
    assert '(30 local days)' in out30
    # Any period of whole local days, the same figures as JSON.
    today = time.strftime('%Y-%m-%d')
    j = json.loads(ctl('compliance', WRAP, '--since', since, '--until', today, '--json').stdout)
    assert j['until'] == today and j['since'] == since
    assert j['cold_completed'] == 1 and j['cold_incomplete'] == 1 and j['heat_refused'] == 1
    assert 'days from 1' in ctl('compliance', WRAP, '--days', '0', rc=1).stderr
    assert 'local dates' in ctl('compliance', WRAP, '--since', today, '--until', since, rc=1).stderr


def test_bad_config_is_refused(tmp_path):
    c = Ctl(tmp_path)
    c.conf.write_text(f'[store]\npath = {c.db}\n[therapy]\ncold_minutes = 30\n')
    r = c('wraps', rc=1)
    assert f'{c.conf}:4: [therapy] cold_minutes' in r.stderr


def test_db_option_without_config(tmp_path):
    db = tmp_path / 'other.db'
    r = subprocess.run([KNEEWRAPCTL, '--db', str(db), '--config', str(tmp_path / 'none.conf'), 'wraps'],
                       capture_output=True, text=True, timeout=10)
    assert r.returncode == 1 and 'none.conf' in r.stderr
    subprocess.run([SEED, str(db), 'wrap', ADDR, 'x', '1763700000'], check=True)
    r = subprocess.run([KNEEWRAPCTL, '--db', str(db), 'wraps'], capture_output=True, text=True, timeout=10)
    assert r.returncode == 0 and WRAP in r.stdout
