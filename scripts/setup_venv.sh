#!/usr/bin/env bash
# Creates .venv with everything lightning_prune, its tests and its course need.
# Needs only Python 3.11 and pip. Reuses .venv while pyproject.toml and this script are unchanged.
# torch 2.14.1 + torchvision 0.29.1 are installed together (the model-zoo tests need torchvision and
# timm; PyPI's torchvision does not import beside the 2.13.0 CPU wheel). It is a CUDA build that runs
# on the CPU; on this project's machines pip takes both from the local disk.
set -euo pipefail
cd "$(dirname "$0")/.."
python=$(command -v python3.11 || command -v python3)
stamp=".venv/.installed-$(cat pyproject.toml scripts/setup_venv.sh | sha256sum | cut -c1-16)"
if [ ! -f "$stamp" ]; then
  "$python" -m venv .venv
  .venv/bin/python -m pip install --quiet --disable-pip-version-check "torch==2.14.1" "torchvision==0.29.1"
  .venv/bin/python -m pip install --quiet --disable-pip-version-check -e ".[test]"
  touch "$stamp"
fi
