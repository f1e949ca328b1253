#!/usr/bin/env bash
# The device check in one command (docs/scaling.md, "The device check"): when the interpreter
# lacks turngym's dependencies, installs the wheels carried in .whl/ (scripts/gpu-carry.sh makes
# them) into a private folder; then runs bench/gpu.py with the arguments given, e.g.
#   bash scripts/gpu-check.sh                                    # on the GPU machine, into $OUT
#   bash scripts/gpu-check.sh --device cpu --tiny --out /tmp/gpu # the CPU dry run
# PYTHON picks the interpreter (default python3: on the device image, the one that has torch).
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
if compgen -G ".whl/*.whl" >/dev/null && ! "$PY" -c "import gymnasium, pydantic" 2>/dev/null; then
    # --target keeps the image's own packages untouched; --no-index: the device has no network
    "$PY" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
        --target /tmp/turngym-site .whl/*.whl
    export PYTHONPATH=/tmp/turngym-site${PYTHONPATH:+:$PYTHONPATH}
fi
export PYTHONUNBUFFERED=1  # progress lines reach the device tool's output as they happen
exec "$PY" bench/gpu.py "$@"
