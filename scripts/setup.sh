#!/usr/bin/env bash
# Sets up everything the studio needs on a fresh Debian/Ubuntu machine with Python 3.11:
# the system libraries open3d needs, a virtual environment in .venv and the Python packages.
#   bash scripts/setup.sh          # to run the studio
#   bash scripts/setup.sh --dev    # also test tools and Chromium for the browser tests
# Idempotent: a second run only checks.
set -euo pipefail
cd "$(dirname "$0")/.."
DEV=0; [ "${1:-}" = "--dev" ] && DEV=1
PY=${PYTHON:-python3}

apt_pkgs="libusb-1.0-0 libgl1 libegl1 libgomp1"
# dev: chromium for the browser tests, curl for the README's HTTP API example (run by tests/e2e)
[ $DEV = 1 ] && apt_pkgs="$apt_pkgs chromium curl"
missing=""
for p in $apt_pkgs; do dpkg -s "$p" >/dev/null 2>&1 || missing="$missing $p"; done
if [ -n "$missing" ]; then
  SUDO=""; [ "$(id -u)" != 0 ] && SUDO="sudo"
  echo "installing system packages:$missing"
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq $missing >/dev/null
fi

[ -x .venv/bin/python ] || "$PY" -m venv .venv
.venv/bin/python -m pip install -q --upgrade pip
.venv/bin/python -m pip install -q -r requirements.txt
[ $DEV = 1 ] && .venv/bin/python -m pip install -q -r requirements-dev.txt
.venv/bin/python -c "import torch; from pipeline.runtime import resolve_auto; \
print('inference backend on the CPU (--backend auto):', resolve_auto(torch.device('cpu')))"
echo "setup done: .venv is ready"
