import { resolve } from 'node:path';
import { defineConfig } from 'vite';
import react from '@vitejs/plugin-react';

// The API the dev server forwards to (`cloudops serve` on its default port).
const api = process.env.CLOUDOPS_API ?? 'http://127.0.0.1:5056';

export default defineConfig({
  plugins: [react()],
  build: {
    // Two pages: the dashboard, and GraphiQL (served by the API to browsers at /graphql).
    rolldownOptions: {
      input: {
        main: resolve(import.meta.dirname, 'index.html'),
        graphiql: resolve(import.meta.dirname, 'graphiql.html'),
      },
      // GraphiQL's React Compiler output carries "use no memo" directives: harmless noise.
      onLog(level, log, handler) {
        if (log.code === 'MODULE_LEVEL_DIRECTIVE') return;
        handler(level, log);
      },
    },
    chunkSizeWarningLimit: 6000,
  },
  server: {
    proxy: {
      // No changeOrigin on the WebSocket route: the API accepts a browser's handshake only
      // when its Origin matches the Host header, which must stay the dev server's.
      '/graphql': { target: api, ws: true },
      '/artifacts': { target: api },
      '/healthz': { target: api },
    },
  },
});
