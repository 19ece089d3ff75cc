"""The house's import rules (docs/architecture.md), read from the source with ``ast``: imports at
module level and inside functions alike.

- ``scoring/`` is the pure domain: nothing of connectors/, flows/, sandbox/, state/ or benchmarks/,
  and no I/O library;
- ``flows/`` composes and holds no SQL (queries belong to ``state/``);
- nothing below ``flows/`` imports ``flows/`` (the ``leadflow`` CLI entry point, which assembles every
  package's commands, is the one place allowed to look up);
- ``connectors/crm/`` and ``connectors/enrichment/`` do not import each other;
- no import cycle between the project's modules.
"""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PACKAGES = ("leadflow", "state", "connectors", "scoring", "mappings", "flows", "sandbox", "benchmarks")
IO_LIBRARIES = ("httpx", "requests", "urllib3", "sqlalchemy", "hubspot", "simple_salesforce", "prefect", "socket",
                "psycopg", "starlette", "uvicorn", "respx")
CLI_ENTRY = "leadflow.cli"


def _modules() -> dict[str, Path]:
    out = {}
    for package in PACKAGES:
        for path in sorted((ROOT / package).rglob("*.py")):
            parts = path.relative_to(ROOT).with_suffix("").parts
            name = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
            out[name] = path
    return out


MODULES = _modules()


def _imports(name: str) -> list[tuple[str, int, list[str]]]:
    """(imported module, line, names imported from it) for every import in the module."""
    path = MODULES[name]
    tree = ast.parse(path.read_text(), filename=str(path))
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found.extend((alias.name, node.lineno, []) for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")
                anchor = anchor[: len(anchor) - node.level + 1]
                base = ".".join([*anchor, base] if base else anchor)
            names = [alias.name for alias in node.names]
            found.append((base, node.lineno, names))
            found.extend((f"{base}.{n}", node.lineno, []) for n in names if f"{base}.{n}" in MODULES)
    return found


def _project_target(imported: str) -> str | None:
    parts = imported.split(".")
    for end in range(len(parts), 0, -1):
        candidate = ".".join(parts[:end])
        if candidate in MODULES:
            return candidate
    return None


def _top(name: str) -> str:
    return name.split(".", 1)[0]


def test_scoring_imports_no_outside_system_and_no_io_library():
    bad = [(name, line, imported) for name in MODULES if _top(name) == "scoring"
           for imported, line, _ in _imports(name)
           if _top(imported) in ("connectors", "flows", "sandbox", "state", "benchmarks") + IO_LIBRARIES]
    assert not bad, bad


def test_flows_hold_no_sql():
    bad = []
    for name in (n for n in MODULES if _top(n) == "flows"):
        for imported, line, names in _imports(name):
            if _top(imported) == "sqlalchemy" and set(names) - {"Engine"}:
                bad.append((name, line, imported, names))
        tree = ast.parse(MODULES[name].read_text())
        for node in ast.walk(tree):
            if isinstance(node, ast.Attribute) and node.attr in ("execute", "exec_driver_sql", "executemany"):
                bad.append((name, node.lineno, node.attr))
    assert not bad, bad


def test_nothing_below_flows_imports_flows():
    below = ("leadflow", "state", "connectors", "scoring", "mappings", "sandbox")
    bad = [(name, line, imported) for name in MODULES if _top(name) in below and name != CLI_ENTRY
           for imported, line, _ in _imports(name) if _top(imported) in ("flows", "benchmarks")]
    assert not bad, bad


def test_crm_connectors_and_enrichment_providers_do_not_import_each_other():
    sides = ("connectors.crm", "connectors.enrichment")

    def side(module: str) -> str | None:
        return next((s for s in sides if module == s or module.startswith(s + ".")), None)

    bad = [(name, line, imported) for name in MODULES if (own := side(name))
           for imported, line, _ in _imports(name) if (other := side(imported)) and other != own]
    assert not bad, bad


def test_no_import_cycle_between_modules():
    graph = {name: sorted({t for imported, _, _ in _imports(name) if (t := _project_target(imported))
                           and t != name and not name.startswith(t + ".")}) for name in MODULES}
    cycles = _strongly_connected(graph)
    assert not cycles, cycles


def _strongly_connected(graph: dict[str, list[str]]) -> list[list[str]]:
    """Tarjan: the components of more than one module (each one an import cycle)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    out: list[list[str]] = []
    counter = [0]

    def visit(node: str) -> None:
        index[node] = low[node] = counter[0]
        counter[0] += 1
        stack.append(node)
        on_stack.add(node)
        for nxt in graph.get(node, []):
            if nxt not in index:
                visit(nxt)
                low[node] = min(low[node], low[nxt])
            elif nxt in on_stack:
                low[node] = min(low[node], index[nxt])
        if low[node] == index[node]:
            component = []
            while True:
                top = stack.pop()
                on_stack.discard(top)
                component.append(top)
                if top == node:
                    break
            if len(component) > 1:
                out.append(sorted(component))

    for node in graph:
        if node not in index:
            visit(node)
    return out
