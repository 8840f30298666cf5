"""The helpers defined once in lightning_prune.teaching and imported by the notebooks, tests and experiments."""

import math

import lightning as L
import pytest
import torch
from lightning.pytorch.callbacks import Callback
from torch import nn

from lightning_prune.models import Classifier
from lightning_prune.teaching import (accuracy, committed_figure, committed_result, mean_std, quiet_trainer,
                                     repository_file, widths)
from trainers import make_trainer


class _Record(Callback):
    def __init__(self):
        self.calls = []

    def on_validation_start(self, trainer, pl_module):
        self.calls.append(("validation", trainer.sanity_checking))

    def on_train_epoch_start(self, trainer, pl_module):
        self.calls.append(("train", trainer.current_epoch))


def _identity() -> nn.Linear:
    """A linear "classifier" whose logit k is input feature k (identity weights, no bias)."""
    layer = nn.Linear(3, 3, bias=False)
    with torch.no_grad():
        layer.weight.copy_(torch.eye(3))
    return layer


def test_accuracy_counts_the_examples_whose_highest_logit_is_the_label():
    model = _identity()
    x = torch.tensor([[5.0, 0, 0], [0, 5.0, 0], [0, 0, 5.0], [0, 5.0, 0]])  # predictions 0, 1, 2, 1
    assert accuracy(model, x, torch.tensor([0, 1, 2, 1])) == 1.0
    assert accuracy(model, x, torch.tensor([0, 1, 0, 0])) == 0.5
    assert accuracy(model, x, torch.tensor([1, 2, 0, 0])) == 0.0
    assert isinstance(accuracy(model, x, torch.tensor([0, 1, 2, 1])), float)


def test_accuracy_evaluates_in_eval_mode_without_gradients():
    class ModeAware(nn.Module):  # predicts class 1 in training mode, class 0 in eval mode
        def forward(self, x):
            assert not torch.is_grad_enabled()
            logits = torch.zeros(len(x), 2)
            logits[:, int(self.training)] = 1.0
            return logits

    model = ModeAware().train()
    assert accuracy(model, torch.zeros(4, 1), torch.zeros(4, dtype=torch.long)) == 1.0
    assert not model.training  # left in eval mode, as documented


def test_quiet_trainer_has_no_logger_progress_bar_checkpoints_or_sanity_check():
    trainer = quiet_trainer(3)
    assert trainer.max_epochs == 3
    assert trainer.logger is None and trainer.loggers == []
    assert trainer.progress_bar_callback is None
    assert trainer.checkpoint_callback is None
    assert trainer.num_sanity_val_steps == 0
    assert trainer.num_devices == 1 and trainer.accelerator.__class__.__name__ == "CPUAccelerator"
    assert torch.are_deterministic_algorithms_enabled()
    assert not any(type(c).__name__ == "ModelSummary" for c in trainer.callbacks)


def test_quiet_trainer_takes_callbacks_and_overrides():
    record = _Record()
    trainer = quiet_trainer(2, [record], limit_train_batches=1, limit_val_batches=1)
    assert record in trainer.callbacks
    L.seed_everything(0, verbose=False)
    x, y = torch.randn(8, 1, 8, 8), torch.randint(10, (8,))
    loader = torch.utils.data.DataLoader(torch.utils.data.TensorDataset(x, y), batch_size=4)
    trainer.fit(Classifier("lenet_300_100", input_shape=(1, 8, 8)), loader, loader)
    # no sanity check: the first validation is the one after epoch 0
    assert record.calls == [("train", 0), ("validation", False), ("train", 1), ("validation", False)]


def test_the_tests_trainer_is_the_quiet_trainer_with_lightnings_sanity_check():
    trainer = make_trainer(1, limit_train_batches=1)
    assert trainer.logger is None and trainer.progress_bar_callback is None and trainer.checkpoint_callback is None
    assert trainer.num_sanity_val_steps == 2  # Lightning's default: the tests keep the sanity check
    assert make_trainer(1, num_sanity_val_steps=0).num_sanity_val_steps == 0


def test_widths_lists_every_linear_layer_in_order():
    assert widths(Classifier("lenet_300_100", input_shape=(1, 8, 8))) == [300, 100, 10]
    assert widths(nn.Sequential(nn.Linear(4, 7), nn.ReLU(), nn.Sequential(nn.Linear(7, 2)))) == [7, 2]
    assert widths(nn.Conv2d(1, 4, 3)) == []


@pytest.mark.parametrize(
    ("values", "expected"),
    [([2.0, 4.0, 6.0], (4.0, 2.0)), ([1.0, 2.0], (1.5, math.sqrt(0.5))), ([3.5], (3.5, 0.0))],
)
def test_mean_std_is_the_mean_and_sample_standard_deviation(values, expected):
    mean, std = mean_std(values)
    assert mean == pytest.approx(expected[0]) and std == pytest.approx(expected[1])


def test_committed_result_loads_the_json_and_prints_its_command_and_where_it_ran(capsys):
    result = committed_result("experiments/results/lottery_ticket_mnist.json")
    assert result["command"].startswith("python experiments/lottery_ticket.py")
    printed = capsys.readouterr().out
    assert "experiments/results/lottery_ticket_mnist.json" in printed and result["command"] in printed
    assert result["environment"] in printed
    gpu = committed_result("benchmarks/results/inference_gpu_machine.json")  # a benchmark: config.command, machine
    printed = capsys.readouterr().out
    assert gpu["config"]["command"] in printed and "NVIDIA H200" in printed
    committed_result("benchmarks/results/width_alignment.json")
    assert "CPU only" in capsys.readouterr().out


def test_committed_result_says_when_the_file_is_not_in_the_checkout():
    with pytest.raises(FileNotFoundError, match="not in this checkout"):
        committed_result("experiments/results/no_such_result.json")
    assert repository_file("experiments/results/wanda.json").is_file()


def test_committed_figure_is_the_png_itself():
    image = committed_figure("experiments/results/lottery_ticket_mnist.png")
    assert image.data == repository_file("experiments/results/lottery_ticket_mnist.png").read_bytes()
    assert image.format == "png"
