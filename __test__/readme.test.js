'use strict';
// README's API reference and options table, checked against the typings (index.d.ts, config.d.ts)
// and against the code that decides option names, defaults and how a change applies
// (crates/core/src/config, js/lifecycle.js, js/pool.js, js/terminus.js). Reads sources only: no
// build, no addon. `README_FILE=<path>` checks another file (e.g. a draft).
//
// What is checked (decisions.md §9):
// - every exported class, function and constant is named in the "API reference" section, and each
//   class's own public members are documented in the blocks (table row, list item, paragraph) that
//   name the class;
// - every exported interface and type alias is named there too; the properties of the non-option
//   interfaces (results, sockets, handles, gracefulShutdown/terminus options) and the members of
//   string-literal unions are documented in the blocks that name them;
// - every option reachable from the server option interfaces has a row in the "Options" table with
//   the servers it applies to, a default and how an `updateConfig` change applies — consistent with
//   js/lifecycle.js (restart or not) and with the defaults written in the code;
// - the reverse: no row names an option that the typings or ConfigHelper's key lists don't know;
// - the typings and ConfigHelper's key lists (crates/core/src/config/keys.rs) name the same options.
// A self-test runs the same checks on damaged copies of README (a row removed, a stale row added, a
// class member dropped) and expects them to fail.
const { describe, it } = require('node:test');
const assert = require('node:assert/strict');
const fs = require('node:fs');
const path = require('node:path');
const ts = require('typescript');

const ROOT = path.join(__dirname, '..');
const read = (f) => fs.readFileSync(path.join(ROOT, f), 'utf8');
const README = process.env.README_FILE ? fs.readFileSync(process.env.README_FILE, 'utf8') : read('README.md');

// --- the typings ---------------------------------------------------------------------------------

const isExported = (node) => (ts.getCombinedModifierFlags(node) & ts.ModifierFlags.Export) !== 0;
const nameOf = (node) => (node.name && ts.isIdentifier(node.name) ? node.name.text : node.name?.getText());
const isPrivateName = (name) => name.startsWith('_');

/** Exported declarations of a .d.ts file, with what the checks need. */
function parseTypings(file) {
  const text = read(file);
  const sf = ts.createSourceFile(file, text, ts.ScriptTarget.Latest, true);
  const model = { classes: new Map(), functions: new Set(), consts: new Map(), interfaces: new Map(), aliases: new Map(), reexports: [] };
  for (const st of sf.statements) {
    if (ts.isExportDeclaration(st)) {
      if (st.exportClause && ts.isNamedExports(st.exportClause)) {
        for (const el of st.exportClause.elements) model.reexports.push({ name: el.name.text, from: st.moduleSpecifier?.text });
      }
      continue;
    }
    if (!isExported(st)) continue;
    if (ts.isClassDeclaration(st)) {
      const members = new Set();
      for (const m of st.members) {
        if (ts.isConstructorDeclaration(m)) continue;
        const flags = ts.getCombinedModifierFlags(m);
        if (flags & (ts.ModifierFlags.Private | ts.ModifierFlags.Protected)) continue;
        const n = nameOf(m);
        if (n && !isPrivateName(n)) members.add(n);
      }
      const ext = st.heritageClauses?.find((h) => h.token === ts.SyntaxKind.ExtendsKeyword)?.types[0]?.expression.getText();
      model.classes.set(st.name.text, { members: [...members], extends: ext });
    } else if (ts.isFunctionDeclaration(st)) {
      model.functions.add(st.name.text);
    } else if (ts.isVariableStatement(st)) {
      for (const d of st.declarationList.declarations) {
        const members = d.type && ts.isTypeLiteralNode(d.type) ? d.type.members.map(nameOf).filter(Boolean) : [];
        model.consts.set(d.name.getText(), { members });
      }
    } else if (ts.isInterfaceDeclaration(st)) {
      const ext = (st.heritageClauses ?? []).flatMap((h) => h.types.map((t) => t.expression.getText()));
      model.interfaces.set(st.name.text, { node: st, extends: ext });
    } else if (ts.isTypeAliasDeclaration(st)) {
      const literals = ts.isUnionTypeNode(st.type) && st.type.types.every((t) => ts.isLiteralTypeNode(t))
        ? st.type.types.map((t) => t.literal.text)
        : [];
      model.aliases.set(st.name.text, { node: st, literals });
    }
  }
  return model;
}

/** Property signatures of an interface, its `extends` chain included. */
function interfaceMembers(model, name, seen = new Set()) {
  const entry = model.interfaces.get(name);
  if (!entry || seen.has(name)) return [];
  seen.add(name);
  const own = entry.node.members.filter((m) => m.name).map((m) => ({ name: nameOf(m), type: m.type, method: ts.isMethodSignature(m) }));
  const inherited = entry.extends.flatMap((e) => interfaceMembers(model, e.replace(/<.*$/, ''), seen));
  const byName = new Map(inherited.map((m) => [m.name, m]));
  for (const m of own) byName.set(m.name, m);
  return [...byName.values()].filter((m) => !m.name.startsWith('['));
}

/** Object-like parts of a type node: `[{ members }]` per interface/literal reached, plus whether a non-object part exists. */
function typeParts(model, type) {
  const parts = { objects: [], scalar: false };
  const visit = (t) => {
    if (!t) {
      parts.scalar = true;
    } else if (ts.isUnionTypeNode(t)) {
      t.types.forEach(visit);
    } else if (ts.isParenthesizedTypeNode(t)) {
      visit(t.type);
    } else if (ts.isTypeLiteralNode(t)) {
      parts.objects.push(t.members.filter((m) => m.name).map((m) => ({ name: nameOf(m), type: m.type })));
    } else if (ts.isTypeReferenceNode(t)) {
      const ref = t.typeName.getText();
      if ((ref === 'Partial' || ref === 'Required' || ref === 'Readonly') && t.typeArguments?.length === 1) return visit(t.typeArguments[0]);
      if (model.interfaces.has(ref)) parts.objects.push(interfaceMembers(model, ref));
      else parts.scalar = true; // aliases of literals (KoattyProtocol), Record<…>, …
    } else {
      parts.scalar = true;
    }
  };
  visit(type);
  return parts;
}

/** Server option interface → the class that takes it ('all' = every server). */
const OPTION_ROOTS = {
  BaseServerOptions: 'all',
  HttpServerOptions: 'HttpServer',
  HttpsServerOptions: 'HttpsServer',
  Http2ServerOptions: 'Http2Server',
  GrpcServerOptions: 'GrpcServer',
  WebSocketServerOptions: 'WsServer',
  ListeningOptions: 'NewServe',
};

/**
 * Every option path reachable from the server option interfaces: `{ path → { leaf, group, servers } }`.
 * A leaf needs a row; a group (an object of options) only when it also takes a plain value
 * (`nativeEndpoints: boolean | {…}`).
 */
function optionPaths(model) {
  const paths = new Map();
  const visitInterface = new Set();
  const walk = (members, prefix, server) => {
    for (const m of members) {
      const p = prefix + m.name;
      const parts = typeParts(model, m.type);
      const entry = paths.get(p) ?? { leaf: false, group: false, servers: new Set() };
      entry.servers.add(server);
      if (parts.scalar || parts.objects.length === 0) entry.leaf = true;
      if (parts.objects.length) entry.group = true;
      paths.set(p, entry);
      for (const obj of parts.objects) walk(obj, `${p}.`, server);
    }
  };
  for (const [root, server] of Object.entries(OPTION_ROOTS)) {
    assert.ok(model.interfaces.has(root), `index.d.ts no longer declares ${root} (update OPTION_ROOTS in this test)`);
    visitInterface.add(root);
    walk(interfaceMembers(model, root), '', server);
  }
  return paths;
}

/** Interfaces whose properties are server options (documented in the options table, not in the API blocks). */
function optionInterfaces(model) {
  const names = new Set(Object.keys(OPTION_ROOTS));
  let grew = true;
  while (grew) {
    grew = false;
    for (const n of [...names]) {
      const entry = model.interfaces.get(n);
      if (!entry) continue;
      const refs = [...entry.extends.map((e) => e.replace(/<.*$/, ''))];
      const collect = (t) => {
        if (!t) return;
        if (ts.isTypeReferenceNode(t)) refs.push(t.typeName.getText());
        ts.forEachChild(t, collect);
      };
      entry.node.members.forEach((m) => collect(m.type));
      for (const r of refs) {
        if (model.interfaces.has(r) && !names.has(r)) {
          names.add(r);
          grew = true;
        }
      }
    }
  }
  return names;
}

// --- README --------------------------------------------------------------------------------------

/** The text of a `## ` section (up to the next `## ` heading), or null. */
function section(text, heading) {
  const lines = text.split('\n');
  const start = lines.findIndex((l) => l.trim() === `## ${heading}`);
  if (start < 0) return null;
  let end = lines.findIndex((l, i) => i > start && /^## /.test(l));
  if (end < 0) end = lines.length;
  return lines.slice(start + 1, end).join('\n');
}

/** Inline code spans (they may wrap across lines, as in markdown), fenced blocks left out. */
const codeSpans = (text) => [...text.replace(/```[\s\S]*?```/g, '').matchAll(/`([^`]+)`/g)].map((m) => m[1].replace(/\s*\n\s*/g, ' '));
const esc = (s) => s.replace(/[.*+?^${}()|[\]\\]/g, '\\$&');

/** Does one of the code spans document `name` (`name`, `name(…)`, `x.name`, `name?: …`, `'name'`)? */
function mentions(spans, name) {
  const re = new RegExp(`(^|[.\\s{,'"])${esc(name)}($|[(\\s?:,}'".<])`);
  return spans.some((s) => re.test(s));
}

/** Splits markdown into blocks: each table row, each table as a whole (owned by its header), list items, paragraphs. */
function blocks(text) {
  const out = [];
  const lines = text.replace(/```[\s\S]*?```/g, '').split('\n');
  let para = [];
  let table = null;
  const flushPara = () => {
    if (para.length) out.push({ head: para.join('\n'), body: para.join('\n') });
    para = [];
  };
  const flushTable = () => {
    if (table) out.push({ head: table[0], body: table.join('\n') });
    table = null;
  };
  for (const line of lines) {
    if (/^\s*\|/.test(line)) {
      flushPara();
      if (!table) table = [];
      table.push(line);
      if (!/^\s*\|[\s:|-]+\|\s*$/.test(line)) out.push({ head: line, body: line });
      continue;
    }
    flushTable();
    if (line.trim() === '' || /^#/.test(line)) {
      flushPara();
    } else if (/^\s*([-*]|\d+\.)\s/.test(line)) {
      flushPara();
      para.push(line);
    } else {
      para.push(line);
    }
  }
  flushPara();
  flushTable();
  return out;
}

const cells = (row) => row.trim().replace(/^\||\|$/g, '').split('|').map((c) => c.trim());

/** The options table: the first table of the "Options" section whose header starts with `option`. */
function optionsTable(text) {
  const sec = section(text, 'Options');
  if (sec === null) return { rows: null, header: null };
  const lines = sec.split('\n');
  const start = lines.findIndex((l) => /^\|\s*option\s*\|/.test(l));
  if (start < 0) return { rows: null, header: null };
  const header = cells(lines[start]);
  const rows = [];
  for (let i = start + 2; i < lines.length && /^\s*\|/.test(lines[i]); i++) {
    const c = cells(lines[i]);
    const row = Object.fromEntries(header.map((h, j) => [h, c[j] ?? '']));
    const name = /^`([^`]+)`/.exec(row.option);
    rows.push({ ...row, path: name ? name[1] : row.option, raw: lines[i] });
  }
  return { rows, header };
}

// --- what the code says ---------------------------------------------------------------------------

/** `a * b`, `5_000` → number. */
const evalRust = (expr) => expr.split('*').map((p) => Number(p.trim().replace(/_/g, ''))).reduce((a, b) => a * b, 1);

/** Defaults written in the code, by option path (numbers; the README cell must contain them). */
function codeDefaults() {
  const rust = read('crates/core/src/config/mod.rs');
  const konst = (name) => {
    const m = new RegExp(`pub const ${name}: \\w+ = ([^;]+);`).exec(rust);
    assert.ok(m, `crates/core/src/config/mod.rs: constant ${name} not found (update this test)`);
    return evalRust(m[1]);
  };
  const inline = (key) => {
    const m = new RegExp(`num\\("${key}"\\)\\?\\.unwrap_or\\(([\\d_]+)\\)`).exec(rust) ?? new RegExp(`size\\("${key}", ([^)]+)\\)`).exec(rust);
    assert.ok(m, `crates/core/src/config/mod.rs: default of ${key} not found (update this test)`);
    return evalRust(m[1]);
  };
  const prod = (key) => {
    const m = new RegExp(`"${key}",\\s*Value::from\\(if production \\{ ([\\d_]+) \\} else \\{ ([\\d_]+) \\}\\)`).exec(rust);
    assert.ok(m, `crates/core/src/config/mod.rs: production/other default of ${key} not found (update this test)`);
    return [evalRust(m[2]), evalRust(m[1])];
  };
  const ps = 'connectionPool.protocolSpecific.';
  const d = {
    port: [konst('DEFAULT_PORT')],
    'connectionPool.maxConnections': prod('maxConnections'),
    'connectionPool.connectionTimeout': prod('connectionTimeout'),
    'connectionPool.maxInFlight': [konst('DEFAULT_MAX_IN_FLIGHT')],
    'connectionPool.keepAliveTimeout': [konst('DEFAULT_KEEP_ALIVE_TIMEOUT_MS')],
    'connectionPool.headersTimeout': [konst('DEFAULT_HEADERS_TIMEOUT_MS')],
    'connectionPool.requestTimeout': [konst('DEFAULT_REQUEST_TIMEOUT_MS')],
    'connectionPool.maxHeaderSize': [konst('DEFAULT_MAX_HEADER_SIZE')],
    'connectionPool.handshakeTimeout': [konst('DEFAULT_HANDSHAKE_TIMEOUT_MS')],
    [`${ps}maxConcurrentStreams`]: [konst('DEFAULT_H2_MAX_CONCURRENT_STREAMS')],
    [`${ps}maxHeaderListSize`]: [konst('DEFAULT_H2_MAX_HEADER_LIST_SIZE')],
    [`${ps}maxPayload`]: [konst('DEFAULT_WS_MAX_PAYLOAD')],
    [`${ps}maxBufferedAmount`]: [konst('DEFAULT_WS_MAX_BUFFERED')],
    [`${ps}maxReceiveQueue`]: [konst('DEFAULT_WS_MAX_RECEIVE_QUEUE')],
    [`${ps}keepOpenDuringDrainDelay`]: [false],
    [`${ps}pingInterval`]: [inline('pingInterval')],
    [`${ps}pongTimeout`]: [inline('pongTimeout')],
    [`${ps}heartbeatInterval`]: [inline('heartbeatInterval')],
    [`${ps}keepAliveTimeout`]: [inline('keepAliveTimeout')],
    [`${ps}maxReceiveMessageLength`]: [inline('maxReceiveMessageLength')],
  };
  // Health thresholds: js/pool.js (plain JS, loads without the addon).
  const { HEALTH_DEFAULTS } = require('../js/pool');
  for (const [k, v] of Object.entries(HEALTH_DEFAULTS)) d[`connectionPool.health.${k}`] = [v];
  const host = /pub const DEFAULT_HOSTNAME: &str = "([^"]+)"/.exec(rust);
  d.hostname = [host[1]];
  return d;
}

/** Option names ConfigHelper accepts (crates/core/src/config/keys.rs), as paths. */
function configHelperKeys() {
  const rs = read('crates/core/src/config/keys.rs');
  const list = (name) => {
    const m = new RegExp(`const ${name}: &\\[&str\\] = &\\[([^\\]]*)\\]`).exec(rs);
    assert.ok(m, `keys.rs: ${name} not found (update this test)`);
    return [...m[1].matchAll(/"([^"]+)"/g)].map((x) => x[1]);
  };
  const keys = new Set();
  for (const k of list('BASE')) keys.add(k);
  for (const k of list('POOL')) keys.add(`connectionPool.${k}`);
  for (const k of list('PROTOCOL_SPECIFIC')) keys.add(`connectionPool.protocolSpecific.${k}`);
  for (const k of [...list('SSL1'), ...list('SSL2_EXTRA'), ...list('SSL_ENABLED')]) keys.add(`ssl.${k}`);
  // Checked elsewhere in the core: nativeEndpoints' paths (endpoints_from); health thresholds are
  // read by js/pool.js.
  const rust = read('crates/core/src/config/mod.rs');
  const ep = /\["healthz", "readyz", "metrics"\]/.test(rust) ? ['healthz', 'readyz', 'metrics'] : [];
  for (const k of ep) keys.add(`nativeEndpoints.${k}`);
  return keys;
}

/** Does an `updateConfig` change of `path` restart the listener? (js/lifecycle.js decides.) */
function restarts(pathName) {
  const { analyzeConfigChanges } = require('../js/lifecycle');
  const current = { hostname: '127.0.0.1', port: 3000, protocol: 'http', connectionPool: { maxConnections: 1000 } };
  const partial = {};
  let o = partial;
  const parts = pathName.split('.');
  parts.slice(0, -1).forEach((p) => {
    o[p] = {};
    o = o[p];
  });
  o[parts.at(-1)] = '__changed__';
  const r = analyzeConfigChanges(current, partial);
  assert.ok(r.changedKeys.length > 0, `lifecycle saw no change for ${pathName}`);
  return r.requiresRestart;
}

const APPLIES = ['restart', 'run time', 'next restart', 'construction', '—'];

// --- the checks ----------------------------------------------------------------------------------

/** All problems found in `readme` against the typings and the code, by kind. */
function check(readme) {
  const model = parseTypings('index.d.ts');
  const config = parseTypings('config.d.ts');
  const problems = { api: [], options: [], stale: [] };
  const api = section(readme, 'API reference');
  if (api === null) {
    problems.api.push('README has no "## API reference" section');
    return problems;
  }
  const spans = codeSpans(api);
  const bl = blocks(api).map((b) => ({ ...b, headSpans: codeSpans(b.head), spans: codeSpans(b.body) }));
  /** Spans of the blocks that name `owner` (in a row/paragraph, or in a table's header). */
  const spansNaming = (owner) => bl.filter((b) => mentions(b.headSpans, owner)).flatMap((b) => b.spans);

  // Classes and their own members.
  for (const [name, { members }] of model.classes) {
    if (!mentions(spans, name)) {
      problems.api.push(`class ${name} is not named in the API reference`);
      continue;
    }
    const near = spansNaming(name);
    for (const m of members) if (!mentions(near, m)) problems.api.push(`${name}.${m} is not documented next to ${name}`);
  }
  for (const name of model.functions) if (!mentions(spans, name)) problems.api.push(`function ${name} is not documented`);
  for (const [name, { members }] of model.consts) {
    if (!mentions(spans, name)) problems.api.push(`constant ${name} is not documented`);
    for (const m of members) if (!mentions(spans, `${name}.${m}`) && !mentions(spansNaming(name), m)) problems.api.push(`${name}.${m} is not documented`);
  }
  // Interfaces and type aliases.
  const optionIfaces = optionInterfaces(model);
  for (const name of model.interfaces.keys()) {
    if (!mentions(spans, name)) {
      problems.api.push(`interface ${name} is not named in the API reference`);
      continue;
    }
    if (optionIfaces.has(name)) continue; // its properties are rows of the options table
    const near = spansNaming(name);
    for (const m of interfaceMembers(model, name)) {
      if (!mentions(near, m.name)) problems.api.push(`${name}.${m.name} is not documented next to ${name}`);
    }
  }
  for (const [name, { literals }] of model.aliases) {
    if (!mentions(spans, name)) {
      problems.api.push(`type ${name} is not named in the API reference`);
      continue;
    }
    const near = spansNaming(name);
    for (const l of literals) if (!mentions(near, l)) problems.api.push(`'${l}' of type ${name} is not documented next to ${name}`);
  }
  // config.d.ts: re-exports of index.d.ts, and the subpath is documented.
  for (const { name } of config.reexports) {
    const known = model.interfaces.has(name) || model.consts.has(name) || model.aliases.has(name) || model.classes.has(name);
    if (!known) problems.stale.push(`config.d.ts re-exports ${name}, which index.d.ts does not export`);
  }
  if (config.reexports.length && !mentions(spans, 'koatty_serve/config')) problems.api.push('the koatty_serve/config subpath is not documented');

  // Shutdown and terminus defaults, from the code.
  const lifecycleSrc = read('js/lifecycle.js');
  const sd = /SHUTDOWN_DEFAULTS = \{([^}]*)\}/.exec(lifecycleSrc)[1];
  const terminusSrc = read('js/terminus.js');
  const td = /const opts = \{([^}]*)\}/.exec(terminusSrc)[1];
  for (const [iface, src] of [['ShutdownOptions', sd], ['TerminusOptions', td]]) {
    for (const [, key, value] of src.matchAll(/(\w+): (\d+)/g)) {
      const rows = bl.filter((b) => b.head === b.body && /^\s*\|/.test(b.head) && mentions(codeSpans(cells(b.head)[0] ?? ''), key));
      const tableOwned = bl.filter((b) => b.head !== b.body && mentions(b.headSpans, iface)).map((b) => b.body);
      const row = rows.find((r) => tableOwned.some((t) => t.includes(r.head)));
      if (!row) problems.api.push(`${iface}.${key}: no row in a table whose header names ${iface}`);
      else if (!row.head.includes(value)) problems.api.push(`${iface}.${key}: the code's default ${value} is not in its row`);
    }
  }

  // The options table.
  const { rows, header } = optionsTable(readme);
  if (!rows) {
    problems.options.push('README has no options table (a table under "## Options" whose header starts with "option")');
    return problems;
  }
  for (const col of ['option', 'servers', 'default', 'applies']) {
    if (!header.includes(col)) problems.options.push(`options table: no "${col}" column`);
  }
  const paths = optionPaths(model);
  const byPath = new Map();
  for (const r of rows) {
    if (byPath.has(r.path)) problems.options.push(`options table: ${r.path} has two rows`);
    byPath.set(r.path, r);
  }
  for (const [p, e] of paths) {
    if (e.leaf && !byPath.has(p)) problems.options.push(`option ${p} (${[...e.servers].join(', ')}) has no row in the options table`);
  }
  const accepted = configHelperKeys();
  const defaults = codeDefaults();
  for (const r of rows) {
    const e = paths.get(r.path);
    if (!e) {
      problems.stale.push(`options table row ${r.path} is not an option in index.d.ts`);
      continue;
    }
    const inHealth = r.path.startsWith('connectionPool.health.');
    if (!inHealth && !accepted.has(r.path) && !['trace', 'ext'].includes(r.path)) {
      problems.stale.push(`options table row ${r.path} is not accepted by ConfigHelper (keys.rs)`);
    }
    // servers: only classes whose option interface has the key; "all" only for BaseServerOptions keys.
    const servers = r.servers ?? '';
    const named = codeSpans(servers);
    if (/\ball\b/.test(servers) && !e.servers.has('all')) problems.options.push(`${r.path}: "all" servers, but only ${[...e.servers].join(', ')} take it`);
    for (const s of named) {
      if (!Object.values(OPTION_ROOTS).includes(s)) problems.options.push(`${r.path}: unknown server ${s}`);
      else if (!e.servers.has(s) && !e.servers.has('all') && !(s === 'NewServe' && e.servers.has('NewServe'))) problems.options.push(`${r.path}: ${s} does not take it`);
    }
    if (!/\ball\b/.test(servers) && !e.servers.has('all')) {
      for (const s of e.servers) if (!named.includes(s) && s !== 'NewServe') problems.options.push(`${r.path}: ${s} takes it but is not listed`);
    }
    if (!/\ball\b/.test(servers) && named.length === 0) problems.options.push(`${r.path}: servers column names no server`);
    // default
    if (!r.default) problems.options.push(`${r.path}: empty default`);
    for (const v of defaults[r.path] ?? []) {
      if (!r.default.includes(String(v))) problems.options.push(`${r.path}: default cell "${r.default}" lacks the code's default ${v}`);
    }
    // applies
    const applies = APPLIES.find((a) => (r.applies ?? '').startsWith(a));
    if (!applies) problems.options.push(`${r.path}: applies "${r.applies}" is not one of ${APPLIES.join(', ')}`);
    else if (applies !== '—' && applies !== 'construction') {
      const restart = restarts(r.path);
      if (restart && applies !== 'restart') problems.options.push(`${r.path}: updateConfig restarts for it (js/lifecycle.js), the table says "${r.applies}"`);
      if (!restart && applies === 'restart') problems.options.push(`${r.path}: updateConfig applies it without a restart (js/lifecycle.js), the table says restart`);
    }
  }
  return problems;
}

describe('README API reference and options table', () => {
  const problems = check(README);

  it('documents every exported class, member, function, constant, interface and type (index.d.ts)', () => {
    assert.deepEqual(problems.api, [], `missing from README's API reference:\n  ${problems.api.join('\n  ')}`);
  });

  it('has a row for every option in the typings, with servers, a default the code agrees with and how it applies', () => {
    assert.deepEqual(problems.options, [], `options table:\n  ${problems.options.join('\n  ')}`);
  });

  it('names no option the typings or ConfigHelper do not know (stale docs)', () => {
    assert.deepEqual(problems.stale, [], `stale:\n  ${problems.stale.join('\n  ')}`);
  });

  it('the typings and ConfigHelper accept the same option names', () => {
    const model = parseTypings('index.d.ts');
    const typed = [...optionPaths(model).keys()].filter((p) => !p.startsWith('connectionPool.health.') && !['trace', 'ext'].includes(p));
    const accepted = configHelperKeys();
    // `trace` and `ext` stay in JavaScript (ConfigHelper passes them through).
    const untyped = [...accepted].filter((k) => !typed.includes(k) && !['trace', 'ext'].includes(k));
    const unaccepted = typed.filter((k) => !accepted.has(k));
    assert.deepEqual({ untyped, unaccepted }, { untyped: [], unaccepted: [] }, 'keys.rs vs index.d.ts');
  });

  it('fails on a damaged README (self-test)', () => {
    const { rows } = optionsTable(README);
    assert.ok(rows && rows.length > 10, 'options table found');
    const row = rows.find((r) => r.path === 'connectionPool.maxInFlight');
    assert.ok(row, 'a row to remove');
    const removed = check(README.replace(`${row.raw}\n`, ''));
    assert.ok(removed.options.some((p) => p.includes('connectionPool.maxInFlight')), 'a removed row is reported');
    const stale = check(README.replace(`${row.raw}\n`, `${row.raw}\n| \`connectionPool.maxInflight\` | all | 1 | run time | typo |\n`));
    assert.ok(stale.stale.some((p) => p.includes('maxInflight')), 'a stale row is reported');
    const wrongApplies = check(README.replace(`${row.raw}\n`, `${row.raw.replace('| run time', '| restart')}\n`));
    assert.ok(wrongApplies.options.some((p) => p.includes('maxInFlight')), 'a wrong run-time/restart classification is reported');
    const wrongDefault = check(README.replace(`${row.raw}\n`, `${row.raw.replace('4096', '4000')}\n`));
    assert.ok(wrongDefault.options.some((p) => p.includes('maxInFlight') && p.includes('4096')), 'a wrong default is reported');
    const noMember = check(README.replace(/`reloadCertificates\(\)`/g, '`reload()`'));
    assert.ok(noMember.api.some((p) => p.includes('reloadCertificates')), 'an undocumented class member is reported');
  });
});
