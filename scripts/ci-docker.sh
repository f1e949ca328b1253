#!/usr/bin/env bash
# Prepare the sandbox backends for the test suite: install docker.io, debootstrap and
# bubblewrap if missing, start dockerd in the background if it is not running, wait for it by
# polling (bounded deadline, no fixed sleep), and build the sandbox image once.
# Idempotent; meant for a fresh Debian bookworm machine as root (CI) and for this one.
# Usage: scripts/ci-docker.sh [PYTHON]   (PYTHON: the interpreter with turngym installed)
set -euo pipefail

PYTHON="${1:-${PYTHON:-python3}}"
DEADLINE_S="${DOCKERD_DEADLINE_S:-120}"
SUDO=""
if [ "$(id -u)" -ne 0 ]; then SUDO="sudo"; fi

missing=()
command -v dockerd >/dev/null 2>&1 || missing+=(docker.io)
command -v debootstrap >/dev/null 2>&1 || [ -x /usr/sbin/debootstrap ] || missing+=(debootstrap)
command -v bwrap >/dev/null 2>&1 || missing+=(bubblewrap)
if [ "${#missing[@]}" -gt 0 ]; then
    echo "ci-docker: installing ${missing[*]}"
    $SUDO apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}"
fi

docker_up() { docker info >/dev/null 2>&1; }

if ! docker_up; then
    if ! pgrep -x dockerd >/dev/null 2>&1; then
        echo "ci-docker: starting dockerd"
        # shellcheck disable=SC2086
        $SUDO sh -c 'nohup dockerd >/var/log/dockerd.log 2>&1 &'
    fi
    end=$(( $(date +%s) + DEADLINE_S ))
    until docker_up; do
        if [ "$(date +%s)" -ge "$end" ]; then
            echo "ci-docker: dockerd did not answer within ${DEADLINE_S}s; see /var/log/dockerd.log" >&2
            exit 1
        fi
        sleep 0.2  # poll interval of the readiness check above, not a readiness guess
    done
fi
echo "ci-docker: dockerd is up ($(docker version --format '{{.Server.Version}}'))"

"$PYTHON" -m turngym.cli sandbox build-image --profile python
