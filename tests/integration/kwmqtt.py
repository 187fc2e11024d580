# kwmqtt: a real mosquitto broker for the MQTT tests (plain, TLS, passwords, ACL), a paho client
# that records every message in arrival order, and the daemon set up to use them.
import json
import os
import shutil
import socket
import subprocess
import threading
import time

import paho.mqtt.client as paho
import pytest

from kwtestutil import BUILDDIR, until_decided, wait_for

MOSQUITTO = shutil.which('mosquitto') or '/usr/sbin/mosquitto'
SEED = os.environ.get('KW_STORE_SEED', os.path.join(BUILDDIR, 'tests', 'integration', 'kw-store-seed'))


def free_port():
    s = socket.socket()
    s.bind(('127.0.0.1', 0))
    port = s.getsockname()[1]
    s.close()
    return port


class Broker:
    """mosquitto -c <generated conf> on 127.0.0.1:<port>; stop() and start() keep the port."""

    def __init__(self, tmp_path, tls=False, users=None, acl=None, persistent=False):
        self.dir = tmp_path / f'broker-{time.monotonic_ns()}'
        self.dir.mkdir()
        self.port = free_port()
        self.tls = tls
        self.proc = None
        self.log_path = self.dir / 'mosquitto.log'
        # persistent: sessions and queued QoS 1 messages survive a restart, so a collector with
        # clean_session=False misses nothing while the broker is down.
        lines = [f'listener {self.port} 127.0.0.1',
                 f'persistence {"true" if persistent else "false"}', f'persistence_location {self.dir}/',
                 f'log_dest file {self.log_path}', 'log_type all', 'connection_messages true',
                 'log_timestamp true', 'log_timestamp_format %s']
        if os.geteuid() == 0:
            lines.append('user root')      # else it drops to "mosquitto" and cannot write here
        if users:
            pw = self.dir / 'passwd'
            pw.write_text('')
            for user, password in users.items():
                subprocess.run(['mosquitto_passwd', '-b', str(pw), user, password], check=True,
                               capture_output=True)
            lines += ['allow_anonymous false', f'password_file {pw}']
        else:
            lines += ['allow_anonymous true']
        if acl:
            a = self.dir / 'acl'
            a.write_text(acl)
            lines += [f'acl_file {a}']
        if tls:
            self.make_certs()
            lines += [f'cafile {self.ca}', f'certfile {self.dir / "server.crt"}',
                      f'keyfile {self.dir / "server.key"}', 'require_certificate false']
        self.conf = self.dir / 'mosquitto.conf'
        self.conf.write_text('\n'.join(lines) + '\n')
        self.start()

    def make_certs(self):
        d = self.dir

        def ossl(*args):
            subprocess.run(['openssl', *args], check=True, capture_output=True, cwd=d)

        ossl('req', '-x509', '-newkey', 'rsa:2048', '-nodes', '-days', '2', '-subj', '/CN=kneewrap test CA',
             '-keyout', 'ca.key', '-out', 'ca.crt')
        ossl('req', '-newkey', 'rsa:2048', '-nodes', '-subj', '/CN=localhost', '-keyout', 'server.key',
             '-out', 'server.csr')
        (d / 'ext.cnf').write_text('subjectAltName=IP:127.0.0.1,DNS:localhost\n')
        ossl('x509', '-req', '-in', 'server.csr', '-CA', 'ca.crt', '-CAkey', 'ca.key', '-CAcreateserial',
             '-days', '2', '-extfile', 'ext.cnf', '-out', 'server.crt')
        # A second CA that signed nothing: the wrong CA for the daemon.
        ossl('req', '-x509', '-newkey', 'rsa:2048', '-nodes', '-days', '2', '-subj', '/CN=other CA',
             '-keyout', 'other.key', '-out', 'other.crt')
        self.ca = d / 'ca.crt'
        self.other_ca = d / 'other.crt'

    def start(self):
        self.proc = subprocess.Popen([MOSQUITTO, '-c', str(self.conf)], stdout=subprocess.DEVNULL,
                                     stderr=subprocess.DEVNULL)

        def listening():
            try:
                socket.create_connection(('127.0.0.1', self.port), timeout=0.2).close()
                return True
            except OSError:
                return False
        wait_for(listening, 10)

    def stop(self):
        if self.proc and self.proc.poll() is None:
            self.proc.terminate()
            self.proc.wait(timeout=10)
        self.proc = None

    def log(self):
        try:
            return self.log_path.read_text(errors='replace')
        except FileNotFoundError:
            return ''


class Collector:
    """A paho client subscribed to `topics`; .messages is [(topic, payload bytes, retain)]."""

    def __init__(self, broker, topics=('#',), username=None, password=None, client_id=None, persistent=False):
        self.messages = []
        self.lock = threading.Lock()
        self.connected = threading.Event()
        self.connects = 0
        self.c = paho.Client(client_id=client_id or f'collector-{time.monotonic_ns()}',
                             clean_session=not persistent)
        self.c.reconnect_delay_set(min_delay=1, max_delay=2)
        if username:
            self.c.username_pw_set(username, password)
        if broker.tls:
            self.c.tls_set(ca_certs=str(broker.ca))
        self.topics = topics
        self.c.on_connect = self._on_connect
        self.c.on_message = self._on_message
        self.c.connect('127.0.0.1', broker.port, keepalive=30)
        self.c.loop_start()
        assert self.connected.wait(10), 'collector could not connect'

    def _on_connect(self, client, userdata, flags, rc):
        if rc == 0:
            for t in self.topics:
                client.subscribe(t, qos=1)
            self.connects += 1
            self.connected.set()

    def _on_message(self, client, userdata, msg):
        with self.lock:
            self.messages.append((msg.topic, bytes(msg.payload), bool(msg.retain)))

    def publish(self, topic, payload, retain=False):
        if not isinstance(payload, (str, bytes)):
            payload = json.dumps(payload)
        self.c.publish(topic, payload, qos=1, retain=retain).wait_for_publish()

    def on(self, topic):
        with self.lock:
            return [(p, r) for t, p, r in self.messages if t == topic]

    def json_on(self, topic):
        return [json.loads(p) for p, _ in self.on(topic) if p]

    def last(self, topic):
        m = self.on(topic)
        return m[-1][0] if m else None

    def last_json(self, topic):
        p = self.last(topic)
        return json.loads(p) if p else None

    def wait(self, cond, timeout=10):
        wait_for(cond, timeout, step=0.02)

    def clear(self):
        with self.lock:
            self.messages.clear()

    def close(self):
        self.c.loop_stop()
        self.c.disconnect()


def ask(col, topic, payload, resp):
    """Publishes a command on `topic` and returns the next answer on `resp`, parsed; again while
    it is "too many requests" (kneewrapd's limit of one request of a kind per wrap a second)."""
    def once():
        n = len(col.on(resp))
        col.publish(topic, payload)
        col.wait(lambda: len(col.on(resp)) > n)
        return json.loads(col.on(resp)[-1][0])
    return until_decided(once)


# [mqtt] commands with everything MQTT may be allowed to do (the default leaves out resolve,
# prescription and adoption).
ALL_COMMANDS = 'commands = sessions diary runs injury resolve prescription adoption\n'


def mqtt_config(broker, extra='', ca=None):
    lines = ['[mqtt]', 'host = 127.0.0.1', f'port = {broker.port}', 'keepalive = 10']
    if broker.tls or ca:
        lines.append(f'tls_ca_file = {ca or broker.ca}')
    return '\n'.join(lines) + '\n' + extra


def seed_wrap(tmp_path, address, name='Left knee'):
    """Adopts a wrap straight into the store (adoption itself needs BlueZ)."""
    db = os.path.join(str(tmp_path), 'kneewrap.db')
    subprocess.run([SEED, db, 'wrap', address, name, str(int(time.time()) - 86400)], check=True)
    return wrap_id(address)


@pytest.fixture
def broker(tmp_path):
    b = Broker(tmp_path)
    yield b
    b.stop()


class Gateway:
    """kneewrapd on a private bus (bare, or the mock BlueZ's) with a config for `broker`.

    seed: addresses put straight into the store as adopted (no BlueZ needed); allow: addresses
    the daemon adopts itself over the mock BlueZ. .wrap is the first wrap's id."""

    def __init__(self, tmp_path, bus_address, broker, extra='', seed=('AA:BB:CC:DD:EE:01',), allow=(),
                 scale=None, env=None, ca=None):
        from kwtestutil import Notify, start_daemon, write_config
        self.tmp_path = tmp_path
        self.bus_address = bus_address
        env = dict(env or {})
        if scale:
            env['KNEEWRAP_TIME_SCALE'] = str(scale)
        self.wraps = [seed_wrap(tmp_path, a) for a in seed] + [wrap_id(a) for a in allow]
        self.wrap = self.wraps[0] if self.wraps else None
        bt = ('[bluetooth]\nallow = ' + ' '.join(allow) + '\n') if allow else ''
        self.conf = write_config(tmp_path, mqtt_config(broker, extra, ca) + bt)
        self.notify = Notify(tmp_path)
        self._drainer = None
        self.logs = []
        self._start = lambda: start_daemon(tmp_path, self.conf, bus_address, self.notify, env=env)
        self.restart()

    @property
    def db(self):
        return os.path.join(str(self.tmp_path), 'kneewrap.db')

    def restart(self):
        # sd_notify blocks once the socket's queue is full: read it all the time, as systemd does.
        self._draining = True
        if not self._drainer or not self._drainer.is_alive():
            def drain():
                while self._draining:
                    self.notify._drain(0.1)
            self._drainer = threading.Thread(target=drain, daemon=True)
            self._drainer.start()
        self.d = self._start()
        self.logs.append(self.d.logpath)

    def kill(self):
        import signal
        self.d.send_signal(signal.SIGKILL)
        self.d.wait(timeout=5)

    def stop(self):
        from kwtestutil import stop_daemon
        stop_daemon(self.d)
        self._draining = False

    def log(self):
        out = ''
        for p in self.logs:
            with open(p, errors='replace') as f:
                out += f.read()
        return out

    def wait_log(self, text, timeout=20):
        wait_for(lambda: text in self.log(), timeout)

    def ctl(self, *args):
        from kwtestutil import KNEEWRAPCTL
        e = dict(os.environ)
        e['DBUS_SYSTEM_BUS_ADDRESS'] = self.bus_address
        return until_decided(lambda: subprocess.run([KNEEWRAPCTL, '--config', str(self.conf), '--db', self.db, *args],
                                                     env=e, capture_output=True, text=True, timeout=10))

    def sql(self, query, *args):
        import sqlite3
        c = sqlite3.connect(self.db, timeout=5)
        try:
            return c.execute(query, args).fetchall()
        finally:
            c.close()

    def outbox_depth(self):
        return self.sql('select count(*) from outbox')[0][0]

    def outbox_sessions(self):
        """session_ids of the session records in the outbox, in the order they will be sent."""
        return [json.loads(p)['session_id'] for (p, t) in self.sql('select payload, topic from outbox order by id')
                if t.endswith('/session')]


def wrap_id(address):
    return 'wrap_' + address.replace(':', '').lower()
