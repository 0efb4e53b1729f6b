#!/usr/bin/env bash
# Build the dashboard (frontend/dist) when it is missing or older than its sources:
# `npm ci` when node_modules is missing or package-lock.json changed since the last install,
# then `npm run build` (codegen check + tsc + vite build). Exit status 2: no usable Node.js.
set -euo pipefail
cd "$(dirname "$0")/.."

if ! command -v node >/dev/null 2>&1 || ! command -v npm >/dev/null 2>&1; then
  echo "dashboard: node and npm were not found, so the dashboard at / is not built." >&2
  echo "dashboard: install Node.js 20.19 or newer (with npm), then run ./scripts/serve again." >&2
  exit 2
fi
if ! node -e 'const [a,b]=process.versions.node.split(".").map(Number); process.exit(a>20||(a===20&&b>=19)?0:1)'; then
  echo "dashboard: Node.js $(node --version) is too old to build the dashboard (needs 20.19+)." >&2
  exit 2
fi

stamp=node_modules/.cloudops-package-lock.sha256
lock=$(sha256sum package-lock.json | cut -d' ' -f1)
if [ ! -d node_modules ] || [ "$(cat "$stamp" 2>/dev/null || true)" != "$lock" ]; then
  echo "dashboard: installing its packages (npm ci)..."
  npm ci --no-audit --no-fund --loglevel=error  # its postinstall writes $stamp
fi

if [ -f dist/index.html ] && [ -f dist/graphiql.html ] && [ -z "$(find src index.html graphiql.html \
    vite.config.ts codegen.ts tsconfig.json package.json package-lock.json ../schema.graphql \
    -newer dist/index.html -print -quit)" ]; then
  echo "dashboard: frontend/dist is up to date"
  exit 0
fi
echo "dashboard: building (npm run build)..."
npm run build --silent
