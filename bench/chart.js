#!/usr/bin/env node
'use strict';
// Draws bench/chart.svg from the issue 18 targets table in bench/RESULTS.md: three horizontal bar
// charts of native ÷ peer ratios (throughput, higher is better; CPU per operation, and memory and
// latency, lower is better), a 1.0× line and each target. Every figure is read from the markdown;
// if a row cannot be understood, or the verdict written next to a target disagrees with the figure,
// this exits with an error instead of drawing something stale. No dependencies; plain SVG.
//
//   node bench/chart.js            # writes bench/chart.svg
//   node bench/chart.js --stdout   # prints the SVG and the figures instead
const fs = require('node:fs');
const path = require('node:path');

const DIR = __dirname;
const text = { http: fs.readFileSync(path.join(DIR, 'RESULTS.md'), 'utf8') };

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

// --- the figures ---------------------------------------------------------------------------------

// Issue 18's targets, one table in RESULTS.md: `| <kind>: <workload> ≥|≤ <target>× <peer> | <measured> | <verdict> |`.
const TARGET_ROW = /^(throughput|server CPU|JS-thread CPU|memory|latency p50): (.+?) (≥|≤) ([\d.]+)× (.+)$/;
const bars = [];
for (const t of tables(text.http)) {
  if (t.header[0] !== 'issue 18 target') continue;
  for (const r of t.rows) {
    const m = TARGET_ROW.exec(strip(r[0]));
    if (!m) fail(`RESULTS.md: issue 18 target row not understood: "${r[0]}"`);
    const verdictCell = strip(r[r.length - 1]).toLowerCase();
    const verdict = /missed|not met/.test(verdictCell) ? 'missed' : /\bmet\b/.test(verdictCell) ? 'met' : fail(`RESULTS.md: no verdict in "${r.join('|')}"`);
    bars.push({
      kind: m[1], label: m[2], peer: m[5].replace(/'s( whole cost)?$/, ''), target: Number(m[4]),
      better: m[3] === '≥' ? 'higher' : 'lower', verdict, value: ratioOf(r[1], `RESULTS.md: ${r[0]}`),
    });
  }
}
if (bars.length === 0) fail('RESULTS.md: no "issue 18 target" table');

// The verdict written in the RESULTS file must agree with the figure (else something is stale).
for (const b of bars) {
  const met = b.better === 'higher' ? b.value >= b.target : b.value <= b.target;
  if ((b.verdict === 'met') !== met) fail(`${b.label} vs ${b.peer}: ${b.value} against target ${b.target} but RESULTS.md says "${b.verdict}"`);
}
const throughput = bars.filter((b) => b.kind === 'throughput');
const cpu = bars.filter((b) => b.kind === 'server CPU' || b.kind === 'JS-thread CPU').map((b) => ({ ...b, label: `${b.kind}: ${b.label}` }));
const other = bars.filter((b) => b.kind === 'memory' || b.kind === 'latency p50').map((b) => ({ ...b, label: `${b.kind}: ${b.label}` }));

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
  'CPU per request or message: native ÷ peer (lower is better)',
  'all threads of the server process, or its JavaScript thread alone (against the peer\'s whole cost)',
  cpu,
  1.5,
  [0, 0.5, 1, 1.5],
  p1.height + 16,
);
const p3 = panel(
  'Memory and latency at concurrency 1: native ÷ peer (lower is better)',
  'RSS per idle connection or under load; p50 of sequential round trips, client in its own process',
  other,
  4,
  [0, 1, 2, 3, 4],
  p1.height + 16 + p2.height + 16,
);
const legendY = p1.height + 16 + p2.height + 16 + p3.height + 8;
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
${p2.svg}
${p3.svg}
<rect x="12" y="${legendY}" width="12" height="12" fill="${COLORS.met}"/><text x="30" y="${legendY + 11}" class="value">target met</text>
<rect x="120" y="${legendY}" width="12" height="12" fill="${COLORS.missed}"/><text x="138" y="${legendY + 11}" class="value">target missed</text>
<rect x="250" y="${legendY}" width="12" height="12" fill="${COLORS.none}"/><text x="268" y="${legendY + 11}" class="value">no target</text>
<line x1="360" y1="${legendY - 2}" x2="360" y2="${legendY + 14}" class="target"/><text x="368" y="${legendY + 11}" class="value">target</text>
<line x1="430" y1="${legendY - 2}" x2="430" y2="${legendY + 14}" class="one"/><text x="438" y="${legendY + 11}" class="value">1.0× = same as the peer</text>
<text x="12" y="${legendY + 32}" class="sub">Source: the issue 18 targets table in bench/RESULTS.md (drawn by bench/chart.js)</text>
</svg>
`;

if (process.argv.includes('--stdout')) {
  process.stdout.write(svg);
  for (const b of bars) console.error(`${b.kind}\t${b.label} vs ${b.peer}\t${b.value}\t${b.target}\t${b.verdict}`);
} else {
  fs.writeFileSync(path.join(DIR, 'chart.svg'), svg);
  console.log(`wrote ${path.join('bench', 'chart.svg')} (${bars.length} bars)`);
}
