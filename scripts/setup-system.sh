#!/usr/bin/env bash
# Debian packages the tests use: Docker Engine, debootstrap (sandbox image), bubblewrap
# (LocalSandbox), Coq (prover backend), Chromium (GUI environments, report test).
set -euo pipefail
PKGS=(docker.io debootstrap bubblewrap coq chromium)
missing=()
for p in "${PKGS[@]}"; do
    dpkg -s "$p" >/dev/null 2>&1 || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
    SUDO=""
    [ "$(id -u)" -eq 0 ] || SUDO="sudo"
    $SUDO apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq "${missing[@]}" >/dev/null
fi
