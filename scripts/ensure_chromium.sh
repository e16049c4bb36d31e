#!/usr/bin/env bash
# The browser tests drive Debian's Chromium through Playwright (no browser download): install it with apt on a
# fresh machine.
set -euo pipefail
if ! command -v chromium >/dev/null 2>&1; then
  echo "ensure_chromium: installing chromium with apt"
  export DEBIAN_FRONTEND=noninteractive
  apt-get install -y -q chromium || { apt-get update -q && apt-get install -y -q chromium; }
fi
chromium --version
