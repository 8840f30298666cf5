#!/usr/bin/env bash
# The main job: iterative magnitude pruning of LeNet-300-100 on digits, configured by YAML
# (lightning_prune/configs/lenet_digits.yaml: the Pruning callback's schedule and guard nested as
# class_path: lightning_prune.Geometric / lightning_prune.DropGuard). Add --print_config to see every option.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup_venv.sh
.venv/bin/lightning-prune fit --config lightning_prune/configs/lenet_digits.yaml "$@"
