// The declarations type-check under `strict` against the DOM's WebSocket and the `ws`
// package's, with nodenext and bundler resolution (`tsc --noEmit` on test/types/fixture.ts).
// Needs the devDependencies (`npm ci`; `cargo xtask test` runs it when node_modules is missing).

import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { existsSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { test } from 'node:test';
import { fileURLToPath } from 'node:url';

const root = join(dirname(fileURLToPath(import.meta.url)), '..');
const tsc = join(root, 'node_modules/typescript/bin/tsc');
const skip = existsSync(tsc) ? false : 'typescript is not installed: run npm ci in clients/js';

for (const config of ['tsconfig.nodenext.json', 'tsconfig.bundler.json']) {
  test(`tsc --noEmit -p test/types/${config}`, { skip, timeout: 120000 }, () => {
    try {
      execFileSync(process.execPath, [tsc, '-p', join(root, 'test/types', config)], { cwd: root, encoding: 'utf8' });
    } catch (err) {
      assert.fail(`${err.stdout}${err.stderr}`);
    }
  });
}
