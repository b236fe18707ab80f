#!/usr/bin/env bash
# Renders the demo's --report HTML in headless Chromium and checks that the charts drew:
# the screenshot must not be blank (tools/png_stats.py counts its colours and the pixels of
# the charts' line colours). Bounded: a 3 s demo run and a 60 s timeout on the browser.
# Needs chromium-headless-shell (or chromium) from Debian; .ci/run installs it.
set -euo pipefail
cd "$(dirname "$0")/.."

out="${REPORT_DIR:-target/report-check}"
mkdir -p "$out"
html="$(pwd)/$out/report.html"
png="$(pwd)/$out/report.png"
rm -f "$html" "$png"

echo "== demo with --report ($html)"
cargo run --release --example demo -- --duration 3 --bots 20 --quiet --report "$html"
test -s "$html" || { echo "FAIL: the demo wrote no report at $html"; exit 1; }
if grep -Eiq '<script|src="http|href="http' "$html"; then
    echo "FAIL: the report is not self-contained (script or external asset)"; exit 1
fi

browser=""
for b in chromium-headless-shell chromium chromium-browser; do
    if command -v "$b" >/dev/null 2>&1; then browser="$b"; break; fi
done
if [ -z "$browser" ]; then
    echo "FAIL: no headless Chromium found (apt-get install chromium-headless-shell)"; exit 1
fi

echo "== screenshot with $browser"
# A scratch profile per run; no network is needed (the file has no external reference).
profile="$(mktemp -d)"
trap 'rm -rf "$profile"' EXIT
timeout 60 "$browser" --headless --no-sandbox --disable-gpu --hide-scrollbars \
    --user-data-dir="$profile" --window-size=1400,1100 \
    --screenshot="$png" "file://$html" >"$out/chromium.log" 2>&1 || {
    echo "FAIL: $browser did not finish (see $out/chromium.log)"; tail -20 "$out/chromium.log"; exit 1
}
test -s "$png" || { echo "FAIL: no screenshot written"; exit 1; }

echo "== checking $png"
python3 tools/png_stats.py "$png" --min-colours 16 \
    --require '#1a73e8:200' --require '#e37400:200' --require '#188038:100'
echo "report check: OK ($png)"
