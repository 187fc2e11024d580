# fhirserver: a real FHIR R4 engine on loopback (tests/fhir-server: Medplum's FHIR router over
# its in-memory repository, from npm) behind HTTPS with a test CA, an OAuth 2 token endpoint,
# and a fault injector; and the pieces to run kneewrap-uplink against it.
import json
import os
import shutil
import subprocess
import time
import urllib.parse
import urllib.request

from kwtestutil import BUILDDIR, SRCDIR, wait_for

SERVER_DIR = os.path.join(SRCDIR, 'tests', 'fhir-server')
UPLINK = os.environ.get('KNEEWRAP_UPLINK', os.path.join(BUILDDIR, 'kneewrap-uplink'))
SEED = os.environ.get('KW_STORE_SEED', os.path.join(BUILDDIR, 'tests', 'integration', 'kw-store-seed'))
SESSION_SYSTEM = 'urn:kneewrap:session-id'
CLIENT_ID = 'gateway-test'
CLIENT_SECRET = 'never-in-a-log-3f9a'
# A name no resolver knows: reached only through [server] address (no DNS).
CLINIC_HOST = 'fhir.clinic.test'


def npm_ci():
    """The engine's exact versions (package-lock.json), installed once per checkout."""
    stamp = os.path.join(SERVER_DIR, 'node_modules', '.package-lock.json')
    lock = os.path.join(SERVER_DIR, 'package-lock.json')
    if os.path.exists(stamp) and os.path.getmtime(stamp) >= os.path.getmtime(lock):
        return
    subprocess.run(['npm', 'ci', '--no-audit', '--no-fund', '--loglevel=error'], cwd=SERVER_DIR,
                   check=True, timeout=600)


def make_ca(d):
    """A CA and a certificate for 127.0.0.1 signed by it: the uplink trusts only the CA (ca_file)."""
    def ssl(*a):
        subprocess.run(['openssl', *a], cwd=d, check=True, capture_output=True, timeout=60)
    ssl('req', '-x509', '-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:prime256v1', '-nodes', '-days', '2',
        '-subj', '/CN=kneewrap test CA', '-keyout', 'ca.key', '-out', 'ca.pem')
    ssl('req', '-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:prime256v1', '-nodes',
        '-subj', '/CN=127.0.0.1', '-keyout', 'server.key', '-out', 'server.csr')
    with open(os.path.join(d, 'ext.cnf'), 'w') as f:
        f.write(f'subjectAltName=IP:127.0.0.1,DNS:{CLINIC_HOST}\n')
    ssl('x509', '-req', '-in', 'server.csr', '-CA', 'ca.pem', '-CAkey', 'ca.key', '-CAcreateserial',
        '-days', '2', '-extfile', 'ext.cnf', '-out', 'server.pem')
    return os.path.join(d, 'ca.pem')


class FhirServer:
    def __init__(self, d, oauth=True):
        npm_ci()
        self.dir = str(d)
        self.ca = make_ca(self.dir)
        ports = os.path.join(self.dir, 'ports.json')
        args = ['node', os.path.join(SERVER_DIR, 'server.mjs'), '--cert', 'server.pem', '--key', 'server.key',
                '--ports-file', ports]
        if oauth:
            args += ['--client-id', CLIENT_ID, '--client-secret', CLIENT_SECRET]
        self.log = open(os.path.join(self.dir, 'fhir-server.log'), 'w')
        self.proc = subprocess.Popen(args, cwd=self.dir, stdout=self.log, stderr=subprocess.STDOUT)
        wait_for(lambda: os.path.exists(ports) or self.proc.poll() is not None, 60, 0.05)
        assert self.proc.poll() is None, open(os.path.join(self.dir, 'fhir-server.log')).read()
        p = json.load(open(ports))
        self.base = f'https://127.0.0.1:{p["fhir"]}/fhir/R4'
        self.token_url = f'https://127.0.0.1:{p["fhir"]}/oauth2/token'
        self.control = f'http://127.0.0.1:{p["control"]}'

    def close(self):
        self.proc.terminate()
        self.proc.wait(10)
        self.log.close()

    def _call(self, method, path, body=None):
        data = json.dumps(body).encode() if body is not None else None
        req = urllib.request.Request(self.control + path, data=data, method=method,
                                     headers={'Content-Type': 'application/fhir+json'})
        try:
            with urllib.request.urlopen(req, timeout=60) as r:
                return r.status, json.load(r)
        except urllib.error.HTTPError as e:
            return e.code, json.load(e)

    def faults(self, **kw):
        return self._call('POST', '/faults', kw)[1]

    def reset(self):
        """Empty, every fault off, no token valid: as new, without the engine's start-up."""
        return self._call('POST', '/reset', {})[1]

    def release(self):
        return self._call('POST', '/release', {})[1]

    def stats(self):
        return self._call('GET', '/stats')[1]

    def fhir(self, method, path, body=None):
        """The engine itself (no auth, no faults): for the tests' own reads and writes."""
        return self._call(method, '/fhir/R4/' + path, body)

    def search(self, rtype, **params):
        _, b = self.fhir('GET', rtype + '?' + urllib.parse.urlencode(params))
        return [e['resource'] for e in b.get('entry', [])]

    def count_identifier(self, rtype, system, value):
        return len(self.search(rtype, identifier=f'{system}|{value}'))

    def all_identifiers(self, rtype, system, page=1000):
        """Every identifier value of `system` on every resource of rtype, by a paged search."""
        values, offset = [], 0
        while True:
            got = self.search(rtype, _count=page, _offset=offset)
            for r in got:
                values += [i['value'] for i in r.get('identifier', []) if i.get('system') == system]
            if len(got) < page:
                return values
            offset += page


class Gateway:
    """A store seeded without the daemon, and kneewrap-uplink's config pointing at the server."""

    def __init__(self, d, server, batch=8, timeout=5, retry_max=2, oauth=True, extra='', by_name=False,
                 token_file=None):
        self.dir = str(d)
        self.db = os.path.join(self.dir, 'kneewrap.db')
        self.state = os.path.join(self.dir, 'uplink-state', 'uplink.db')
        os.makedirs(os.path.dirname(self.state), exist_ok=True)
        self.conf = os.path.join(self.dir, 'uplink.conf')
        secret = os.path.join(self.dir, 'client-secret')
        with open(secret, 'w') as f:
            f.write(CLIENT_SECRET + '\n')
        base, token_url, address = server.base, server.token_url, ''
        if by_name:
            base = base.replace('127.0.0.1', CLINIC_HOST)
            token_url = token_url.replace('127.0.0.1', CLINIC_HOST)
            address = 'address = 127.0.0.1\n'
        auth = (f'[auth]\ntoken_url = {token_url}\nclient_id = {CLIENT_ID}\n'
                f'client_secret_file = {secret}\n') if oauth else ''
        if token_file:
            auth = f'[auth]\ntoken_file = {token_file}\n'
        with open(self.conf, 'w') as f:
            f.write(f'[server]\nurl = {base}\n{address}ca_file = {server.ca}\ntimeout = {timeout}\n{auth}'
                    f'[uplink]\nstore = {self.db}\nstate = {self.state}\nbatch = {batch}\n'
                    f'retry_max = {retry_max}\npoll = 30\n{extra}')
        self.proc = None
        self.log_path = os.path.join(self.dir, 'uplink.log')

    def seed(self, *args):
        r = subprocess.run([SEED, self.db, *map(str, args)], check=True, timeout=600,
                           capture_output=True, text=True)
        return r.stdout.split()

    def start(self):
        self.log = open(self.log_path, 'a')
        self.proc = subprocess.Popen([UPLINK, '--config', self.conf, '-v'], stdout=self.log,
                                     stderr=subprocess.STDOUT, env={**os.environ, 'TZ': 'UTC'})
        return self

    def once(self, timeout=600, notify=None):
        """--once; notify: a kwtestutil.Notify that gets its sd_notify messages."""
        env = {**os.environ, 'TZ': 'UTC', **({'NOTIFY_SOCKET': notify.path} if notify else {})}
        return subprocess.run([UPLINK, '--config', self.conf, '--once'], capture_output=True, text=True,
                              timeout=timeout, env=env)

    def stop(self, sig=None):
        if self.proc and self.proc.poll() is None:
            if sig:
                self.proc.send_signal(sig)
            else:
                self.proc.terminate()
            self.proc.wait(30)
        if self.proc:
            self.log.close()
        self.proc = None

    def logtext(self):
        return open(self.log_path).read() if os.path.exists(self.log_path) else ''

    @staticmethod
    def _read(path, sql, args=()):
        """One read of a file another process writes: a read that meets the writer's lock or
        its journal mid-commit is tried again, as SQLite's own readers would."""
        import sqlite3
        for attempt in range(50):
            try:
                with sqlite3.connect(f'file:{path}?mode=ro', uri=True, timeout=5) as c:
                    c.row_factory = sqlite3.Row
                    return c.execute(sql, args).fetchone()
            except sqlite3.OperationalError as e:
                last = e
                time.sleep(0.05)
        raise last

    def state_row(self):
        if not os.path.exists(self.state):
            return None
        row = self._read(self.state, 'SELECT * FROM uplink')
        return dict(row) if row else None

    def pending(self):
        row = self.state_row() or {'cursor': 0}
        return self._read(self.db, 'SELECT count(*) FROM uplink_changes WHERE seq > ?', (row['cursor'],))[0]

    def wait_delivered(self, timeout=120):
        wait_for(lambda: self.pending() == 0, timeout, 0.1)
