"""Imports run one way (docs/architecture.md, "Rooms and arrows").

An AST walk over every .py file outside tests/ maps each module to its room and fails with the
list of imports that point up (a lower room using a higher one) or into deploy/ from outside it,
so a wrong-way import fails the build instead of growing a tangle. Every import counts, also one
inside a function or under TYPE_CHECKING: a lazy import is still a dependency.
"""

from __future__ import annotations

import ast
import os
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
SKIP_DIRS = {"tests", "examples", "docs", "node_modules", "__pycache__", "build", "dist"}

# (module prefix, room, tier). The longest matching prefix wins. A module may import from its
# own tier or below. deploy/ (the CLI, the dev stack, DLQ and backtest tools) and bench/ (the
# benchmarks) are the top rooms, which nothing else imports; bench is a top room like deploy and
# runs on the dev stack, so deploy/local (the broker, database and stack it measures against) is
# the one part of deploy it may use (ALLOWED). Topic admin is plumbing, not deploy.
ROOMS: list[tuple[str, str, int]] = [
    ("schemas", "schemas", 0),
    ("plumbing", "plumbing", 1),
    ("processors.runtime", "processors.runtime", 2),
    ("processors", "processors", 3),  # processors/__init__.py and processors/cel.py
    ("processors.loyalty", "processors.loyalty", 3),
    ("processors.delivery", "processors.delivery", 3),
    ("processors.router", "processors.router", 3),
    ("processors.audiences", "processors.audiences", 3),
    ("processors.journeys", "processors.journeys", 3),
    ("ingest", "ingest", 3),
    ("sinks", "sinks", 3),
    ("dashboard", "dashboard", 3),
    ("deploy", "deploy", 4),
    ("bench", "bench", 4),
]
TOP_ROOMS = {"deploy", "bench"}
ALLOWED = {("bench", "deploy.local")}  # (room, module prefix) beside the tier rule
FIRST_PARTY = {prefix.split(".")[0] for prefix, _, _ in ROOMS}


@dataclass(frozen=True)
class Import:
    module: str  # the importing module
    path: str
    line: int
    target: str  # the imported first-party module
    toplevel: bool  # at module level, outside TYPE_CHECKING (runs when the module is imported)


def room_of(module: str) -> tuple[str, int] | None:
    best: tuple[str, str, int] | None = None
    for prefix, room, tier in ROOMS:
        if (module == prefix or module.startswith(prefix + ".")) and (
            best is None or len(prefix) > len(best[0])
        ):
            best = (prefix, room, tier)
    return None if best is None else (best[1], best[2])


def source_files() -> list[Path]:
    """Every .py file of a room: hidden folders (.local holds a live broker's data) are pruned
    before they are walked."""
    files = []
    for folder, dirs, names in os.walk(ROOT):
        dirs[:] = sorted(
            d for d in dirs if d not in SKIP_DIRS and not d.startswith(".") and not d.endswith(".egg-info")
        )
        if Path(folder) != ROOT:  # a script at the root is no module of a room
            files += [Path(folder, n) for n in sorted(names) if n.endswith(".py")]
    return files


def module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def _known(module: str) -> bool:
    base = ROOT.joinpath(*module.split("."))
    return base.with_suffix(".py").is_file() or (base / "__init__.py").is_file()


def _resolve_from(node: ast.ImportFrom, module: str, is_package: bool) -> str:
    if not node.level:
        return node.module or ""
    package = module.split(".") if is_package else module.split(".")[:-1]
    base = package[: len(package) - (node.level - 1)]
    return ".".join(base + ([node.module] if node.module else []))


def _type_checking_lines(tree: ast.Module) -> set[int]:
    lines: set[int] = set()
    for node in tree.body:
        if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
            for inner in node.body:
                lines.update(range(inner.lineno, (inner.end_lineno or inner.lineno) + 1))
    return lines


def imports_of(path: Path) -> list[Import]:
    module = module_name(path)
    tree = ast.parse(path.read_text(), filename=str(path))
    toplevel_nodes = {id(n) for n in tree.body}
    guarded = _type_checking_lines(tree)
    found: list[Import] = []

    def add(node: ast.stmt, target: str) -> None:
        if target.split(".")[0] in FIRST_PARTY:
            top = id(node) in toplevel_nodes and node.lineno not in guarded
            rel = str(path.relative_to(ROOT))
            found.append(Import(module, rel, node.lineno, target, top))

    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                add(node, alias.name)
        elif isinstance(node, ast.ImportFrom):
            base = _resolve_from(node, module, path.name == "__init__.py")
            for alias in node.names:
                sub = f"{base}.{alias.name}" if base else alias.name
                add(node, sub if _known(sub) else base)
    return found


def all_imports() -> list[Import]:
    return [imp for path in source_files() for imp in imports_of(path)]


def wrong_way(imp: Import) -> str | None:
    """Why this import runs the wrong way, or None when it is fine."""
    source, target = room_of(imp.module), room_of(imp.target)
    if source is None or target is None:
        return None  # unmapped: reported by test_every_module_has_a_room
    (s_room, s_tier), (t_room, t_tier) = source, target
    if any(s_room == room and (imp.target + ".").startswith(p + ".") for room, p in ALLOWED):
        return None
    if t_room in TOP_ROOMS and t_room != s_room:
        return f"{s_room} -> {t_room}: only {t_room}'s own modules import it"
    if t_tier > s_tier:
        return f"{s_room} (tier {s_tier}) -> {t_room} (tier {t_tier}): upward"
    return None


def offending(imports: list[Import]) -> list[str]:
    """One line per wrong-way import: file:line, module, imported module, rooms."""
    rows: list[str] = []
    for imp in imports:
        why = wrong_way(imp)
        row = f"{imp.path}:{imp.line} {imp.module} imports {imp.target}  [{why}]"
        if why and row not in rows:
            rows.append(row)
    return rows


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One cycle of the directed graph as a node list (first == last), or None (DFS, 3 colours)."""
    colour: dict[str, int] = {}
    stack: list[str] = []

    def visit(node: str) -> list[str] | None:
        colour[node] = 1
        stack.append(node)
        for nxt in sorted(graph.get(node, ())):
            if colour.get(nxt) == 1:
                return stack[stack.index(nxt) :] + [nxt]
            if nxt not in colour and (cycle := visit(nxt)):
                return cycle
        stack.pop()
        colour[node] = 2
        return None

    for node in sorted(graph):
        if node not in colour and (cycle := visit(node)):
            return cycle
    return None


def test_every_module_has_a_room():
    unmapped = sorted({module_name(p) for p in source_files() if room_of(module_name(p)) is None})
    assert not unmapped, f"modules in no room (add the package to ROOMS and the docs): {unmapped}"


def test_no_import_runs_the_wrong_way():
    rows = offending(all_imports())
    assert not rows, "imports against the rooms' direction:\n" + "\n".join(rows)


def test_no_cycle_between_rooms():
    graph: dict[str, set[str]] = {}
    for imp in all_imports():
        source, target = room_of(imp.module), room_of(imp.target)
        if source and target and source[0] != target[0]:
            graph.setdefault(source[0], set()).add(target[0])
    assert find_cycle(graph) is None, f"rooms import each other in a circle: {find_cycle(graph)}"


def test_no_module_cycle_inside_the_loyalty_engine():
    """The engine's modules load in one order: a circle of module-level imports could not be
    read (or imported) one file at a time."""
    graph: dict[str, set[str]] = {}
    for imp in all_imports():
        inside = imp.module.startswith("processors.loyalty") and imp.target.startswith("processors.loyalty")
        if inside and imp.toplevel and imp.module != imp.target:
            graph.setdefault(imp.module, set()).add(imp.target)
    assert find_cycle(graph) is None, f"module-level import cycle: {find_cycle(graph)}"


def test_the_check_sees_a_wrong_way_import():
    """The walk itself: an upward import, a deploy import and a relative one are caught."""
    rows = offending(
        [
            Import("schemas.codec", "schemas/codec.py", 3, "plumbing.logs", True),
            Import("processors.runtime.changelog", "x.py", 5, "deploy.topics", True),
            Import("bench.sink", "bench/sink.py", 7, "deploy.cli", False),
            Import("bench.e2e", "bench/e2e.py", 8, "deploy.local.stack", True),
            Import("ingest.app", "ingest/app.py", 9, "processors.loyalty.engine", True),
            Import("deploy.cli", "deploy/cli.py", 2, "bench", False),
            Import("deploy.cli", "deploy/cli.py", 4, "deploy.topics", True),
        ]
    )
    assert [r.split(" ")[0] for r in rows] == [
        "schemas/codec.py:3",
        "x.py:5",
        "bench/sink.py:7",
        "deploy/cli.py:2",
    ]
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"b"}, "b": {"c"}}) is None
