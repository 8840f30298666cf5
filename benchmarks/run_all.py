"""The benchmark suite in one command: every part in sequence, then ``suite.json``, plots and ``RESULTS.md``.

Parts (each also runs alone: ``python -m benchmarks.<part> [--quick] [--out DIR] [--device ...]``):

1. ``training_overhead``: per-step cost of keeping pruned weights at zero (ours, ModelPruning, the floor).
2. ``inference``: latency of masked / sparse / compact models against dense, at batch 1 and 256.
3. ``accuracy``: accuracy at equal budget against ModelPruning and dense (digits, MNIST-1D).
4. ``finetune_speed``: fine-tuning epoch time after neuron removal against the MAC fraction.
5. ``scale``: time and memory of scoring, ranking and surgery as the model grows, up to ResNet-50 size.
6. ``width_alignment``: speedup / MAC cut of compact LeNet-300-100 by kept width and ``round_to``.

Run::

    python -m benchmarks.run_all                    # the whole suite (tens of minutes on 2 CPU cores)
    python -m benchmarks.run_all --quick            # every part at tiny sizes: a few minutes
    python -m benchmarks.run_all --only accuracy scale
    python -m benchmarks.run_all --out /tmp/suite   # results, plots and RESULTS.md into /tmp/suite

With the default ``--out`` the results go to ``benchmarks/results/`` and the report to
``benchmarks/RESULTS.md``; otherwise both go to ``--out``. Parts not run this time (``--only``) are
kept from the ``suite.json`` already there (``--fresh`` drops them), so the report always shows
every part run so far, each with its own command, machine, device, load and date.
"""

from __future__ import annotations

import argparse
import datetime
import importlib
import json
import sys
import time
import traceback
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

if __package__ in (None, ""):  # run as a script: make `benchmarks` importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks import _common as C

PARTS = ("training_overhead", "inference", "accuracy", "finetune_speed", "scale", "width_alignment")
TITLES = {
    "training_overhead": "1. Training overhead of mask enforcement",
    "inference": "2. Inference: weight pruning vs neuron removal",
    "accuracy": "3. Accuracy at equal budget",
    "finetune_speed": "4. Fine-tuning speed after neuron removal",
    "scale": "5. Scale: scoring, ranking and surgery",
    "width_alignment": "6. Width alignment of compact MLPs (why LeNet-300-100 misses 0.9)",
}
TIMING_PARTS = ("training_overhead", "inference", "finetune_speed", "scale", "width_alignment")
GPU_MACHINE_FILE = "inference_gpu_machine.md"  # an earlier session's run of benchmarks/inference.py on an H200 machine


def run_part(name: str, quick: bool, out: Path, device: str, threads: int | None, command: str) -> dict[str, Any]:
    """Run one part with the suite's options and return its report."""
    module = importlib.import_module(f"benchmarks.{name}")
    if name == "training_overhead":
        return module.run(quick=quick, out=out, device=device, threads=threads, command=command)
    if name == "inference":
        devices = None if device == "auto" else [str(C.resolve_device(device))]
        return module.run(quick=quick, out=out, devices=devices, threads=threads, command=command,
                          cnn_batch=None if quick else 256,
                          notes=[] if quick else ["Run by benchmarks/run_all.py: the CNNs at batch 1 and 256 (--cnn-batch 256)."])
    return module.run(quick=quick, out=out, device=device, threads=threads, command=command)


def part_summary(name: str, report: Mapping[str, Any], seconds: float) -> dict[str, Any]:
    """What RESULTS.md needs from a part: its goals (normalised rows), section, machine, load, device."""
    module = importlib.import_module(f"benchmarks.{name}")
    goals = module.suite_goals(report) if hasattr(module, "suite_goals") else [
        {**g, "subject": g.get("subject") or g.get("model") or f"{g.get('dataset')}, {g.get('variant')}"} for g in report["goals"]]
    machine = report["machine"]
    end = report.get("load_average_at_end") or machine.get("load_average_at_end")
    return {
        "name": name, "quick": report["config"].get("quick"), "command": report["config"].get("command"),
        "seconds": seconds, "finished": datetime.datetime.now().isoformat(timespec="seconds"),
        "device": machine.get("device"), "device_name": machine.get("device_name"),
        "precision": report["config"].get("precision"),
        "torch_num_threads": machine.get("torch_num_threads"), "cpu_count": machine.get("cpu_count"),
        "load_average_at_start": machine.get("load_average_1_5_15min"), "load_average_at_end": end,
        "goals": goals, "section": module.suite_section(report), "plots": report.get("plots", []),
        "report_files": [f"{name}.json", f"{name}.md"],
        "report": report,
    }


LOADED_FRACTION = 0.75


def _loaded(part: Mapping[str, Any]) -> bool:
    """Whether other processes loaded the machine: a 1-minute load average above 3/4 of the cores at the
    start or the end of the part (the benchmark itself adds about one per busy thread)."""
    cores = part.get("cpu_count") or 1
    loads = [lv[0] for lv in (part.get("load_average_at_start"), part.get("load_average_at_end")) if lv]
    return any(v > LOADED_FRACTION * cores for v in loads)


def _met(value: bool | None) -> str:
    return "—" if value is None else ("yes" if value else "**no**")


def render(suite: Mapping[str, Any], md_path: Path, out: Path) -> str:
    """RESULTS.md: machine, versions, devices, commands, goals, one section per part, plots."""
    rel = _relative(out, md_path.parent)
    parts = [suite["parts"][p] for p in PARTS if p in suite["parts"]]
    lines = ["# Benchmark results", "",
             "Generated by `benchmarks/run_all.py` from `" + f"{rel}/suite.json" + "` (every part's full JSON and markdown "
             f"are next to it, in `{rel}/`). Last command: `{suite['command']}`, finished {suite['finished']}, "
             f"{suite['seconds']:.0f} s for the parts it ran ({', '.join(suite['ran']) or 'none'})"
             + (f"; collected from earlier standalone runs: {', '.join(suite['collected'])}" if suite.get("collected") else "")
             + ". Each part's own command is in the table below.", ""]
    machine = next((p["report"]["machine"] for p in parts if p.get("report")), None)
    if machine:
        lines += ["## Machine, versions, devices", "",
                  f"- Machine: {machine['platform']}, {machine['processor']}, {machine['cpu_count']} CPUs; CUDA available: "
                  f"{machine.get('cuda_available')}" + (f" ({machine['cuda_device']})" if machine.get("cuda_device") else "") + ".",
                  f"- Versions: Python {machine['python']}, torch {machine['torch']}, lightning {machine['lightning']}, "
                  f"torchmetrics {machine['torchmetrics']}, torch-pruning {machine['torch_pruning']}, lightning_prune "
                  f"{machine['lightning_prune']}, numpy {machine['numpy']}.", ""]
    lines += ["| part | command | device | precision | torch threads | load average 1 min (start → end) | runtime | finished |",
              "|---|---|---|---|---:|---|---:|---|"]
    for p in parts:
        start, end = p.get("load_average_at_start"), p.get("load_average_at_end")
        load = f"{start[0]:.2f} → {end[0]:.2f}" if start and end else "n/a"
        flag = " **(loaded)**" if p["name"] in TIMING_PARTS and _loaded(p) else ""
        lines.append(f"| {p['name']}{' (quick)' if p['quick'] else ''} | `{p['command']}` | {p['device']} ({p['device_name']}) | "
                     f"{p.get('precision') or 'fp32'} | {p['torch_num_threads']} | {load}{flag} | {p['seconds']:.0f} s | {p['finished']} |")
    loaded = [p["name"] for p in parts if p["name"] in TIMING_PARTS and _loaded(p)]
    quiet = [p["name"] for p in parts if p["name"] in TIMING_PARTS and not _loaded(p)]
    if quiet:
        lines += ["", f"{', '.join(quiet)} ran on a quiet machine: the 1-minute load average stayed at or below "
                  f"{LOADED_FRACTION:.0%} of the cores at the start and end (the benchmark itself accounts for about one "
                  "per busy torch thread)."]
    if loaded:
        lines += ["", f"**The machine was loaded** by other processes while {', '.join(loaded)} ran (1-minute load average "
                  f"above {LOADED_FRACTION:.0%} of the cores at the start or end, see the table): those timings are noisy "
                  "and ratios can be pessimistic. "
                  "Each ratio is the median of interleaved repeats, measured in one run, with its min–max; read the ranges. "
                  "Accuracy figures do not depend on the load."]
    gpu = out / GPU_MACHINE_FILE
    lines += ["", "**Which device each figure came from:** every figure below was measured on the device in its part's row "
              "above. " + (f"GPU figures for the inference benchmark exist from an earlier session on a lent machine "
                          f"(NVIDIA H200, 16 quiet CPU cores, torch 2.11.0+cu130): [`{rel}/{GPU_MACHINE_FILE}`]"
                          f"({rel}/{GPU_MACHINE_FILE}); the other parts have not been run on a GPU yet. "
                          if gpu.exists() else "No GPU figures yet. ")
              + "On CUDA the suite selects the GPU with `--device auto` (the default) or `--device cuda`, records its name, "
              "and uses bf16-mixed precision for the fine-tuning epochs (fp32 elsewhere)."]
    lines += ["", "## Goals", "", "| part | subject | goal | figure | met | margin |", "|---|---|---|---|---|---|"]
    for p in parts:
        for g in p["goals"]:
            subject = g["subject"] + (" (primary)" if g.get("primary") else "")
            lines.append(f"| {p['name']} | {subject} | {g['goal']} | {g['figure']} | {_met(g.get('met'))} | {g.get('margin', '')} |")
    for p in parts:
        lines += ["", f"## {TITLES[p['name']]}", "",
                  f"`{p['command']}`{' (quick mode: tiny sizes, figures not meaningful)' if p['quick'] else ''}; full report: "
                  f"[`{rel}/{p['name']}.md`]({rel}/{p['name']}.md).", "", p["section"].rstrip()]
        if p["name"] == "inference" and gpu.exists():
            lines += ["", f"GPU (earlier session, H200): [`{rel}/{GPU_MACHINE_FILE}`]({rel}/{GPU_MACHINE_FILE})."]
        lines += [""] + [f"![{plot}]({rel}/{plot})" for plot in p.get("plots", [])]
    if suite.get("notes"):
        lines += ["", "## Notes", ""] + [f"- {note}" for note in suite["notes"]]
    return "\n".join(lines) + "\n"


def command_of(argv: Sequence[str]) -> str:
    """``python -m benchmarks.run_all ARGS`` with each ``--note`` text shown as ``"..."`` (the notes are in RESULTS.md)."""
    out, i = ["python", "-m", "benchmarks.run_all"], 0
    while i < len(argv):
        if argv[i] == "--note":
            out += ["--note", '"..."']
            i += 2
            continue
        out.append('--note="..."' if argv[i].startswith("--note=") else argv[i])
        i += 1
    return " ".join(out)


def _relative(path: Path, start: Path) -> str:
    try:
        return str(Path(path).resolve().relative_to(Path(start).resolve())) or "."
    except ValueError:
        return str(Path(path).resolve())


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="every part at tiny sizes (a few minutes on 2 CPU cores)")
    parser.add_argument("--only", nargs="+", choices=PARTS, default=None, metavar="NAME",
                        help=f"run only these parts ({', '.join(PARTS)}); the others are kept from suite.json")
    parser.add_argument("--out", type=Path, default=C.DEFAULT_OUT, help="results folder (default benchmarks/results)")
    parser.add_argument("--results-md", type=Path, default=None,
                        help="where to write RESULTS.md (default benchmarks/RESULTS.md, or OUT/RESULTS.md with --out)")
    parser.add_argument("--device", default="auto", help="auto (CUDA when available), cpu or cuda")
    parser.add_argument("--threads", type=int, default=None, help="torch threads for the timing parts (default: torch's)")
    parser.add_argument("--collect", nargs="+", choices=PARTS, default=(), metavar="NAME",
                        help="take these parts' results from OUT/<name>.json (a part run alone) instead of running them")
    parser.add_argument("--fresh", action="store_true", help="forget the parts of an existing suite.json")
    parser.add_argument("--note", action="append", default=None,
                        help="a paragraph for the end of RESULTS.md (repeatable; replaces the notes kept in suite.json)")
    argv = sys.argv[1:] if argv is None else list(argv)
    args = parser.parse_args(argv)
    out = Path(args.out)
    md_path = args.results_md or (C.RESULTS_MD if out.resolve() == C.DEFAULT_OUT.resolve() else out / "RESULTS.md")
    out.mkdir(parents=True, exist_ok=True)
    suite_path = out / "suite.json"
    suite: dict[str, Any] = {"parts": {}}
    if suite_path.exists() and not args.fresh:
        previous = json.loads(suite_path.read_text())
        suite["parts"] = previous.get("parts", {})
        suite["notes"] = previous.get("notes", [])
    if args.note is not None:
        suite["notes"] = list(args.note)
    command = command_of(argv)
    names = [n for n in (args.only or PARTS) if n not in args.collect]
    for name in args.collect:
        report = json.loads((out / f"{name}.json").read_text())
        suite["parts"][name] = part_summary(name, report, report.get("seconds", 0.0))
        suite["parts"][name]["finished"] = datetime.datetime.fromtimestamp((out / f"{name}.json").stat().st_mtime).isoformat(
            timespec="seconds")
        suite["parts"][name]["collected"] = True
    started = time.perf_counter()
    failed = []
    C.resolve_device(args.device)  # fail early on --device cuda without CUDA
    # One torch thread in quick mode: on a loaded 2-core machine, OpenMP threads waiting for time slices make
    # tiny ops many times slower (the figures of quick runs are not meaningful anyway).
    threads = args.threads if args.threads is not None else (1 if args.quick else None)
    for name in names:
        say = C.progress("run_all")
        say(f"{name}: starting{' (quick)' if args.quick else ''}")
        part_start = time.perf_counter()
        try:
            report = run_part(name, args.quick, out, args.device, threads, command)
        except Exception:  # noqa: BLE001 - recorded, the other parts still run
            failed.append(name)
            say(f"{name}: FAILED\n{traceback.format_exc()}")
            suite["parts"].pop(name, None)
            suite.setdefault("failures", {})[name] = traceback.format_exc()
            continue
        suite["parts"][name] = part_summary(name, report, time.perf_counter() - part_start)
        say(f"{name}: done in {time.perf_counter() - part_start:.0f} s")
    suite.update(command=command, ran=names, collected=list(args.collect), quick=args.quick, seconds=time.perf_counter() - started,
                 finished=datetime.datetime.now().isoformat(timespec="seconds"), machine=C.machine_info(args.device))
    if not failed:
        suite.pop("failures", None)
    suite_path.write_text(json.dumps(suite, indent=1, default=C._json_default) + "\n")
    md_path.parent.mkdir(parents=True, exist_ok=True)
    md_path.write_text(render(suite, md_path, out))
    print(f"Wrote {suite_path} and {md_path} in {suite['seconds']:.0f} s" + (f"; FAILED: {failed}" if failed else "."),
          file=sys.stderr)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
