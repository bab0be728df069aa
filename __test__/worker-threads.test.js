'use strict';
// The addon in worker_threads: node unloads an addon when the last environment that loaded it
// exits, and loads it again for the next worker. A child process runs each case, so a crash is a
// failed exit code here, not the end of the test run.
const { describe, it } = require('node:test');
const assert = require('node:assert/strict');
const { spawnSync } = require('child_process');
const path = require('path');

const ROOT = path.resolve(__dirname, '..');

/** Runs `script` in a fresh node process; its exit status, signal and output. */
function run(script) {
  const r = spawnSync(process.execPath, ['-e', script], { timeout: 60000, encoding: 'utf8' });
  return { status: r.status, signal: r.signal, out: `${r.stdout}\n${r.stderr}` };
}

describe('worker threads', () => {
  it('workers that each load the addon, one after another (the first exited before the next loads it): no crash', () => {
    const r = run(`
      const { Worker } = require('worker_threads');
      (async () => {
        for (let i = 0; i < 4; i++) {
          const w = new Worker(${JSON.stringify(`require(${JSON.stringify(ROOT)})`)}, { eval: true });
          const code = await new Promise((resolve) => w.on('exit', resolve));
          if (code !== 0) throw new Error('worker ' + i + ' exited ' + code);
        }
        console.log('all workers done');
      })();
    `);
    assert.equal(r.signal, null, `the process died of ${r.signal}\n${r.out}`);
    assert.equal(r.status, 0, r.out);
    assert.match(r.out, /all workers done/);
  });

  it('workers that stop their servers and exit at once (the stop still running natively): no crash', () => {
    // The shutdown steps ran in futures that borrowed the server object; the worker's exit freed
    // it under them (SIGSEGV in about half the runs, outside probe of session 14).
    const worker = `
      const { parentPort } = require('worker_threads');
      const { createServer, WsServer } = require(${JSON.stringify(ROOT)});
      const h = createServer((req, res) => res.end('x'));
      const ws = new WsServer({ callback: () => () => {}, config: () => undefined }, { hostname: '127.0.0.1', port: 0, protocol: 'ws' });
      h.listen(0, '127.0.0.1', () => ws.Start(() => parentPort.postMessage('up')));
      parentPort.once('message', () => { h.close(); ws.Stop(() => {}); process.exit(0); });
    `;
    const r = run(`
      const { Worker } = require('worker_threads');
      require(${JSON.stringify(ROOT)});
      (async () => {
        for (let round = 0; round < 4; round++) {
          const ws = Array.from({ length: 2 }, () => new Worker(${JSON.stringify(worker)}, { eval: true }));
          await Promise.all(ws.map((w) => new Promise((resolve) => w.once('message', resolve))));
          ws.forEach((w) => w.postMessage('stop'));
          const codes = await Promise.all(ws.map((w) => new Promise((resolve) => w.once('exit', resolve))));
          if (codes.some((c) => c !== 0)) throw new Error('exit codes ' + codes);
        }
        console.log('all rounds done');
      })();
    `);
    assert.equal(r.signal, null, `the process died of ${r.signal}\n${r.out}`);
    assert.equal(r.status, 0, r.out);
    assert.match(r.out, /all rounds done/);
  });

  it('a worker serving requests is terminated under load, and the next worker serves again', () => {
    const worker = `
      const { parentPort } = require('worker_threads');
      const { createServer } = require(${JSON.stringify(ROOT)});
      const s = createServer((req, res) => res.end('from worker'));
      s.listen(0, '127.0.0.1', () => parentPort.postMessage(s.address().port));
    `;
    const r = run(`
      const { Worker } = require('worker_threads');
      const http = require('http');
      const get = (port) => new Promise((resolve) => {
        const q = http.get({ port, host: '127.0.0.1', agent: false }, (res) => {
          let body = '';
          res.on('data', (d) => { body += d; });
          res.on('end', () => resolve(body));
        });
        q.on('error', () => resolve(null));
      });
      (async () => {
        for (let i = 0; i < 3; i++) {
          const w = new Worker(${JSON.stringify(worker)}, { eval: true });
          const port = await new Promise((resolve) => w.once('message', resolve));
          if (await get(port) !== 'from worker') throw new Error('round ' + i + ': no answer');
          const load = Array.from({ length: 50 }, () => get(port));
          await new Promise((resolve) => setTimeout(resolve, 5));
          await w.terminate();
          await Promise.all(load);
        }
        console.log('all rounds done');
      })();
    `);
    assert.equal(r.signal, null, `the process died of ${r.signal}\n${r.out}`);
    assert.equal(r.status, 0, r.out);
    assert.match(r.out, /all rounds done/);
  });
});
