#!/usr/bin/env bash
# The JavaScript test of the HTTP control plane and scripted endpoints (tests/js): start
# `rpq serve --config tests/js/endpoints.toml` on a free port, run `node --test` against it, stop it.
# Nothing Python in the test itself: it uses node's own fetch and test runner.
set -euo pipefail
cd "$(dirname "$0")/.."
command -v node >/dev/null || { echo "error: node (>= 18, for fetch and node --test) is not installed" >&2; exit 1; }
export RPQ_EMULATOR_API_KEY="js-test-key"
out=$(mktemp)
.venv/bin/rpq serve --config tests/js/endpoints.toml --clock virtual --port 0 --no-rate-limits >"$out" 2>&1 &
server=$!
trap 'kill "$server" 2>/dev/null; wait "$server" 2>/dev/null; rm -f "$out"' EXIT
for _ in $(seq 1 200); do
    root=$(grep -o 'http://127\.0\.0\.1:[0-9]*' "$out" | head -n 1 || true)
    [ -n "$root" ] && break
    kill -0 "$server" 2>/dev/null || { cat "$out" >&2; exit 1; }
    sleep 0.05
done
[ -n "$root" ] || { echo "error: rpq serve printed no URL" >&2; cat "$out" >&2; exit 1; }
RPQ_ROOT="$root" node --test tests/js/
