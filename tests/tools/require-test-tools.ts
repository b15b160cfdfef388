// vitest globalSetup: stops the run before any test when a real tool the tests need is missing or
// at another version, and says how to get it. No test skips for a missing tool.
// @ts-expect-error: plain ESM module without types
import { TOOLS_BIN, toolProblems } from './test-tools.mjs';

export default function requireTestTools(): void {
  const problems: string[] = toolProblems();
  if (problems.length) {
    throw new Error(
      `the tests need real tools in ${TOOLS_BIN}:\n  ${problems.join('\n  ')}\n` +
        `\`npm test\` builds them first (with Go); \`node tests/tools/ensure-test-tools.mjs\` does only that.`,
    );
  }
}
