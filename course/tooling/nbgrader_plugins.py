"""nbgrader preprocessors for what nbgrader 0.9 lacks; ``course/teacher/nbgrader_config.py`` installs them.

* :class:`LimitedExecute` replaces nbgrader's ``Execute`` in ``autograde``. It adds a whole-notebook time
  limit (nbgrader has only a per-cell one) and a best-effort record of the files that the notebook's
  Python code writes outside its folder, and writes both to ``grading_report.json`` in the autograded
  folder (``python -m course.tooling report`` lists them).
* :class:`StripCustomMetadata` (``generate_assignment``): students receive only the cell metadata
  Jupyter and nbgrader need (nbgrader keeps any other key, e.g. a grading rubric, in the release).
* :class:`HideHiddenTests` (``generate_feedback``): nbgrader's feedback shows the autograded notebook,
  hidden tests included; this removes them again and reduces a test cell's traceback to its
  error message.

The write record is not a sandbox: it is a Python audit hook (:pep:`578`) installed in the kernel before
the first cell. It records, it does not block; writes by C extensions, ``ctypes`` or child processes are
not seen, and a determined student can remove the record. Run untrusted submissions in a container.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
import time
from pathlib import Path

from nbformat.notebooknode import NotebookNode
from traitlets import Integer, List, Unicode

from nbgrader import utils
from nbgrader.preprocessors import ClearHiddenTests, Execute, NbGraderPreprocessor

REPORT = "grading_report.json"

AUDIT_HOOK = r'''
def __course_tooling_audit(log_path):
    import json as _json, os as _os, sys as _sys, tempfile as _tempfile
    home = _os.path.expanduser("~")
    allowed = [_os.getcwd(), _tempfile.gettempdir(), "/dev", "/proc/self", _os.path.join(home, ".cache"),
               _os.path.join(home, ".config", "matplotlib"), _os.path.join(home, ".ipython"),
               _os.path.join(home, ".local", "share", "jupyter")]
    allowed += [_os.environ[k] for k in ("MPLCONFIGDIR", "IPYTHONDIR", "JUPYTER_RUNTIME_DIR") if _os.environ.get(k)]
    allowed = [_os.path.realpath(path) for path in allowed]
    log = open(log_path, "a", buffering=1, encoding="utf-8")  # opened before the hook is installed
    busy = [False]
    write_flags = _os.O_WRONLY | _os.O_RDWR | _os.O_CREAT | _os.O_TRUNC | _os.O_APPEND
    one_path = {"os.remove", "os.rmdir", "os.mkdir", "os.truncate", "os.chmod", "os.chown", "os.utime",
                "shutil.rmtree", "os.chflags", "os.lchown", "os.removexattr", "os.setxattr"}
    two_paths = {"os.rename": (0, 1), "os.link": (1,), "os.symlink": (1,), "shutil.copyfile": (1,),
                 "shutil.copytree": (1,), "shutil.move": (0, 1), "shutil.copymode": (1,), "shutil.copystat": (1,)}
    processes = {"subprocess.Popen", "os.system", "os.exec", "os.posix_spawn", "os.spawn", "os.fork", "os.forkpty"}

    def hook(event, args):
        if busy[0] or not (event == "open" or event in one_path or event in two_paths or event in processes):
            return
        busy[0] = True
        try:
            paths = []
            if event == "open":
                path, mode, flags = (tuple(args) + (None, None, None))[:3]
                writing = any(c in mode for c in "wax+") if isinstance(mode, str) else \
                    isinstance(flags, int) and bool(flags & write_flags)
                if writing:
                    paths.append(path)
            elif event in one_path:
                paths.append(args[0] if args else None)
            elif event in two_paths:
                paths.extend(args[i] for i in two_paths[event] if i < len(args))
            else:
                log.write(_json.dumps({"kind": "process", "event": event, "detail": repr(args)[:300]}) + "\n")
                return
            for path in paths:
                if isinstance(path, (str, bytes, _os.PathLike)):
                    real = _os.path.realpath(_os.fsdecode(_os.fspath(path)))
                    if not any(real == root or real.startswith(root + _os.sep) for root in allowed):
                        log.write(_json.dumps({"kind": "write", "event": event, "path": real}) + "\n")
        except Exception:
            pass
        finally:
            busy[0] = False

    _sys.addaudithook(hook)


__course_tooling_audit({log_path!r})
del __course_tooling_audit
'''


def read_audit_log(path: str | Path) -> tuple[list[str], list[str]]:
    """``(paths written outside, processes started)`` from an audit log, deduplicated, in order."""
    writes: list[str] = []
    processes: list[str] = []
    path = Path(path)
    if not path.is_file():
        return writes, processes
    for line in path.read_text(encoding="utf-8", errors="replace").splitlines():
        try:
            entry = json.loads(line)
        except json.JSONDecodeError:
            continue
        text = (f"{entry.get('path')} ({entry.get('event')})" if entry.get("kind") == "write"
                else f"{entry.get('event')} {entry.get('detail', '')}")
        target = writes if entry.get("kind") == "write" else processes
        if text not in target:
            target.append(text)
    return writes, processes


class LimitedExecute(Execute):
    """nbgrader's ``Execute`` with a whole-notebook time limit and a record of writes outside the folder.

    Once ``total_timeout`` seconds have passed, the running cell is interrupted and no further cell runs:
    every remaining code cell gets an error output (so its test points are 0; nbgrader would otherwise
    give full points to a test cell without output). The per-cell limit is nbgrader's ``timeout``.
    The kernel gets a private ``TMPDIR`` (removed afterwards); writes outside it, the notebook's folder and
    the user's caches (``~/.cache``, ``~/.ipython``, matplotlib's and Jupyter's folders) are recorded.
    """

    total_timeout = Integer(600, allow_none=True,
                            help="Seconds the whole notebook may run (None or 0: no limit).").tag(config=True)
    report_name = Unicode(REPORT, help="The report's file name, in the autograded folder.").tag(config=True)

    def preprocess(self, nb, resources=None, km=None):
        self._started = None
        self._stopped_at = None
        self._cell_timeouts: list[int] = []
        descriptor, log_path = tempfile.mkstemp(prefix="course-tooling-audit-", suffix=".jsonl")
        os.close(descriptor)
        self._audit_log = log_path
        self._tmpdir = tempfile.mkdtemp(prefix="course-tooling-tmp-")  # the kernel's own TMPDIR
        self._prelude_done = False
        path = ((resources or {}).get("metadata") or {}).get("path") or os.getcwd()
        try:
            nb, resources = super().preprocess(nb, resources, km)
        finally:
            writes, processes = read_audit_log(log_path)
            os.unlink(log_path)
            shutil.rmtree(self._tmpdir, ignore_errors=True)
            seconds = time.monotonic() - self._started if self._started is not None else 0.0
            self._write_report(Path(path), resources or {}, seconds, writes, processes)
        return nb, resources

    def start_new_kernel(self, **kwargs):
        """Start the kernel with a private ``TMPDIR``, so that writes to the shared /tmp count as outside."""
        private = {"TMPDIR": self._tmpdir, "TORCHINDUCTOR_CACHE_DIR": os.path.join(self._tmpdir, "torchinductor"),
                   "TRITON_CACHE_DIR": os.path.join(self._tmpdir, "triton")}
        kwargs.setdefault("env", {**os.environ, **private})
        return super().start_new_kernel(**kwargs)

    def _write_report(self, folder: Path, resources: dict, seconds: float, writes: list[str], processes: list[str]) -> None:
        info = resources.get("nbgrader", {}) if isinstance(resources, dict) else {}
        notebook = info.get("notebook") or "notebook"
        report = {
            "student": info.get("student"), "assignment": info.get("assignment"), "notebook": notebook,
            "seconds": round(seconds, 1), "total_timeout": self.total_timeout, "cell_timeout": self.timeout,
            "time_limit_hit": self._stopped_at is not None, "stopped_at_cell": self._stopped_at,
            "cell_timeouts": self._cell_timeouts, "writes_outside": writes, "processes": processes,
        }
        target = folder / self.report_name
        try:
            reports = json.loads(target.read_text(encoding="utf-8")) if target.is_file() else {}
        except (OSError, json.JSONDecodeError):
            reports = {}
        reports[notebook] = report
        target.write_text(json.dumps(reports, indent=1) + "\n", encoding="utf-8")
        if report["time_limit_hit"]:
            self.log.warning("%s: stopped at cell %s after the whole-notebook limit of %s s",
                             notebook, self._stopped_at, self.total_timeout)
        for write in writes:
            self.log.warning("%s wrote outside its folder: %s", notebook, write)

    def preprocess_cell(self, cell, resources, index):
        if not self._prelude_done:
            self._prelude_done = True
            self._started = time.monotonic()
            prelude = NotebookNode(cell_type="code", source=AUDIT_HOOK.replace("{log_path!r}", repr(self._audit_log)),
                                   metadata={}, outputs=[], execution_count=None)
            self.execute_cell(prelude, index, store_history=False)
            self.nb.cells[index] = cell  # execute_cell put the prelude in the notebook, in this cell's place
        if cell.cell_type != "code":
            return cell, self.resources
        limit, cell_limit = self.total_timeout, self.timeout
        remaining = limit - (time.monotonic() - self._started) if limit else None
        if remaining is not None and (remaining <= 0 or self._stopped_at is not None):
            if self._stopped_at is None:
                self._stopped_at = index
            cell.outputs = [NotebookNode(
                output_type="error", ename="NotebookTimeLimit",
                evalue=f"not run: the notebook exceeded its limit of {limit} s in all",
                traceback=[f"NotebookTimeLimit: not run: the notebook exceeded its limit of {limit} s in all"])]
            return cell, self.resources
        if remaining is not None and (not cell_limit or cell_limit <= 0 or remaining < cell_limit):
            self.timeout = max(1, int(remaining + 0.999))
        start = time.monotonic()
        try:
            cell, resources = super().preprocess_cell(cell, resources, index)
        finally:
            self.timeout = cell_limit
        took = time.monotonic() - start
        if any(o.get("output_type") == "error" and o.get("ename") in ("CellTimeoutError",) for o in cell.get("outputs", [])):
            if remaining is not None and took >= remaining - 1:
                self._stopped_at = index
            else:
                self._cell_timeouts.append(index)
        return cell, resources


class StripCustomMetadata(NbGraderPreprocessor):
    """Keep only the cell metadata keys that Jupyter and nbgrader use (for the release)."""

    keep = List(["nbgrader", "tags", "editable", "deletable", "collapsed", "scrolled", "jupyter", "slideshow"],
                help="Cell metadata keys kept in the release.").tag(config=True)

    def preprocess_cell(self, cell, resources, index):
        for key in list(cell.metadata):
            if key not in self.keep:
                del cell.metadata[key]
        return cell, resources


class HideHiddenTests(ClearHiddenTests):
    """For the feedback: remove hidden tests from test cells and reduce their tracebacks to the message."""

    def preprocess_cell(self, cell, resources, index):
        removed = self._remove_hidden_test_region(cell)
        if utils.is_grade(cell) and cell.cell_type == "code":
            for output in cell.get("outputs", []):
                if output.get("output_type") == "error":
                    output["traceback"] = [f"{output.get('ename')}: {output.get('evalue')}"]
        elif removed and self.enforce_metadata:
            raise RuntimeError("a hidden test region outside a test cell")
        return cell, resources
