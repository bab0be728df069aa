#!/usr/bin/env node
'use strict';
// Draws bench/chart.svg from the measured figures in bench/RESULTS.md, bench/ws/RESULTS-ws.md and
// bench/grpc/RESULTS-grpc.md: two horizontal bar charts of native ÷ peer ratios (throughput, higher
// is better; JS-thread CPU per request, lower is better), a 1.0× line and each target where the
// issue set one. Every figure is read from the markdown (tables, or the sentence that states it);
// if one cannot be found, or the verdict written next to a target disagrees with the figure, this
// exits with an error instead of drawing something stale. No dependencies; plain SVG.
//
//   node bench/chart.js            # writes bench/chart.svg
//   node bench/chart.js --stdout   # prints the SVG and the figures instead
const fs = require('node:fs');
const path = require('node:path');

const DIR = __dirname;
const SOURCES = {
  http: 'RESULTS.md',
  ws: path.join('ws', 'RESULTS-ws.md'),
  grpc: path.join('grpc', 'RESULTS-grpc.md'),
};
const text = Object.fromEntries(Object.entries(SOURCES).map(([k, f]) => [k, fs.readFileSync(path.join(DIR, f), 'utf8')]));

function fail(message) {
  console.error(`bench/chart.js: ${message}`);
  process.exit(1);
}

// --- reading the markdown ------------------------------------------------------------------------

const strip = (s) => s.replace(/\*\*|`/g, '').trim();
const cellsOf = (line) => line.trim().replace(/^\||\|$/g, '').split('|').map((c) => c.trim());

/** Every table of a markdown text: `{ header: [..], rows: [[..]] }`. */
function tables(md) {
  const out = [];
  const lines = md.split('\n');
  for (let i = 0; i < lines.length; i++) {
    if (!/^\|/.test(lines[i]) || !/^\|[\s:|-]+\|$/.test((lines[i + 1] ?? '').trim())) continue;
    const header = cellsOf(lines[i]).map(strip);
    const rows = [];
    let j = i + 2;
    for (; j < lines.length && /^\|/.test(lines[j]); j++) rows.push(cellsOf(lines[j]));
    out.push({ header, rows });
    i = j;
  }
  return out;
}

/** The first ratio (`1.29×`, `0.259`) in a cell. */
function ratioOf(cell, what) {
  const m = /(\d+(?:\.\d+)?)\s*×?/.exec(strip(cell));
  if (!m) fail(`${what}: no figure in "${cell}"`);
  return Number(m[1]);
}

/**
 * The cell of the first row named `row` (first column) in the tables of `source` that have a column
 * `after`; the value is the cell right after that column (the "× base" next to "req/s"), or the
 * column itself with `same: true`.
 */
function tableRatio(source, row, after, { same = false } = {}) {
  const hits = [];
  for (const t of tables(text[source])) {
    const col = t.header.indexOf(after);
    if (col < 0) continue;
    for (const r of t.rows) if (strip(r[0]) === row) hits.push(r[same ? col : col + 1]);
  }
  const what = `${SOURCES[source]}: row ${row}, column ${same ? '' : 'after '}"${after}"`;
  if (hits.length === 0) fail(`${what}: not found`);
  // The RESULTS files list runs newest first: the first row is the current figure.
  return ratioOf(hits[0], what);
}

/** A target row (first cell matches `re`, capturing the target): `{ target, verdict, measured }`. */
function targetRow(source, re) {
  for (const t of tables(text[source])) {
    for (const r of t.rows) {
      const m = re.exec(strip(r[0]));
      if (!m) continue;
      const target = m[1] === undefined ? undefined : m[1].includes('/') ? Number(m[1].split('/')[0]) / Number(m[1].split('/')[1]) : Number(m[1]);
      const verdictCell = strip(r[r.length - 1]).toLowerCase();
      const verdict = /missed|not met/.test(verdictCell) ? 'missed' : /\bmet\b/.test(verdictCell) ? 'met' : fail(`${SOURCES[source]}: no verdict in "${r.join('|')}"`);
      return { target, verdict, measured: ratioOf(r[1], `${SOURCES[source]}: ${r[0]}`) };
    }
  }
  return fail(`${SOURCES[source]}: no target row matching ${re}`);
}

/** A figure stated in prose: the first capture of `re` inside the section starting at `heading`. */
function prose(source, re, heading) {
  let md = text[source];
  if (heading) {
    const at = md.indexOf(heading);
    if (at < 0) fail(`${SOURCES[source]}: heading "${heading}" not found`);
    const next = md.indexOf('\n#', at + heading.length);
    md = md.slice(at, next < 0 ? undefined : next);
  }
  const m = re.exec(md);
  if (!m) fail(`${SOURCES[source]}: ${re} not found${heading ? ` under "${heading}"` : ''}`);
  return Number(m[1]);
}

// --- the figures ---------------------------------------------------------------------------------

const t3 = {
  bare: targetRow('http', /^bare handler ≥ ([\d.]+)× node:http req\/s/),
  bareJs: targetRow('http', /^bare handler JS-thread CPU\/request ≤ (\d+\/\d+) of node:http's/),
  koatty: targetRow('http', /^minimal Koatty app ≥ ([\d.]+)× JS koatty_serve/),
  koattyInfo: targetRow('http', /^same with the access log at info/),
};
t3.koattyInfo.target = t3.koatty.target;
const t4 = {
  https: targetRow('http', /^HTTPS: native ≥ ([\d.]+)× node:https req\/s/),
  compat: targetRow('http', /^HTTP\/2: native ≥ ([\d.]+)× node http2 compat API req\/s/),
  stream: targetRow('http', /^HTTP\/2: native ≥ ([\d.]+)× node http2 stream API req\/s/),
};
const t6 = {
  unary: targetRow('grpc', /^unary calls\/s ≥ ([\d.]+)×/),
  unaryJs: targetRow('grpc', /^unary JS-thread CPU per call ≤ (\d+\/\d+)/),
  stream: targetRow('grpc', /^server-streaming msgs\/s ≥ ([\d.]+)×/),
};
// WebSocket goals are stated in the "Reading against the issue's goals" bullets.
const wsGoals = '### Reading against the issue';
prose('ws', /\*\*(Throughput) ≥ `ws`'s\*\*/, wsGoals);
const wsThroughputMissed = /\*\*Throughput ≥ `ws`'s\*\*: \*\*not met\*\*/.test(text.ws);
const wsJsTarget = 1 / prose('ws', /\*\*JS-thread CPU per message ≤ 1\/(\d+) of `ws`'s\*\*/, wsGoals);

/** `{ label, peer, value, target?, better: 'higher'|'lower', stated? }` per bar. */
const throughput = [
  { label: 'Koatty app, logs at warning', peer: 'JS koatty_serve 2.3.0', value: tableRatio('http', 'koatty-native', 'req/s'), ...t3.koatty },
  { label: 'Koatty app, access log at info', peer: 'JS koatty_serve 2.3.0', value: tableRatio('http', 'koatty-native-info', 'req/s'), ...t3.koattyInfo },
  { label: 'bare handler, HTTP/1.1', peer: 'node:http', value: tableRatio('http', 'native-bare', 'req/s'), ...t3.bare },
  { label: 'bare handler, HTTPS', peer: 'node:https', value: tableRatio('http', 'native-https-bare', 'req/s'), ...t4.https },
  { label: 'bare handler, HTTP/2 over TLS', peer: 'node:http2 compat API', value: tableRatio('http', 'native-h2-bare', 'req/s'), ...t4.compat },
  { label: 'bare handler, HTTP/2 over TLS', peer: 'node:http2 stream API', value: tableRatio('http', 'native-h2-bare', 'req/s ×', { same: true }), ...t4.stream },
  { label: 'gRPC unary', peer: '@grpc/grpc-js', value: t6.unary.measured, ...t6.unary },
  { label: 'gRPC server streaming (msgs/s)', peer: '@grpc/grpc-js', value: t6.stream.measured, ...t6.stream },
  { label: 'WebSocket echo, run A', peer: 'ws', value: prose('ws', /msgs\/s \*\*([\d.]+)×\*\*/, '### Run A'), target: 1, verdict: wsThroughputMissed ? 'missed' : 'met' },
  { label: 'WebSocket echo, run B', peer: 'ws', value: prose('ws', /msgs\/s \*\*([\d.]+)×\*\*/, '### Run B'), target: 1, verdict: wsThroughputMissed ? 'missed' : 'met' },
].map((b) => ({ ...b, better: 'higher' }));

const jsCpu = [
  { label: 'Koatty app, logs at warning', peer: 'JS koatty_serve 2.3.0', value: tableRatio('http', 'koatty-native', 'JS-thread µs/req') },
  { label: 'bare handler, HTTP/1.1', peer: 'node:http', value: tableRatio('http', 'native-bare', 'JS-thread µs/req'), target: t3.bareJs.target, verdict: t3.bareJs.verdict },
  { label: 'bare handler, HTTPS', peer: 'node:https', value: tableRatio('http', 'native-https-bare', 'JS-thread µs/req') },
  { label: 'bare handler, HTTP/2 over TLS', peer: 'node:http2 compat API', value: tableRatio('http', 'native-h2-bare', 'JS-thread µs/req') },
  { label: 'bare handler, HTTP/2 over TLS', peer: 'node:http2 stream API', value: tableRatio('http', 'native-h2-bare', 'JS-thread µs/req ×', { same: true }) },
  { label: 'gRPC unary', peer: '@grpc/grpc-js', value: t6.unaryJs.measured, target: t6.unaryJs.target, verdict: t6.unaryJs.verdict },
  { label: 'gRPC server streaming (per message)', peer: '@grpc/grpc-js', value: prose('grpc', /JS-thread\s+CPU per message [\d.]+ vs [\d.]+ µs = \*\*([\d.]+)\*\*/) },
  { label: 'WebSocket echo, run A', peer: 'ws', value: prose('ws', /JS-thread CPU per message \*\*([\d.]+)×\*\*/, '### Run A'), target: wsJsTarget },
  { label: 'WebSocket echo, run B', peer: 'ws', value: prose('ws', /JS-thread CPU per message \*\*([\d.]+)×\*\*/, '### Run B'), target: wsJsTarget },
].map((b) => ({ ...b, better: 'lower' }));

// The verdict written in the RESULTS file must agree with the figure (else something is stale).
for (const b of [...throughput, ...jsCpu]) {
  if (b.target === undefined) continue;
  const met = b.better === 'higher' ? b.value >= b.target : b.value <= b.target;
  if (b.verdict && (b.verdict === 'met') !== met) fail(`${b.label} vs ${b.peer}: ${b.value} against target ${b.target} but the RESULTS file says "${b.verdict}"`);
  b.verdict = met ? 'met' : 'missed';
}

// --- SVG -----------------------------------------------------------------------------------------

const W = 1080;
const LABEL_W = 390;
const PLOT_W = 420;
const ROW_H = 26;
const BAR_H = 16;
const COLORS = { met: '#2e7d32', missed: '#d84315', none: '#607d8b' };
const escXml = (s) => String(s).replace(/&/g, '&amp;').replace(/</g, '&lt;').replace(/>/g, '&gt;');
const fmt = (v) => v.toFixed(2).replace(/0$/, '').replace(/\.0?$/, '') + '×';
const fmtTarget = (b) => (b.better === 'higher' ? `≥ ${fmt(b.target)}` : `≤ ${Math.abs(b.target - 1 / 3) < 1e-9 ? '1/3' : Math.abs(b.target - 0.5) < 1e-9 ? '1/2' : fmt(b.target)}`);

function panel(title, subtitle, bars, max, ticks, y0) {
  const out = [];
  const x0 = LABEL_W;
  const sx = (v) => x0 + (Math.min(v, max) / max) * PLOT_W;
  const top = y0 + 44;
  const bottom = top + bars.length * ROW_H;
  out.push(`<text x="12" y="${y0 + 18}" class="title">${escXml(title)}</text>`);
  out.push(`<text x="12" y="${y0 + 36}" class="sub">${escXml(subtitle)}</text>`);
  for (const t of ticks) {
    out.push(`<line x1="${sx(t)}" y1="${top - 4}" x2="${sx(t)}" y2="${bottom}" class="${t === 1 ? 'one' : 'grid'}"/>`);
    out.push(`<text x="${sx(t)}" y="${bottom + 14}" class="tick" text-anchor="middle">${fmt(t)}</text>`);
  }
  bars.forEach((b, i) => {
    const y = top + i * ROW_H;
    const color = COLORS[b.target === undefined ? 'none' : b.verdict];
    out.push(`<text x="${x0 - 8}" y="${y + BAR_H - 3}" class="label" text-anchor="end">${escXml(b.label)} <tspan class="peer">vs ${escXml(b.peer)}</tspan></text>`);
    out.push(`<rect x="${x0}" y="${y}" width="${(sx(b.value) - x0).toFixed(1)}" height="${BAR_H}" fill="${color}"/>`);
    let note = fmt(b.value);
    if (b.target !== undefined) {
      const tx = sx(b.target).toFixed(1);
      out.push(`<line x1="${tx}" y1="${y - 3}" x2="${tx}" y2="${y + BAR_H + 3}" class="target"/>`);
      note += `  target ${fmtTarget(b)}: ${b.verdict}`;
    }
    const textX = Math.max(sx(b.value), b.target !== undefined ? sx(b.target) : 0) + 6;
    out.push(`<text x="${textX.toFixed(1)}" y="${y + BAR_H - 3}" class="value">${escXml(note)}</text>`);
  });
  return { svg: out.join('\n'), height: bottom + 24 - y0 };
}

const p1 = panel(
  'Throughput: native ÷ peer (higher is better)',
  'req/s, or msgs/s; medians of paired interleaved rounds on a 2-vCPU machine shared with the load generator',
  throughput,
  4,
  [0, 1, 2, 3, 4],
  0,
);
const p2 = panel(
  'JS-thread CPU per request: native ÷ peer (lower is better)',
  'CPU time of the main (JavaScript) thread per request or message; what scales on a many-core host',
  jsCpu,
  1.25,
  [0, 0.25, 0.5, 0.75, 1],
  p1.height + 16,
);
const legendY = p1.height + 16 + p2.height + 8;
const H = legendY + 40;
const svg = `<svg xmlns="http://www.w3.org/2000/svg" width="${W}" height="${H}" viewBox="0 0 ${W} ${H}" font-family="Helvetica, Arial, sans-serif" role="img" aria-label="koatty_serve native vs peers: throughput and JS-thread CPU ratios">
<style>
.title { font-size: 15px; font-weight: bold; fill: #222; }
.sub { font-size: 11px; fill: #555; }
.label { font-size: 12px; fill: #222; }
.peer { fill: #666; }
.value { font-size: 12px; fill: #222; }
.tick { font-size: 11px; fill: #555; }
.grid { stroke: #ddd; stroke-width: 1; }
.one { stroke: #222; stroke-width: 1.2; stroke-dasharray: 4 3; }
.target { stroke: #000; stroke-width: 2.5; }
</style>
<rect width="${W}" height="${H}" fill="#fff"/>
${p1.svg}
<g transform="translate(0 0)">
${p2.svg}
</g>
<rect x="12" y="${legendY}" width="12" height="12" fill="${COLORS.met}"/><text x="30" y="${legendY + 11}" class="value">target met</text>
<rect x="120" y="${legendY}" width="12" height="12" fill="${COLORS.missed}"/><text x="138" y="${legendY + 11}" class="value">target missed</text>
<rect x="250" y="${legendY}" width="12" height="12" fill="${COLORS.none}"/><text x="268" y="${legendY + 11}" class="value">no target</text>
<line x1="360" y1="${legendY - 2}" x2="360" y2="${legendY + 14}" class="target"/><text x="368" y="${legendY + 11}" class="value">target</text>
<line x1="430" y1="${legendY - 2}" x2="430" y2="${legendY + 14}" class="one"/><text x="438" y="${legendY + 11}" class="value">1.0× = same as the peer</text>
<text x="12" y="${legendY + 32}" class="sub">Source: bench/RESULTS.md, bench/ws/RESULTS-ws.md, bench/grpc/RESULTS-grpc.md (drawn by bench/chart.js)</text>
</svg>
`;

if (process.argv.includes('--stdout')) {
  process.stdout.write(svg);
  for (const b of [...throughput, ...jsCpu]) console.error(`${b.better === 'higher' ? 'throughput' : 'JS CPU'}\t${b.label} vs ${b.peer}\t${b.value}\t${b.target ?? ''}\t${b.verdict ?? ''}`);
} else {
  fs.writeFileSync(path.join(DIR, 'chart.svg'), svg);
  console.log(`wrote ${path.join('bench', 'chart.svg')} (${throughput.length + jsCpu.length} bars)`);
}
