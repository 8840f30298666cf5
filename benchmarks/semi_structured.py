"""2:4 semi-structured sparsity: does it make a layer faster? On a GPU with sparse tensor cores, yes.

The lecture says irregular (weight) pruning gives no speedup on dense hardware. NVIDIA's Ampere and
newer GPUs added one exception: a weight with exactly 2 non-zeros in every 4 consecutive inputs,
stored compressed (``torch.sparse.to_sparse_semi_structured``), multiplies on sparse tensor cores at
up to twice the dense rate. This part times, side by side (``benchmarks._common.interleave``:
``torch.utils.benchmark.Timer.blocked_autorange`` per contender per repeat, in a new seeded order
each repeat), one ``Linear`` layer of several sizes at batch 256:

* ``dense``: the dense weight;
* ``masked 2:4``: the same layer with a 2:4 mask applied (half the weights zero, still dense storage);
* ``semi-structured 2:4``: CUDA only, half precision, the weight as a semi-structured sparse tensor;
* ``NMLinear``: the library's compressed reference form (decompressed at each call), CPU only.

Without a CUDA device it says so in its report and times the CPU contenders only, which shows the
lecture's point: on a CPU, 2:4 masks change nothing and the compressed form is slower. Run::

    python -m benchmarks.semi_structured            # about a minute on a CPU
    python -m benchmarks.semi_structured --quick    # seconds
"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

if __package__ in (None, ""):  # run as a script: make `benchmarks` importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import torch
from torch import nn

from benchmarks import _common as C
from lightning_prune.semi_structured import NM, NMLinear, select_nm

NAME = "semi_structured"
BATCH = 256
SIZES = ((1024, 1024), (4096, 4096), (4096, 11008))
QUICK_SIZES = ((256, 256),)


def two_four(linear: nn.Linear) -> nn.Linear:
    """The layer with the 2 largest-magnitude weights of every 4 kept (the rest zeroed)."""
    keep = select_nm({"w": linear.weight.detach().abs().cpu()}, {"w": torch.ones_like(linear.weight, dtype=torch.bool,
                                                                                      device="cpu")}, 0.5, NM(2, 4))
    with torch.no_grad():
        linear.weight.mul_(keep["w"].to(linear.weight.device))
    return linear


def contenders(inputs: int, outputs: int, device: torch.device) -> tuple[dict[str, Callable[[], Any]], str]:
    dtype = torch.float16 if device.type == "cuda" else torch.float32
    torch.manual_seed(0)
    dense = nn.Linear(inputs, outputs).to(device, dtype).eval()
    masked = two_four(nn.Linear(inputs, outputs).to(device, dtype)).eval()
    x = torch.randn(BATCH, inputs, device=device, dtype=dtype)
    runs: dict[str, Callable[[], Any]] = {"dense": lambda: dense(x), "masked 2:4": lambda: masked(x)}
    if device.type == "cuda":
        sparse = two_four(nn.Linear(inputs, outputs).to(device, dtype)).eval()
        sparse.weight = nn.Parameter(torch.sparse.to_sparse_semi_structured(sparse.weight.detach()), requires_grad=False)
        runs["semi-structured 2:4"] = lambda: sparse(x)
    else:
        compact = NMLinear(masked, 2, 4).eval()
        runs["NMLinear"] = lambda: compact(x)
    return runs, str(dtype).removeprefix("torch.")


def run(quick: bool = False, out: Path = C.DEFAULT_OUT, device: str | None = "auto", threads: int | None = None,
        repeats: int | None = None, progress: Callable[[str], None] | None = None) -> dict[str, Any]:
    """Run the benchmark and write ``semi_structured.{json,md}`` into ``out``."""
    say = progress or C.progress(NAME)
    started = time.perf_counter()
    target = C.resolve_device(device)
    repeats = repeats or (2 if quick else 7)
    block_s = 0.02 if quick else 0.1
    with C.num_threads(threads), torch.inference_mode():
        report: dict[str, Any] = {
            "name": NAME, "machine": C.machine_info(target),
            "config": {"quick": quick, "command": C.command_line(), "repeats": repeats, "batch": BATCH, "block_s": block_s,
                       "device": str(target), "order": C.ORDER},
            "cuda": target.type == "cuda", "results": [],
        }
        for inputs, outputs in QUICK_SIZES if quick else SIZES:
            say(f"Linear {inputs} -> {outputs}")
            runs, dtype = contenders(inputs, outputs, target)
            times = C.interleave(runs, repeats, min_run_time=block_s, warmup=1)
            summary = C.summarise(times, "dense", scale=1e3)
            report["results"].append({"inputs": inputs, "outputs": outputs, "dtype": dtype,
                                      "ms": {name: entry["value"]["median"] for name, entry in summary.items()},
                                      "speedup": {name: entry["speedup"] for name, entry in summary.items()
                                                  if name != "dense"}})
    return C.finish(report, Path(out), NAME, started, lambda r: {}, lambda r, o: [], to_markdown)


def to_markdown(report: dict[str, Any]) -> str:
    lines = [f"# 2:4 semi-structured sparsity: one Linear layer at batch {report['config']['batch']}", "",
             C.machine_line(report["machine"], report.get("load_average_at_end")), ""]
    if not report["cuda"]:
        lines += ["**No CUDA device: the sparse-tensor-core contender (`torch.sparse.to_sparse_semi_structured`) was not "
                  "run.** It needs an NVIDIA Ampere-or-newer GPU; rerun this part there. Below, the CPU only.", ""]
    names = list(report["results"][0]["ms"]) if report["results"] else []
    lines += ["| layer | dtype | " + " | ".join(f"{n} (ms)" for n in names) + " | " +
              " | ".join(f"{n} speedup" for n in names if n != "dense") + " |",
              "|---|---|" + "---|" * (2 * len(names) - 1)]
    for row in report["results"]:
        speedups = [row["speedup"].get(n, {}) for n in names if n != "dense"]
        lines.append(f"| {row['inputs']} → {row['outputs']} | {row['dtype']} | "
                     + " | ".join(f"{row['ms'][n]:.3f}" for n in names) + " | "
                     + " | ".join(C.fmt_spread(s, suffix="×") if s else "-" for s in speedups) + " |")
    lines += ["", f"Command: `{report['config']['command']}` ({report['seconds']:.0f} s).", ""]
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    C.add_common_arguments(parser, "one small layer, two repeats (seconds)")
    parser.add_argument("--repeats", type=int, default=None, help="interleaved repeats (default 7; 2 quick)")
    args = parser.parse_args(argv)
    report = run(args.quick, args.out, args.device, args.threads, args.repeats)
    print(to_markdown(report))


if __name__ == "__main__":
    main()
