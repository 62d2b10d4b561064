import { defineConfig } from 'vitest/config';

// Screen tests: a real Chromium drives the built app (dist/) with each mock scenario.
// One file, one browser, run serially; generous timeouts because the machine may be busy.
export default defineConfig({
  test: {
    include: ['screens/**/*.test.ts'],
    environment: 'node',
    testTimeout: 60_000,
    hookTimeout: 60_000,
    fileParallelism: false,
    pool: 'forks',
  },
});
