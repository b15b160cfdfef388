// vitest globalSetup: stops the run before any test when a real tool the tests need is missing or
// at another version, and says how to get it. No test skips for a missing tool.
import fs from 'node:fs';
// @ts-expect-error: plain ESM module without types
import { GO_APP, KUBE_CLIENTS, REAL_API_PLATFORM, SIMCLUSTER, TALOS_MACHINERY, TOOLS_BIN, talosSchemaPath, toolProblems } from './test-tools.mjs';

export default function requireTestTools(): void {
  const problems: string[] = toolProblems();
  if (!fs.existsSync(talosSchemaPath())) problems.push(`${TALOS_MACHINERY.module}@${TALOS_MACHINERY.version}: not in Go's module cache`);
  if (!fs.existsSync(GO_APP.binaryPath())) problems.push(`examples/go-app: not built from its current sources (${GO_APP.binaryPath()})`);
  if (REAL_API_PLATFORM) problems.push(...SIMCLUSTER.problems(), ...KUBE_CLIENTS.problems());
  if (problems.length) {
    throw new Error(
      `the tests need real tools (in ${TOOLS_BIN} and next to it):\n  ${problems.join('\n  ')}\n` +
        `\`npm test\` builds them first (with Go); \`node tests/tools/ensure-test-tools.mjs\` does only that.`,
    );
  }
}
