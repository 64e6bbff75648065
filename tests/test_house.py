"""The house rules a reviewer would otherwise check by hand.

The import graph runs one way (README, Layout): each room imports only from rooms below it (or from itself),
and no modules import each other in a circle. Every import counts, also those inside a function and under
TYPE_CHECKING: a lazy import that runs back up is still a loop, only one that no static tool sees.

No dead code: vulture finds nothing at 80% confidence outside tests/.
"""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]

# Bottom up: (rank, room, the modules it holds by name prefix; the longest prefix decides). Rooms of one rank
# are siblings: neither imports the other.
ROOMS = [
    (
        0,
        "foundation",
        (
            "rdfer._build_info",
            "rdfer.errors",
            "rdfer.environment",
            "rdfer.files",
            "rdfer.config",
            "rdfer.runtime",
            "rdfer.metrics",
            "rdfer.progress",
            "rdfer.stopping",
            "rdfer.cli",
            "rdfer.checkpoint",
            "rdfer.run_lock",
            "rdfer.robust.categories",
        ),
    ),
    (1, "kernels", ("rdfer.kernels",)),
    (2, "ops", ("rdfer.ops",)),
    (3, "data", ("rdfer.data",)),
    (3, "models", ("rdfer.models",)),
    (4, "robust", ("rdfer.robust",)),
    (
        5,
        "loop",
        (
            "rdfer.training",
            "rdfer.resume",
            "rdfer.optimization",
            "rdfer.run_log",
            "rdfer.distributed",
            "rdfer.evaluation",
            "rdfer.prediction",
        ),
    ),
    (
        6,
        "commands",
        (
            "rdfer.train",
            "rdfer.evaluate",
            "rdfer.predict",
            "rdfer.data.__main__",
            "rdfer.review",
            "rdfer.experiments",
        ),
    ),
]
API = "rdfer"  # the package itself: the public names, imported lazily from any room


def package_modules() -> dict[str, Path]:
    """Module name -> file, for rdfer/ and kernels/ (installed as rdfer.kernels)."""
    found = {}
    for path in [*(REPO / "rdfer").rglob("*.py"), *(REPO / "kernels").glob("*.py")]:
        parts = list(path.relative_to(REPO).with_suffix("").parts)
        if parts[0] == "kernels":
            parts = ["rdfer", *parts]
        if parts[-1] == "__init__":
            parts = parts[:-1]
        found[".".join(parts)] = path
    return found


def import_graph(modules: dict[str, Path]) -> dict[str, set[str]]:
    """Module -> the package's modules it imports (a name imported from a module counts as the module)."""

    def owner(name: str) -> str | None:
        while name and name not in modules:
            name = name.rpartition(".")[0]
        return name or None

    graph = {}
    for name, path in modules.items():
        package = name if path.name == "__init__.py" else name.rpartition(".")[0]
        targets = set()
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.Import):
                targets.update(owner(a.name) for a in node.names)
            elif isinstance(node, ast.ImportFrom):
                base = node.module or ""
                if node.level:
                    anchor = package.rsplit(".", node.level - 1)[0] if node.level > 1 else package
                    base = f"{anchor}.{base}" if base else anchor
                targets.update(owner(f"{base}.{a.name}") for a in node.names)
        graph[name] = {t for t in targets if t is not None and t != name}
    return graph


def room_of(module: str) -> tuple[int, str] | None:
    if module == API:
        return (len(ROOMS), "api")
    best = None
    for rank, room, prefixes in ROOMS:
        for prefix in prefixes:
            if (module == prefix or module.startswith(prefix + ".")) and (
                best is None or len(prefix) > best[0]
            ):
                best = (len(prefix), rank, room)
    return None if best is None else best[1:]


def imports_up(graph: dict[str, set[str]]) -> list[str]:
    """Every import of a module from a room that is not below its own (nor its own room)."""
    found = []
    for module, targets in sorted(graph.items()):
        rank, room = room_of(module)
        for target in sorted(targets):
            their_rank, their_room = room_of(target)
            if their_room != room and their_rank >= rank:
                found.append(f"{module} ({room}) imports {target} ({their_room})")
    return found


def circles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components of more than one module (Tarjan)."""
    index, low, stack, on_stack, found = {}, {}, [], set(), []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in graph.get(v, ()):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return found


def test_every_module_has_a_room():
    assert [m for m in package_modules() if room_of(m) is None] == []


def test_no_import_runs_back_up():
    assert imports_up(import_graph(package_modules())) == []


def test_no_modules_import_each_other_in_a_circle():
    assert circles(import_graph(package_modules())) == []


def test_the_checks_see_what_they_look_for():
    # The graph holds the lazy imports (the kind a loop hides in) and the kernels' relative ones.
    graph = import_graph(package_modules())
    assert "rdfer.kernels.agreement" in graph["rdfer.ops.agreement"]  # inside a function
    assert "rdfer.kernels._launch" in graph["rdfer.kernels.agreement"]  # `from . import _launch`
    assert "rdfer.models" in graph["rdfer"]
    up = {"rdfer.ops.agreement": {"rdfer.training"}, "rdfer.training": set()}
    assert imports_up(up) == ["rdfer.ops.agreement (ops) imports rdfer.training (loop)"]
    assert imports_up({"rdfer.data.loader": {"rdfer.models.encoder"}, "rdfer.models.encoder": set()})
    assert circles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]


def test_vulture_finds_no_dead_code():
    pytest.importorskip("vulture", reason="vulture is in the dev extra: pip install -e '.[dev]'")
    paths = ["rdfer", "kernels", "bench", "setup.py", "extension_build.py"]
    found = subprocess.run(
        [sys.executable, "-m", "vulture", *paths, "--min-confidence", "80"],
        cwd=REPO,
        capture_output=True,
        text=True,
    )
    assert (found.returncode, found.stdout, found.stderr) == (0, "", "")
