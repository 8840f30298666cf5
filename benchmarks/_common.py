"""Shared pieces of the benchmark suite: machine and version records, device selection, the one way
of timing contenders side by side (:func:`interleave`, ``torch.utils.benchmark.Timer`` inside),
summaries (:mod:`benchmarks.stats`), memory tracking, and report output.

Every benchmark of the suite (``benchmarks/*.py``) writes ``<name>.json`` and ``<name>.md`` into
its output folder; ``benchmarks/run_all.py`` collects them into ``suite.json`` and ``RESULTS.md``.
"""

from __future__ import annotations

import contextlib
import gc
import importlib.metadata
import json
import logging
import os
import platform
import random
import sys
import threading
import time
import warnings
import weakref
from collections.abc import Callable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import torch
from torch.utils import benchmark as torch_benchmark
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_leaves

from benchmarks.stats import loglog_slope, mean_std, spread, summarise  # noqa: F401  (re-exported for the parts)

BENCH_DIR = Path(__file__).resolve().parent
DEFAULT_OUT = BENCH_DIR / "results"
RESULTS_MD = BENCH_DIR / "RESULTS.md"
_DEFAULT_THREADS = torch.get_num_threads()  # at import, before anyone changes it


# --------------------------------------------------------------------------------- machine, device
def load_average() -> list[float] | None:
    """The 1, 5 and 15 minute load averages (``None`` where the OS has none)."""
    return [round(v, 2) for v in os.getloadavg()] if hasattr(os, "getloadavg") else None


def dist_version(name: str, fallback: str = "not installed") -> str:
    """The installed distribution's version (``torch_pruning.__version__`` of 1.6.1 still says 1.6.0)."""
    try:
        return importlib.metadata.version(name)
    except importlib.metadata.PackageNotFoundError:
        return fallback


def versions() -> dict[str, str]:
    """Versions of Python and of the libraries the benchmarks use."""
    return {
        "python": platform.python_version(),
        "torch": torch.__version__,
        "lightning": dist_version("lightning"),
        "torchmetrics": dist_version("torchmetrics"),
        "torch_pruning": dist_version("torch-pruning"),
        "lightning_prune": dist_version("lightning-prune"),
        "numpy": dist_version("numpy"),
    }


def resolve_device(name: str | torch.device | None = "auto") -> torch.device:
    """``"auto"``/``None``: CUDA when available, else the CPU; otherwise the named device.

    Raises:
        ValueError: If CUDA is asked for and not available.
    """
    if name is None or str(name) == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    device = torch.device(name)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"--device {name}: CUDA is not available on this machine (torch {torch.__version__}).")
    return device


def device_name(device: torch.device) -> str:
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    return platform.processor() or platform.machine()


def machine_info(device: torch.device | str | None = None) -> dict[str, Any]:
    """Machine, versions, threads, device and the load average now (the start of a run)."""
    device = resolve_device(device) if device is not None else torch.device("cpu")
    return {
        "platform": platform.platform(),
        "processor": platform.processor() or platform.machine(),
        "cpu_count": os.cpu_count(),
        "torch_num_threads": torch.get_num_threads(),
        "torch_num_interop_threads": torch.get_num_interop_threads(),
        "threads_setting": "default" if torch.get_num_threads() == _DEFAULT_THREADS else "set explicitly",
        "cuda_available": torch.cuda.is_available(),
        "cuda_device": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None,
        "device": str(device),
        "device_name": device_name(device),
        **versions(),
        "load_average_1_5_15min": load_average(),
    }


def machine_line(m: Mapping[str, Any], end_load: Sequence[float] | None = None) -> str:
    """One markdown line: machine, versions, threads, device and the load averages."""
    return (
        f"Machine: {m['platform']}, {m['processor']}, {m['cpu_count']} CPUs; device {m['device']} ({m['device_name']}); "
        f"torch {m['torch']} ({m['torch_num_threads']} threads, {m['threads_setting']}), lightning {m['lightning']}, "
        f"torchmetrics {m['torchmetrics']}, torch-pruning {m['torch_pruning']}, Python {m['python']}. "
        f"Load average (1/5/15 min) {fmt_load(m.get('load_average_1_5_15min'))} at start, {fmt_load(end_load)} at end."
    )


def fmt_load(values: Sequence[float] | None) -> str:
    return "n/a" if not values else "/".join(f"{v:.2f}" for v in values)


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


@contextlib.contextmanager
def num_threads(threads: int | None) -> Iterator[None]:
    """``torch.set_num_threads(threads)`` inside the block (nothing when ``None``), restored after."""
    previous = torch.get_num_threads()
    if threads is not None:
        torch.set_num_threads(threads)
    try:
        yield
    finally:
        torch.set_num_threads(previous)


@contextlib.contextmanager
def quiet_lightning() -> Iterator[None]:
    """No Lightning banners or warnings (the benchmarks build many Trainers)."""
    loggers = [logging.getLogger(n) for n in ("lightning.pytorch", "lightning.fabric", "lightning")]
    levels = [lg.level for lg in loggers]
    for lg in loggers:
        lg.setLevel(logging.ERROR)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            yield
    finally:
        for lg, level in zip(loggers, levels):
            lg.setLevel(level)


def trainer_kwargs(device: torch.device, precision: str | None = None) -> dict[str, Any]:
    """Plain ``Trainer`` options for benchmarks: one device, no logger, bar, checkpoints or sanity check."""
    return dict(
        accelerator="gpu" if device.type == "cuda" else "cpu", devices=1, logger=False, enable_checkpointing=False,
        enable_progress_bar=False, enable_model_summary=False, num_sanity_val_steps=0,
        **({"precision": precision} if precision else {}),
    )


# ---------------------------------------------------------------------------------------- summaries
def epoch_timer(device: torch.device) -> Any:
    """A Lightning callback recording the seconds of each training epoch after the first (``.seconds``)."""
    from lightning.pytorch.callbacks import Callback

    class EpochTimer(Callback):
        def __init__(self) -> None:
            self.seconds: list[float] = []

        def on_train_epoch_start(self, trainer: Any, pl_module: Any) -> None:
            sync(device)
            self._t = time.perf_counter()

        def on_train_epoch_end(self, trainer: Any, pl_module: Any) -> None:
            sync(device)
            if trainer.current_epoch >= 1:
                self.seconds.append(time.perf_counter() - self._t)

    return EpochTimer()


def fmt_spread(s: Mapping[str, float], fmt: str = "{:.2f}", suffix: str = "") -> str:
    """``median [min–max]``."""
    return f"{fmt.format(s['median'])}{suffix} [{fmt.format(s['min'])}–{fmt.format(s['max'])}]"


# ----------------------------------------------------------------------------------------- timing
ORDER = "seeded shuffle"
"""How :func:`interleave` orders the contenders within a repeat (recorded in the reports)."""


def interleave(contenders: Mapping[str, Callable[[], Any]], repeats: int, *, min_run_time: float | None = None,
               number: int | None = None, self_timed: bool = False, warmup: int = 0, seed: int = 0,
               collect: bool = False) -> dict[str, list[float]]:
    """Time every contender once per repeat, in a new seeded random order each repeat.

    This is the suite's one way of timing things side by side. Each repeat runs every contender
    once, in the order ``random.Random(seed)`` shuffles it to for that repeat: over the repeats each
    contender follows each of the others about equally often, so the cost of following a big model
    (cold caches, the allocator) is spread over all of them. (A rotation would not do that: in
    ``abc, bca, cab`` ``a`` always follows ``c``.) The contenders' ``i``-th runs happened in the same
    round, close together in time, which is what :func:`benchmarks.stats.summarise`'s per-repeat
    ratios rely on.

    How one run is measured (exactly one of):

    * ``min_run_time``: ``torch.utils.benchmark.Timer(...).blocked_autorange(min_run_time=...)``.
      For contenders whose calls do not change anything that matters (inference, a multiply that
      is idempotent): the Timer warms up while it sizes its block, then times blocks for at least
      ``min_run_time`` seconds. The run's time is the median per-call time over the blocks.
    * ``number``: ``Timer(...).timeit(number)``, a fixed count. For calls that change state (training
      steps): every contender takes the same number of steps per repeat, so they stay at the same
      step, see the same batches and can be checked against each other afterwards (blocked_autorange
      would give a fast contender more steps than a slow one). ``timeit`` runs
      ``max(number // 100, 2)`` untimed calls first. The run's time is seconds per call.
    * ``self_timed``: the contender times itself and returns seconds. Only for what a Timer cannot
      time: a span between two hooks inside one call, e.g. the epochs of a ``Trainer.fit`` after the
      first (:func:`epoch_timer`).

    The Timer runs with the caller's ``torch.get_num_threads()`` (its own default is 1 thread) and,
    when an accelerator is present, synchronises it around every timed block. Python's cyclic GC is
    off inside the Timer's blocks (``timeit``); ``collect`` also runs ``gc.collect()`` before every
    contender (for contenders that build Trainers and leave reference cycles behind).

    Args:
        contenders: Name to a callable taking no arguments.
        repeats: Rounds; every contender runs once per round.
        warmup: Untimed calls of each contender before the first round (in the given order).
        seed: Seeds the order of every round.

    Returns:
        Per contender, one time per repeat (seconds per call; for ``self_timed``, what it returned).
    """
    if sum((min_run_time is not None, number is not None, self_timed)) != 1:
        raise ValueError("pass exactly one of min_run_time, number and self_timed=True")
    if number is not None and number < 1:
        raise ValueError(f"number={number}: at least one call per run")
    names = list(contenders)
    for name in names:
        for _ in range(warmup):
            contenders[name]()
    times: dict[str, list[float]] = {n: [] for n in names}
    rng = random.Random(seed)
    gc.collect()  # once: a full collection costs ~0.3 s with torch + lightning imported
    for _ in range(repeats):
        for name in rng.sample(names, len(names)):
            if collect:
                gc.collect()
            times[name].append(measure(contenders[name], min_run_time=min_run_time, number=number,
                                       self_timed=self_timed))
    return times


def measure(fn: Callable[[], Any], *, min_run_time: float | None = None, number: int | None = None,
            self_timed: bool = False) -> float:
    """One run of one contender, as :func:`interleave` measures it (seconds per call)."""
    if self_timed:
        return float(fn())
    timer = torch_benchmark.Timer(stmt="fn()", globals={"fn": fn}, num_threads=torch.get_num_threads())
    if number is not None:
        return timer.timeit(number).median
    return timer.blocked_autorange(min_run_time=min_run_time).median


def time_once(fn: Callable[[], Any], device: torch.device | None = None) -> tuple[Any, float]:
    """``(fn(), seconds)`` for a one-off call that cannot be repeated: it changes its input (removing
    units from a model) or is the run being reported (a whole fit). A Timer would call it again."""
    if device is not None:
        sync(device)
    start = time.perf_counter()
    value = fn()
    if device is not None:
        sync(device)
    return value, time.perf_counter() - start


# ------------------------------------------------------------------------------------------ memory
class LiveTensorMemory(TorchDispatchMode):
    """Peak bytes of tensor storage allocated inside the block and alive at the same time.

    Every op's output whose storage is not one of its inputs' (so views and in-place ops are not
    counted) is recorded, and a finalizer on the storage subtracts it when it is freed. This counts
    what PyTorch allocates for tensors on any device (activations, temporaries, statistics,
    copies), not Python objects or the allocator's caching. Attach with ``with LiveTensorMemory() as m:``.

    Attributes:
        peak: Largest number of bytes alive at once.
        live: Bytes still alive (allocated inside the block, not yet freed).
    """

    def __init__(self) -> None:
        super().__init__()
        self.live = 0
        self.peak = 0
        self._sizes: dict[tuple[str, int], int] = {}

    def _free(self, key: tuple[str, int]) -> None:
        self.live -= self._sizes.pop(key, 0)

    def __torch_dispatch__(self, func: Any, types: Any, args: Any = (), kwargs: Any = None) -> Any:
        kwargs = kwargs or {}
        out = func(*args, **kwargs)
        inputs = {(str(t.device), t.untyped_storage().data_ptr()) for t in tree_leaves((args, kwargs))
                  if isinstance(t, torch.Tensor) and t.device.type != "meta"}
        for t in tree_leaves(out):
            if not isinstance(t, torch.Tensor) or t.device.type == "meta":
                continue
            storage = t.untyped_storage()
            key = (str(t.device), storage.data_ptr())
            size = storage.nbytes()
            if size == 0 or key in inputs or key in self._sizes:
                continue
            self._sizes[key] = size
            self.live += size
            self.peak = max(self.peak, self.live)
            weakref.finalize(storage, self._free, key)
        return out


class PeakRSS:
    """Peak growth of the process's resident set size while the block runs (sampled by a thread).

    Coarse: the allocator keeps freed pages, so a block that reuses memory freed earlier shows
    little growth. Reported next to :class:`LiveTensorMemory`, which is exact for tensors.
    """

    def __init__(self, interval_s: float = 0.002) -> None:
        self.interval_s = interval_s
        self.delta = 0

    def __enter__(self) -> PeakRSS:
        import psutil

        self._process = psutil.Process()
        self._start = self._peak = self._process.memory_info().rss
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._sample, daemon=True)
        self._thread.start()
        return self

    def _sample(self) -> None:
        while not self._stop.is_set():
            self._peak = max(self._peak, self._process.memory_info().rss)
            time.sleep(self.interval_s)

    def __exit__(self, *exc: Any) -> None:
        self._stop.set()
        self._thread.join()
        self._peak = max(self._peak, self._process.memory_info().rss)
        self.delta = self._peak - self._start


@contextlib.contextmanager
def cuda_peak(device: torch.device) -> Iterator[dict[str, int]]:
    """On CUDA, ``torch.cuda.max_memory_allocated`` growth inside the block (``{"bytes": ...}``)."""
    result: dict[str, int] = {}
    if device.type != "cuda":
        yield result
        return
    torch.cuda.synchronize(device)
    torch.cuda.reset_peak_memory_stats(device)
    start = torch.cuda.memory_allocated(device)
    yield result
    torch.cuda.synchronize(device)
    result["bytes"] = torch.cuda.max_memory_allocated(device) - start


# ------------------------------------------------------------------------------------------ output
def command_line() -> str:
    """This process's command line, as typed (``python -m ...`` when run as a module)."""
    argv = list(sys.argv)
    main = sys.modules.get("__main__")
    spec = getattr(main, "__spec__", None)
    if spec is not None and spec.name:
        return " ".join(["python", "-m", spec.name.removesuffix(".__main__"), *argv[1:]])
    return " ".join(["python", *argv])


def finish(report: dict[str, Any], out: Path, name: str, started: float, goals: Callable[[dict], Any],
           plot: Callable[[dict, Path], Any], to_markdown: Callable[[dict], str]) -> dict[str, Any]:
    """The common end of every part: goals, runtime, load average, plots, then the JSON/markdown report."""
    report["goals"] = goals(report)
    report["seconds"] = time.perf_counter() - started
    report["load_average_at_end"] = load_average()
    out.mkdir(parents=True, exist_ok=True)
    report["plots"] = plot(report, out)
    return write_report(out, name, report, to_markdown(report))


def write_report(out: Path, name: str, report: dict[str, Any], markdown: str) -> dict[str, Any]:
    """Write ``<name>.json`` and ``<name>.md`` into ``out`` (created) and return the report."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    (out / f"{name}.json").write_text(json.dumps(report, indent=1, default=_json_default) + "\n")
    (out / f"{name}.md").write_text(markdown if markdown.endswith("\n") else markdown + "\n")
    return report


def _json_default(value: Any) -> Any:
    if isinstance(value, (torch.device, Path)):
        return str(value)
    if torch.is_tensor(value):
        return value.tolist()
    raise TypeError(f"not JSON serialisable: {type(value).__name__}")


def progress(tag: str) -> Callable[[str], None]:
    """A printer of ``[tag] message (elapsed s)`` lines on stderr."""
    start = time.perf_counter()

    def say(message: str) -> None:
        print(f"[{tag}] {message} ({time.perf_counter() - start:.0f} s)", file=sys.stderr, flush=True)

    return say


def add_common_arguments(parser: Any, quick_help: str = "tiny sizes and few repeats (seconds)") -> None:
    """``--quick``, ``--out``, ``--device`` and ``--threads``, the options every benchmark shares."""
    parser.add_argument("--quick", action="store_true", help=quick_help)
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT, help="output folder (default benchmarks/results)")
    parser.add_argument("--device", default="auto", help="cpu, cuda or auto (default: cuda when available)")
    parser.add_argument("--threads", type=int, default=None,
                        help="torch.set_num_threads (default: torch's own; recorded either way)")
