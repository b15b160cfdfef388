// Two runs in one `vitest run` (`npm test`): every test with the stand-in helm playing Helm 4 (what a
// new install gets), and again, playing Helm 3, the tests of the phases that call helm beyond
// `helm version`: those whose script calls helm()/helmRelease() from scripts/lib.ts, found here
// from the sources so that a new helm-using phase is covered without a list to keep.
// FAKE_HELM_MAJOR picks the major (tests/fakes/common.mjs).
import fs from 'node:fs';
import path from 'node:path';
import { defineConfig } from 'vitest/config';

const read = (dir: string, name: string) => fs.readFileSync(path.join(import.meta.dirname, dir, name), 'utf8');
const files = (dir: string, suffix: string) => fs.readdirSync(path.join(import.meta.dirname, dir)).filter((f) => f.endsWith(suffix));

const helmPhases = files('scripts', '.ts')
  .filter((f) => f !== 'lib.ts' && /\bhelm(Release)?\(cfg\b/.test(read('scripts', f)))
  .map((f) => f.replace(/\.ts$/, ''));
const helmPhaseTests = files('tests', '.test.ts')
  .filter((f) => helmPhases.some((phase) => read('tests', f).includes(`.run('${phase}'`)))
  .map((f) => `tests/${f}`);

export default defineConfig({
  test: {
    projects: [
      { extends: true, test: { name: 'helm4', include: ['tests/**/*.test.ts'], env: { FAKE_HELM_MAJOR: '4' } } },
      { extends: true, test: { name: 'helm3', include: helmPhaseTests, env: { FAKE_HELM_MAJOR: '3' } } },
    ],
  },
});
