#!/usr/bin/env bash
# A bare install must not break pytest: the wheel, installed with NO extras in a fresh venv next to pytest,
# runs a user's one-line test (pytest loads our plugin in every run of that environment), and a test that
# uses the plugin's fixture without the emulator extra fails with the line that says what to install.
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON="${PYTHON:-python3}"
work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT

"$PYTHON" -m pip wheel -q --no-deps -w "$work/dist" . >/dev/null
wheel=("$work"/dist/runpod_queue-*.whl)
"$PYTHON" -m venv "$work/venv"
py="$work/venv/bin/python"
"$py" -m pip install -q "${wheel[0]}" pytest
# Bare means bare: none of the emulator extra's modules may have come in through another dependency.
"$py" - <<'PY'
import importlib.util, sys
present = [m for m in ("orjson", "uvicorn", "httptools", "typer") if importlib.util.find_spec(m)]
sys.exit(f"not a bare install, extras present: {present}" if present else 0)
PY

mkdir "$work/user"
cd "$work/user"
echo 'def test_x(): import runpod_queue; assert runpod_queue.Client' > test_user.py
out="$("$py" -m pytest -p no:cacheprovider test_user.py 2>&1)" || { echo "$out"; echo "FAIL: a bare install broke pytest" >&2; exit 1; }
grep -q "plugins:.*runpod-queue" <<<"$out" || { echo "$out"; echo "FAIL: the runpod-queue plugin did not load" >&2; exit 1; }

echo 'def test_y(runpod_emulator): runpod_emulator({"e": lambda job: job["input"]})' > test_fixture.py
if out="$("$py" -m pytest -p no:cacheprovider test_fixture.py 2>&1)"; then
    echo "$out"; echo "FAIL: the fixture ran without the emulator extra" >&2; exit 1
fi
grep -q "the \`runpod_emulator\` fixture needs the emulator extra (.* is missing): pip install 'runpod-queue\[emulator\]'" <<<"$out" \
    || { echo "$out"; echo "FAIL: no line naming the emulator extra" >&2; exit 1; }
echo "bare wheel: pytest runs, and the fixture names pip install 'runpod-queue[emulator]'"
