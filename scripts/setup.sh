#!/usr/bin/env bash
# Set up .venv from nothing (CPU machine): torch's CPU wheel first, then the project with test extras.
#   bash scripts/setup.sh
# llama-cpp-python[server] builds from source (about 5 minutes on 2 cores) the first time.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
[ -x .venv/bin/python ] || "$PY" -m venv .venv
.venv/bin/python -m pip install -q --upgrade pip
# A plain `torch` would pull a multi-GB CUDA build; 2.13.0 takes the CPU wheel.
.venv/bin/python -m pip install -q torch==2.13.0
.venv/bin/python -m pip install -q -e '.[test]'
