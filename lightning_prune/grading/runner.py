"""Execute a notebook in a separate process with per-cell and total time limits.

The parent (:func:`run_notebook`) starts ``python .../lightning_prune/grading/runner.py SPEC`` in the
working folder, with ``HOME``, ``TMPDIR`` and the Jupyter/IPython/matplotlib folders pointed into a
scratch folder, and kills it (and its kernel) when the total time limit passes. The child runs every
cell with nbclient (errors allowed, so one failing cell does not stop the others), interrupts a cell
that exceeds the per-cell limit, and saves the notebook and a status file after every cell, so a run
that is killed, or whose kernel dies, still reports every cell that did run.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import nbformat
from nbformat import NotebookNode

KERNEL_NAME = "lightning-prune-grading"
INJECTED = "lightning_prune_injected"
TIMING = "lightning_prune_grading"


@dataclass
class Execution:
    """What happened when a notebook ran.

    Attributes:
        notebook: The executed notebook (cells that did not run have no outputs), or ``None`` when
            nothing came back.
        seconds: Wall-clock time of the whole run.
        total_timeout: The run was stopped because it exceeded the total time limit.
        kernel_died: The kernel died (e.g. ``os._exit``, a segfault, out of memory).
        stopped_at: Index of the cell that was running when the run stopped (total timeout or kernel
            death), else ``None``.
        cell_timeouts: Indices of cells interrupted after the per-cell time limit.
        executed: Indices of the cells that finished.
        runner_error: An error of the execution machinery itself (the kernel did not start, ...).
        writes_outside: Paths written outside the allowed folders (audit hook).
        processes: Processes the notebook started (audit hook).
        log_tail: The end of the runner's stderr.
    """

    notebook: NotebookNode | None
    seconds: float
    total_timeout: bool = False
    kernel_died: bool = False
    stopped_at: int | None = None
    cell_timeouts: list[int] = field(default_factory=list)
    executed: list[int] = field(default_factory=list)
    runner_error: str | None = None
    writes_outside: list[str] = field(default_factory=list)
    processes: list[str] = field(default_factory=list)
    log_tail: str = ""


def _absolute_pythonpath(value: str | None) -> str | None:
    if not value:
        return value
    return os.pathsep.join(os.path.abspath(part) if part else os.getcwd() for part in value.split(os.pathsep))


def _kill_group(pid: int | None) -> None:
    if not pid:
        return
    try:
        os.killpg(pid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError, OSError):
        try:
            os.kill(pid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError, OSError):
            pass


def run_notebook(
    nb: NotebookNode,
    workdir: str | Path,
    scratch: str | Path,
    cell_timeout: float | None = 120,
    total_timeout: float | None = 600,
    env: dict[str, str] | None = None,
    audit: bool = True,
    allowed: tuple[str | Path, ...] = (),
) -> Execution:
    """Run ``nb`` with its kernel's working directory ``workdir``.

    Args:
        nb: The notebook (not modified).
        workdir: The kernel's working directory (a temporary copy of the assignment folder).
        scratch: An empty temporary folder for the runner's files, ``HOME`` and ``TMPDIR``; it must
            not contain ``workdir``'s parent, or writes next to ``workdir`` would count as allowed.
        cell_timeout: Seconds one cell may run before it is interrupted (``None``: no limit).
        total_timeout: Seconds the whole run may take before it is killed (``None``: no limit).
        env: Extra environment variables for the kernel.
        audit: Install the audit hook that records writes outside ``workdir`` and the scratch folders.
        allowed: More folders where writes are allowed.
    """
    from lightning_prune.grading.sandbox import audit_hook_source, read_audit_log

    workdir, scratch = Path(workdir).resolve(), Path(scratch).resolve()
    folders = {name: scratch / name for name in ("home", "tmp", "ipython", "mpl", "runtime", "jupyter", "data")}
    for folder in folders.values():
        folder.mkdir(parents=True, exist_ok=True)
    _seed_font_cache(folders["mpl"])
    spec_dir = folders["jupyter"] / "kernels" / KERNEL_NAME
    spec_dir.mkdir(parents=True, exist_ok=True)
    (spec_dir / "kernel.json").write_text(json.dumps({
        "argv": [sys.executable, "-m", "ipykernel_launcher", "-f", "{connection_file}"],
        "display_name": "Python 3 (grading)", "language": "python",
    }))
    paths = {name: scratch / f"runner.{name}" for name in ("in.ipynb", "out.ipynb", "status.json", "spec.json", "stdout", "stderr")}
    audit_log = scratch / "runner.audit.log"
    nbformat.write(nb, str(paths["in.ipynb"]))
    allowed_roots = [workdir, *(folders[name] for name in ("home", "tmp", "ipython", "mpl", "runtime", "data")),
                     Path("/dev"), *map(Path, allowed)]
    spec = {
        "notebook": str(paths["in.ipynb"]), "output": str(paths["out.ipynb"]), "status": str(paths["status.json"]),
        "cell_timeout": cell_timeout, "kernel_name": KERNEL_NAME, "cwd": str(workdir),
        "prelude": audit_hook_source([str(p) for p in allowed_roots], audit_log) if audit else None,
    }
    paths["spec.json"].write_text(json.dumps(spec))

    child_env = dict(os.environ)
    child_env.update({
        "HOME": str(folders["home"]), "TMPDIR": str(folders["tmp"]), "IPYTHONDIR": str(folders["ipython"]),
        "MPLCONFIGDIR": str(folders["mpl"]), "JUPYTER_RUNTIME_DIR": str(folders["runtime"]),
        "JUPYTER_PATH": str(folders["jupyter"]), "JUPYTER_DATA_DIR": str(folders["data"]),
        "JUPYTER_CONFIG_DIR": str(folders["home"] / ".jupyter"), "JUPYTER_PLATFORM_DIRS": "1",
        "MPLBACKEND": "Agg", "PYTHONDONTWRITEBYTECODE": "1", "PYDEVD_DISABLE_FILE_VALIDATION": "1",
        "PYTHONWARNINGS": "ignore", "TORCHINDUCTOR_CACHE_DIR": str(folders["tmp"] / "torchinductor"),
        "TRITON_CACHE_DIR": str(folders["tmp"] / "triton"),
    })
    pythonpath = _absolute_pythonpath(child_env.get("PYTHONPATH"))
    if pythonpath:
        child_env["PYTHONPATH"] = pythonpath
    child_env.update(env or {})

    start = time.monotonic()
    with open(paths["stdout"], "wb") as out, open(paths["stderr"], "wb") as err:
        # Run this file as a script: `-m lightning_prune.grading.runner` would import the package, and torch with it.
        process = subprocess.Popen([sys.executable, str(Path(__file__).resolve()), str(paths["spec.json"])],
                                   cwd=workdir, env=child_env, stdout=out, stderr=err, start_new_session=True)
        total_timeout_hit = False
        try:
            process.wait(timeout=total_timeout)
        except subprocess.TimeoutExpired:
            total_timeout_hit = True
        status = _read_json(paths["status.json"])
        if total_timeout_hit:
            # The runner is still alive, so its kernel's pid cannot have been reused: kill the kernel's process
            # group (the kernel has its own session) first, then the runner's.
            _kill_group(status.get("kernel_pid"))
        if process.poll() is None:
            _kill_group(process.pid)
            process.wait()
    seconds = time.monotonic() - start

    notebook = None
    if paths["out.ipynb"].is_file():
        try:
            notebook = nbformat.read(str(paths["out.ipynb"]), as_version=4)
        except Exception:  # noqa: BLE001 - a partial write when killed: nothing came back
            notebook = None
    writes, processes = read_audit_log(audit_log)
    stderr = paths["stderr"].read_text(encoding="utf-8", errors="replace")
    running = status.get("current")
    runner_error = status.get("error")
    if not status and not total_timeout_hit:
        runner_error = f"the runner exited with status {process.returncode} before starting the kernel"
    kernel_died = runner_error == "kernel died"
    if kernel_died:
        runner_error = None
    return Execution(
        notebook=notebook,
        seconds=seconds,
        total_timeout=total_timeout_hit,
        kernel_died=kernel_died,
        stopped_at=running if (total_timeout_hit or kernel_died) else None,
        cell_timeouts=list(status.get("timed_out", [])),
        executed=list(status.get("executed", [])),
        runner_error=runner_error,
        writes_outside=writes,
        processes=processes,
        log_tail=stderr[-3000:],
    )


def _seed_font_cache(target: Path) -> None:
    """Copy matplotlib's font list (data, not configuration) into the fresh MPLCONFIGDIR.

    Without it every run rebuilds the list, which takes seconds and starts ``fc-list`` processes.
    """
    try:
        import matplotlib

        for font_list in Path(matplotlib.get_cachedir()).glob("fontlist-*.json"):
            shutil.copy2(font_list, target / font_list.name)
    except Exception:  # noqa: BLE001, S110 - no matplotlib, or no cache yet: the kernel builds it
        pass


def _read_json(path: Path) -> dict:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError):
        return {}


def _write_atomic(path: Path, text: str) -> None:
    temporary = path.with_name(path.name + ".part")
    temporary.write_text(text, encoding="utf-8")
    os.replace(temporary, path)


def main(argv: list[str] | None = None) -> int:
    """Child process: run the notebook of a spec file (see :func:`run_notebook`)."""
    from nbclient import NotebookClient
    from nbclient.exceptions import DeadKernelError

    argv = sys.argv[1:] if argv is None else argv
    spec = json.loads(Path(argv[0]).read_text())
    nb = nbformat.read(spec["notebook"], as_version=4)
    output, status_path = Path(spec["output"]), Path(spec["status"])
    offset = 0
    if spec.get("prelude"):
        nb.cells.insert(0, nbformat.v4.new_code_cell(spec["prelude"], metadata={INJECTED: True}))
        offset = 1
    cell_timeout = spec.get("cell_timeout") or None
    status: dict = {"current": None, "executed": [], "timed_out": [], "kernel_pid": None, "error": None}
    started = {"time": time.monotonic()}

    def save(with_notebook: bool = False) -> None:
        _write_atomic(status_path, json.dumps(status))
        if with_notebook:
            result = nbformat.from_dict(nb)
            result.cells = [cell for cell in result.cells if not cell.metadata.get(INJECTED)]
            _write_atomic(output, nbformat.writes(result))

    client = NotebookClient(
        nb, timeout=cell_timeout, kernel_name=spec["kernel_name"], allow_errors=True, interrupt_on_timeout=True,
        record_timing=False, resources={"metadata": {"path": spec["cwd"]}}, startup_timeout=120,
        shutdown_kernel="immediate",
    )

    def on_cell_start(cell, cell_index, **_):
        if status["kernel_pid"] is None:
            provisioner = getattr(client.km, "provisioner", None)
            status["kernel_pid"] = getattr(provisioner, "pid", None)
        status["current"] = cell_index - offset
        started["time"] = time.monotonic()
        save()

    def on_cell_executed(cell, cell_index, execute_reply, **_):
        index = cell_index - offset
        seconds = time.monotonic() - started["time"]
        timed_out = bool(cell_timeout) and seconds >= 0.99 * cell_timeout and \
            (execute_reply or {}).get("content", {}).get("status") == "error"
        cell.metadata[TIMING] = {"seconds": round(seconds, 3), "timed_out": timed_out}
        if index >= 0:
            status["executed"].append(index)
            if timed_out:
                status["timed_out"].append(index)
        save(with_notebook=index >= 0)

    client.on_cell_start = on_cell_start
    client.on_cell_executed = on_cell_executed
    save(with_notebook=True)
    try:
        client.execute(cwd=spec["cwd"])
    except DeadKernelError:
        status["error"] = "kernel died"
    except Exception as error:  # noqa: BLE001 - the machinery failed (kernel start, protocol): report it
        status["error"] = f"{type(error).__name__}: {error}"
    finally:
        save(with_notebook=True)
    return 0


if __name__ == "__main__":
    if sys.path and Path(sys.path[0]).resolve() == Path(__file__).resolve().parent:
        sys.path.pop(0)  # run as a script: do not let this folder's modules shadow top-level ones
    raise SystemExit(main())
