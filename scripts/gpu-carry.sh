#!/usr/bin/env bash
# Prepares .whl/, the wheels the device check carries to the GPU machine: turngym's
# dependencies that its image lacks (it has torch, transformers, accelerate, peft, numpy,
# pyyaml, jinja2, tqdm, httpx; not gymnasium or pydantic). Each is downloaded at the version
# installed here (so the device runs what CI tests), as a CPython 3.12 x86-64 wheel (the
# image's Python). Needs PyPI (pip download); nothing else. Run from anywhere:
#   bash scripts/gpu-carry.sh            # fills .whl/ (ignored by git), checks it is under 64 MiB
#   bash scripts/gpu-carry.sh --list     # prints the pinned requirements only, offline
# PYTHON picks the interpreter whose installed versions are pinned (default .venv/bin/python).
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-.venv/bin/python}
DEST=.whl
# typing-extensions: pydantic needs a recent one; the wheel shadows the image's older copy.
PACKAGES=(gymnasium farama-notifications pydantic pydantic-core annotated-types typing-inspection typing-extensions)

requirements() {
    "$PY" - "${PACKAGES[@]}" <<'PY'
import importlib.metadata as metadata
import sys

for name in sys.argv[1:]:
    print(f"{name}=={metadata.version(name)}")
PY
}

if [[ "${1:-}" == "--list" ]]; then
    requirements
    exit 0
fi
mkdir -p "$DEST"
rm -f "$DEST"/*.whl  # one version of each: two copies of a package stop the install there
platforms=()
for tag in manylinux_2_28_x86_64 manylinux_2_27_x86_64 manylinux_2_17_x86_64 manylinux2014_x86_64 manylinux1_x86_64; do
    platforms+=(--platform "$tag")
done
# shellcheck disable=SC2046  # one requirement per word
"$PY" -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
    "${platforms[@]}" -d "$DEST" $(requirements)
size=$(du -sk "$DEST" | cut -f1)
if (( size > 60 * 1024 )); then
    echo "$DEST is ${size} KiB: over what the device tool carries beside the working tree (64 MiB)" >&2
    exit 1
fi
ls "$DEST"
echo "$DEST: ${size} KiB; carry it: run(command='bash scripts/gpu-check.sh', carry=['.whl'])"
