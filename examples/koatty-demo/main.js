'use strict';
// koatty_serve demo: a Koatty 3.11.8 app in plain JS, booted the usual way (ExecBootStrap). Koatty
// imports `koatty_serve` itself; package.json's `overrides` make that the native addon in this repository.
//
//   npm run demo                       (from the repository root: installs, then serves until Ctrl-C)
//   DEMO_SELF_TEST=1 npm run demo      (requests its own routes, prints the answers, exits 0 / 1)
//
// Env: PORT (default 3000; with DEMO_SELF_TEST=1 and no PORT, an ephemeral port), NODE_ENV (default
// production, so Ctrl-C drains and stops the server gracefully), LOGS_LEVEL (default info).
process.env.NODE_ENV = process.env.NODE_ENV || 'production';
const SELF_TEST = process.env.DEMO_SELF_TEST === '1' || process.env.DEMO_SELF_TEST === 'true';
// The self-test must not depend on port 3000 being free; it gets an ephemeral port unless PORT is set.
if (SELF_TEST && !process.env.PORT) process.env.PORT = '0';

require('reflect-metadata');
const fs = require('fs');
const http = require('http');
const path = require('path');
const { Koatty, ExecBootStrap } = require('koatty');
const serve = require('koatty_serve');

let listening = false;

function koattyVersion() {
  try {
    return JSON.parse(fs.readFileSync(path.join(__dirname, 'node_modules', 'koatty', 'package.json'), 'utf8')).version;
  } catch {
    return '?';
  }
}

// What answered: the server object Koatty built through NewServe, and the addon's own runtime info.
function describeServer(app) {
  // The JS koatty_serve 2.x has no runtimeInfo(): then this is not the native server.
  const info = typeof serve.runtimeInfo === 'function'
    ? serve.runtimeInfo() : { native: false, buildProfile: 'n/a', workerThreads: 0, version: '2.x (JS)' };
  const server = app.server;
  return {
    info,
    className: server && server.constructor ? server.constructor.name : String(server),
    isNative: info.native === true && typeof serve.HttpServer === 'function' && server instanceof serve.HttpServer,
    address: server && server.server && server.server.address(),
  };
}

function banner(app) {
  const { info, className, isNative, address } = describeServer(app);
  const host = address.address.includes(':') ? `[${address.address}]` : address.address;
  const url = `http://${host}:${address.port}`;
  const line = '-'.repeat(78);
  const lines = [
    '',
    line,
    ` koatty_serve demo: Koatty ${koattyVersion()} on ${isNative ? 'the NATIVE' : 'a NON-native (!)'} koatty_serve ${info.version}`,
    isNative
      ? `   server class ${className}, ${info.buildProfile} build, ${info.workerThreads} tokio worker thread(s),`
        + ` NODE_ENV=${process.env.NODE_ENV}`
      : `   server class ${className}: the JS server answers here (were package.json's overrides applied?)`,
    '',
    `   Listening on ${url}`,
    '',
    '   Try:',
    `     curl ${url}/`,
    `     curl ${url}/hello/Koatty`,
    `     curl -X POST -H 'content-type: application/json' -d '{"hello":"native"}' ${url}/echo`,
    `     curl -N ${url}/stream`,
    '',
    SELF_TEST ? '   DEMO_SELF_TEST=1: requesting the routes above, then exiting.' : '   Press Ctrl-C to stop.',
    line,
    '',
  ];
  process.stdout.write(lines.join('\n') + '\n');
  return url;
}

// ---------------------------------------------------------------------------------------------------
// Self-test (DEMO_SELF_TEST=1): node's http client against our own routes.

function request(url, { method = 'GET', headers = {}, body } = {}) {
  return new Promise((resolve, reject) => {
    const started = Date.now();
    const req = http.request(url, { method, headers, agent: false }, (res) => {
      const chunks = [];
      const arrivals = [];
      res.on('data', (c) => { chunks.push(c); arrivals.push(Date.now() - started); });
      res.on('end', () => resolve({
        status: res.statusCode,
        headers: res.headers,
        text: Buffer.concat(chunks).toString('utf8'),
        arrivals,
        ms: Date.now() - started,
      }));
      res.on('error', reject);
    });
    req.setTimeout(10000, () => req.destroy(new Error(`timeout: ${method} ${url}`)));
    req.on('error', reject);
    req.end(body);
  });
}

function json(res) {
  try { return JSON.parse(res.text); } catch { return undefined; }
}

function check(cond, what) {
  if (!cond) throw new Error(`expected ${what}`);
}

async function selfTest(app, url) {
  const server = describeServer(app);
  const cases = [
    {
      name: 'GET /',
      run: () => request(`${url}/`),
      verify: (res) => {
        const b = json(res);
        check(res.status === 200, 'status 200');
        check(/application\/json/.test(res.headers['content-type'] || ''), 'a JSON content type');
        check(b && b.native === true, '"native": true in the body');
      },
    },
    {
      name: 'GET /hello/Koatty?lang=en',
      run: () => request(`${url}/hello/Koatty?lang=en`),
      verify: (res) => {
        const b = json(res);
        check(res.status === 200, 'status 200');
        check(b && b.hello === 'Koatty', '"hello": "Koatty"');
        check(b.query && b.query.lang === 'en', 'the query string');
      },
    },
    {
      name: 'POST /echo',
      run: () => {
        const payload = JSON.stringify({ hello: 'native', n: 42, list: [1, 2, 3], nested: { ok: true } });
        return request(`${url}/echo`, {
          method: 'POST',
          headers: { 'content-type': 'application/json', 'content-length': Buffer.byteLength(payload) },
          body: payload,
        });
      },
      verify: (res) => {
        const b = json(res);
        check(res.status === 200, 'status 200');
        check(b && JSON.stringify(b.echo) === JSON.stringify({ hello: 'native', n: 42, list: [1, 2, 3], nested: { ok: true } }),
          'the same JSON echoed back');
      },
    },
    {
      name: 'GET /stream',
      run: () => request(`${url}/stream`),
      verify: (res) => {
        const lines = res.text.trim().split('\n');
        check(res.status === 200, 'status 200');
        check(/^text\/plain/.test(res.headers['content-type'] || ''), 'text/plain');
        check(lines.length === 5 && lines[4].startsWith('5/5'), '5 lines, the last "5/5 ..."');
        check(res.arrivals.length > 1, 'the body in several chunks (streamed, not buffered)');
        check(res.arrivals[0] < res.ms - 300, 'the first chunk well before the end (streamed, not buffered)');
      },
      extra: (res) => `${res.arrivals.length} chunks at ${res.arrivals.join(', ')} ms;`
        + ` transfer-encoding: ${res.headers['transfer-encoding'] || '-'}`,
    },
    {
      // Koatty 3.11.8 (koatty_trace 1.13.1, no tracer) turns an unmatched route into a 500 whose body says
      // "Not Found"; the JS koatty_serve 2.3.0 answers exactly the same. The server only has to pass it on.
      name: 'GET /no-such-route (Koatty 3.11.8 answers 500 "Not Found", as with the JS koatty_serve 2.3.0)',
      run: () => request(`${url}/no-such-route`),
      verify: (res) => {
        const b = json(res);
        check(res.status === 500, 'status 500 (what Koatty 3.11.8 sends for an unknown route)');
        check(b && b.message === 'Not Found', '"message": "Not Found"');
      },
    },
  ];

  const out = (s) => process.stdout.write(s + '\n');
  out('[self-test] server object: ' + JSON.stringify({
    className: server.className, native: server.isNative, address: server.address,
    buildProfile: server.info.buildProfile,
  }));
  let failures = 0;
  if (!server.isNative) {
    failures++;
    out('[self-test] FAIL app.server is not the native koatty_serve HttpServer');
  }
  for (const c of cases) {
    let res;
    try {
      res = await c.run();
      c.verify(res);
      out(`[self-test] PASS ${c.name} -> ${res.status} ${res.headers['content-type'] || ''} (${res.ms} ms)`);
    } catch (err) {
      failures++;
      out(`[self-test] FAIL ${c.name}: ${err && err.message || err}`);
    }
    if (res) {
      out('             ' + res.text.trimEnd().split('\n').join('\n             '));
      if (c.extra) out('             (' + c.extra(res) + ')');
    }
  }
  out(failures === 0
    ? `[self-test] OK: all ${cases.length} routes answered by the native server`
    : `[self-test] FAILED: ${failures} check(s) failed`);
  return failures === 0 ? 0 : 1;
}

// ---------------------------------------------------------------------------------------------------

class App extends Koatty {
  init() {
    this.rootPath = __dirname;
    this.appPath = path.join(__dirname, 'src');
    // appStart is emitted by koatty_core's listen callback, i.e. once the server is listening. The banner
    // waits a tick so that it comes after Koatty's own "running at" lines.
    this.once('appStart', () => setImmediate(() => {
      listening = true;
      let url;
      try {
        url = banner(this);
      } catch (err) {
        console.error('[demo] could not describe the server:', err);
        process.exit(1);
      }
      if (!SELF_TEST) return;
      selfTest(this, url).then(
        (code) => process.exit(code),
        (err) => { console.error('[self-test] crashed:', err); process.exit(1); },
      );
    }));
  }
}

// A hint when the demo ends before it ever listened (e.g. EADDRINUSE on port 3000: Koatty exits 255).
process.on('exit', (code) => {
  if (!listening && code !== 0) {
    process.stderr.write(`\n[demo] exited with code ${code & 0xff} before listening; if port ${process.env.PORT || 3000}`
      + ' is busy, try PORT=3001 npm run demo\n');
  }
});

if (SELF_TEST) {
  // Never hang in CI: give up if the app has not finished booting and testing within 60 s.
  setTimeout(() => {
    console.error('[self-test] FAIL: timed out after 60 s' + (listening ? '' : ' (the app never started listening)'));
    process.exit(1);
  }, 60000);
}

module.exports = ExecBootStrap()(App);
