// The real tools the tests run (task, prometheus, promtool at pinned versions) come first on PATH:
// `npm test` builds them into TOOLS_BIN before vitest starts (tests/tools/ensure-test-tools.mjs), and
// the run stops at once, saying so, when one is missing (tests/tools/require-test-tools.ts).
import path from 'node:path';
import { defineConfig } from 'vitest/config';
// @ts-expect-error: plain ESM module without types
import { TOOLS_BIN } from './tests/tools/test-tools.mjs';

export default defineConfig({
  test: {
    globalSetup: ['tests/tools/require-test-tools.ts'],
    env: { PATH: `${TOOLS_BIN}${path.delimiter}${process.env.PATH}` },
  },
});
