#!/bin/sh
# Runs one node test file of tests/web (CTest's serve.web.* tests). Exits 77 (skipped) when node,
# the npm packages (`make test` runs `npm ci` here) or, for the browser test, Chromium are missing.
dir=$(cd "$(dirname "$0")" && pwd)
if ! command -v node >/dev/null 2>&1; then echo "skipped: node is not installed"; exit 77; fi
if [ ! -d "$dir/node_modules/openai" ] || [ ! -d "$dir/node_modules/puppeteer-core" ]; then
  echo "skipped: run 'npm ci' in $dir (make test does)"; exit 77
fi
case "$1" in
  browser*) if [ ! -x "${EMOVLM_CHROMIUM:-/usr/bin/chromium}" ]; then echo "skipped: no Chromium (apt-get install chromium)"; exit 77; fi ;;
esac
exec node --test --test-reporter=spec "$dir/$1"
