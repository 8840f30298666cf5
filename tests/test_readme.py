"""The README's API examples are real code: each configuration it shows builds a ``Pruning``."""

from __future__ import annotations

import re
from pathlib import Path

from lightning_prune import Pruning

README = Path(__file__).resolve().parents[1] / "README.md"


def _python_blocks(section: str) -> list[str]:
    text = README.read_text(encoding="utf-8")
    body = text.split(f"## {section}", 1)[1].split("\n## ", 1)[0]
    return re.findall(r"```python\n(.*?)```", body, flags=re.S)


def test_api_section_examples_build_pruning_callbacks():
    (block,) = _python_blocks("The API: one object per concern")
    built = []
    namespace = {"Pruning": lambda *args, **kwargs: built.append(Pruning(*args, **kwargs))}  # records each one
    code = re.sub(r"\bPruning,\s*", "", block, count=1)  # the block's own import would replace the recorder
    exec(compile(code, str(README), "exec"), namespace)
    assert len(built) == block.count("Pruning(") >= 6
    assert {type(p.schedule).__name__ for p in built} >= {"OneShot", "Geometric", "Cubic", "Custom"}
