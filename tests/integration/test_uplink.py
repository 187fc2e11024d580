# test_uplink: kneewrap-uplink against a real FHIR engine on loopback (Medplum's FHIR router
# over its in-memory repository, from npm, behind HTTPS with a test CA and an OAuth 2 token
# endpoint). Every fault ends with each record on the server exactly once, checked by
# searching the server for each session_id.
import json
import os
import re
import shutil
import signal
import subprocess
import time

import pytest

from kwmqtt import Collector, broker, mqtt_config  # noqa: F401
from fhirserver import CLIENT_SECRET, SESSION_SYSTEM, UPLINK, FhirServer, Gateway
from kwtestutil import BUILDDIR, SRCDIR, Notify, daemon_running, private_bus, wait_for, write_config  # noqa: F401

WRAP_ADDR = 'AA:BB:CC:00:11:22'
WRAP = 'wrap_aabbcc001122'
T0 = 1764000000
KNEEWRAPCTL = os.environ.get('KNEEWRAPCTL', os.path.join(BUILDDIR, 'kneewrapctl'))


@pytest.fixture(scope='module')
def engine(tmp_path_factory):
    s = FhirServer(tmp_path_factory.mktemp('fhir'))
    yield s
    s.close()


@pytest.fixture
def server(engine):
    engine.reset()
    return engine


@pytest.fixture
def gw(tmp_path, server):
    made = []

    def make(**kw):
        d = tmp_path / f'gw{len(made)}'
        d.mkdir()
        g = Gateway(d, server, **kw)
        g.seed('wrap', WRAP_ADDR, 'Wrap 1', T0)
        made.append(g)
        return g
    yield make
    for g in made:
        g.stop()


def assert_once(server, ids):
    """Each session_id is on the server exactly once: searched by identifier one by one, and
    in a paged listing of every Procedure (the engine's own full scan, no index)."""
    counts = {i: server.count_identifier('Procedure', SESSION_SYSTEM, i) for i in ids}
    wrong = {i: n for i, n in counts.items() if n != 1}
    assert not wrong, f'{len(wrong)} of {len(ids)} not exactly once: {list(wrong.items())[:5]}'
    values = server.all_identifiers('Procedure', SESSION_SYSTEM)
    assert sorted(values) == sorted(ids)
    assert len(server.search('Patient')) == 1
    assert len(server.search('Device')) == 1


def test_engine_applies_ifnoneexist_in_transactions(server):
    """The engine itself: a transaction POSTed twice with ifNoneExist makes one resource (the
    second answers 200 with the first one's location); the same POST without it makes two."""
    def bundle(if_none_exist):
        req = {'method': 'POST', 'url': 'Procedure'}
        if if_none_exist:
            req['ifNoneExist'] = f'identifier={SESSION_SYSTEM}|proof-1'
        return {'resourceType': 'Bundle', 'type': 'transaction', 'entry': [{
            'fullUrl': 'urn:uuid:0b6e2f8a-3c39-4a55-9d7f-5d1a3a2f0001',
            'resource': {'resourceType': 'Procedure', 'status': 'completed', 'subject': {'display': 'P'},
                         'identifier': [{'system': SESSION_SYSTEM, 'value': 'proof-1' if if_none_exist else 'plain'}]},
            'request': req}]}
    first = server.fhir('POST', '', bundle(True))
    second = server.fhir('POST', '', bundle(True))
    assert first[0] == 200 and second[0] == 200
    r1, r2 = first[1]['entry'][0]['response'], second[1]['entry'][0]['response']
    assert r1['status'].startswith('201') and r2['status'].startswith('200')
    assert r1['location'].split('/_history')[0] == r2['location'].split('/_history')[0]
    assert server.count_identifier('Procedure', SESSION_SYSTEM, 'proof-1') == 1
    server.fhir('POST', '', bundle(False))
    server.fhir('POST', '', bundle(False))
    assert server.count_identifier('Procedure', SESSION_SYSTEM, 'plain') == 2


def test_delivers_follows_and_corrects(gw, server):
    # By the server's name, with [server] address: no DNS (the name resolves nowhere), and the
    # certificate is still checked against the name.
    g = gw(by_name=True)
    ids = g.seed('sessions', WRAP, 12, T0)
    g.seed('diary', WRAP, T0 + 3000, 4)
    g.start()
    g.wait_delivered(60)
    assert_once(server, ids)
    assert len(server.search('Observation')) == 1
    # References inside a Bundle resolved to the one Patient and Device on the server.
    patient = server.search('Patient')[0]
    device = server.search('Device')[0]
    for p in server.search('Procedure', _count=100):
        assert p['subject']['reference'] == f'Patient/{patient["id"]}'
        assert p['focalDevice'][0]['manipulated']['reference'] == f'Device/{device["id"]}'

    # New records are followed without a restart (inotify on the store's directory).
    more = g.seed('sessions', WRAP, 3, T0 + 100 * 86400)
    g.wait_delivered(30)
    assert_once(server, ids + more)

    # A corrected record updates its resource (conditional update), still once.
    g.seed('correct', ids[0], 700)
    g.wait_delivered(30)
    procs = server.search('Procedure', identifier=f'{SESSION_SYSTEM}|{ids[0]}')
    assert len(procs) == 1
    assert procs[0]['performedPeriod']['end'] == time.strftime('%Y-%m-%dT%H:%M:%S+00:00', time.gmtime(T0 + 1 + 700))
    assert procs[0]['meta']['versionId'] != procs[0]['id']
    g.stop()
    # The client secret and the tokens never reach the log.
    assert CLIENT_SECRET not in g.logtext()


def test_server_down_for_200_records(gw, server):
    g = gw(retry_max=1)
    server.faults(down=True)
    ids = g.seed('sessions', WRAP, 200, T0)
    g.start()
    wait_for(lambda: (g.state_row() or {}).get('last_error'), 30, 0.1)
    assert 'onnect' in g.state_row()['last_error']     # "Couldn't connect to server"
    assert g.pending() == 201
    server.faults(down=False)
    g.wait_delivered(120)
    assert_once(server, ids)


def test_500s_and_retry_after(gw, server):
    g = gw(retry_max=1)
    ids = g.seed('sessions', WRAP, 20, T0)
    server.faults(status=500, count=3)
    g.start()
    wait_for(lambda: server.stats()['faulted'] == 3, 30, 0.05)
    g.wait_delivered(60)
    assert_once(server, ids)

    # 503 with Retry-After: 2: the next request waits at least that long, though retry_max is 1 s.
    server.faults(status=503, count=1, retry_after=2)
    more = g.seed('sessions', WRAP, 4, T0 + 100 * 86400)
    wait_for(lambda: server.stats()['faulted'] == 4, 30, 0.05)
    g.wait_delivered(60)
    st = server.stats()
    fault_at = st['fault_times'][-1]
    after = [t for t in st['request_times'] if t > fault_at]
    assert after and after[0] - fault_at >= 2000
    assert_once(server, ids + more)


def test_401_fetches_a_new_token_once_then_backs_off(gw, server):
    g = gw(retry_max=30)
    ids = g.seed('sessions', WRAP, 5, T0)
    g.start()
    g.wait_delivered(60)
    assert server.stats()['token_requests'] == 1

    # The server forgets every token: the next Bundle gets a 401, a fresh token, and goes.
    server.faults(revoke=True)
    more = g.seed('sessions', WRAP, 5, T0 + 100 * 86400)
    g.wait_delivered(60)
    st = server.stats()
    assert st['token_requests'] == 2 and st['unauthorized'] == 1
    assert_once(server, ids + more)

    # Tokens the server never accepts: one refresh per attempt, then a backoff, not a storm.
    server.faults(revoke=True, reject_tokens=True)
    g.seed('sessions', WRAP, 1, T0 + 200 * 86400)
    wait_for(lambda: server.stats()['unauthorized'] >= 3, 30, 0.05)
    time.sleep(3)
    st = server.stats()
    attempts = (st['unauthorized'] - 1) // 2
    assert 1 <= attempts <= 4                          # backoff 1, 2, 4 s: not a storm
    assert st['token_requests'] - 2 in (attempts, attempts + 1)   # one fresh token per attempt
    assert '401' in g.state_row()['last_error']
    g.stop()
    assert CLIENT_SECRET not in g.logtext()


def test_bearer_token_file_rotated(gw, server, tmp_path):
    """A bearer token from a file: a 401 reads the file again once (a rotated token goes at once)."""
    token = tmp_path / 'uplink-token'
    token.write_text('first-token-5d1c\n')
    server.faults(accept_token='first-token-5d1c')
    g = gw(oauth=False, token_file=str(token), retry_max=30)
    ids = g.seed('sessions', WRAP, 3, T0)
    g.start()
    g.wait_delivered(60)
    server.faults(revoke=True, accept_token='second-token-77ab')
    token.write_text('second-token-77ab\n')
    more = g.seed('sessions', WRAP, 3, T0 + 100 * 86400)
    g.wait_delivered(60)
    assert server.stats()['unauthorized'] == 1
    assert_once(server, ids + more)
    g.stop()
    assert 'token-' not in g.logtext()


def test_slow_server_past_the_timeout(gw, server):
    """The server applies each Bundle but answers after the uplink gave up: the retry finds
    every resource there (ifNoneExist) and makes no second one."""
    g = gw(timeout=1, retry_max=1)
    ids = g.seed('sessions', WRAP, 15, T0)
    server.faults(delay_ms=2500, count=2)
    g.start()
    g.wait_delivered(90)
    assert 'Timeout was reached' in g.logtext()
    assert_once(server, ids)


def test_sigkill_between_send_and_cursor(gw, server):
    g = gw()
    ids = g.seed('sessions', WRAP, 20, T0)
    server.faults(hold=True)
    g.start()
    # The server applied the first Bundle; its answer is held: the cursor has not moved.
    wait_for(lambda: server.stats()['held'] >= 1, 30, 0.05)
    assert (g.state_row() or {'cursor': 0})['cursor'] == 0
    g.stop(signal.SIGKILL)
    server.release()
    g.start()
    g.wait_delivered(60)
    assert_once(server, ids)


def test_backlog_of_10000(tmp_path, server):
    """10 000 sessions seeded straight into a store (on tmpfs: the seeding is not under test),
    delivered by `kneewrap-uplink --once`, each exactly once."""
    shm = '/dev/shm' if os.path.isdir('/dev/shm') else str(tmp_path)
    import tempfile
    with tempfile.TemporaryDirectory(dir=shm) as d:
        g = Gateway(d, server)
        g.seed('wrap', WRAP_ADDR, 'Wrap 1', T0)
        ids = g.seed('sessions', WRAP, 10000, T0)
        t = time.monotonic()
        r = g.once(timeout=900)
        took = time.monotonic() - t
        assert r.returncode == 0, r.stderr
        assert g.pending() == 0
        print(f'10 000 records in {took:.1f} s ({10001 / took:.0f}/s)')
        assert len(ids) == 10000
        assert_once(server, ids)


def test_kneewrapctl_uplink(gw, server, tmp_path):
    g = gw()
    ids = g.seed('sessions', WRAP, 3, T0)
    conf = tmp_path / 'kneewrapd.conf'
    conf.write_text(f'[store]\npath = {g.db}\nuplink_state = {g.state}\n')

    def ctl(*a):
        r = subprocess.run([KNEEWRAPCTL, '--config', str(conf), 'uplink', *a], capture_output=True, text=True, timeout=10)
        assert r.returncode == 0, r.stderr
        return r.stdout
    out = json.loads(ctl('--json'))
    assert out == {'configured': False, 'pending': 4, 'last_success': None, 'last_error': None,
                   'last_error_at': None, 'sent': 0, 'rejected': 0}
    server.faults(status=500, count=1)
    r = g.once()
    assert r.returncode == 1
    out = json.loads(ctl('--json'))
    assert out['configured'] and out['pending'] == 4 and out['last_error'].startswith('HTTP 500')
    assert g.once().returncode == 0
    out = json.loads(ctl('--json'))
    assert out['pending'] == 0 and out['last_success'] and out['last_error'] is None and out['sent'] == 4
    assert 'Pending: 0' in ctl()
    assert_once(server, ids)


def test_tls_verified_against_the_ca(gw, server, tmp_path):
    """A server whose certificate the configured CA did not sign gets nothing."""
    g = gw()
    g.seed('sessions', WRAP, 2, T0)
    other = tmp_path / 'other'
    other.mkdir()
    from fhirserver import make_ca
    text = open(g.conf).read().replace(server.ca, make_ca(str(other)))
    open(g.conf, 'w').write(text)
    r = g.once()
    assert r.returncode == 1
    assert 'certificate' in g.state_row()['last_error'].lower() or 'SSL' in g.state_row()['last_error']
    assert server.stats()['transactions'] == 0


def test_config_errors(tmp_path):
    conf = tmp_path / 'uplink.conf'
    conf.write_text('[server]\nurl = http://fhir.example/r4\ntimeout = 0\naddress = fhir.example\n'
                    '[uplink]\nbatch = 2\nnope = 1\n')
    r = subprocess.run([UPLINK, '--check-config', '-c', str(conf)], capture_output=True, text=True, timeout=10)
    assert r.returncode == 1
    for line in (f'{conf}:2: [server] url: must be an https:// URL',
                 f'{conf}:3: [server] timeout: must be a whole number from 1 to 120',
                 f'{conf}:4: [server] address: not an IPv4 or IPv6 address',
                 f'{conf}:6: [uplink] batch: must be a whole number from 3 to 1000',
                 f'{conf}:7: [uplink] nope: unknown key',
                 '[server] url: not set'):
        assert line in r.stderr, r.stderr
    example = os.path.join(SRCDIR, 'conf', 'uplink.conf.example')
    text = open(example).read().replace('#url = ', 'url = ')
    conf.write_text(text)
    r = subprocess.run([UPLINK, '--check-config', '-c', str(conf)], capture_output=True, text=True, timeout=10)
    assert r.returncode == 0, r.stderr


@pytest.mark.skipif(not shutil.which('systemd-analyze'), reason='no systemd-analyze')
def test_unit_verify_and_score(tmp_path):
    text = open(os.path.join(BUILDDIR, 'systemd', 'kneewrap-uplink.service')).read()
    text = re.sub(r'^ExecStart=\S+', f'ExecStart={os.path.abspath(UPLINK)}', text, flags=re.M)
    unit = tmp_path / 'kneewrap-uplink.service'
    unit.write_text(text)
    r = subprocess.run(['systemd-analyze', 'verify', '--man=no', str(unit)], capture_output=True, text=True, timeout=60)
    assert r.returncode == 0 and r.stderr.strip() == '', r.stderr
    r = subprocess.run(['systemd-analyze', 'security', '--offline=true', '--no-pager', str(unit)],
                       capture_output=True, text=True, timeout=60)
    m = re.search(r'Overall exposure level for kneewrap-uplink\.service: (\d+\.\d+)', r.stdout)
    assert m, r.stdout + r.stderr
    print(f'systemd-analyze security: {m.group(1)}')
    assert float(m.group(1)) <= 1.5
    for line in ('User=kneewrap-uplink', 'SupplementaryGroups=kneewrap', 'ReadOnlyPaths=/var/lib/kneewrap',
                 'IPAddressDeny=any', 'RestrictAddressFamilies=AF_UNIX AF_INET AF_INET6',
                 'LoadCredential=uplink-token:', 'LoadCredential=uplink-client-secret:', 'ProtectSystem=strict'):
        assert line in text, line


def test_daemon_status_shows_the_uplink(gw, server, tmp_path, private_bus):
    """kneewrapd's STATUS= carries the uplink's figures, and follows the uplink's writes."""
    g = gw()
    g.seed('sessions', WRAP, 3, T0)
    server.faults(status=500, count=1)
    assert g.once().returncode == 1
    conf = write_config(tmp_path, store=g.db, extra=f'uplink_state = {g.state}\n')
    with daemon_running(tmp_path, conf, private_bus) as (d, notify):
        notify.wait_for('READY=1', timeout=10)
        status = notify.last_status()
        print(f'STATUS={status}')
        assert 'clinic uplink failing (HTTP 500' in status and '4 pending' in status
        assert g.once().returncode == 0
        wait_for(lambda: 'clinic uplink: 0 pending' in notify.last_status(), 10, 0.05)
        print(f'STATUS={notify.last_status()}')
        # A record the server refuses for good is said too, until it is delivered.
        [sid] = g.seed('sessions', WRAP, 1, T0 + 100 * 86400)
        duplicate(server, sid)
        assert g.once().returncode == 0
        wait_for(lambda: '1 record refused by the clinic' in notify.last_status(), 10, 0.05)
        print(f'STATUS={notify.last_status()}')


def test_bridge_health_shows_the_uplink(gw, server, tmp_path, private_bus, broker):  # noqa: F811
    g = gw()
    g.seed('sessions', WRAP, 2, T0)
    server.faults(status=503, count=1)
    assert g.once().returncode == 1
    conf = write_config(tmp_path, store=g.db, extra=f'uplink_state = {g.state}\n' + mqtt_config(broker))
    col = Collector(broker, topics=('kneewrap/bridge/health',))
    try:
        with daemon_running(tmp_path, conf, private_bus) as (d, notify):
            notify.wait_for('READY=1', timeout=10)
            col.wait(lambda: col.json_on('kneewrap/bridge/health'), timeout=30)
            u = col.json_on('kneewrap/bridge/health')[-1]['uplink']
            assert u['pending'] == 3 and u['last_success'] is None and u['last_error'].startswith('HTTP 503')
            assert u['rejected'] == 0
            assert g.once().returncode == 0
            col.clear()
            col.publish('homeassistant/status', 'online')   # health is sent again at once
            col.wait(lambda: col.json_on('kneewrap/bridge/health'), timeout=30)
            u = col.json_on('kneewrap/bridge/health')[-1]['uplink']
            assert u['pending'] == 0 and u['last_success'] and u['last_error'] is None
    finally:
        col.close()


def test_every_kind_of_record(server, tmp_path):
    """Three weeks of one knee (issue 10's history: profile, Device Information, sessions,
    diary, alerts raised and acknowledged) reach the engine, every resource once, and the
    engine accepts every one of them."""
    d = tmp_path / 'hist'
    d.mkdir()
    g = Gateway(d, server)
    g.seed('history', WRAP_ADDR, int(time.time()))
    r = g.once()
    assert r.returncode == 0, r.stderr
    counts = {k: Gateway._read(g.db, sql)[0] for k, sql in {
        'Procedure': "SELECT count(*) FROM sessions WHERE outcome <> 'open'",
        'Observation': 'SELECT (SELECT count(*) FROM diary) + (SELECT count(*) FROM runs)',
        'Flag': 'SELECT count(*) FROM alerts'}.items()}
    runs = Gateway._read(g.db, 'SELECT count(*) FROM runs')[0]
    assert counts['Flag'] >= 2 and counts['Observation'] > runs > 0
    for rtype, n in counts.items():
        assert len(server.search(rtype, _count=1000)) == n, rtype
    # Runs: an exercise Observation each (LOINC 73985-4), found by their identifier, with the
    # minutes (55411-3) and the distance when they were logged.
    ran = [o for o in server.search('Observation', _count=1000) if o['code']['coding'][0]['code'] == '73985-4']
    assert len(ran) == runs
    assert all(o['identifier'][0]['system'] == 'urn:kneewrap:run' for o in ran)
    first = Gateway._read(g.db, 'SELECT id, minutes FROM runs ORDER BY id LIMIT 1')
    [o] = server.search('Observation', identifier=f'urn:kneewrap:run|{WRAP}/run/{first[0]}')
    assert o['component'][0]['code']['coding'][0]['code'] == '55411-3'
    assert o['component'][0]['valueQuantity']['value'] == first[1]
    patients = server.search('Patient')
    assert len(patients) == 1 and len(server.search('Device')) == 1
    # The clinic's reference rides as a second identifier: how the clinic finds its patient.
    assert any(i.get('value') == 'PT-2026-12' for i in patients[0]['identifier'])
    flags = server.search('Flag', _count=100)
    assert {f['status'] for f in flags} == {'active', 'inactive'}   # one was acknowledged


def rejected(g, *extra):
    r = subprocess.run([UPLINK, '--config', g.conf, '--rejected', '--json', *extra], capture_output=True, text=True,
                       timeout=30)
    assert r.returncode == 0, r.stderr
    return json.loads(r.stdout)


def duplicate(server, value):
    """The clinic's server holds two Procedures with one session_id (a bad import, say): a
    conditional create or update on that identifier is refused for good, 412 or 400, as
    http.html says for criteria that match several resources."""
    made = []
    for _ in range(2):
        status, res = server.fhir('POST', 'Procedure', {
            'resourceType': 'Procedure', 'status': 'completed', 'subject': {'display': 'imported'},
            'identifier': [{'system': SESSION_SYSTEM, 'value': value}]})
        assert status == 201, res
        made.append(res['id'])
    return made


def test_refused_record_does_not_block_the_queue(gw, server):
    """A record the server refuses for good (412: its ifNoneExist matches two resources) is
    found in its Bundle (the engine does not say which entry), kept with the server's
    OperationOutcome, and the queue moves on: every other record arrives exactly once. Once
    the clinic fixed its server, --retry-rejected and a reload deliver it, once."""
    g = gw()
    ids = g.seed('sessions', WRAP, 12, T0)
    bad = ids[3]
    dups = duplicate(server, bad)
    g.start()
    g.wait_delivered(60)
    others = [i for i in ids if i != bad]
    counts = {i: server.count_identifier('Procedure', SESSION_SYSTEM, i) for i in others}
    assert set(counts.values()) == {1}, counts
    assert server.count_identifier('Procedure', SESSION_SYSTEM, bad) == 2      # only the clinic's two

    [x] = rejected(g)
    assert (x['kind'], x['key'], x['http_status'], x['attempts']) == ('session', bad, 412, 1)
    assert x['delivered_at'] is None and x['retry'] is False
    assert x['operation_outcome']['resourceType'] == 'OperationOutcome'
    assert 'Multiple resources' in x['diagnostics']
    # What was sent is kept: the Procedure with its identifier, and the wrap's Patient and
    # Device when they rode in its Bundle.
    sent = [e['resource'] for e in x['payload']]
    assert any(r['resourceType'] == 'Procedure' and r['identifier'][0]['value'] == bad for r in sent)
    log = g.logtext()
    assert log.count(f'refused session {bad}') == 1 and 'one by one' in log
    out = subprocess.run([UPLINK, '--config', g.conf, '--rejected'], capture_output=True, text=True, timeout=30).stdout
    assert f'REFUSED   session {bad}' in out and 'HTTP 412' in out
    # Where the gateway's owner looks: kneewrapctl uplink (and so kneewrapd's STATUS= and bridge/health).
    conf = os.path.join(g.dir, 'kneewrapd.conf')
    with open(conf, 'w') as f:
        f.write(f'[store]\npath = {g.db}\nuplink_state = {g.state}\n')
    ctl = subprocess.run([KNEEWRAPCTL, '--config', conf, 'uplink', '--json'], capture_output=True, text=True, timeout=10)
    assert json.loads(ctl.stdout)['rejected'] == 1, ctl.stderr

    # Later records are not held behind it.
    more = g.seed('sessions', WRAP, 3, T0 + 100 * 86400)
    g.wait_delivered(30)
    assert all(server.count_identifier('Procedure', SESSION_SYSTEM, i) == 1 for i in more)

    # The clinic removes its duplicates; the refused record is sent again on request.
    for d in dups:
        assert server.fhir('DELETE', f'Procedure/{d}')[0] == 200
    r = subprocess.run([UPLINK, '--config', g.conf, '--retry-rejected'], capture_output=True, text=True, timeout=30)
    assert r.returncode == 0 and '1 refused records will be sent again' in r.stdout, r.stdout + r.stderr
    g.proc.send_signal(signal.SIGHUP)
    wait_for(lambda: rejected(g)[0]['delivered_at'] is not None, 30, 0.1)
    assert_once(server, ids + more)
    assert 'was delivered on retry' in g.logtext()


def test_refused_entry_named_by_the_server(gw, server):
    """A corrected record whose conditional update matches two resources: the engine answers
    400 and names the entry (Bundle.entry[n].request.url), so that record alone is kept
    aside, with no one-by-one search, and the rest of its Bundle goes through at once."""
    g = gw()
    ids = g.seed('sessions', WRAP, 4, T0)
    assert g.once().returncode == 0
    dups = duplicate(server, ids[1])
    g.seed('correct', ids[1], 700)
    more = g.seed('sessions', WRAP, 4, T0 + 100 * 86400)
    notify = Notify(g.dir)
    r = g.once(notify=notify)
    assert r.returncode == 0, r.stderr
    assert g.pending() == 0
    # The uplink's own STATUS= says it, and where to look.
    assert notify.last_status().endswith('; 1 refused by the server (kneewrap-uplink --rejected)'), notify.statuses()
    notify.close()
    [x] = rejected(g)
    assert (x['key'], x['http_status'], x['rev']) == (ids[1], 400, 2)
    assert 'matched multiple' in x['diagnostics']
    assert 'one by one' not in r.stderr
    assert all(server.count_identifier('Procedure', SESSION_SYSTEM, i) == 1 for i in ids[:1] + ids[2:] + more)
    # Still refused: a retry counts one more attempt, and the queue stays free.
    r = subprocess.run([UPLINK, '--config', g.conf, '--retry-rejected', '--once'], capture_output=True, text=True,
                       timeout=60)
    assert r.returncode == 0, r.stderr
    [x] = rejected(g)
    assert x['attempts'] == 2 and x['delivered_at'] is None and x['retry'] is False
    for d in dups:
        server.fhir('DELETE', f'Procedure/{d}')
    # The original (created before the duplicates) is all that is left: updated on retry.
    r = subprocess.run([UPLINK, '--config', g.conf, '--retry-rejected', '--once'], capture_output=True, text=True,
                       timeout=60)
    assert r.returncode == 0, r.stderr
    assert rejected(g)[0]['delivered_at'] is not None
    assert_once(server, ids + more)
    [p] = server.search('Procedure', identifier=f'{SESSION_SYSTEM}|{ids[1]}')
    assert p['performedPeriod']['end'] == time.strftime('%Y-%m-%dT%H:%M:%S+00:00', time.gmtime(T0 + 7200 + 1 + 700))


def test_which_answers_are_refusals(gw, server):
    """How each answer is taken (FHIR R4 http.html): a 404 or a 403 for the whole request, or
    a 409 twice, is the server's or the credentials' problem, retried until the record goes;
    a 422 with an OperationOutcome, or a 409 three times in a row, refuses that one record,
    which is kept aside while the queue goes on. (The injector answers each fault with an
    OperationOutcome naming no entry; each record here is alone in its Bundle.)"""
    g = gw(retry_max=1)
    first = g.seed('sessions', WRAP, 1, T0)
    g.start()
    g.wait_delivered(30)
    refused, faulted = [], 0
    for day, (status, count, is_refusal) in enumerate(((404, 1, False), (403, 1, False), (409, 2, False),
                                                       (409, 3, True), (422, 1, True)), start=1):
        server.faults(status=status, count=count)
        [sid] = g.seed('sessions', WRAP, 1, T0 + day * 86400)
        g.wait_delivered(60)
        faulted += count
        assert server.stats()['faulted'] == faulted, (status, server.stats())
        if is_refusal:
            refused.append((sid, status))
            assert server.count_identifier('Procedure', SESSION_SYSTEM, sid) == 0, status
        else:
            assert server.count_identifier('Procedure', SESSION_SYSTEM, sid) == 1, status
        assert [(x['key'], x['http_status']) for x in rejected(g)] == refused, status
    assert 'HTTP 403' in g.logtext() and 'refused session' in g.logtext()
    # Sent again on request: both go, once.
    subprocess.run([UPLINK, '--config', g.conf, '--retry-rejected'], check=True, capture_output=True, timeout=30)
    g.proc.send_signal(signal.SIGHUP)
    wait_for(lambda: all(x['delivered_at'] for x in rejected(g)), 30, 0.1)
    for sid, _ in refused:
        assert server.count_identifier('Procedure', SESSION_SYSTEM, sid) == 1
    assert server.count_identifier('Procedure', SESSION_SYSTEM, first[0]) == 1
