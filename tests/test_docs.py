"""Documentation citations resolve inside the repository.

Docstrings, comments, notebooks, configs and READMEs cite documents as ``docs/method.md §2.3``.
Such a citation is only useful if the file exists in this repository (not on some machine the
code was written on) and the section is a heading of that file. These tests scan every
.py/.md/.yaml/.ipynb file outside generated or data folders and fail on any citation that does
not resolve; the first tests check the scanner itself on a small tree with known answers.
"""
from __future__ import annotations

import io
import json
import os
import re
import tokenize
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SUFFIXES = {".py", ".md", ".yaml", ".yml", ".ipynb"}
# Top-level folders that hold data, caches or regenerated outputs, not authored text.
SKIP_TOP = {".git", ".venv", ".cache", "runs", "data", "reports", "artifacts", "build"}
SKIP_ANY = {"__pycache__", ".ipynb_checkpoints", ".pytest_cache", "node_modules"}

# A markdown path: no scheme, host or glob in front of it (so URLs and "*.md" never match),
# optionally followed by a section sign and a dotted number.
CITATION = re.compile(r"(?<![\w./:*-])((?:[\w.-]+/)*[\w.-]+\.md)\b(?:\s*§\s*(\d+(?:\.\d+)*))?")
HEADING = re.compile(r"^#{1,6}\s+(\d+(?:\.\d+)*)\.?\s", re.MULTILINE)


def authored_files(root: Path) -> list[Path]:
    """Every scanned file under ``root``, skipping data, caches and generated folders (pruned, not
    walked: .venv alone holds tens of thousands of files). This test file is left out: its
    fixtures cite missing documents on purpose."""
    out = []
    for folder, dirs, files in os.walk(root):
        top = Path(folder) == root
        dirs[:] = sorted(d for d in dirs if not (top and d in SKIP_TOP) and d not in SKIP_ANY
                         and not d.endswith(".egg-info"))
        out += [Path(folder) / f for f in sorted(files) if Path(f).suffix in SUFFIXES]
    return [p for p in out if p.resolve() != Path(__file__).resolve()]


def prose(source: str) -> list[tuple[int, str]]:
    """(line number, text) of the comments and string literals of Python source: where citations
    live. Code such as ``row.md`` (an attribute) is not text. Source that does not tokenize (a
    notebook cell with shell magics) is read whole."""
    try:
        tokens = list(tokenize.generate_tokens(io.StringIO(source).readline))
    except (tokenize.TokenError, SyntaxError):
        return list(enumerate(source.splitlines(), 1))
    kinds = {tokenize.COMMENT, tokenize.STRING, getattr(tokenize, "FSTRING_MIDDLE", tokenize.STRING)}
    return [(tok.start[0] + i, line) for tok in tokens if tok.type in kinds
            for i, line in enumerate(tok.string.splitlines())]


def text_lines(path: Path) -> list[tuple[str, str]]:
    """(location, line) pairs to scan: every line of markdown and YAML, the prose of Python files
    and notebook code cells, the markdown cells of notebooks (outputs are regenerated, not read)."""
    text = path.read_text(encoding="utf-8")
    if path.suffix == ".py":
        return [(f"line {n}", line) for n, line in prose(text)]
    if path.suffix != ".ipynb":
        return [(f"line {n}", line) for n, line in enumerate(text.splitlines(), 1)]
    out = []
    for c, cell in enumerate(json.loads(text)["cells"]):
        source = cell["source"] if isinstance(cell["source"], str) else "".join(cell["source"])
        lines = prose(source) if cell["cell_type"] == "code" else enumerate(source.splitlines(), 1)
        out += [(f"cell {c} line {n}", line) for n, line in lines]
    return out


def is_file_name_value(line: str, match: re.Match) -> bool:
    """A bare quoted name such as ``"summary.md"`` or ``verdict.md`` in backticks names a file the
    code writes or reads, not a document it cites; a path with a folder or a section is a citation."""
    cited, section = match.group(1), match.group(2)
    before = line[match.start() - 1] if match.start() > 0 else ""
    after = line[match.end(1)] if match.end(1) < len(line) else ""
    return section is None and "/" not in cited and before in "\"'`" and before != "" and after == before


def section_numbers(doc: Path) -> set[str]:
    """The numbers of a document's numbered headings ("## 2. Methods" -> "2", "### 2.3 x" -> "2.3")."""
    return set(HEADING.findall(doc.read_text(encoding="utf-8")))


def resolve(cited: str, citing: Path, root: Path) -> Path | None:
    """The cited file, relative to the citing file's folder or to the repository root."""
    for base in (citing.parent, root):
        candidate = (base / cited).resolve()
        if candidate.is_file() and candidate.is_relative_to(root.resolve()):
            return candidate
    return None


def broken_citations(root: Path) -> list[str]:
    """One readable line per citation whose file is missing or whose section is not a heading."""
    problems, sections = [], {}
    for path in authored_files(root):
        for where, line in text_lines(path):
            for match in CITATION.finditer(line):
                if is_file_name_value(line, match):
                    continue
                cited, section = match.group(1), match.group(2)
                rel = path.relative_to(root)
                target = resolve(cited, path, root)
                if target is None:
                    problems.append(f"{rel} {where}: cites {cited!r}, which is not a file in the repository")
                elif section is not None:
                    if target not in sections:
                        sections[target] = section_numbers(target)
                    if section not in sections[target]:
                        problems.append(f"{rel} {where}: cites {cited} §{section}, which is not a numbered "
                                        f"heading there (headings: {sorted(sections[target])})")
    return problems


# ----------------------------------------------------------------------------- the scanner itself
@pytest.fixture
def tree(tmp_path: Path) -> Path:
    (tmp_path / "docs").mkdir()
    (tmp_path / "docs" / "guide.md").write_text("# Guide\n\n## 1. Intro\ntext\n### 1.2 Detail\n## 2. Next\n")
    (tmp_path / "pkg").mkdir()
    return tmp_path


def test_scanner_accepts_good_citations(tree: Path):
    (tree / "pkg" / "a.py").write_text('"""See docs/guide.md §1.2 and docs/guide.md §2, also docs/guide.md."""\n'
                                       "# https://example.org/other/missing.md is a URL; *.md is a glob\n")
    (tree / "docs" / "b.md").write_text("Relative to this folder: guide.md §1.\n")
    assert broken_citations(tree) == []


def test_scanner_flags_missing_files_and_sections(tree: Path):
    (tree / "pkg" / "a.py").write_text("# method.md section 2\n# docs/guide.md §1.3\n# docs/guide.md §3\n")
    problems = broken_citations(tree)
    assert len(problems) == 3
    assert "pkg/a.py line 1: cites 'method.md'" in problems[0]
    assert "docs/guide.md §1.3" in problems[1] and "'1', '1.2', '2'" in problems[1]
    assert "docs/guide.md §3" in problems[2]


def test_scanner_ignores_code_and_file_name_values(tree: Path):
    (tree / "pkg" / "a.py").write_text('"""Writes ``verdict.md``; reads `docs/gone.md`."""\n'
                                       'out = RESULTS / "summary.md"\n'
                                       "x = row.md  # attribute, not a file\n"
                                       "y = 'docs/guide.md §9'\n")
    problems = broken_citations(tree)
    assert [p.split(": cites ")[1].split(",")[0] for p in problems] == ["'docs/gone.md'", "docs/guide.md §9"]
    assert problems[0].startswith("pkg/a.py line 1") and problems[1].startswith("pkg/a.py line 4")


def test_scanner_reads_notebook_cells_and_skips_data_folders(tree: Path):
    notebook = {"cells": [{"cell_type": "markdown", "source": ["ok: docs/guide.md §2\n", "bad: notes/x.md\n"]},
                          {"cell_type": "code", "source": "print(1)", "outputs": [{"text": "gone.md"}]}]}
    (tree / "pkg" / "n.ipynb").write_text(json.dumps(notebook))
    for skipped in ("data", "runs", ".venv", "reports"):
        (tree / skipped).mkdir()
        (tree / skipped / "x.md").write_text("missing.md\n")
    (tree / "pkg" / "data").mkdir()  # only top-level data folders are skipped
    (tree / "pkg" / "data" / "loader.py").write_text("# see nowhere.md\n")
    problems = broken_citations(tree)
    assert sorted(p.split(":")[0] for p in problems) == ["pkg/data/loader.py line 1", "pkg/n.ipynb cell 0 line 2"]


def test_scanner_does_not_resolve_outside_the_repository(tree: Path):
    outside = tree.parent / "outside_notes.md"
    outside.write_text("# notes\n")
    try:
        (tree / "pkg" / "a.py").write_text("# ../../outside_notes.md\n")
        assert len(broken_citations(tree)) == 1
    finally:
        outside.unlink()


# ----------------------------------------------------------------------------- the repository
def test_docs_exist_with_unique_numbered_sections():
    """The documents the code cites, with numbered headings that are never reused (a duplicate
    number would make a citation ambiguous)."""
    for name in ("method.md", "datasets.md"):
        text = (ROOT / "docs" / name).read_text(encoding="utf-8")
        numbers = HEADING.findall(text)
        assert len(numbers) >= 10, f"docs/{name}: expected numbered sections, found {numbers}"
        assert len(numbers) == len(set(numbers)), f"docs/{name}: duplicate section numbers in {numbers}"
    assert {"2.3", "3.5", "5.3", "6"} <= section_numbers(ROOT / "docs" / "method.md")


def test_docs_internal_section_references_resolve():
    """A bare "§4.1" inside a document refers to that document's own headings."""
    for name in ("method.md", "datasets.md"):
        doc = ROOT / "docs" / name
        own = CITATION.sub("", doc.read_text(encoding="utf-8"))  # drop citations of other files
        cited = set(re.findall(r"§\s*(\d+(?:\.\d+)*)", own))
        assert cited, f"docs/{name}: expected cross-references"
        assert cited <= section_numbers(doc), f"docs/{name}: §{sorted(cited - section_numbers(doc))} are not headings"


def test_every_markdown_citation_in_the_repository_resolves():
    problems = broken_citations(ROOT)
    assert not problems, "broken documentation citations:\n" + "\n".join(problems)


# ----------------------------------------------------------------------------- claims about the notebooks
NOTEBOOKS = sorted((ROOT / "notebooks").glob("[0-9][0-9]_*.py"))
# The one figure documented (figures/README.md) as drawn without its numbers: images of six subjects.
FIGURES_WITHOUT_CSV = {"'06_groups_real_and_baseline'"}


def figure_calls(source: str) -> list[tuple[str, bool]]:
    """(name expression, whether its numbers are written) for every ``figs.figure(fig, name, ...)``:
    written when the call passes ``data=`` or ``figs.table`` writes the same name."""
    import ast

    calls = [node for node in ast.walk(ast.parse(source)) if isinstance(node, ast.Call)
             and isinstance(node.func, ast.Attribute) and isinstance(node.func.value, ast.Name)
             and node.func.value.id == "figs" and node.func.attr in ("figure", "table")]
    tables = {ast.unparse(c.args[1]) for c in calls if c.func.attr == "table" and len(c.args) > 1}
    return [(ast.unparse(c.args[1]), any(k.arg == "data" for k in c.keywords) or ast.unparse(c.args[1]) in tables)
            for c in calls if c.func.attr == "figure"]


def test_figure_calls_scanner():
    source = ("figs.table(t, 'a')\nfigs.figure(f, 'a')\nfigs.figure(f, f'b_{x}', data=d)\n"
              "figs.figure(f, 'c')\nother.figure(f, 'd')\n")
    assert figure_calls(source) == [("'a'", True), ("f'b_{x}'", True), ("'c'", False)]


def test_every_figure_of_the_notebooks_is_written_with_its_numbers():
    """figures/README.md and the README promise a CSV next to every figure."""
    missing = [f"{nb.name}: {name}" for nb in NOTEBOOKS for name, written in figure_calls(nb.read_text())
               if not written and name not in FIGURES_WITHOUT_CSV]
    assert not missing, f"figures drawn without their numbers (pass data= to figs.figure): {missing}"
    assert all(any(name == n for nb in NOTEBOOKS for n, _ in figure_calls(nb.read_text()))
               for name in FIGURES_WITHOUT_CSV), "a documented exception no notebook draws any more"


def test_readme_describes_every_notebook_parameter():
    """The README's notebook section names every variable of every parameters cell."""
    readme = (ROOT / "README.md").read_text()
    section = readme[readme.index("## The notebooks"):readme.index("## Methods")]
    for nb in NOTEBOOKS:
        cell = re.search(r'# %% tags=\["parameters"\]\n(.*?)(?=\n# %%|\Z)', nb.read_text(), re.S)
        assert cell, f"{nb.name}: no parameters cell"
        names = re.findall(r"^(\w+) =", cell.group(1), re.M)
        assert names, f"{nb.name}: an empty parameters cell"
        absent = [n for n in names if f"`{n}`" not in section]
        assert not absent, f"README's notebook section does not describe {nb.name}'s parameters {absent}"
