#!/usr/bin/env bash
# The review page's browser tests drive Debian's chromium (Playwright's own browser download
# needs the internet); install it when it is missing (needs root or sudo, as on CI).
set -euo pipefail
if command -v chromium >/dev/null 2>&1; then
  echo "browser: $(chromium --version 2>/dev/null | head -n1)"
  exit 0
fi
as_root() { if [ "$(id -u)" = 0 ]; then "$@"; else sudo -n "$@"; fi; }
as_root apt-get update -qq
as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends chromium
echo "browser: $(chromium --version 2>/dev/null | head -n1)"
