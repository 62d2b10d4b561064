import { svelte } from '@sveltejs/vite-plugin-svelte';
import { defineConfig } from 'vitest/config';

// Tauri serves dist/ from its own origin; relative asset paths keep it location-free.
export default defineConfig({
  base: './',
  plugins: [svelte()],
  // Tauri's dev window loads this port (src-tauri's devUrl); fail rather than move.
  server: { port: 5173, strictPort: true, host: '127.0.0.1' },
  build: { outDir: 'dist', emptyOutDir: true, target: 'es2022', sourcemap: false },
  test: {
    include: ['src/**/*.test.ts'],
    environment: 'node',
  },
});
