"""The dependency rule of `shared/`, checked on the source (AST) of every module.

Code lives in rooms stacked in layers: platform at the bottom, then integrations, identity and
audit, then the features (which never import one another) and web, and workflows on top as the
one place that combines them. Pure modules (every `rules.py`, the schedule, the ledger) are kept
apart from I/O so they can be tested alone, and no import cycle exists (deferred imports in
function bodies included), so that no import ever depends on which module happened to load first.
"""

from __future__ import annotations

import ast
from collections.abc import Iterable
from pathlib import Path

SHARED = Path(__file__).resolve().parents[1] / "shared"
FEATURES = {"appointments", "bookings", "prescriptions", "payments", "notify"}
LOWER = {"platform", "integrations", "identity", "audit"}
ALLOWED: dict[str, set[str]] = {
    "platform": set(),
    "integrations": {"platform"},
    "identity": {"platform"},
    "audit": {"platform"},
    # The pipeline writes the read entry of the health data an answer carries.
    "web": {"platform", "identity", "audit"},
    **{feature: set(LOWER) for feature in FEATURES},
    # Payouts pay out what payments booked: they build on its ledger and orders (and nothing
    # builds on payouts but workflows), so they sit above the features, below workflows.
    "payouts": LOWER | {"payments"},
    "workflows": LOWER | FEATURES | {"web", "payouts"},
    # Personal data reads and erases every feature's records (issue 27): above the features.
    "privacy": LOWER | FEATURES,
}
PURE = {"shared.appointments.schedule", "shared.payments.ledger"}
IO_MODULES = ("shared.platform.clients", "shared.platform.store")
IO_PACKAGES = ("firebase_admin", "google", "requests", "functions_framework", "cachecontrol")

Import = tuple[str, str, int]  # (module, imported module, line)


def module_name(path: Path) -> str:
    parts = path.relative_to(SHARED.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def modules() -> dict[str, Path]:
    return {module_name(path): path for path in sorted(SHARED.rglob("*.py"))}


def room_of(module: str) -> str:
    return module.split(".")[1] if module.startswith("shared.") else ""


def is_under(module: str, prefixes: Iterable[str]) -> bool:
    return any(module == p or module.startswith(p + ".") for p in prefixes)


class _Imports(ast.NodeVisitor):
    """Every import in one module, deferred ones too, except those under `if TYPE_CHECKING:`."""

    def __init__(self, module: str, is_package: bool, known: set[str]) -> None:
        self.module, self.known = module, known
        self.found: list[Import] = []
        self.package = module if is_package else module.rpartition(".")[0]

    def visit_If(self, node: ast.If) -> None:
        test = node.test
        name = test.id if isinstance(test, ast.Name) else getattr(test, "attr", "")
        for stmt in node.orelse if name == "TYPE_CHECKING" else [*node.body, *node.orelse]:
            self.visit(stmt)
        self.visit(node.test)

    def visit_Import(self, node: ast.Import) -> None:
        self.found += [(self.module, alias.name, node.lineno) for alias in node.names]

    def visit_ImportFrom(self, node: ast.ImportFrom) -> None:
        base = node.module or ""
        if node.level:
            package = self.package.rsplit(".", node.level - 1)[0]  # maxsplit 0: no split
            base = f"{package}.{base}" if base else package
        for alias in node.names:
            submodule = f"{base}.{alias.name}"
            target = submodule if submodule in self.known else base
            self.found.append((self.module, target, node.lineno))


def collect() -> list[Import]:
    found: list[Import] = []
    known = modules()
    for module, path in known.items():
        visitor = _Imports(module, path.name == "__init__.py", set(known))
        visitor.visit(ast.parse(path.read_text(), str(path)))
        found += visitor.found
    return found


def layer_violations(imports: Iterable[Import]) -> list[str]:
    return [
        f"{module} -> {imported} (line {line})"
        for module, imported, line in imports
        if imported.startswith("shared.")
        and room_of(imported) not in {room_of(module), *ALLOWED.get(room_of(module), set())}
    ]


def is_pure(module: str) -> bool:
    return module in PURE or (module.startswith("shared.") and module.endswith(".rules"))


def pure_violations(imports: Iterable[Import]) -> list[str]:
    def allowed(module: str, imported: str) -> bool:
        if is_under(imported, IO_PACKAGES) or is_under(imported, IO_MODULES):
            return False
        if not imported.startswith("shared."):
            return True
        own_pure = room_of(imported) == room_of(module) and is_pure(imported)
        return room_of(imported) == "platform" or own_pure

    return [
        f"{module} -> {imported} (line {line})"
        for module, imported, line in imports
        if is_pure(module) and not allowed(module, imported)
    ]


def cycles(edges: Iterable[Import]) -> list[list[str]]:
    """Strongly connected components with a cycle in them (Tarjan), each sorted."""
    graph: dict[str, set[str]] = {}
    for module, imported, _ in edges:
        graph.setdefault(module, set()).add(imported)
        graph.setdefault(imported, set())
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    found: list[list[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        for nxt in graph[node]:
            if nxt not in index:
                visit(nxt)
                low[node] = min(low[node], low[nxt])
            elif nxt in stack:
                low[node] = min(low[node], index[nxt])
        if low[node] == index[node]:
            component = stack[stack.index(node) :]
            del stack[stack.index(node) :]
            if len(component) > 1 or node in graph[node]:
                found.append(sorted(component))

    for node in sorted(graph):
        if node not in index:
            visit(node)
    return found


def shared_edges(imports: Iterable[Import], known: Iterable[str]) -> list[Import]:
    names = set(known)
    return [(m, i, line) for m, i, line in imports if i in names]


def test_layer_order() -> None:
    bad = layer_violations(collect())
    assert not bad, "a room imports a room above it or beside it:\n" + "\n".join(bad)


def test_pure_modules_import_only_the_platform_and_no_io() -> None:
    bad = pure_violations(collect())
    assert not bad, "a pure module imports I/O or a room other than platform:\n" + "\n".join(bad)


def test_platform_imports_no_other_room() -> None:
    bad = [v for v in layer_violations(collect()) if v.startswith("shared.platform.")]
    assert not bad, "the platform layer imports a room above it:\n" + "\n".join(bad)


def test_no_import_cycles() -> None:
    imports = collect()
    edges = shared_edges(imports, modules())
    report = [
        " <-> ".join(cycle)
        + "".join(f"\n    {m} -> {i} (line {n})" for m, i, n in edges if {m, i} <= set(cycle))
        for cycle in cycles(edges)
    ]
    assert not report, "import cycles (deferred imports count):\n" + "\n".join(report)


def test_every_module_is_in_a_room() -> None:
    bad = [
        str(path.relative_to(SHARED.parent))
        for path in SHARED.rglob("*.py")
        if path.relative_to(SHARED).parts[0] not in {*ALLOWED, "__init__.py"}
    ]
    assert not bad, "modules outside any room (move each into one):\n" + "\n".join(sorted(bad))


def test_sanity_every_room_has_modules() -> None:
    rooms = {room_of(module) for module, path in modules().items() if path.name != "__init__.py"}
    assert set(ALLOWED) <= rooms, f"no modules found in rooms: {sorted(set(ALLOWED) - rooms)}"
    assert any(is_pure(module) for module in modules()), "no pure modules found"


def test_self_check_cycle_finder_reports_a_known_cycle() -> None:
    edges = [("a", "b", 1), ("b", "c", 2), ("c", "a", 3), ("c", "d", 4), ("e", "e", 5)]
    assert sorted(cycles(edges)) == [["a", "b", "c"], ["e"]]
    assert cycles([("a", "b", 1), ("b", "c", 2), ("a", "c", 3)]) == []


def test_self_check_rules_report_forbidden_imports() -> None:
    fake = ("shared.platform.store", "shared.payments.orders", 7)
    assert layer_violations([fake]) == ["shared.platform.store -> shared.payments.orders (line 7)"]
    assert not layer_violations([("shared.workflows.x", "shared.payments.orders", 1)])
    assert layer_violations([("shared.bookings.service", "shared.payments.orders", 2)])
    assert pure_violations([("shared.payments.rules", "shared.platform.store", 3)])
    assert pure_violations([("shared.appointments.schedule", "google.cloud.firestore", 4)])
    assert not pure_violations([("shared.payments.rules", "shared.platform.money", 5)])
    assert pure_violations([("shared.payments.rules", "shared.payments.orders", 6)])
    assert cycles(shared_edges([("shared.a", "shared.a", 1), ("shared.a", "os", 2)], ["shared.a"]))


def test_payments_finds_subjects_where_their_features_keep_them() -> None:
    # Payments owns the `payment` map on a subject but may not import its feature, so it
    # names the collections itself: they must be the features' own.
    from shared.appointments import service as appointments
    from shared.bookings import service as bookings
    from shared.payments.rules import Kind
    from shared.payments.subjects import COLLECTIONS

    assert COLLECTIONS == {
        Kind.APPOINTMENT: appointments.APPOINTMENTS,
        Kind.BOOKING: bookings.BOOKINGS,
    }
