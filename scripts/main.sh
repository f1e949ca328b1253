#!/usr/bin/env bash
# Installs turngym into .venv and runs the main job: a tiny model learns FrozenLake on a CPU
# (supervised warm start on the solver's demonstrations, then GiGPO), printing held-out
# success before and after and saving runs/main/curves.png. Extra arguments go to
# `turngym train`, e.g. `bash scripts/main.sh --set run.steps=60`.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup-venv.sh
exec .venv/bin/turngym train examples/main.yaml "$@"
