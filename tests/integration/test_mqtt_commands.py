# test_mqtt_commands: commands over MQTT go through the same rules as the button; bad JSON,
# unknown keys and wrong types are answered with a clear error and change nothing; a refusal
# is answered and logged as a session record. A real mosquitto.
import time

from kwmqtt import ALL_COMMANDS, Collector, Gateway, ask, broker  # noqa: F401
from kwtestutil import private_bus  # noqa: F401


def test_set_commands(tmp_path, private_bus, broker):  # noqa: F811
    col = Collector(broker, topics=('kneewrap/#',))
    gw = Gateway(tmp_path, private_bus, broker, extra=ALL_COMMANDS)
    w = gw.wrap
    set_t, resp = f'kneewrap/{w}/set', f'kneewrap/{w}/response'
    try:
        col.wait(lambda: col.on(f'kneewrap/{w}/state'))
        state0 = col.last_json(f'kneewrap/{w}/state')

        bad = [
            ('{"action":"start","mode":"cold"', 'not JSON'),
            ('[1,2]', 'JSON object'),
            ({'action': 'start', 'mode': 'lukewarm'}, '"mode" must be'),
            ({'action': 'start'}, 'needs "mode"'),
            ({'action': 'dance'}, 'unknown action'),
            ({'action': 'stop', 'mode': 'cold'}, 'takes no "mode"'),
            ({'injury': 20261120}, '"injury" must be'),
            ({'injury': '20-11-2026'}, 'not a date'),
            ({'pain': {'score': 11}}, '0 to 10'),
            ({'pain': {'score': 'six'}}, '0 to 10'),
            ({'pain': {'score': 3, 'where': 'elbow'}}, '"where" must be'),
            ({'pain': {'score': 3, 'flags': ['itchy']}}, 'unknown flag'),
            ({'pain': 5}, 'must be an object'),
            ({'injury': None, 'pain': {'score': 1}}, 'one command per message'),
            ({'colour': 'blue'}, 'unknown key "colour"'),
            ({}, 'nothing to do'),
            ({'action': 'stop', 'transaction': [1]}, '"transaction"'),
        ]
        for payload, why in bad:
            r = ask(col, set_t, payload, resp)
            assert r['status'] == 'error' and why in r['error'], (payload, r)
        # Nothing changed: no record, no injury, no diary entry.
        assert not col.on(f'kneewrap/{w}/session')
        assert gw.sql('select count(*) from injuries')[0][0] == 0
        assert gw.sql('select count(*) from diary')[0][0] == 0
        assert col.last_json(f'kneewrap/{w}/state') == state0

        # The transaction is echoed, as a string or a number.
        r = ask(col, set_t, {'injury': 'today', 'transaction': 'abc'}, resp)
        assert r == {'status': 'ok', 'data': {}, 'transaction': 'abc'}
        today = time.strftime('%Y-%m-%d')
        col.wait(lambda: col.last_json(f'kneewrap/{w}/state')['injury_date'] == today)
        assert col.last_json(f'kneewrap/{w}/state')['heat_allowed'] is False
        assert col.last_json(f'kneewrap/{w}/state')['heat_allowed_at']

        # Heat within the week: refused by R2, answered, and recorded like a button's.
        r = ask(col, set_t, {'action': 'start', 'mode': 'heat', 'transaction': 42}, resp)
        assert r['status'] == 'error' and r['transaction'] == 42 and 'R2' in r['error'], r
        assert r['data']['outcome'] == 'refused' and r['data']['refusal']['reason'] == 'heat_too_soon'
        col.wait(lambda: col.on(f'kneewrap/{w}/session'))
        rec = col.json_on(f'kneewrap/{w}/session')[-1]
        assert rec['session_id'] == r['data']['session_id']
        assert rec['source'] == 'mqtt' and rec['outcome'] == 'refused' and rec['days_since_injury'] is not None
        assert list(rec) == ['session_id', 'wrap', 'mode', 'source', 'requested_at', 'started_at', 'ended_at',
                             'prescribed_s', 'duration_s', 'outcome', 'compliant', 'refusal', 'skin_c',
                             'days_since_injury', 'clock_synced']
        assert rec['clock_synced'] is True
        col.wait(lambda: (col.last_json(f'kneewrap/{w}/state')['last_session'] or {}).get('session_id')
                 == rec['session_id'])
        col.wait(lambda: col.last_json(f'kneewrap/{w}/compliance')['last_7_days']['heat_refused'] == 1)

        # Pain diary, with where and flags; R9's red flag raises an alert at once.
        r = ask(col, set_t, {'pain': {'score': 7, 'where': 'outer', 'flags': ['swelling', 'pop']}}, resp)
        assert r['status'] == 'ok', r
        # (The refused heat raised heat_first_week before: wait for the red flag itself.)
        col.wait(lambda: any(a.get('alert') == 'red_flag' for a in col.json_on(f'kneewrap/{w}/alert')))
        alert = [a for a in col.json_on(f'kneewrap/{w}/alert') if a.get('alert') == 'red_flag'][-1]
        assert alert['alert'] == 'red_flag' and alert['severity'] == 'urgent' and alert['wrap'] == w
        assert gw.sql('select score, flags from diary') == [(7, 3)]

        # Resolved: heat allowed again.
        r = ask(col, set_t, {'injury': None}, resp)
        assert r['status'] == 'ok'
        col.wait(lambda: col.last_json(f'kneewrap/{w}/state')['heat_allowed'] is True)

        # A stop with nothing running is refused with a reason.
        r = ask(col, set_t, {'action': 'stop'}, resp)
        assert r['status'] == 'error' and r['error']

        # A command left retained on the broker is stale: a (re)connecting daemon never acts on it.
        gw.stop()
        col.publish(set_t, {'injury': 'today'}, retain=True)
        col.clear()
        gw.restart()
        col.wait(lambda: col.on(f'kneewrap/{w}/state'))
        time.sleep(0.5)
        assert col.last_json(f'kneewrap/{w}/state')['injury_date'] is None
        assert 'Injury recorded' not in open(gw.d.logpath).read()
        col.publish(set_t, '', retain=True)
    finally:
        gw.stop()
        col.close()


def test_bridge_requests(tmp_path, private_bus, broker):  # noqa: F811
    col = Collector(broker, topics=('kneewrap/#',))
    gw = Gateway(tmp_path, private_bus, broker, extra=ALL_COMMANDS)
    w = gw.wrap
    try:
        col.wait(lambda: col.on('kneewrap/bridge/info'))
        assert col.last_json('kneewrap/bridge/info')['adoption_open'] is False

        r = ask(col, 'kneewrap/bridge/request/adopt', {'time': 60, 'transaction': 1}, 'kneewrap/bridge/response/adopt')
        assert r == {'status': 'ok', 'data': {'time': 60}, 'transaction': 1}
        col.wait(lambda: col.last_json('kneewrap/bridge/info')['adoption_open'] is True)
        r = ask(col, 'kneewrap/bridge/request/adopt', {'time': 0}, 'kneewrap/bridge/response/adopt')
        assert r['status'] == 'ok'
        col.wait(lambda: col.last_json('kneewrap/bridge/info')['adoption_open'] is False)
        r = ask(col, 'kneewrap/bridge/request/adopt', {'time': 'long'}, 'kneewrap/bridge/response/adopt')
        assert r['status'] == 'error' and '"time"' in r['error']

        pr = 'kneewrap/bridge/response/prescription'
        r = ask(col, 'kneewrap/bridge/request/prescription', {'wrap': w, 'cold_s': 1200}, pr)
        assert r['status'] == 'error' and 'cold' in r['error'], r          # refused, never clamped
        r = ask(col, 'kneewrap/bridge/request/prescription', {'wrap': w, 'cold_s': 720, 'cold_setpoint_c': 12.5,
                                                              'transaction': 'rx'}, pr)
        assert r == {'status': 'ok', 'data': {}, 'transaction': 'rx'}
        assert gw.sql('select cold_s, cold_setpoint from prescriptions') == [(720, 1250)]
        r = ask(col, 'kneewrap/bridge/request/prescription', {'wrap': w, 'cold_s': 720.5}, pr)
        assert r['status'] == 'error'
        r = ask(col, 'kneewrap/bridge/request/prescription', {'wrap': 'wrap_000000000000', 'cold_s': 700}, pr)
        assert r['status'] == 'error'

        r = ask(col, 'kneewrap/bridge/request/injury', {'wrap': w, 'injury': '2026-11-20T18:30:00+01:00'},
                'kneewrap/bridge/response/injury')
        assert r['status'] == 'ok', r
        r = ask(col, 'kneewrap/bridge/request/diary', {'wrap': w, 'score': 4, 'where': 'front'},
                'kneewrap/bridge/response/diary')
        assert r['status'] == 'ok', r
        r = ask(col, 'kneewrap/bridge/request/frobnicate', {}, 'kneewrap/bridge/response/frobnicate')
        assert r['status'] == 'error' and 'unknown request' in r['error']
        r = ask(col, 'kneewrap/bridge/request/remove', {'wrap': 'wrap_00000000000'},
                'kneewrap/bridge/response/remove')
        assert r['status'] == 'error'
    finally:
        gw.stop()
        col.close()


def test_reload(tmp_path, private_bus, broker):  # noqa: F811
    import signal
    col = Collector(broker, topics=('kneewrap/bridge/#', 'other/#'))
    gw = Gateway(tmp_path, private_bus, broker, seed=(), extra=ALL_COMMANDS)
    try:
        col.wait(lambda: col.last('kneewrap/bridge/state') == b'{"state":"online"}')
        # SIGHUP with the broker settings unchanged: no reconnect, no offline blip.
        n = len(col.on('kneewrap/bridge/state'))
        gw.d.send_signal(signal.SIGHUP)
        time.sleep(1)
        assert len(col.on('kneewrap/bridge/state')) == n
        assert gw.log().count('MQTT: connected') == 1
        # A new base topic: offline under the old one, online under the new.
        gw.conf.write_text(gw.conf.read_text().replace('keepalive = 10', 'keepalive = 10\nbase_topic = other'))
        gw.d.send_signal(signal.SIGHUP)
        col.wait(lambda: col.last('other/bridge/state') == b'{"state":"online"}')
        assert col.last('kneewrap/bridge/state') == b'{"state":"offline"}'
        assert gw.d.poll() is None
    finally:
        gw.stop()
        col.close()


def test_authority_default(tmp_path, private_bus, broker):  # noqa: F811
    """[mqtt] commands at its default (sessions diary runs injury): anyone who may publish on the
    broker can record an injury, a diary entry or a session, but not resolve an injury (heat at
    once), loosen a prescription, open adoption or remove a wrap. Each refusal is answered, logged,
    and changes nothing; Home Assistant is not offered the entities that would need them."""
    col = Collector(broker, topics=('kneewrap/#', 'homeassistant/#'))
    gw = Gateway(tmp_path, private_bus, broker)
    w = gw.wrap
    set_t, resp = f'kneewrap/{w}/set', f'kneewrap/{w}/response'
    try:
        col.wait(lambda: col.on(f'kneewrap/{w}/state'))
        r = ask(col, set_t, {'injury': 'today'}, resp)
        assert r['status'] == 'ok', r
        assert gw.sql('select count(*) from injuries where resolved_at is null')[0][0] == 1
        # In the append-only history, as coming over MQTT on its topic (MQTT does not name the publisher).
        assert gw.sql('select what, wrap, source, uid, topic, claimed_client from audit') == [
            ('injury', w, 'mqtt', None, set_t, None)]
        r = ask(col, set_t, {'pain': {'score': 3}}, resp)
        assert r['status'] == 'ok', r

        refused = [
            (set_t, {'injury': None}, resp, 'resolve'),
            (set_t, {'injury': ''}, resp, 'resolve'),
            ('kneewrap/bridge/request/injury', {'wrap': w, 'injury': None}, 'kneewrap/bridge/response/injury', 'resolve'),
            ('kneewrap/bridge/request/prescription', {'wrap': w, 'cold_s': 600}, 'kneewrap/bridge/response/prescription',
             'prescription'),
            ('kneewrap/bridge/request/adopt', {'time': 3600}, 'kneewrap/bridge/response/adopt', 'adoption'),
            ('kneewrap/bridge/request/remove', {'wrap': w}, 'kneewrap/bridge/response/remove', 'adoption'),
            # Acknowledging an alert takes it off the clinic's list: not by default.
            (set_t, {'ack_alert': 1}, resp, 'alerts'),
        ]
        for topic, payload, rt, what in refused:
            r = ask(col, topic, payload, rt)
            assert r['status'] == 'error' and f'[mqtt] commands does not list "{what}"' in r['error'], (payload, r)
        gw.wait_log('MQTT command refused: not allowed over MQTT: [mqtt] commands does not list "adoption"')
        assert gw.log().count('MQTT command refused') == len(refused)
        # Nothing changed: the injury stands, no prescription, adoption closed, the wrap kept.
        assert gw.sql('select count(*) from injuries where resolved_at is null')[0][0] == 1
        assert gw.sql('select count(*) from prescriptions')[0][0] == 0
        assert gw.sql('select count(*) from wraps')[0][0] == 1
        assert col.last_json('kneewrap/bridge/info')['adoption_open'] is False
        assert gw.sql('select count(*) from audit')[0][0] == 1          # the refusals changed nothing

        # Discovery: the adoption switch and its end are cleared (empty retained configs), the
        # injury date cannot be emptied.
        col.wait(lambda: col.on(f'homeassistant/text/{w}/injury_date/config'))
        col.wait(lambda: col.on('homeassistant/switch/kneewrap_bridge/adoption/config'))
        assert col.last('homeassistant/switch/kneewrap_bridge/adoption/config') == b''
        assert col.last('homeassistant/sensor/kneewrap_bridge/adoption_ends/config') == b''
        assert col.last_json(f'homeassistant/text/{w}/injury_date/config')['pattern'] == '^[0-9]{4}-[0-9]{2}-[0-9]{2}$'
        assert col.last_json(f'homeassistant/button/{w}/start_cold/config')['command_topic'] == set_t
    finally:
        gw.stop()
        col.close()


def test_authority_none(tmp_path, private_bus, broker):  # noqa: F811
    """commands = none: MQTT only reports; every command is refused and no control is offered."""
    col = Collector(broker, topics=('kneewrap/#', 'homeassistant/#'))
    gw = Gateway(tmp_path, private_bus, broker, extra='commands = none\n')
    w = gw.wrap
    set_t, resp = f'kneewrap/{w}/set', f'kneewrap/{w}/response'
    try:
        col.wait(lambda: col.on(f'homeassistant/sensor/{w}/battery/config'))
        for payload, what in [({'action': 'start', 'mode': 'cold'}, 'sessions'), ({'action': 'stop'}, 'sessions'),
                              ({'injury': 'today'}, 'injury'), ({'pain': {'score': 2}}, 'diary')]:
            r = ask(col, set_t, payload, resp)
            assert r['status'] == 'error' and f'does not list "{what}"' in r['error'], (payload, r)
        assert not col.on(f'kneewrap/{w}/session')
        assert gw.sql('select count(*) from injuries')[0][0] == 0
        assert gw.sql('select count(*) from diary')[0][0] == 0
        col.wait(lambda: col.on(f'homeassistant/number/{w}/pain/config'))
        for comp, obj in [('button', 'start_cold'), ('button', 'start_heat'), ('button', 'stop'),
                          ('button', 'injured_today'), ('text', 'injury_date'), ('number', 'pain')]:
            assert col.last(f'homeassistant/{comp}/{w}/{obj}/config') == b'', obj
    finally:
        gw.stop()
        col.close()
