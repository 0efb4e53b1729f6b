#!/bin/sh
# The browser tests drive Debian's chromium (never a downloaded browser build).
set -e
CHROMIUM=${CHROMIUM_PATH:-/usr/bin/chromium}
if [ -x "$CHROMIUM" ]; then exit 0; fi
echo "e2e: $CHROMIUM is missing; installing Debian's chromium package" >&2
if [ "$(id -u)" = 0 ]; then SUDO=; elif command -v sudo >/dev/null 2>&1; then SUDO=sudo; else
  echo "e2e: not root and no sudo: run 'apt-get install -y chromium' as root" >&2; exit 1
fi
export DEBIAN_FRONTEND=noninteractive
$SUDO apt-get update -qq
$SUDO apt-get install -y -qq chromium >/dev/null
[ -x "$CHROMIUM" ] || { echo "e2e: chromium did not install at $CHROMIUM" >&2; exit 1; }
