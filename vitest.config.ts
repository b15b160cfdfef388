// How `npm test` runs vitest:
//  - the real tools the tests run (task, prometheus, promtool, alertmanager at pinned versions) come first on PATH:
//    `npm test` builds them into TOOLS_BIN before vitest starts (tests/tools/ensure-test-tools.mjs),
//    and the run stops at once, saying so, when one is missing (tests/tools/require-test-tools.ts);
//  - two projects: every test with the stand-in helm playing Helm 4 (what a new install gets), and
//    again, playing Helm 3, the tests of the phases that call helm beyond `helm version`: those whose
//    script calls helm()/helmRelease() from scripts/lib.ts, found here from the sources so that a new
//    helm-using phase is covered without a list to keep. FAKE_HELM_MAJOR picks the major
//    (tests/fakes/common.mjs).
import fs from 'node:fs';
import path from 'node:path';
import { defineConfig } from 'vitest/config';
// @ts-expect-error: plain ESM module without types
import { TOOLS_BIN } from './tests/tools/test-tools.mjs';

const read = (dir: string, name: string) => fs.readFileSync(path.join(import.meta.dirname, dir, name), 'utf8');
const files = (dir: string, suffix: string) => fs.readdirSync(path.join(import.meta.dirname, dir)).filter((f) => f.endsWith(suffix));

const helmPhases = files('scripts', '.ts')
  .filter((f) => f !== 'lib.ts' && /\bhelm(Release)?\(cfg\b/.test(read('scripts', f)))
  .map((f) => f.replace(/\.ts$/, ''));
const helmPhaseTests = files('tests', '.test.ts')
  .filter((f) => helmPhases.some((phase) => read('tests', f).includes(`.run('${phase}'`)))
  .map((f) => `tests/${f}`);

const PATH = `${TOOLS_BIN}${path.delimiter}${process.env.PATH}`;

export default defineConfig({
  test: {
    // Hooks start real servers (Prometheus, the apps): on a loaded machine that takes longer than
    // the 10 s default; as long as a test may take (`npm test` passes --testTimeout=60000).
    hookTimeout: 60000,
    globalSetup: ['tests/tools/require-test-tools.ts'],
    projects: [
      { extends: true, test: { name: 'helm4', include: ['tests/**/*.test.ts'], env: { PATH, FAKE_HELM_MAJOR: '4' } } },
      { extends: true, test: { name: 'helm3', include: helmPhaseTests, env: { PATH, FAKE_HELM_MAJOR: '3' } } },
    ],
  },
});
