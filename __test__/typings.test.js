'use strict';
// The package's TypeScript surface, compiled the way a user compiles against it (tsc --strict) with
// __test__/ts-consumer/index.ts as the user code.
const { describe, it } = require('node:test');
const assert = require('node:assert/strict');
const { spawnSync } = require('child_process');
const fs = require('fs');
const path = require('path');

const REPO_ROOT = path.join(__dirname, '..');
// typescript's own entry script, run with this node (node_modules/.bin/tsc is a shell script, which Windows cannot spawn).
const TSC = path.join(REPO_ROOT, 'node_modules', 'typescript', 'bin', 'tsc');
const PROJECT = path.join('__test__', 'ts-consumer');

function tsc(extraArgs = []) {
  const r = spawnSync(process.execPath, [TSC, '--strict', '--noEmit', '-p', PROJECT, ...extraArgs], {
    cwd: REPO_ROOT,
    encoding: 'utf8',
    timeout: 60000,
  });
  if (r.error) throw r.error;
  return { status: r.status, output: `${r.stdout}${r.stderr}` };
}

describe('TypeScript typings', () => {
  it('a strict TypeScript consumer compiles (tsc --strict --noEmit -p __test__/ts-consumer)', () => {
    assert.ok(fs.existsSync(TSC), `typescript is installed at ${TSC}`);
    const { status, output } = tsc();
    assert.equal(status, 0, `tsc failed:\n${output}`);
  });

  it("resolves 'koatty_serve' and 'koatty_serve/config' to this repository, and its own .d.ts files have no errors", () => {
    // skipLibCheck off: every declaration file is checked; errors inside third-party packages
    // (node_modules) are not ours and are ignored, errors in this package's files are not.
    const { output } = tsc(['--skipLibCheck', 'false', '--pretty', 'false', '--listFiles']);
    const lines = output.split('\n').map((l) => l.trim()).filter(Boolean);
    const files = new Set(lines.filter((l) => path.isAbsolute(l) && !/\(\d+,\d+\)/.test(l)).map((f) => path.resolve(f)));
    const root = fs.realpathSync(REPO_ROOT);
    assert.ok(files.has(path.join(root, 'index.d.ts')), `index.d.ts of this repository is used:\n${[...files].join('\n')}`);
    assert.ok(files.has(path.join(root, 'config.d.ts')), `config.d.ts of this repository is used:\n${[...files].join('\n')}`);
    const ours = lines.filter((l) => /error TS\d+/.test(l)).filter((l) => {
      const file = path.resolve(REPO_ROOT, l.replace(/\(\d+,\d+\).*$/, ''));
      return !file.split(path.sep).includes('node_modules');
    });
    assert.deepEqual(ours, [], `errors in this package's declaration files or the consumer:\n${ours.join('\n')}`);
  });
});
