# test_mqtt_security: TLS with certificates made here by openssl, a password file
# (mosquitto_passwd), an ACL that lets the gateway write only under its topics; a wrong or
# missing CA; the password as a systemd credential. A real mosquitto.
import json
import subprocess

from kwmqtt import ALL_COMMANDS, Broker, Collector, Gateway
from kwtestutil import KNEEWRAPD, private_bus, until_decided, wait_for  # noqa: F401

ACL = '''user gateway
topic readwrite kneewrap/#
topic readwrite homeassistant/#

user ha
topic readwrite #
'''


def secure_broker(tmp_path):
    return Broker(tmp_path, tls=True, users={'gateway': 'gw pass', 'ha': 'ha pass'}, acl=ACL)


def test_tls_password_acl(tmp_path, private_bus):  # noqa: F811
    b = secure_broker(tmp_path)
    col = Collector(b, topics=('#',), username='ha', password='ha pass')
    pw = tmp_path / 'mqtt-password'
    pw.write_text('gw pass\n')
    gw = Gateway(tmp_path, private_bus, b, extra=f'username = gateway\npassword_file = {pw}\n' + ALL_COMMANDS)
    try:
        col.wait(lambda: col.last('kneewrap/bridge/state') == b'{"state":"online"}')
        col.wait(lambda: col.on(f'homeassistant/sensor/{gw.wrap}/skin_temperature/config'))
        col.wait(lambda: col.last_json('kneewrap/bridge/info'))
        info = col.last_json('kneewrap/bridge/info')
        assert info['config']['tls'] is True and info['config']['username'] is True
        assert 'gw pass' not in json.dumps(info) and 'gw pass' not in gw.log()
        # Commands work through the ACL too.
        col.publish('kneewrap/bridge/request/adopt', {'time': 30, 'transaction': 7})
        col.wait(lambda: col.on('kneewrap/bridge/response/adopt'))
        assert col.last_json('kneewrap/bridge/response/adopt')['status'] == 'ok'
        # The ACL is real: the gateway's user may not write elsewhere.
        r = subprocess.run(['mosquitto_pub', '-h', '127.0.0.1', '-p', str(b.port), '--cafile', str(b.ca),
                            '-u', 'gateway', '-P', 'gw pass', '-t', 'elsewhere/x', '-m', 'hi', '-q', '1'],
                           capture_output=True, text=True, timeout=10)
        assert not col.on('elsewhere/x')
        assert 'Denied PUBLISH' in b.log() or r.returncode != 0
        gw.stop()
        col.wait(lambda: col.last('kneewrap/bridge/state') == b'{"state":"offline"}')
    finally:
        gw.stop()
        col.close()
        b.stop()


def test_wrong_ca_refuses_to_connect(tmp_path, private_bus):  # noqa: F811
    b = secure_broker(tmp_path)
    col = Collector(b, topics=('kneewrap/#',), username='ha', password='ha pass')
    pw = tmp_path / 'mqtt-password'
    pw.write_text('gw pass\n')
    gw = Gateway(tmp_path, private_bus, b, seed=(), ca=b.other_ca,
                 extra=f'username = gateway\npassword_file = {pw}\n')
    try:
        wait_for(lambda: 'certificate verify failed' in gw.log(), 20)
        assert 'MQTT: cannot connect to 127.0.0.1' in gw.log()
        assert not col.on('kneewrap/bridge/state')
        assert gw.d.poll() is None              # not fatal: it retries, and STATUS says so
    finally:
        gw.stop()
        col.close()
        b.stop()


def test_missing_ca_file_is_fatal_with_a_clear_error(tmp_path, private_bus):  # noqa: F811
    b = secure_broker(tmp_path)
    gw = Gateway(tmp_path, private_bus, b, seed=(), ca=f'{tmp_path}/no-such-ca.pem')
    try:
        assert gw.d.wait(timeout=10) == 1
        assert f'cannot read the TLS CA file {tmp_path}/no-such-ca.pem' in gw.log()
    finally:
        b.stop()


def test_password_from_systemd_credential(tmp_path, private_bus):  # noqa: F811
    b = Broker(tmp_path, users={'gateway': 'from credential'})
    col = Collector(b, topics=('kneewrap/bridge/state',), username='gateway', password='from credential')
    creds = tmp_path / 'creds'
    creds.mkdir()
    (creds / 'mqtt-password').write_text('from credential\n')
    gw = Gateway(tmp_path, private_bus, b, seed=(), extra='username = gateway\n',
                 env={'CREDENTIALS_DIRECTORY': str(creds)})
    try:
        col.wait(lambda: col.last('kneewrap/bridge/state') == b'{"state":"online"}')
    finally:
        gw.stop()
        col.close()
        b.stop()


def test_empty_credential_is_no_password(tmp_path, private_bus):  # noqa: F811
    """The unit's SetCredential=mqtt-password:\\n default, used when /etc/kneewrap/mqtt-password
    is missing: one empty line, which means no password (an anonymous broker, no username)."""
    b = Broker(tmp_path)
    col = Collector(b, topics=('kneewrap/bridge/state',))
    creds = tmp_path / 'creds'
    creds.mkdir()
    (creds / 'mqtt-password').write_text('\n')
    gw = Gateway(tmp_path, private_bus, b, seed=(), env={'CREDENTIALS_DIRECTORY': str(creds)})
    try:
        col.wait(lambda: col.last('kneewrap/bridge/state') == b'{"state":"online"}')
        assert gw.d.poll() is None
    finally:
        gw.stop()
        col.close()
        b.stop()


def test_mqtt_5_when_configured(tmp_path, private_bus):  # noqa: F811
    b = Broker(tmp_path)
    col = Collector(b, topics=('kneewrap/#',))
    gw = Gateway(tmp_path, private_bus, b, extra='protocol = 5\n')
    try:
        col.wait(lambda: col.last('kneewrap/bridge/state') == b'{"state":"online"}')
        assert '(p5, ' in b.log() and 'as kneewrap-' in b.log()
        col.publish(f'kneewrap/{gw.wrap}/set', {'injury': 'today', 'transaction': 5})
        col.wait(lambda: col.on(f'kneewrap/{gw.wrap}/response'))
        assert col.last_json(f'kneewrap/{gw.wrap}/response') == {'status': 'ok', 'data': {}, 'transaction': 5}

        # Who made the change: MQTT names no publisher to a subscriber. The history keeps the
        # topic, and what an MQTT 5 publisher claims in the user property "client", as a claim.
        set_t, resp = f'kneewrap/{gw.wrap}/set', f'kneewrap/{gw.wrap}/response'

        def pub5(payload, client):
            def once():
                n = len(col.on(resp))
                subprocess.run(['mosquitto_pub', '-V', '5', '-h', '127.0.0.1', '-p', str(b.port), '-t', set_t,
                                '-m', json.dumps(payload), '-D', 'publish', 'user-property', 'client', client],
                               check=True, timeout=10)
                col.wait(lambda: len(col.on(resp)) > n)
                return json.loads(col.on(resp)[-1][0])
            return until_decided(once)
        assert pub5({'injury': '2026-11-20'}, 'nurse-app')['status'] == 'ok'
        assert pub5({'injury': '2026-11-21'}, 'x' * 200)['status'] == 'ok'     # too long: not recorded
        gw.wait_log('claims a client id that is too long or not text')
        assert gw.sql('select what, source, uid, topic, claimed_client from audit order by id') == [
            ('injury', 'mqtt', None, set_t, None), ('injury', 'mqtt', None, set_t, 'nurse-app'),
            ('injury', 'mqtt', None, set_t, None)]
        history = gw.ctl('history').stdout
        assert 'claims "nurse-app" (not verified)' in history and f'on {set_t}' in history, history
        assert gw.log().count('claiming to be "nurse-app" (not verified)') == 1
    finally:
        gw.stop()
        col.close()
        b.stop()
