#!/bin/sh
# The evaluation report's HTML page in a real browser (CTest's report.web.*): `emovlm report-html`
# renders REPORT.json into OUT/NAME.html, headless Chromium takes a 1200x2400 screenshot of it
# (OUT/NAME.png, left for a person to look at), and check_screenshot checks its size, that it is
# not blank, that nothing is cut off at the right and that every legend colour was painted.
# Exits 77 (skipped) without Chromium.
# Usage: report_screenshot.sh EMOVLM_CLI CHECK_SCREENSHOT REPORT.json OUT NAME
set -eu
cli=$1 check=$2 report=$3 out=$4 name=$5
chromium=${EMOVLM_CHROMIUM:-/usr/bin/chromium}
if [ ! -x "$chromium" ]; then echo "skipped: no Chromium (apt-get install chromium)"; exit 77; fi
mkdir -p "$out"
"$cli" report-html "$report" --out "$out/$name.html"
profile=$(mktemp -d)
trap 'rm -rf "$profile"' EXIT
rm -f "$out/$name.png"
timeout 120 "$chromium" --headless --no-sandbox --disable-gpu --hide-scrollbars --user-data-dir="$profile" \
  --screenshot="$out/$name.png" --window-size=1200,2400 "file://$(cd "$out" && pwd)/$name.html" >/dev/null 2>&1
"$check" "$out/$name.png" 1200 2400 "$out/$name.html"
