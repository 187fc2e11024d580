# test_clinic: what a clinic reads, end to end through the real interfaces: a simulated wrap on
# the mock BlueZ, kneewrapd at time scale 100, a real mosquitto, kneewrapctl (D-Bus and the
# store read-only). Runs from the CLI and MQTT and whether cold followed them (a refused press
# counts against a run with its reason); the patient profile in kneewrapctl and as the Home
# Assistant device name; alerts as records (retained on MQTT, a D-Bus signal, acknowledged);
# one compliance on MQTT, D-Bus and the CLI; the reports: CSV (RFC 4180), JSON, a FHIR R4
# Bundle checked against HL7's schema, and an HTML page rendered in headless Chromium.
import csv
import io
import json
import os
import subprocess
import time

import dbus

from fhirschema import check as check_fhir
from kwchromium import dump_dom, print_pdf, screenshot
from kwmqtt import SEED, Collector, ask, broker  # noqa: F401
from kwtestutil import KNEEWRAPCTL
from test_ble_helpers import COLD, HEAT, addr, press, wrap_id

SRCDIR = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


class Signals:
    """dbus-monitor on the private bus, for org.kneewrap1.Manager's signals."""

    def __init__(self, bus_address, path):
        self.path = path
        self.f = open(path, 'w')
        self.p = subprocess.Popen(['dbus-monitor', '--address', bus_address,
                                   "type='signal',interface='org.kneewrap1.Manager'"],
                                  stdout=self.f, stderr=subprocess.STDOUT)

    def text(self):
        self.f.flush()
        with open(self.path) as f:
            return f.read()

    def close(self):
        self.p.terminate()
        self.p.wait(5)
        self.f.close()


def wait(cond, timeout=20):
    end = time.monotonic() + timeout
    while not cond():
        assert time.monotonic() < end, f'timed out waiting for {cond}'
        time.sleep(0.05)


def test_clinic_end_to_end(fast_bus, gw, broker, tmp_path):  # noqa: F811
    a = addr(7)
    w = wrap_id(a)
    fast_bus.mock.AddWrap(a)
    col = Collector(broker, topics=('kneewrap/#', 'homeassistant/#'))
    signals = Signals(fast_bus.address, str(tmp_path / 'signals.log'))
    # Acknowledging alerts over MQTT is a clinic's call: allowed here on purpose.
    g = gw(allow=[a], extra=f'\n[mqtt]\nhost = 127.0.0.1\nport = {broker.port}\nkeepalive = 10\n'
                              'commands = sessions diary runs injury alerts\n')
    conn = dbus.bus.BusConnection(fast_bus.address)
    set_t, resp = f'kneewrap/{w}/set', f'kneewrap/{w}/response'
    try:
        g.wait_connected(a)
        api = dbus.Interface(conn.get_object('org.kneewrap1', '/org/kneewrap1', introspect=False),
                             'org.kneewrap1.Manager')

        # ---- the patient profile: kneewrapctl, over D-Bus, and the Home Assistant device name.
        out = g.ctl('profile', w, '--label', 'Patient 12', '--knee', 'left', '--clinic-ref', 'PT-2026-12').stdout
        assert 'Patient 12' in out and 'left' in out
        col.wait(lambda: any(json.loads(p or b'{}').get('device', {}).get('name') == 'Patient 12'
                             for p, _ in col.on(f'homeassistant/button/{w}/ran/config')), timeout=15)
        prof = json.loads(g.ctl('profile', w, '--json').stdout)
        assert prof == {'wrap': w, 'label': 'Patient 12', 'knee': 'left', 'clinic_ref': 'PT-2026-12',
                        'set_at': prof['set_at']}
        assert 'left or right' in g.ctl('profile', w, '--knee', 'both', check=False).stderr
        # Only the knee changes; the rest stays.
        g.ctl('profile', w, '--knee', 'right')
        assert json.loads(g.ctl('profile', w, '--json').stdout)['label'] == 'Patient 12'
        assert 'Patient 12, knee: right' in g.ctl('wraps').stdout

        # ---- run 1 from the CLI; a full cold session follows it.
        out = g.ctl('run', w, '--minutes', '40', '--km', '8.2').stdout
        assert 'run 1 recorded' in out
        assert 'at most 1440' not in out
        assert 'from 1 to 1440' in g.ctl('run', w, '--minutes', '5000', check=False).stderr
        press(fast_bus, a, COLD)
        [done] = g.wait_session(a, 'completed', timeout=30)

        # ---- run 2 from MQTT (the "I just ran" button's payload); cold is refused by R6.
        r = ask(col, set_t, {'run': {}, 'transaction': 'r2'}, resp)
        assert r['status'] == 'ok' and r['data']['id'] == 2 and r['transaction'] == 'r2'
        r = ask(col, set_t, {'run': {'km': -1}}, resp)
        assert r['status'] == 'error' and 'km' in r['error']
        press(fast_bus, a, COLD)
        [refused] = g.wait_session(a, 'refused')
        assert refused['refusal']['reason'] == 'rest_interval'

        runs = json.loads(g.ctl('runs', w, '--json').stdout)
        assert [x['id'] for x in runs] == [1, 2]
        assert runs[0]['followed'] is True and runs[0]['followed_by'] == done['session_id']
        assert runs[0]['minutes'] == 40 and runs[0]['km'] == 8.2 and runs[0]['source'] == 'cli'
        assert runs[1]['followed'] is False and runs[1]['source'] == 'mqtt'
        assert runs[1]['cold_press']['session_id'] == refused['session_id']
        assert runs[1]['cold_press']['refusal'] == 'rest_interval'
        text = g.ctl('runs', w).stdout
        assert 'NOT followed: cold refused (rest_interval' in text

        # ---- one compliance: the CLI, D-Bus and MQTT agree.
        cli = json.loads(g.ctl('compliance', w, '--json').stdout)
        assert cli['runs'] == 2 and cli['runs_followed'] == 1 and cli['cold_completed'] == 1
        assert cli['cold_refused'] == 1 and cli['days_with_cold'] == 1
        bus = api.GetCompliance(w, '', '')
        for k in ('runs', 'runs_followed', 'cold_completed', 'cold_refused', 'days_with_cold', 'minutes'):
            assert int(bus[k]) == cli[k], k
        col.wait(lambda: (col.last_json(f'kneewrap/{w}/compliance') or {}).get('last_7_days', {}).get('runs') == 2,
                 timeout=15)
        m7 = col.last_json(f'kneewrap/{w}/compliance')['last_7_days']
        for k in ('runs', 'runs_followed', 'cold_completed', 'cold_refused', 'days_with_cold', 'minutes'):
            assert m7[k] == cli[k], k

        # ---- alerts: heat in the first week after an injury, a low battery before a session.
        g.ctl('injury', w, time.strftime('%Y-%m-%d'))
        fast_bus.mock.SetBattery(a, 9)
        col.wait(lambda: (col.last_json(f'kneewrap/{w}/state') or {}).get('battery') == 9)
        press(fast_bus, a, HEAT)
        heat_refused = g.wait_session(a, 'refused', n=2)[-1]
        alerts = []

        def two_alerts():
            alerts[:] = json.loads(g.ctl('alerts', w, '--json').stdout)
            return len(alerts) == 2
        wait(two_alerts)
        kinds = {x['kind']: x for x in alerts}
        assert set(kinds) == {'heat_first_week', 'low_battery'}
        heat = kinds['heat_first_week']
        assert heat['acked_at'] is None and 'days after the injury' in heat['text']
        assert '9 %' in kinds['low_battery']['text']
        # Both were raised at that heat request: each names its session.
        assert heat['session_id'] == kinds['low_battery']['session_id'] == heat_refused['session_id']

        # MQTT: each alert once, with its id and the event_type Home Assistant's event entity fires.
        col.wait(lambda: len(col.json_on(f'kneewrap/{w}/alert')) >= 2)
        msgs = col.json_on(f'kneewrap/{w}/alert')
        assert {m['event_type'] for m in msgs} == {'heat_first_week', 'low_battery'}
        assert {m['id'] for m in msgs} == {x['id'] for x in alerts}
        assert {m['session_id'] for m in msgs} == {heat_refused['session_id']}
        # The latest is retained: a Home Assistant that connects later still gets it.
        late = Collector(broker, topics=(f'kneewrap/{w}/alert',))
        late.wait(lambda: late.on(f'kneewrap/{w}/alert'))
        payload, retained = late.on(f'kneewrap/{w}/alert')[0]
        assert retained and json.loads(payload)['id'] == max(x['id'] for x in alerts)
        late.close()
        # D-Bus: AlertRaised for each.
        wait(lambda: signals.text().count('member=AlertRaised') >= 2)
        assert 'heat_first_week' in signals.text()

        # Acknowledged from the CLI (over D-Bus): gone from the open list, told everywhere.
        out = g.ctl('alerts', '--ack', str(heat['id'])).stdout
        assert 'acknowledged' in out
        assert 'acknowledged before' in g.ctl('alerts', '--ack', str(heat['id']), check=False).stderr
        assert 'no alert has the id 999' in g.ctl('alerts', '--ack', '999', check=False).stderr
        open_now = json.loads(g.ctl('alerts', w, '--json').stdout)
        assert [x['kind'] for x in open_now] == ['low_battery']
        every = json.loads(g.ctl('alerts', w, '--all', '--json').stdout)
        assert [x['acked_at'] is not None for x in every] == [True, False] or \
            [x['acked_at'] is not None for x in every] == [False, True]
        col.wait(lambda: any(m['event_type'] == 'acknowledged' and m['id'] == heat['id']
                             for m in col.json_on(f'kneewrap/{w}/alert')))
        wait(lambda: 'member=AlertAcknowledged' in signals.text())
        # MQTT acknowledges too.
        low = kinds['low_battery']
        r = ask(col, set_t, {'ack_alert': low['id']}, resp)
        assert r['status'] == 'ok', r
        assert json.loads(g.ctl('alerts', w, '--json').stdout) == []

        # ---- the read commands.
        inj = json.loads(g.ctl('injuries', w, '--json').stdout)
        assert len(inj) == 1 and inj[0]['date'] == time.strftime('%Y-%m-%d') and inj[0]['resolved_at'] is None
        g.ctl('diary', w, '6', '--where', 'inner')
        g.ctl('diary', w, '4', '--flags', 'swelling')
        diary = json.loads(g.ctl('diary', w, '--json').stdout)
        assert [d['score'] for d in diary] == [6, 4] and diary[1]['flags'] == ['swelling']
        rx = json.loads(g.ctl('prescription', w, '--json').stdout)
        assert rx['prescribed_by_clinic'] is False and rx['cold_s'] == 900
        # A clinic changes the prescription through the running daemon (kneewrapctl over D-Bus, as
        # root): the change goes into the history, which every report but FHIR carries.
        g.ctl('prescribe', w, '--cold-minutes', '12')
        rx = json.loads(g.ctl('prescription', w, '--json').stdout)
        assert rx['prescribed_by_clinic'] is True and rx['cold_s'] == 720

        # ---- reports.
        csv_path = tmp_path / 'runs.csv'
        g.ctl('report', w, '--format', 'csv', '--what', 'runs', '-o', str(csv_path))
        raw = csv_path.read_bytes()
        assert raw.endswith(b'\r\n') and b'\n' not in raw.replace(b'\r\n', b'')
        rows = list(csv.DictReader(io.StringIO(raw.decode(), newline='')))
        assert [r['followed'] for r in rows] == ['true', 'false']
        assert rows[1]['cold_press_refusal'] == 'rest_interval' and rows[0]['km'] == '8.200'
        sessions_csv = g.ctl('report', w, '--format', 'csv').stdout
        rows = list(csv.DictReader(io.StringIO(sessions_csv, newline='')))
        assert {r['session_id'] for r in rows} >= {done['session_id'], refused['session_id']}
        alerts_csv = list(csv.DictReader(io.StringIO(g.ctl('report', w, '--format', 'csv', '--what', 'alerts').stdout,
                                                     newline='')))
        assert len(alerts_csv) == 2 and all(r['acked_at'] for r in alerts_csv)
        assert {r['session_id'] for r in alerts_csv} == {heat_refused['session_id']}
        history_csv = list(csv.DictReader(io.StringIO(g.ctl('report', w, '--format', 'csv', '--what', 'history').stdout,
                                                      newline='')))
        assert [(r['what'], r['source'], r['uid']) for r in history_csv] == \
            [('injury', 'dbus', str(os.getuid())), ('prescription', 'dbus', str(os.getuid()))]
        assert all(r['wrap'] == w and r['at'] for r in history_csv) and 'cold_s=720 ' in history_csv[1]['detail']

        doc = json.loads(g.ctl('report', w, '--format', 'json').stdout)
        assert doc['patient']['label'] == 'Patient 12' and doc['patient']['knee'] == 'right'
        assert doc['compliance']['runs_followed'] == 1 and doc['compliance']['heat_refused_first_week'] == 1
        assert len(doc['runs']) == 2 and len(doc['diary']) == 2 and len(doc['injuries']) == 1
        assert len(doc['alerts']) == 2 and doc['prescription']['cold_s'] == 720
        assert doc['prescription']['prescribed_by_clinic'] is True
        # The history as kneewrapctl history shows it, the same records in the report.
        assert doc['history'] == json.loads(g.ctl('history', w, '--json').stdout)
        assert [(h['what'], h['source'], h['uid']) for h in doc['history']] == \
            [('injury', 'dbus', os.getuid()), ('prescription', 'dbus', os.getuid())]
        assert doc['period']['since'] < doc['period']['until']

        bundle = json.loads(g.ctl('report', w, '--format', 'fhir').stdout)
        check_fhir(bundle)
        types = [e['resource']['resourceType'] for e in bundle['entry']]
        assert types.count('Patient') == 1 and types.count('Device') == 1
        assert types.count('Procedure') == len(doc['sessions']) and types.count('Observation') == 2 + len(runs)
        # The runs: an exercise Observation each, with the minutes and km logged for run 1.
        ran = [e['resource'] for e in bundle['entry'] if e['resource']['resourceType'] == 'Observation'
               and e['resource']['code']['coding'][0]['code'] == '73985-4']
        assert sorted(o['identifier'][0]['value'] for o in ran) == [f'{w}/run/1', f'{w}/run/2']
        run1 = next(o for o in ran if o['identifier'][0]['value'] == f'{w}/run/1')
        assert [c['valueQuantity']['value'] for c in run1['component']] == [40, 8.2]
        assert types.count('Flag') == 0        # both alerts were acknowledged
        dev = next(e['resource'] for e in bundle['entry'] if e['resource']['resourceType'] == 'Device')
        assert dev['identifier'][0]['value'] == w and dev['manufacturer'] and dev['modelNumber'] and dev['version']
        assert dev['serialNumber'] == doc['wrap']['serial'] and doc['wrap']['model'] == dev['modelNumber']
        procs = {e['resource']['identifier'][0]['value']: e['resource'] for e in bundle['entry']
                 if e['resource']['resourceType'] == 'Procedure'}
        assert procs[done['session_id']]['status'] == 'completed'
        assert procs[refused['session_id']]['status'] == 'not-done'
        assert procs[refused['session_id']]['bodySite'][0]['text'] == 'Right knee'

        html = tmp_path / 'report.html'
        g.ctl('report', w, '--format', 'html', '-o', str(html))
        page = html.read_text()
        assert 'http://' not in page.replace('http://www.w3.org/', '') and 'https://' not in page
        assert '<script' not in page
        dom = dump_dom(html)
        for el in ('id="chart-cold"', 'id="chart-runs"', 'id="chart-pain"', 'id="chart-alerts"', 'id="compliance"'):
            assert el in dom, el
        assert 'class="bar ok"' in dom and 'class="rx"' in dom                     # cold minutes, prescription
        assert 'class="run followed"' in dom and 'class="run missed"' in dom      # runs, followed or not
        assert 'class="pain"' in dom and 'class="injury"' in dom                  # pain trend, the injury
        assert dom.count('class="alert ') == 2                                    # alerts on the timeline
        assert 'Patient 12' in dom
        assert 'Changes (injury, prescription, adoption)' in dom
        hist = dom[dom.index('id="history"'):]
        hist = hist[:hist.index('</table>')]
        assert hist.count('<tr>') == 3 and '>prescription: ' in hist and f'uid {os.getuid()}' in hist
        png = tmp_path / 'report.png'
        width, height = screenshot(html, png)
        assert width == 1000 and height > 1000 and os.path.getsize(png) > 20000
        pages = print_pdf(html, tmp_path / 'report.pdf')
        assert pages and all(abs(w_ - 595.3) < 2 and abs(h_ - 841.9) < 2 for w_, h_ in pages), pages
    finally:
        signals.close()
        col.close()


def test_three_weeks_of_history(tmp_path):
    """A runner's three weeks (kw-store-seed history) read back by kneewrapctl from the store
    alone: every report format, and the page as a clinic sees it (the screenshot in docs/ is
    this test's, with KW_SCREENSHOT_OUT=docs/clinic-report.png)."""
    db = str(tmp_path / 'kneewrap.db')
    w = 'wrap_aabbcc001122'
    env = dict(os.environ, TZ='Europe/Berlin')
    subprocess.run([SEED, db, 'history', 'AA:BB:CC:00:11:22', str(int(time.time()))], check=True, env=env)

    def ctl(*args):
        p = subprocess.run([KNEEWRAPCTL, '--db', db, *args], capture_output=True, text=True, env=env, timeout=30)
        assert p.returncode == 0, p.stderr
        return p.stdout

    comp = json.loads(ctl('compliance', w, '--days', '21', '--json'))
    assert comp == {**comp, 'runs': 18, 'runs_followed': 15, 'cold_completed': 16, 'cold_incomplete': 1,
                    'cold_refused': 1, 'heat_refused_first_week': 1, 'days_with_cold': 16}
    doc = json.loads(ctl('report', w, '--days', '21', '--format', 'json'))
    assert doc['compliance'] == {k: v for k, v in comp.items() if k not in ('wrap', 'since', 'until')}
    missed = [r for r in doc['runs'] if not r['followed']]
    assert [r['cold_press'] and r['cold_press']['refusal'] for r in missed] == [None, 'rest_interval', None]
    assert missed[2]['cold_press']['outcome'] == 'stopped_by_user'

    bundle = json.loads(ctl('report', w, '--days', '21', '--format', 'fhir'))
    check_fhir(bundle)
    kinds = [e['resource']['resourceType'] for e in bundle['entry']]
    assert kinds.count('Procedure') == len(doc['sessions'])
    assert kinds.count('Flag') == 1    # the low battery alert is still open
    flag = next(e['resource'] for e in bundle['entry'] if e['resource']['resourceType'] == 'Flag')
    assert flag['status'] == 'active' and flag['identifier'][0]['value'].startswith(w + '/alert/')
    # The alert names the session it was raised at (R4's flag-detail extension, a logical
    # reference to that session's Procedure, which is in the bundle).
    [detail] = flag['extension']
    assert detail['url'] == 'http://hl7.org/fhir/StructureDefinition/flag-detail'
    sid = detail['valueReference']['identifier']['value']
    assert any(e['resource']['resourceType'] == 'Procedure' and e['resource']['identifier'][0]['value'] == sid
               for e in bundle['entry'])
    assert kinds.count('Observation') == len(doc['diary']) + len(doc['runs'])

    rows = list(csv.reader(io.StringIO(ctl('report', w, '--days', '21', '--format', 'csv'), newline='')))
    assert rows[0][:4] == ['session_id', 'wrap', 'mode', 'source'] and len(rows) == 1 + len(doc['sessions'])
    assert all(len(r) == len(rows[0]) for r in rows)

    html = tmp_path / 'report.html'
    ctl('report', w, '--days', '21', '--format', 'html', '-o', str(html))
    dom = dump_dom(html)
    assert dom.count('class="bar ') == 16 + 1          # 16 days with a full cold session, 1 with a short one only
    assert dom.count('class="run followed"') == 15 and dom.count('class="run missed"') == 3
    assert dom.count('class="pain-point') == len(doc['diary'])
    png = tmp_path / 'report.png'
    screenshot(html, png, 900, 2300)
    if os.environ.get('KW_SCREENSHOT_OUT'):
        os.replace(png, os.environ['KW_SCREENSHOT_OUT'])
