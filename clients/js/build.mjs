// Builds dist/: CommonJS copies of the client and the React bindings, a minified ESM client,
// and the CommonJS declaration files; prints the minified client's size, raw and gzipped.
// Run: npm ci && node build.mjs (npm pack runs it as prepack).

import { copyFileSync, mkdirSync, readFileSync } from 'node:fs';
import { gzipSync } from 'node:zlib';
import { build } from 'esbuild';

mkdirSync('dist', { recursive: true });
const common = { bundle: false, target: 'es2022', logLevel: 'warning' };
await build({ ...common, entryPoints: ['wshub.js'], outfile: 'dist/wshub.cjs', format: 'cjs' });
// Internal members start with an underscore: safe to shorten.
await build({ ...common, entryPoints: ['wshub.js'], outfile: 'dist/wshub.min.js', format: 'esm', minify: true, mangleProps: /^_/ });
// The CJS React bindings require the CJS client, not the ES module.
await build({
  ...common,
  entryPoints: ['react.js'],
  outfile: 'dist/react.cjs',
  format: 'cjs',
  plugins: [
    {
      name: 'cjs-client',
      setup(b) {
        b.onResolve({ filter: /^\.\/wshub\.js$/ }, () => ({ path: './wshub.cjs', external: true }));
      },
    },
  ],
  bundle: true,
  external: ['react'],
});
copyFileSync('wshub.d.ts', 'dist/wshub.d.cts');
// dist/react.d.cts names the client's CJS declarations.
import { writeFileSync } from 'node:fs';
writeFileSync('dist/react.d.cts', readFileSync('react.d.ts', 'utf8').replace("'./wshub.js'", "'./wshub.cjs'"));

const min = readFileSync('dist/wshub.min.js');
const gz = gzipSync(min, { level: 9 }).length;
console.log(`dist/wshub.min.js: ${min.length} bytes, ${gz} bytes gzipped (gzip -9)`);
