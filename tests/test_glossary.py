"""The course glossary (course/README.md) says where each term is taught: check that it is there.

Each row of the glossary table gives a term in English, in Simplified and in Traditional Chinese, and the
notebooks that use it ("where"). Every listed notebook must contain the term, in English or in Chinese,
in the text of its cells (markdown or code; outputs are not counted).

A cell can hold several forms of a term: alternatives separated by " / " and a synonym in parentheses,
e.g. "weight pruning (unstructured pruning)" or "逐层 / 全局排序". A notebook contains the term when it
contains any of its forms; English forms match case-insensitively.
"""

import re
from pathlib import Path

import nbformat
import pytest

COURSE = Path(__file__).parents[1] / "course"
README = COURSE / "README.md"
NOTEBOOKS = {int(path.name[:2]): path for path in sorted(COURSE.glob("[0-9][0-9]_*.ipynb"))}


def glossary_rows(readme_text: str) -> list[dict[str, object]]:
    """The glossary table's rows as ``{"english": [...], "chinese": [...], "where": [...], "row": str}``."""
    section = readme_text.split("## Glossary", 1)[1]
    lines = [line.strip() for line in section.splitlines()]
    start = next(i for i, line in enumerate(lines) if line.startswith("|"))
    table = []
    for line in lines[start:]:
        if not line.startswith("|"):
            break
        table.append([cell.strip() for cell in line.strip("|").split("|")])
    header, rule, *body = table
    assert header[0].lower() == "english" and header[-1].lower() == "where", header
    assert all(set(cell) <= set("-: ") for cell in rule), rule
    rows = []
    for cells in body:
        assert len(cells) == len(header), f"glossary row has {len(cells)} cells, expected {len(header)}: {cells}"
        rows.append({
            "row": " | ".join(cells),
            "english": term_forms(cells[0]),
            "chinese": [form for cell in cells[1:-1] for form in term_forms(cell)],
            "where": notebook_numbers(cells[-1]),
        })
    return rows


def term_forms(cell: str) -> list[str]:
    """The forms a glossary cell gives: each " / " alternative, with and without its parenthesised synonym."""
    forms = []
    for part in cell.split(" / "):
        synonyms = re.findall(r"\(([^)]*)\)", part)
        main = re.sub(r"\([^)]*\)", "", part).strip()
        forms += [form.strip() for form in [main, *synonyms] if form.strip()]
    return forms


def notebook_numbers(cell: str) -> list[int]:
    """Notebook numbers of a "where" cell: "all", "3", "0, 7", a range "1–8", or "all" ("all notebooks")."""
    if cell.strip().lower() in ("all", "all notebooks"):
        return sorted(NOTEBOOKS)
    numbers = []
    for item in cell.split(","):
        item = item.strip()
        bounds = re.fullmatch(r"(\d+)\s*[–-]\s*(\d+)", item)
        if bounds:
            numbers += range(int(bounds[1]), int(bounds[2]) + 1)
        elif item.isdigit():
            numbers.append(int(item))
        else:
            raise ValueError(f"'where' must list notebook numbers, ranges or 'all', got {cell!r}")
    return numbers


def notebook_text(path: Path) -> str:
    notebook = nbformat.read(path, as_version=4)
    return "\n".join(cell.source for cell in notebook.cells)


def missing_terms(readme_text: str) -> list[str]:
    """One line per (term, notebook) pair where the listed notebook does not contain the term."""
    texts = {number: notebook_text(path) for number, path in NOTEBOOKS.items()}
    problems = []
    for row in glossary_rows(readme_text):
        if not row["where"]:
            problems.append(f"{row['row']}: lists no notebook")
        for number in row["where"]:
            if number not in texts:
                problems.append(f"{row['row']}: notebook {number} does not exist")
                continue
            text = texts[number]
            found = any(form.lower() in text.lower() for form in row["english"]) or any(
                form in text for form in row["chinese"])
            if not found:
                problems.append(f"{row['row']}: not in notebook {number} ({NOTEBOOKS[number].name})")
    return problems


def test_there_are_notebooks_and_glossary_rows():
    assert len(NOTEBOOKS) >= 9
    assert len(glossary_rows(README.read_text(encoding="utf-8"))) >= 30


def test_every_glossary_term_appears_in_the_notebooks_it_lists():
    problems = missing_terms(README.read_text(encoding="utf-8"))
    assert not problems, "\n".join(problems)


def test_every_term_has_simplified_and_traditional_chinese():
    readme_text = README.read_text(encoding="utf-8")
    section = readme_text.split("## Glossary", 1)[1]
    header = next(line for line in section.splitlines() if line.startswith("|"))
    columns = [cell.strip() for cell in header.strip().strip("|").split("|")]
    assert columns == ["English", "简体中文", "繁體中文", "where"], columns
    for row in glossary_rows(readme_text):
        assert len(row["chinese"]) >= 2, row["row"]


@pytest.mark.parametrize(("cell", "forms"), [
    ("weight pruning (unstructured pruning)", ["weight pruning", "unstructured pruning"]),
    ("逐层 / 全局排序", ["逐层", "全局排序"]),
    ("滤波器 (卷积核) / 通道", ["滤波器", "卷积核", "通道"]),
])
def test_term_forms(cell, forms):
    assert term_forms(cell) == forms


def test_a_term_missing_from_a_listed_notebook_is_reported():
    readme = ("## Glossary\n\n| English | 简体中文 | 繁體中文 | where |\n|---|---|---|---|\n"
              "| supermask | 超级掩码 | 超級掩碼 | 5 |\n| supermask | 超级掩码 | 超級掩碼 | 0 |\n"
              "| checkpoint | 检查点 | 檢查點 | 12 |\n| model compression | 模型压缩 | 模型壓縮 | the chapter |\n")
    with pytest.raises(ValueError, match="notebook numbers"):
        missing_terms(readme)
    problems = missing_terms(readme.rsplit("| model compression", 1)[0])
    assert len(problems) == 2
    assert "not in notebook 0" in problems[0] and "notebook 12 does not exist" in problems[1]
