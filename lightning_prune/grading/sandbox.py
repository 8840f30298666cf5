"""Best-effort detection of a submission touching files outside its (temporary) folder.

This is **not** a security sandbox. A submission runs as the grader's user, with the grader's
permissions and network. What is done:

* It runs in a temporary copy of its folder (the kernel's working directory), with ``HOME``,
  ``TMPDIR``, ``IPYTHONDIR``, ``MPLCONFIGDIR`` and Jupyter's runtime directory pointed into the
  temporary tree, so ordinary relative paths, ``~`` and temporary files land there.
* An audit hook (:pep:`578`), installed in the kernel before the first cell, records every write
  done by Python code outside the allowed folders: ``open`` for writing, ``os.remove``,
  ``os.rename``, ``os.mkdir``, ``shutil.rmtree``, ``shutil.copyfile``, ... It also notes started
  processes (``subprocess.Popen``, ``os.system``, ``os.exec*``, ``os.fork``). It records, it does not
  block. Code that bypasses Python's audit events (C extensions, ``ctypes``, a child process) is
  not seen by it.
* Before and after the run, the modification times and sizes of the files under "watched" folders
  (by default the submission folder's parent, recursively) are compared, which also sees writes by
  child processes, but only in those folders, and also sees changes made concurrently by anything
  else on the machine.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterable, Sequence
from pathlib import Path

SKIPPED_DIRS = {".git", ".venv", "venv", "__pycache__", ".ipynb_checkpoints", "node_modules", ".pytest_cache",
                ".hypothesis", ".mypy_cache"}
MAX_ENTRIES = 200_000

AUDIT_HOOK = r'''
def __lightning_prune_grading_audit(allowed, log_path):
    import json as _json, os as _os, sys as _sys
    allowed = [_os.path.realpath(path) for path in allowed]
    log = open(log_path, "a", buffering=1, encoding="utf-8")  # opened before the hook is installed
    busy = [False]
    write_flags = _os.O_WRONLY | _os.O_RDWR | _os.O_CREAT | _os.O_TRUNC | _os.O_APPEND
    one_path = {"os.remove", "os.rmdir", "os.mkdir", "os.truncate", "os.chmod", "os.chown", "os.utime",
                "shutil.rmtree", "os.chflags", "os.lchown", "os.removexattr", "os.setxattr"}
    two_paths = {"os.rename": (0, 1), "os.link": (1,), "os.symlink": (1,), "shutil.copyfile": (1,),
                 "shutil.copytree": (1,), "shutil.move": (0, 1), "shutil.copymode": (1,), "shutil.copystat": (1,)}
    processes = {"subprocess.Popen", "os.system", "os.exec", "os.posix_spawn", "os.spawn", "os.fork", "os.forkpty",
                 "pty.spawn"}

    def inside(path):
        real = _os.path.realpath(path)
        return any(real == root or real.startswith(root + _os.sep) for root in allowed), real

    def hook(event, args):
        if busy[0]:
            return
        if event != "open" and event not in one_path and event not in two_paths and event not in processes:
            return
        busy[0] = True
        try:
            paths = []
            if event == "open":
                path, mode, flags = (tuple(args) + (None, None, None))[:3]
                if isinstance(mode, str):
                    writing = any(c in mode for c in "wax+")
                else:
                    writing = isinstance(flags, int) and bool(flags & write_flags)
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
                    path = _os.fsdecode(_os.fspath(path))
                    ok, real = inside(path)
                    if not ok:
                        log.write(_json.dumps({"kind": "write", "event": event, "path": real}) + "\n")
        except Exception:
            pass
        finally:
            busy[0] = False

    _sys.addaudithook(hook)


__lightning_prune_grading_audit({allowed!r}, {log_path!r})
del __lightning_prune_grading_audit
'''


def audit_hook_source(allowed: Sequence[str | Path], log_path: str | Path) -> str:
    """Python source that installs the recording audit hook (run as the kernel's first cell)."""
    return AUDIT_HOOK.replace("{allowed!r}", repr([str(p) for p in allowed])).replace("{log_path!r}", repr(str(log_path)))


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
        if entry.get("kind") == "write":
            text = f"{entry.get('path')} ({entry.get('event')})"
            if text not in writes:
                writes.append(text)
        elif entry.get("kind") == "process":
            text = f"{entry.get('event')} {entry.get('detail', '')}"
            if text not in processes:
                processes.append(text)
    return writes, processes


Snapshot = dict[str, tuple[int, int, bool]]


def snapshot(roots: Iterable[str | Path], exclude: Iterable[str | Path] = ()) -> Snapshot:
    """``path -> (mtime_ns, size, is_dir)`` of everything under ``roots`` (symlinks not followed).

    Folders in :data:`SKIPPED_DIRS` and under ``exclude`` are skipped; at most :data:`MAX_ENTRIES`
    entries are recorded.
    """
    excluded = {os.path.realpath(path) for path in exclude}
    result: Snapshot = {}
    stack = [os.path.realpath(root) for root in roots if os.path.exists(root)]
    for root in stack:
        try:
            info = os.stat(root, follow_symlinks=False)
            result[root] = (info.st_mtime_ns, info.st_size, True)
        except OSError:
            pass
    while stack and len(result) < MAX_ENTRIES:
        folder = stack.pop()
        try:
            entries = list(os.scandir(folder))
        except OSError:
            continue
        for entry in entries:
            if entry.path in excluded or entry.name in SKIPPED_DIRS:
                continue
            try:
                info = entry.stat(follow_symlinks=False)
            except OSError:
                continue
            is_dir = entry.is_dir(follow_symlinks=False)
            result[entry.path] = (info.st_mtime_ns, info.st_size, is_dir)
            if is_dir:
                stack.append(entry.path)
    return result


def changes(before: Snapshot, after: Snapshot) -> list[str]:
    """Human-readable differences between two snapshots (created, modified, deleted files)."""
    result = []
    for path in sorted(set(before) | set(after)):
        if path not in before:
            result.append(f"created {path}")
        elif path not in after:
            result.append(f"deleted {path}")
        elif before[path] != after[path] and not (before[path][2] and after[path][2] and _only_dir_mtime(path, before, after)):
            result.append(f"modified {path}")
    return result


def _only_dir_mtime(path: str, before: Snapshot, after: Snapshot) -> bool:
    """A folder whose mtime changed only because an entry inside was created/deleted (reported itself)."""
    prefix = path + os.sep
    return any(key.startswith(prefix) and (key not in before or key not in after)
               for key in set(before) ^ set(after))
