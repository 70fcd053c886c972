#!/usr/bin/env bash
# Type completeness of the public API as a user's IDE sees it: pyright --verifytypes on the BUILT wheel,
# installed with the `all` extra in a fresh venv. An editable install would mislead it (the wheel's
# force-include of examples/ shows up as a stub package directory there), so this never uses .venv.
# Fails under MIN_SCORE percent (default 95); REPORT=path keeps pyright's JSON report for a closer look.
set -euo pipefail
cd "$(dirname "$0")/.."

PYTHON="${PYTHON:-python3}"
MIN_SCORE="${MIN_SCORE:-95}"
# pyright's PyPI wheel bundles the checker's JavaScript and runs it with node. Prefer the machine's node;
# without one it would fetch a Node.js build from nodejs.org (nodeenv), which CI cannot reach, so take the
# `nodejs` extra instead: Node.js as a PyPI wheel.
PYRIGHT="pyright>=1.1.400"
if ! command -v node >/dev/null 2>&1; then
    PYRIGHT="pyright[nodejs]>=1.1.400"
fi

work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT

"$PYTHON" -m venv "$work/venv"
py="$work/venv/bin/python"
"$py" -m pip install -q --disable-pip-version-check --upgrade pip
"$py" -m pip wheel -q --disable-pip-version-check --no-deps -w "$work/dist" .
wheel="$(ls "$work"/dist/runpod_queue-*.whl)"
"$py" -m pip install -q --disable-pip-version-check "${wheel}[all]" "$PYRIGHT"

# Run from an empty directory so that nothing in the checkout (src/, a pyrightconfig) is picked up, with the
# venv first on PATH: verifytypes finds the installed package through the `python` it sees there.
cd "$work"
# pyright exits 1 whenever anything is incomplete; the score below is the verdict, so ignore its status.
PATH="$work/venv/bin:$PATH" pyright --verifytypes runpod_queue --ignoreexternal --outputjson >"$work/report.json" || true

if [ -n "${REPORT:-}" ]; then cp "$work/report.json" "$REPORT"; fi
"$py" - "$work/report.json" "$MIN_SCORE" <<'EOF'
import json
import sys

path, minimum = sys.argv[1], float(sys.argv[2])
try:
    with open(path, encoding="utf-8") as f:
        report = json.load(f)
    completeness = report["typeCompleteness"]
except (OSError, ValueError, KeyError) as exc:
    sys.exit(f"verifytypes: pyright gave no report ({exc}); run it by hand to see why")
problems = [d["message"] for d in report.get("generalDiagnostics", []) if d.get("severity") == "error"]
if problems or not completeness.get("modules"):
    sys.exit(f"verifytypes: pyright could not check the package: {'; '.join(problems) or 'no modules'}")
counts = completeness["exportedSymbolCounts"]
score = completeness["completenessScore"] * 100
print(
    f"verifytypes: {score:.1f}% of {counts['withKnownType'] + counts['withAmbiguousType'] + counts['withUnknownType']}"
    f" exported symbols known ({counts['withUnknownType']} unknown, {counts['withAmbiguousType']} ambiguous)"
    f" in {len(completeness['modules'])} modules; "
    f"{completeness['missingFunctionDocStringCount']} functions and {completeness['missingClassDocStringCount']}"
    " classes without a docstring"
)
if score < minimum:
    for symbol in completeness["symbols"]:
        if not symbol["isExported"] or symbol["isTypeKnown"]:
            continue
        for diag in symbol["diagnostics"]:
            if diag["severity"] == "error":
                message = " ".join(line.strip() for line in diag["message"].splitlines())
                print(f"  {symbol['name']}: {message}")
    sys.exit(f"verifytypes: {score:.1f}% is under {minimum:g}%")
EOF
