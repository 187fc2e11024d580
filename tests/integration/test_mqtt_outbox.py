# test_mqtt_outbox: no session record is lost: a broker that is down while sessions happen, a
# daemon killed with records not yet acknowledged, a broker that refuses the credentials.
# A real mosquitto, the mock BlueZ with simulated wraps, kneewrapd at KNEEWRAP_TIME_SCALE=100.
import re
import time

from kwmqtt import Broker, Collector, Gateway, broker  # noqa: F401
from kwtestutil import after_a_request, private_bus, wait_for  # noqa: F401

HEAT, STOP = 2, 3
A = 'AA:BB:CC:00:11:41'


def online(col):
    return col.last('kneewrap/bridge/state') == b'{"state":"online"}'


def first_seen(ids):
    out = []
    for i in ids:
        if i not in out:
            out.append(i)
    return out


def injured_today(col, gw):
    col.publish('kneewrap/bridge/request/injury', {'wrap': gw.wrap, 'injury': 'today', 'transaction': 'inj'})
    col.wait(lambda: col.on('kneewrap/bridge/response/injury'))
    assert col.last_json('kneewrap/bridge/response/injury') == {'status': 'ok', 'data': {}, 'transaction': 'inj'}


def test_broker_down_while_20_sessions_happen(tmp_path, fast_bus):
    b = Broker(tmp_path, persistent=True)
    col = Collector(b, topics=('kneewrap/#',), client_id='kw-test-collector', persistent=True)
    fast_bus.mock.AddWrap(A)
    gw = Gateway(tmp_path, fast_bus.address, b, seed=(), allow=(A,), scale=100)
    try:
        col.wait(lambda: online(col))
        gw.wait_log(f'{A}: connected, notifications on')

        b.stop()
        # Twenty sessions that really run while the broker is down: heat (no injury recorded, so
        # R3 allows it and no rest interval applies), each ended by the wrap's stop button once
        # the wrap is heating.
        for i in range(20):
            after_a_request(100)       # the gateway decides one request a second per wrap (scaled: 10 ms)
            fast_bus.mock.PressButton(A, HEAT)
            wait_for(lambda: fast_bus.wrap(A)['state'] == 2, 10)
            fast_bus.mock.PressButton(A, STOP)
            wait_for(lambda: len(gw.outbox_sessions()) == i + 1, 10)
        order = gw.outbox_sessions()
        assert len(set(order)) == 20
        b.start()

        topic = f'kneewrap/{gw.wrap}/session'
        col.wait(lambda: len({m['session_id'] for m in col.json_on(topic)}) == 20, timeout=90)
        got = col.json_on(topic)
        assert first_seen([m['session_id'] for m in got]) == order
        for m in got:
            assert m['source'] == 'button' and m['mode'] == 'heat', m
            assert m['outcome'] == 'stopped_by_user' and m['started_at'] and m['ended_at'], m
        # Acknowledged (PUBACK) records leave the outbox.
        wait_for(lambda: gw.outbox_depth() == 0, 10)
        assert 'MQTT: lost the connection' in gw.log()
        assert gw.d.poll() is None
    finally:
        gw.stop()
        col.close()
        b.stop()


def test_sigkill_with_unacknowledged_records(tmp_path, fast_bus):
    b = Broker(tmp_path, persistent=True)
    col = Collector(b, topics=('kneewrap/#',), client_id='kw-test-collector2', persistent=True)
    fast_bus.mock.AddWrap(A)
    gw = Gateway(tmp_path, fast_bus.address, b, seed=(), allow=(A,), scale=100)
    try:
        col.wait(lambda: online(col))
        gw.wait_log(f'{A}: connected, notifications on')
        injured_today(col, gw)
        b.stop()
        for i in range(5):
            after_a_request(100)
            fast_bus.mock.PressButton(A, HEAT)
            wait_for(lambda: len(gw.outbox_sessions()) == i + 1, 20)
        order = gw.outbox_sessions()
        gw.kill()                      # nothing acknowledged, no goodbye
        n = col.connects
        b.start()
        col.wait(lambda: col.connects > n)
        time.sleep(1)
        topic = f'kneewrap/{gw.wrap}/session'
        assert not col.on(topic)       # the records wait for a daemon
        gw.restart()
        col.wait(lambda: len({m['session_id'] for m in col.json_on(topic)}) == 5, timeout=30)
        assert first_seen([m['session_id'] for m in col.json_on(topic)]) == order
        assert all(m['refusal']['reason'] == 'heat_too_soon' for m in col.json_on(topic))
        wait_for(lambda: gw.outbox_depth() == 0, 10)
    finally:
        gw.stop()
        col.close()
        b.stop()


def test_sigkill_publishes_the_last_will(tmp_path, private_bus, broker):  # noqa: F811
    col = Collector(broker, topics=('kneewrap/bridge/state',))
    gw = Gateway(tmp_path, private_bus, broker, seed=())
    try:
        col.wait(lambda: online(col))
        gw.kill()
        col.wait(lambda: col.last('kneewrap/bridge/state') == b'{"state":"offline"}', timeout=10)
        # Retained: a client that comes later sees it too.
        late = Collector(broker, topics=('kneewrap/bridge/state',))
        late.wait(lambda: late.on('kneewrap/bridge/state'))
        assert late.on('kneewrap/bridge/state')[-1] == (b'{"state":"offline"}', True)
        late.close()
        gw.restart()
        col.wait(lambda: online(col))
        gw.stop()                      # a clean stop says offline itself (no will then)
        col.wait(lambda: col.last('kneewrap/bridge/state') == b'{"state":"offline"}', timeout=10)
    finally:
        gw.stop()
        col.close()


def test_refused_credentials_clear_error_and_backoff(tmp_path, private_bus):  # noqa: F811
    b = Broker(tmp_path, users={'gateway': 'right horse battery'})
    pw = tmp_path / 'mqtt-password'
    pw.write_text('wrong staple\n')
    gw = Gateway(tmp_path, private_bus, b, extra=f'username = gateway\npassword_file = {pw}\n', seed=())
    try:
        def attempts():
            return [int(m.group(1)) for m in re.finditer(r'^(\d+): Sending CONNACK', b.log(), re.M)]
        wait_for(lambda: len(attempts()) >= 5, 40)
        log = gw.log()
        assert 'refused the connection' in log and 'not authori' in log, log
        # Said once, not on every attempt; the password never.
        assert log.count('refused the connection') == 1, log
        assert 'staple' not in log
        t = attempts()
        gaps = [t2 - t1 for t1, t2 in zip(t, t[1:])]
        assert gaps[0] >= 1 and gaps[2] >= 2 and gaps[3] >= 4, gaps   # 1 s, 1-2 s, 2-4 s, 4-8 s, ...
        assert gw.d.poll() is None
        assert 'MQTT connecting' in gw.notify.last_status()
    finally:
        gw.stop()
        b.stop()
