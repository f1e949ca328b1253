#!/usr/bin/env bash
# Installs and starts everything the tests need, then runs them:
#   system packages (Docker Engine, debootstrap, bubblewrap, Coq, Chromium), dockerd,
#   the sandbox image, a virtual environment with turngym[dev,gui,ray,openenv], then pytest.
# Idempotent: a second run skips what is already there.
set -euo pipefail
cd "$(dirname "$0")/.."

bash scripts/setup-system.sh
bash scripts/setup-venv.sh dev,gui,ray,openenv
# Starts dockerd when it is not running and builds the sandbox image once (content-tagged).
PATH="$PWD/.venv/bin:$PATH" bash scripts/ci-docker.sh "$PWD/.venv/bin/python"

exec .venv/bin/pytest -q -p no:cacheprovider "$@"
