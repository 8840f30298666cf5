"""The command line: the shipped YAML config drives the model, the data and the Pruning callback.

The callback's configuration objects are nested in the YAML by ``class_path``/``init_args``
(``schedule: {class_path: lightning_prune.Geometric, ...}``, ``guard: {class_path: lightning_prune.DropGuard, ...}``).
"""

import subprocess
import sys

import yaml

from lightning_prune.cli import config_path


def _pruning_args(config):
    (callback,) = [c for c in config["trainer"]["callbacks"] if c["class_path"] == "lightning_prune.Pruning"]
    return callback["init_args"]


def test_shipped_config_nests_the_configuration_objects():
    pruning = _pruning_args(yaml.safe_load(config_path().read_text()))
    assert pruning["schedule"] == {"class_path": "lightning_prune.Geometric",
                                   "init_args": {"target": 0.9, "per_cycle": 0.2, "warmup_epochs": 8, "finetune_epochs": 2}}
    assert pruning["guard"] == {"class_path": "lightning_prune.DropGuard",
                                "init_args": {"monitor": "val_acc", "max_drop": 0.01}}
    assert not {"target", "per_cycle", "warmup_epochs", "max_drop", "scope"} & set(pruning)  # no flat arguments left


def test_cli_runs_a_shortened_shipped_config_and_prints_the_table(tmp_path):
    config = yaml.safe_load(config_path().read_text())
    config["trainer"]["max_epochs"] = 3
    config["trainer"]["limit_train_batches"] = 3
    config["trainer"]["logger"]["init_args"]["save_dir"] = str(tmp_path)
    pruning = _pruning_args(config)
    pruning["schedule"]["init_args"].update(warmup_epochs=1, per_cycle=0.7, target=0.9, finetune_epochs=1)
    pruning["guard"]["init_args"].update(max_drop=0.5)
    path = tmp_path / "config.yaml"
    path.write_text(yaml.safe_dump(config))
    done = subprocess.run([sys.executable, "-m", "lightning_prune", "fit", "--config", str(path)],
                          capture_output=True, text=True, timeout=300, cwd=tmp_path)
    assert done.returncode == 0, done.stderr[-3000:]
    output = done.stdout + done.stderr
    assert "Pruning summary" in output and "test_acc" in output
    assert "0.9000" in output  # the last cycle lands on the target (two cycles: 0.7, then 0.9)
    assert "Pruning cycle 1 at epoch 2" in output  # a second cycle ran: the guard (max_drop=0.5) accepted the first
    assert list(tmp_path.glob("lenet_digits/version_0/metrics.csv"))


def test_print_config_shows_the_nested_schedule_and_guard(tmp_path):
    done = subprocess.run([sys.executable, "-m", "lightning_prune", "fit", "--config", str(config_path()), "--print_config"],
                          capture_output=True, text=True, timeout=300, cwd=tmp_path)
    assert done.returncode == 0, done.stderr[-3000:]
    assert "class_path: lightning_prune.Geometric" in done.stdout
    assert "class_path: lightning_prune.DropGuard" in done.stdout
    pruning = _pruning_args(yaml.safe_load(done.stdout))
    schedule, guard = pruning["schedule"], pruning["guard"]
    assert schedule["class_path"] == "lightning_prune.Geometric"
    assert schedule["init_args"] == {"target": 0.9, "per_cycle": 0.2, "warmup_epochs": 8, "finetune_epochs": 2,
                                     "budget": "units"}  # the defaults filled in
    assert guard == {"class_path": "lightning_prune.DropGuard",
                     "init_args": {"monitor": "val_acc", "max_drop": 0.01, "mode": "max"}}
    assert pruning["criterion"] == "l1" and pruning["ranking"] == "global" and pruning["lottery"] is None
    # What it prints is a config the CLI reads back unchanged.
    printed = tmp_path / "printed.yaml"
    printed.write_text(done.stdout)
    again = subprocess.run([sys.executable, "-m", "lightning_prune", "fit", "--config", str(printed), "--print_config"],
                           capture_output=True, text=True, timeout=300, cwd=tmp_path)
    assert again.returncode == 0, again.stderr[-3000:]
    assert yaml.safe_load(again.stdout) == yaml.safe_load(done.stdout)
