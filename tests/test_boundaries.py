"""The boundaries of DESIGN.md, checked on the source: who imports what, and where SQL over the schema lives."""

from __future__ import annotations

import ast
import re
import subprocess
import sys
from pathlib import Path

import pytest

from profiler.table.schema import TABLES

ROOT = Path(__file__).resolve().parents[1]

# What trainer_plugin and dashboard may import from profiler (and their submodules).
# profiler.options declares options once for every command (trainer_plugin's SFTMixTrainingArguments included).
ALLOWED = ("profiler.table", "profiler.data", "profiler.errors", "profiler.hf", "profiler.lm_head", "profiler.options")
ALLOWED_NAMES = {"open_table"}  # `from profiler import open_table`
ENTRY_POINTS = {"profiler/cli.py", "profiler/demo.py"}  # the composition root may import anything

# Imports that break the rule today, with the work that removes them. Each is an xfail(strict=True): when the
# import goes, the test passes unexpectedly and fails, so its entry here is removed with it.
PENDING_IMPORTS: dict[str, str] = {}
# Modules with SQL over the schema outside profiler/table/, and what replaces it.
PENDING_SQL: dict[str, str] = {}

SCHEMA_TABLES = TABLES  # the schema's own list, so a new table is scanned for too
SQL_OVER_SCHEMA = re.compile(rf"\b(FROM|INTO|UPDATE|JOIN)\s+({'|'.join(SCHEMA_TABLES)})\b", re.IGNORECASE)


def modules(*packages: str) -> list[str]:
    return sorted(
        str(p.relative_to(ROOT)) for pkg in packages for p in (ROOT / pkg).rglob("*.py") if "__pycache__" not in p.parts
    )


def imported(path: str) -> list[tuple[str, str | None]]:
    """``(module, name)`` for every import in the file (any depth, lazy ones too); name None for ``import m``."""
    out = []
    for node in ast.walk(ast.parse((ROOT / path).read_text(encoding="utf-8"), filename=path)):
        if isinstance(node, ast.Import):
            out += [(a.name, None) for a in node.names]
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            out += [(node.module, a.name) for a in node.names]
    return out


def _within(module: str, prefixes: tuple[str, ...]) -> bool:
    return any(module == p or module.startswith(p + ".") for p in prefixes)


def forbidden_profiler_imports(path: str) -> list[str]:
    bad = []
    for module, name in imported(path):
        if module == "profiler":
            ok = name is None or name in ALLOWED_NAMES or _within(f"profiler.{name}", ALLOWED)
        elif module.startswith("profiler."):
            ok = _within(module, ALLOWED)
        else:
            continue
        if not ok:
            bad.append(module + (f".{name}" if name and module == "profiler" else f" ({name})" if name else ""))
    return bad


def _cases(paths: list[str], pending: dict[str, str]) -> list:
    return [
        pytest.param(p, marks=pytest.mark.xfail(strict=True, reason=pending[p])) if p in pending else p for p in paths
    ]


@pytest.mark.parametrize("path", _cases(modules("trainer_plugin", "dashboard"), PENDING_IMPORTS))
def test_plugin_and_dashboard_import_only_the_public_profiler(path):
    assert forbidden_profiler_imports(path) == [], f"{path} may import from profiler only {ALLOWED}"


@pytest.mark.parametrize("path", [p for p in modules("profiler") if p not in ENTRY_POINTS])
def test_profiler_library_imports_neither_plugin_nor_dashboard(path):
    bad = [m for m, _ in imported(path) if _within(m, ("trainer_plugin", "dashboard"))]
    assert bad == [], f"{path} imports {bad}; only {sorted(ENTRY_POINTS)} may"


def test_table_and_dashboard_queries_load_no_torch():
    code = (
        "import sys, profiler.table, dashboard.queries, dashboard.figures; "
        "print(sorted(m for m in ('torch', 'transformers') if m in sys.modules))"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, timeout=120)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert proc.stdout.strip() == "[]"


def schema_sql(path: str) -> list[str]:
    """String literals (f-string parts included) that read or write a table of the schema by name."""
    found = []
    for node in ast.walk(ast.parse((ROOT / path).read_text(encoding="utf-8"), filename=path)):
        if isinstance(node, ast.Constant) and isinstance(node.value, str) and SQL_OVER_SCHEMA.search(node.value):
            found.append(" ".join(node.value.split())[:100])
    return found


SQL_SCANNED = [
    p for p in modules("profiler", "trainer_plugin", "dashboard", "benchmarks") if not p.startswith("profiler/table/")
]


@pytest.mark.parametrize("path", _cases(SQL_SCANNED, PENDING_SQL))
def test_sql_over_the_schema_lives_in_the_table_package(path):
    # dashboard/queries.py is scanned too: it may query only the read views (example_view, score_view, ...).
    assert schema_sql(path) == [], f"{path} holds SQL over the schema; use profiler.table's writer or reader"


def test_the_sql_scan_finds_sql():
    """The regex sees the forms the table package itself uses, so a clean scan means something."""
    found = schema_sql("profiler/table/writer.py") + schema_sql("profiler/table/reader.py")
    for form in ("INSERT OR IGNORE INTO scores", "FROM examples", "JOIN examples", "UPDATE embeddings"):
        assert any(form in s for s in found), form
    assert not SQL_OVER_SCHEMA.search("SELECT * FROM example_view JOIN score_view USING (example_id)")


def test_nothing_points_outside_the_repository():
    """The product stands alone in a clone: no file refers to the shared folder beside the repository."""
    files = subprocess.run(["git", "ls-files"], cwd=ROOT, capture_output=True, text=True, check=True).stdout.split()
    outside = re.compile(r"\.\./shared\b")
    hits = []
    for name in files:
        path = ROOT / name
        if path.suffix in {".py", ".md", ".toml", ".yaml", ".yml", ".cfg", ".txt", ""} and path.is_file():
            text = path.read_text(encoding="utf-8", errors="replace")
            hits += [f"{name}:{i}" for i, line in enumerate(text.splitlines(), 1) if outside.search(line)]
    assert not hits, hits
    design = (ROOT / "docs" / "DESIGN.md").read_text(encoding="utf-8")
    assert "docs/DESIGN.md" in (ROOT / "README.md").read_text(encoding="utf-8")
    for section in ("## The confidence table", "## Scale", "## Rendering, once"):
        assert section in design
