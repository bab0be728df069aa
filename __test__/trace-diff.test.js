'use strict';
// Differential test of native trace mode (js/trace/, docs/TRACE.md): the Koatty 3.11.8 fixture app
// (with its KOATTY_TRACE_DIFF routes: fixtures/koatty-app/src/controller/TraceDiffController.js) runs
// twice per scenario in child processes — KOATTY_SERVE_TRACE=0 (koatty_trace 1.13.1 in JS) and
// KOATTY_SERVE_TRACE=1 (the server's tracer) — and the same requests go to both. Compared per case:
// status, status message, response headers in order (values of date and generated UUIDs aside),
// bodies, WebSocket frames, gRPC status/details/reply/metadata, and the app's log lines between two
// markers (timestamps, startTime/duration/endTime, UUIDs and stack frames normalised).
// Scenarios: the case tables of koatty-trace.md §4 over http, https, http2, ws and grpc, with the
// default config, an @ExceptionHandler class, open_trace, encoding + custom trace_header/trace_id, and
// logs_level warning; `http_timeout` is 1 s everywhere so the timeout rows run in ~1 s.
const { describe, it, before, after } = require('node:test');
const assert = require('node:assert/strict');
const path = require('path');
const grpc = require('@grpc/grpc-js');
const protoLoader = require('@grpc/proto-loader');
const WebSocket = require('ws');
const { getCerts } = require('./certs');
const {
  KOATTY_APP_DIR, startKoattyApp, request, httpsRequest, h2connect, h2close, h2request, withTimeout, sleep,
} = require('./helpers');

const UUID = /[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}/g;
const PROTO = path.join(KOATTY_APP_DIR, 'src', 'proto', 'tracediff.proto');
const LOAD_OPTIONS = { keepCase: true, longs: String, enums: String, defaults: true, oneofs: true };
const BASE_ENV = { KOATTY_TRACE_DIFF: '1', LOGS_LEVEL: 'info', config_config__http_timeout: '1' };

// ---------------------------------------------------------------------------------------------------
// Cases

/** [name, options] for the HTTP family (http, https, http2). */
const HTTP_CASES = [
  ...['str', 'html', 'json', 'num', 'bool', 'buf', 'stream', 'empty', 'undef', 'nul', 'big', 's404body', 's400',
    's400body', 'created', 'boom', 'throwhdr', 'quote', 'teapot', 'exc', 'excc1', 'exc404', 'forbid', 'custom',
    'redirect', 'manual', 'streamerr', 'headers', 'onfinish', 'method'].map((r) => [r, { path: `/td/${r}` }]),
  ['plain middleware 201', { path: '/mw/201' }],
  ['plain middleware 404 + body', { path: '/mw/404body' }],
  ['ctx state', { path: '/td/ctxinfo', headers: { 'X-Request-Id': 'ctx-1' } }],
  ['traps', { path: '/td/traps' }],
  ['ctx state, generated id', { path: '/td/ctxinfo?x=1' }],
  ['unknown route', { path: '/td/nope' }],
  ['405', { method: 'POST', path: '/td/str', body: 'x' }],
  ['501 PROPFIND', { method: 'PROPFIND', path: '/td/str' }],
  ['OPTIONS', { method: 'OPTIONS', path: '/td/str' }],
  ['HEAD string', { method: 'HEAD', path: '/td/str' }],
  ['HEAD json', { method: 'HEAD', path: '/td/json' }],
  ['HEAD buffer', { method: 'HEAD', path: '/td/buf' }],
  ['HEAD unknown', { method: 'HEAD', path: '/td/nope' }],
  ['id: header', { path: '/td/str?requestId=q-0', headers: { 'X-Request-Id': 'h-1' } }],
  ['id: two headers', { path: '/td/str', headers: { 'X-Request-Id': ['a', 'b'] } }],
  ['id: empty header + query', { path: '/td/str?requestId=q-9', headers: { 'X-Request-Id': '' } }],
  ['id: query', { path: '/td/str?requestId=q-123' }],
  ['id: repeated query', { path: '/td/str?requestId=a&requestId=b' }],
  ['id: query + and %20', { path: '/td/str?requestId=a+b%20c' }],
  ['id: lower-case query name', { path: '/td/str?requestid=lower' }],
  ['id: latin1, string body', { path: '/td/str?requestId=%C3%A9' }],
  ['id: latin1, Buffer body', { path: '/td/buf?requestId=%C3%A9' }],
  ['id: latin1, no body', { path: '/td/nul?requestId=%C3%A9' }],
  ['id: latin1, JSON body', { path: '/td/json?requestId=%C3%A9' }],
  ['id: latin1, stream body', { path: '/td/stream?requestId=%C3%A9' }],
  ['id: latin1, error', { path: '/td/boom?requestId=%C3%A9' }],
  ['id: latin1 byte in the header', { path: '/td/str', headers: { 'X-Request-Id': '\u00e9' } }],
  ['id: UTF-8 bytes in the header', { path: '/td/buf', headers: { 'X-Request-Id': '\u00c3\u00a9' } }],
  ['id: invalid char', { path: '/td/str?requestId=a%0Ab' }],
  ['id: not latin1', { path: '/td/str?requestId=%E4%B8%AD' }],
  ['id: custom header', { path: '/td/str?traceId=t-2', headers: { 'X-Trace-Id': 't-1' } }],
  ['id: custom query', { path: '/td/str?traceId=t-3' }],
  ['timeout', { path: '/td/slow' }],
  ['timeout with a body set', { path: '/td/slowbody' }],
  // the timer outlives the wait for the response head: koatty_trace's timer still fires
  ['response out before the timeout', { path: '/td/manualslow', settle: 1300 }],
  ['client gone before the timeout', { path: '/td/slow', timeout: 300, settle: 1300 }],
  // many requests at once: access lines (native writes) interleave with ERROR and user lines (JS)
  ['concurrent mix', { concurrent: 28 }],
  ['circular JSON (no answer)', { path: '/td/circular', timeout: 700, settle: 1300 }],
];
const HTTP_SHUTDOWN_CASES = [
  ['shutdown GET', { path: '/td/str' }],
  ['shutdown HEAD', { method: 'HEAD', path: '/td/str' }],
  ['shutdown unknown route', { path: '/td/nope', headers: { 'X-Request-Id': 'sd-1' } }],
];

/** [name, { path, headers, messages, timeout }] — each message is expected to get one frame. */
const WS_CASES = [
  ['echo text', { path: '/td/echo', messages: ['hello'] }],
  ['echo json text', { path: '/td/echo', messages: ['{"a":1}'] }],
  ['echo binary', { path: '/td/echo', messages: [Buffer.from('second')] }],
  ...['str', 'json', 'big', 'buf', 'num', 'bool', 'undef', 'nul', 'empty', 'created', 's400', 's400body', 'boom',
    'quote', 'exc', 'forbid', 'custom', 'teapot', 'onfinish'].map((r) => [r, { path: `/td/${r}`, messages: ['m'] }]),
  ['unknown path', { path: '/td/nope', messages: ['m'] }],
  ['ctx state, header id', { path: '/td/ctxinfo', headers: { 'X-Request-Id': 'ws-1' }, messages: ['1', '2'] }],
  ['ctx state, query id', { path: '/td/ctxinfo?requestId=wq-1', messages: ['1'] }],
  ['ctx state, generated ids', { path: '/td/ctxinfo', messages: ['1', '2'] }],
  ['timeout', { path: '/td/slow', messages: ['m'], timeout: 3000 }],
];
const WS_SHUTDOWN_CASES = [
  ['shutdown', { path: '/td/echo', messages: ['during shutdown'] }],
  ['shutdown unknown path', { path: '/td/nope', messages: ['m'] }],
];

/** [name, { method, request, metadata }]; Do's request name picks the controller's case. */
const GRPC_CASES = [
  ['ok + metadata', { method: 'Do', request: { name: 'a' }, metadata: { 'x-custom': 'abc', requestid: 'client-rid' } }],
  ['ok, body requestId', { method: 'Do', request: { name: 'b', requestId: 'body-rid' } }],
  ...['Boom', 'Quote', 'Exc', 'ExcC1', 'Forbid', 'S400', 'Undef', 'Info'].map((m) => [m, { method: 'Do', request: { name: m } }]),
  ['Info + requestid metadata', { method: 'Do', request: { name: 'Info' }, metadata: { requestid: 'md-rid' } }],
  ['unimplemented', { method: 'Unrouted', request: { name: 'u' } }],
  ['timeout', { method: 'Do', request: { name: 'Slow' } }],
];
const GRPC_SHUTDOWN_CASES = [
  ['shutdown', { method: 'Do', request: { name: 'sd' }, metadata: { 'x-custom': 'sd' } }],
];

// ---------------------------------------------------------------------------------------------------
// Normalisation

function mask(text) {
  return String(text).replace(UUID, '<uuid>');
}

function normLog(text) {
  return text
    .replace(/\[\d{4}-\d\d-\d\d \d\d:\d\d:\d\d\.\d{3} [+-]\d\d:\d\d\]/g, '[TS]')
    .replace(/,stack:"[\s\S]*?"\}(?=\n|$)/g, ',stack:<stack>}')
    .replace(/"(startTime|duration|endTime)":"-?\d+"/g, '"$1":"<n>"')
    .replace(UUID, '<uuid>')
    .split('\n')
    .filter((l) => l !== '' && !/^\s+at /.test(l))
    .join('\n');
}

function errorOf(err) {
  return { error: err.code || String(err.message).replace(/\d{2,5}/g, 'N') };
}

function headerList(raw) {
  const out = [];
  for (let i = 0; i < raw.length; i += 2) {
    const name = raw[i].toLowerCase();
    out.push(`${raw[i]}: ${name === 'date' ? '<date>' : mask(raw[i + 1])}`);
  }
  return out;
}

// ---------------------------------------------------------------------------------------------------
// One app: its log, split by markers

class DiffApp {
  constructor(app) {
    this.app = app;
    this.log = '';
    this.mark = 0;
    app.child.stdout.on('data', (d) => { this.log += d; });
  }

  /** The log lines written since the last call (a marker round trip through the app). */
  async cut() {
    const n = ++this.mark;
    const tag = `@@mark ${n}\n`;
    this.app.child.send(`trace-diff:mark:${n}`);
    const deadline = Date.now() + 5000;
    while (!this.log.includes(tag)) {
      if (Date.now() > deadline) throw new Error(`no marker ${n} from the app\n${this.app.output()}`);
      await sleep(2);
    }
    const i = this.log.indexOf(tag);
    const chunk = this.log.slice(0, i);
    this.log = this.log.slice(i + tag.length);
    return normLog(chunk);
  }

  async probe() {
    this.app.child.send('trace-diff:probe');
    const deadline = Date.now() + 5000;
    let m;
    while (!(m = /@@probe (.*)\n/.exec(this.log))) {
      if (Date.now() > deadline) throw new Error('no probe answer');
      await sleep(2);
    }
    this.log = this.log.replace(m[0], '');
    return JSON.parse(m[1]);
  }

  setStatus(v) {
    this.app.child.send(`trace-diff:status:${v ?? ''}`);
    return sleep(50);
  }
}

// ---------------------------------------------------------------------------------------------------
// Clients

async function httpCase(kind, port, ctxExtra, opts) {
  const { timeout = 3000, settle: _settle, ...rest } = opts;
  try {
    let r;
    if (kind === 'h2') {
      r = await h2request(ctxExtra.session(), {
        method: rest.method, path: rest.path, body: rest.body, timeout,
        headers: Object.fromEntries(Object.entries(rest.headers || {}).map(([k, v]) => [k.toLowerCase(), v])),
      });
      const headers = Object.entries(r.headers).filter(([k]) => k !== ':status')
        .map(([k, v]) => `${k}: ${k === 'date' ? '<date>' : mask(Array.isArray(v) ? v.join(' | ') : v)}`);
      return { status: r.status, headers, body: mask(r.body.toString('latin1')) };
    }
    const send = kind === 'https' ? httpsRequest : request;
    r = await send({ port, timeout, ...rest, ...(kind === 'https' ? { tls: { ca: ctxExtra.ca } } : {}) });
    return { status: r.status, statusMessage: r.statusMessage, headers: headerList(r.rawHeaders), body: mask(r.body.toString('latin1')) };
  } catch (err) {
    return errorOf(err);
  }
}

function wsCase(port, { path: p, headers = {}, messages, timeout = 1500 }) {
  return new Promise((resolve) => {
    const frames = [];
    const ws = new WebSocket(`ws://127.0.0.1:${port}${p}`, { headers });
    const finish = (extra) => {
      clearTimeout(timer);
      try { ws.terminate(); } catch { /* closed */ }
      resolve({ frames, ...extra });
    };
    const timer = setTimeout(() => finish({ timedOut: true }), timeout + 1000);
    ws.on('open', () => { for (const m of messages) ws.send(m); });
    ws.on('message', (data, isBinary) => {
      frames.push(`${isBinary ? 'binary' : 'text'}: ${mask(data.toString())}`);
      if (frames.length >= messages.length) finish({});
    });
    ws.on('error', (err) => finish(errorOf(err)));
    ws.on('close', (code) => finish({ closed: code }));
  });
}

function grpcCase(client, { method, request: req, metadata = {} }) {
  return new Promise((resolve) => {
    const md = new grpc.Metadata();
    for (const [k, v] of Object.entries(metadata)) md.add(k, v);
    const out = {};
    let pending = 2;
    const done = () => { if (--pending === 0) resolve(out); };
    const plain = (m) => Object.fromEntries(Object.entries(m.toJSON()).filter(([k]) => k !== 'date').map(([k, v]) => [k, v.map((x) => mask(x))]));
    const c = client[method](req, md, { deadline: Date.now() + 4000 }, (err, value) => {
      out.code = err ? err.code : 0;
      out.details = err ? mask(err.details) : undefined;
      out.value = value ? JSON.parse(mask(JSON.stringify(value))) : value;
      done();
    });
    c.on('metadata', (m) => { out.metadata = plain(m); });
    c.on('status', (s) => { out.trailers = plain(s.metadata); done(); });
  });
}

/**
 * `n` requests at once over the paths below, each with its own id. The response part is the
 * sorted list of answers plus, per request, whether its ERROR line came before its access line
 * (as koatty_trace writes them); the log part is compared sorted (the interleaving of requests
 * is timing, not behaviour).
 */
const CONCURRENT_PATHS = ['/td/str', '/td/boom', '/td/json', '/td/nope', '/td/onfinish', '/td/quote', '/td/buf'];
async function concurrentCase(kind, port, ctxExtra, n) {
  const ids = Array.from({ length: n }, (_, i) => `c-${i}`);
  const answers = await Promise.all(ids.map((id, i) => httpCase(kind, port, ctxExtra, {
    path: CONCURRENT_PATHS[i % CONCURRENT_PATHS.length], headers: { 'X-Request-Id': id },
  })));
  return { answers: answers.map((a) => JSON.stringify(a)).sort(), ids };
}

function logOrder(log, ids) {
  const lines = log.split('\n');
  const order = {};
  for (const id of ids) {
    const tag = `"requestId":"${id}"`;
    const access = lines.findIndex((l) => l.includes(tag) && l.includes('"action"'));
    const error = lines.findIndex((l) => l.includes(tag) && l.includes('"message"'));
    order[id] = access === -1 ? 'no access line' : error === -1 ? 'access' : error < access ? 'error, access' : 'access, error';
  }
  return order;
}

// ---------------------------------------------------------------------------------------------------
// Scenarios

let certs = null;
function tlsEnv() {
  certs = certs || getCerts();
  return { KOATTY_TEST_KEY_FILE: certs.server.key, KOATTY_TEST_CRT_FILE: certs.server.cert };
}

const SCENARIOS = [
  { name: 'http, default config', kind: 'http' },
  // TZ: access-line timestamps carry the local offset (koatty_logger's fecha 'Z').
  { name: 'http, @ExceptionHandler', kind: 'http', env: { KOATTY_TRACE_DIFF_EH: '1', TZ: 'America/St_Johns' } },
  { name: 'http, open_trace', kind: 'http', env: { config_config__open_trace: 'true' }, fallback: true },
  {
    name: 'http, encoding gbk + trace_header X-Trace-Id + trace_id traceId',
    kind: 'http',
    env: { config_config__encoding: 'gbk', config_config__trace_header: 'X-Trace-Id', config_config__trace_id: 'traceId' },
  },
  { name: 'http, logs_level warning', kind: 'http', env: { LOGS_LEVEL: 'warning' } },
  // koatty_trace's ctx.set throws on every request (Koa's 500): nothing may be preset natively
  {
    name: 'http, trace_header not a header name',
    kind: 'http',
    env: { config_config__trace_header: 'Bad Header' },
    cases: ['str', 'id: query', 'unknown route', 'HEAD string'],
  },
  // createContext returns a Proxy that refuses deletes and records its traps (the record is the
  // 'traps' case's body): the tracer's own work on the context must not show.
  {
    name: 'http, context in a Proxy refusing deletes',
    kind: 'http',
    env: { KOATTY_TRACE_DIFF_PROXY_CTX: '1' },
    cases: ['str', 'traps', 'ctx state', 'boom', 'unknown route'],
  },
  { name: 'http, DefaultLogger.Info/Error wrapped, logs_level warning', kind: 'http', env: { LOGS_LEVEL: 'warning', KOATTY_TRACE_DIFF_WRAP_LOGGER: '1' } },
  { name: 'https', kind: 'https', env: () => ({ KOATTY_TEST_PROTOCOL: 'https', ...tlsEnv() }) },
  { name: 'http2 (TLS, h2)', kind: 'h2', env: () => ({ KOATTY_TEST_PROTOCOL: 'http2', ...tlsEnv() }) },
  { name: 'ws', kind: 'ws', env: { KOATTY_TEST_PROTOCOL: 'ws', router_router__protocol: 'ws' } },
  { name: 'ws, @ExceptionHandler', kind: 'ws', env: { KOATTY_TEST_PROTOCOL: 'ws', router_router__protocol: 'ws', KOATTY_TRACE_DIFF_EH: '1' } },
  { name: 'grpc', kind: 'grpc', env: { KOATTY_TEST_PROTOCOL: 'grpc', router_router__protocol: 'grpc', router_router__ext__protoFile: PROTO } },
  {
    name: 'grpc, @ExceptionHandler + trace_id requestid',
    kind: 'grpc',
    env: {
      KOATTY_TEST_PROTOCOL: 'grpc', router_router__protocol: 'grpc', router_router__ext__protoFile: PROTO,
      KOATTY_TRACE_DIFF_EH: '1', config_config__trace_id: 'requestid',
    },
  },
];

/** Runs every case against one app; resolves { probe, results: [{ name, response, log }] }. */
async function runCases(scenario, diffApp) {
  const port = diffApp.app.port;
  const results = [];
  let session = null;
  const extra = {
    ca: certs && certs.ca.certPem,
    session: () => session,
  };
  const allCases = { http: HTTP_CASES, https: HTTP_CASES, h2: HTTP_CASES, ws: WS_CASES, grpc: GRPC_CASES }[scenario.kind];
  const caseList = scenario.cases ? allCases.filter(([name]) => scenario.cases.includes(name)) : allCases;
  const shutdownList = { http: HTTP_SHUTDOWN_CASES, https: HTTP_SHUTDOWN_CASES, h2: HTTP_SHUTDOWN_CASES, ws: WS_SHUTDOWN_CASES, grpc: GRPC_SHUTDOWN_CASES }[scenario.kind];
  let grpcClient = null;
  if (scenario.kind === 'grpc') {
    const { TraceDiff } = grpc.loadPackageDefinition(protoLoader.loadSync(PROTO, LOAD_OPTIONS)).koattytest;
    grpcClient = new TraceDiff(`127.0.0.1:${port}`, grpc.credentials.createInsecure());
  }
  const one = async (name, opts) => {
    let response;
    if (opts.concurrent) {
      if (scenario.kind === 'h2' && (!session || session.destroyed || session.closed)) {
        session = await h2connect(`https://127.0.0.1:${port}`, { ca: extra.ca });
      }
      const { answers, ids } = await concurrentCase(scenario.kind, port, extra, opts.concurrent);
      await sleep(100);
      const log = await diffApp.cut();
      results.push({ name, response: { answers, order: logOrder(log, ids) }, log: log.split('\n').sort().join('\n') });
      return;
    }
    if (scenario.kind === 'ws') response = await wsCase(port, opts);
    else if (scenario.kind === 'grpc') response = await grpcCase(grpcClient, opts);
    else {
      if (scenario.kind === 'h2' && (!session || session.destroyed || session.closed)) {
        session = await h2connect(`https://127.0.0.1:${port}`, { ca: extra.ca });
      }
      response = await httpCase(scenario.kind, port, extra, opts);
    }
    if (opts.settle) await sleep(opts.settle);
    results.push({ name, response, log: await diffApp.cut() });
  };
  try {
    await diffApp.cut(); // boot lines
    for (const [name, opts] of caseList) await one(name, opts);
    const probe = await diffApp.probe();
    await diffApp.setStatus(503);
    for (const [name, opts] of shutdownList) await one(name, opts);
    return { probe, results };
  } finally {
    if (session) await h2close(session, 500);
    if (grpcClient) grpcClient.close();
  }
}

async function runScenario(scenario) {
  const env = { ...BASE_ENV, ...(typeof scenario.env === 'function' ? scenario.env() : scenario.env || {}) };
  const [off, on] = await Promise.all(['0', '1'].map((t) => startKoattyApp({ env: { ...env, KOATTY_SERVE_TRACE: t } })));
  try {
    const [a, b] = await Promise.all([runCases(scenario, new DiffApp(off)), runCases(scenario, new DiffApp(on))]);
    return { off: a, on: b, output: () => `--- off ---\n${off.output()}\n--- on ---\n${on.output()}` };
  } finally {
    off.child.kill('SIGKILL');
    on.child.kill('SIGKILL');
  }
}

function compare(name, a, b) {
  const diffs = [];
  assert.equal(a.results.length, b.results.length);
  for (let i = 0; i < a.results.length; i++) {
    const x = a.results[i];
    const y = b.results[i];
    try {
      assert.deepStrictEqual(y.response, x.response);
    } catch {
      diffs.push(`[${name}] ${x.name}: response differs\n  koatty_trace: ${JSON.stringify(x.response)}\n  native:       ${JSON.stringify(y.response)}`);
    }
    if (x.log !== y.log) {
      diffs.push(`[${name}] ${x.name}: log differs\n  koatty_trace:\n${x.log}\n  native:\n${y.log}`);
    }
  }
  return diffs;
}

// ---------------------------------------------------------------------------------------------------

describe('native trace mode vs koatty_trace 1.13.1 (same Koatty 3.11.8 app, same requests)', () => {
  const outcomes = new Map();

  before(async () => {
    // Three scenarios at a time (six app processes): well under a minute on two cores.
    const queue = SCENARIOS.slice();
    const worker = async () => {
      for (let s = queue.shift(); s; s = queue.shift()) {
        try {
          outcomes.set(s.name, await withTimeout(runScenario(s), 45000, s.name));
        } catch (err) {
          outcomes.set(s.name, { error: err });
        }
      }
    };
    await Promise.all([worker(), worker(), worker()]);
  });

  for (const scenario of SCENARIOS) {
    it(`${scenario.name}: identical responses and log lines`, () => {
      const o = outcomes.get(scenario.name);
      assert.ok(o, 'scenario ran');
      if (o.error) throw o.error;
      // The two apps really ran the two modes.
      assert.equal(o.off.probe.trace, false, 'KOATTY_SERVE_TRACE=0: server.options.trace');
      assert.equal(o.on.probe.trace, true, 'KOATTY_SERVE_TRACE=1: server.options.trace');
      assert.notEqual(o.off.probe.tracer, 'koattyServeTrace', 'koatty_trace serves the app with trace off');
      if (scenario.fallback) assert.notEqual(o.on.probe.tracer, 'koattyServeTrace', 'open_trace: koatty_trace itself, installed by the server');
      else assert.equal(o.on.probe.tracer, 'koattyServeTrace', 'the native tracer serves the app with trace on');
      const diffs = compare(scenario.name, o.off, o.on);
      assert.equal(diffs.length, 0, `${diffs.length} difference(s):\n${diffs.join('\n')}`);
    });
  }

  it('the cases ran (sanity: statuses and frames as koatty-trace.md §4 says)', () => {
    const http = outcomes.get('http, default config');
    assert.ok(http && !http.error);
    const by = Object.fromEntries(http.on.results.map((r) => [r.name, r.response]));
    assert.equal(by.str.status, 200);
    // HTTP/1 header names go out in title case (README "Differences from node").
    assert.deepEqual(by.str.headers.slice(0, 4), ['X-Request-Id: <uuid>', 'X-Powered-By: Koatty', 'X-Content-Type-Options: nosniff', 'X-Xss-Protection: 1;mode=block']);
    assert.equal(by['unknown route'].status, 500);
    assert.equal(by['unknown route'].body, '{"code":1,"message":"Not Found","data":""}');
    assert.equal(by.timeout.body, '{"code":1,"message":"Request Timeout","data":""}');
    assert.equal(by['timeout with a body set'].body, '{"code":1,"message":"Request Timeout","data":"partial"}');
    assert.equal(by['id: repeated query'].headers[0], 'X-Request-Id: a,b');
    // Header bytes as node:http writes them (the client decodes them as latin1): UTF-8 when the
    // head goes out with a string body, latin1 otherwise (koatty-trace.md §2.7.1).
    assert.equal(by['id: latin1, string body'].headers[0], 'X-Request-Id: \u00c3\u00a9');
    assert.equal(by['id: latin1, JSON body'].headers[0], 'X-Request-Id: \u00c3\u00a9');
    assert.equal(by['id: latin1, error'].headers[0], 'X-Request-Id: \u00c3\u00a9');
    assert.equal(by['id: latin1, Buffer body'].headers[0], 'X-Request-Id: \u00e9');
    assert.equal(by['id: latin1, no body'].headers[0], 'X-Request-Id: \u00e9');
    assert.equal(by['id: latin1, stream body'].headers[0], 'X-Request-Id: \u00e9');
    // HTTP/2 header values are always latin1 (node's http2 writes them one byte per char)
    const h2 = outcomes.get('http2 (TLS, h2)');
    assert.ok(h2 && !h2.error);
    const byH2 = Object.fromEntries(h2.on.results.map((r) => [r.name, r.response]));
    assert.ok(byH2['id: latin1, string body'].headers.includes('x-request-id: \u00e9'), byH2['id: latin1, string body'].headers.join('|'));
    assert.equal(by['response out before the timeout'].body, 'early');
    const mix = http.on.results.find((r) => r.name === 'concurrent mix');
    assert.equal(mix.response.answers.length, 28);
    assert.equal(Object.values(mix.response.order).filter((o) => o === 'error, access').length, 12, JSON.stringify(mix.response.order));
    assert.ok(Object.values(mix.response.order).every((o) => o === 'error, access' || o === 'access'), JSON.stringify(mix.response.order));
    const timeoutLog = http.on.results.find((r) => r.name === 'response out before the timeout').log;
    assert.match(timeoutLog, /"message":"Request Timeout"/, 'the timer fired after the response went out');
    // The native side did the work in trace mode, and nothing of it ran with koatty_trace.
    const native = http.on.probe.native;
    assert.ok(native.ids > 50 && native.presetHeaders > 40 && native.nativeTimers > 50, JSON.stringify(native));
    // every access line (before the shutdown cases, where the probe is read) was written natively
    const accessLines = (o) => o.on.results.slice(0, HTTP_CASES.length)
      .reduce((n, r) => n + (r.log.match(/^\[TS\] {2}(INFO|ERROR) \{"action"/gm) || []).length, 0);
    assert.ok(native.nativeLines > 50, `access lines written natively: ${JSON.stringify(native)}`);
    assert.equal(native.nativeLines, accessLines(http), 'every access line written natively');
    assert.ok(native.nativeTimeouts >= 3 && native.timerTakeovers >= 2, `timeouts through the native timer: ${JSON.stringify(native)}`);
    assert.deepEqual(http.off.probe.native, { ids: 0, presetHeaders: 0, nativeTimers: 0, nativeLines: 0, nativeTimeouts: 0, timerTakeovers: 0 });
    const warning = outcomes.get('http, logs_level warning');
    assert.ok(warning && !warning.error);
    // at warning only the ERROR access lines are formatted (natively), the INFO ones not at all
    assert.equal(warning.on.probe.native.nativeLines, accessLines(warning));
    assert.ok(accessLines(warning) > 10 && accessLines(warning) < accessLines(http) - 20, `${accessLines(warning)} of ${accessLines(http)}`);
    assert.equal(by['id: invalid char'].body, 'Internal Server Error');
    assert.equal(by['shutdown GET'].status, 500);
    assert.match(by['shutdown GET'].body, /Server is in the process of shutting down/);
    assert.ok(by['circular JSON (no answer)'].error, 'circular JSON: no answer');
    const eh = Object.fromEntries(outcomes.get('http, @ExceptionHandler').on.results.map((r) => [r.name, r.response]));
    assert.equal(eh.forbid.status, 403);
    assert.ok(eh.timeout.headers.includes('X-Eh: 408/1/true'), 'the handler ran in the request\'s async context on timeout');
    const ws = Object.fromEntries(outcomes.get('ws').on.results.map((r) => [r.name, r.response]));
    assert.deepEqual(ws['echo text'].frames, ["text: 'hello'"]);
    assert.deepEqual(ws['unknown path'].frames, ['text: {"code":1,"message":"OK","data":""}']);
    const g = Object.fromEntries(outcomes.get('grpc').on.results.map((r) => [r.name, r.response]));
    assert.equal(g['ok + metadata'].code, 0);
    assert.deepEqual(g['ok + metadata'].metadata['x-powered-by'], ['Koatty']);
    assert.deepEqual(g['ok + metadata'].metadata.requestid, ['undefined']);
    assert.equal(g.timeout.code, 13);
  });

  it('an app that sets app.tracer itself before its first request keeps its own (no koatty_trace, no native tracer)', async () => {
    const app = await startKoattyApp({ env: { ...BASE_ENV, KOATTY_SERVE_TRACE: '1', KOATTY_TRACE_DIFF_OWN_TRACER: '1' } });
    try {
      const r = await request({ port: app.port, path: '/td/str' });
      assert.equal(r.status, 200, app.output());
      assert.equal(r.headers['x-own-tracer'], '1');
      assert.equal(r.headers['x-powered-by'], undefined, 'no tracer but the app\'s');
      assert.equal(r.body.toString(), 'Hello World');
    } finally {
      app.child.kill('SIGKILL');
    }
  });

  after(() => {
    // TRACE_DIFF_DUMP=<file>: every case's normalised response and log lines, both modes, as JSON.
    if (process.env.TRACE_DIFF_DUMP) {
      const dump = {};
      for (const [name, o] of outcomes) dump[name] = o.error ? { error: String(o.error.stack || o.error) } : { off: o.off, on: o.on };
      require('fs').writeFileSync(process.env.TRACE_DIFF_DUMP, JSON.stringify(dump, null, 1));
    }
    for (const [name, o] of outcomes) {
      if (o.error) console.error(`[trace-diff] ${name}: ${o.error.stack || o.error}`);
    }
  });
});
