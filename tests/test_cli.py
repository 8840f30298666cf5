"""The command line: the shipped YAML config drives the model, the data and the Pruning callback."""

import subprocess
import sys

import yaml

from lightning_prune.cli import config_path


def test_cli_runs_a_shortened_shipped_config_and_prints_the_table(tmp_path):
    config = yaml.safe_load(config_path().read_text())
    config["trainer"]["max_epochs"] = 3
    config["trainer"]["limit_train_batches"] = 3
    config["trainer"]["logger"]["init_args"]["save_dir"] = str(tmp_path)
    pruning = config["trainer"]["callbacks"][0]["init_args"]
    pruning.update(warmup_epochs=1, per_cycle=0.7, target=0.9, finetune_epochs=1, max_drop=0.5)
    path = tmp_path / "config.yaml"
    path.write_text(yaml.safe_dump(config))
    done = subprocess.run([sys.executable, "-m", "lightning_prune", "fit", "--config", str(path)],
                          capture_output=True, text=True, timeout=300, cwd=tmp_path)
    assert done.returncode == 0, done.stderr[-3000:]
    output = done.stdout + done.stderr
    assert "Pruning summary" in output and "test_acc" in output
    assert "0.9000" in output  # the last cycle lands on the target
    assert list(tmp_path.glob("lenet_digits/version_0/metrics.csv"))
