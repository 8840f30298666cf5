#!/usr/bin/env bash
# The whole test suite: unit and Trainer tests, DDP tests, and every course notebook under nbval.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup_venv.sh
export MPLBACKEND=Agg
.venv/bin/python -m pytest -q -p no:cacheprovider "$@"
