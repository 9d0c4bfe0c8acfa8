"""Load every function module the way functions-framework does, for tests that inspect routes."""

from __future__ import annotations

import importlib.util
from pathlib import Path
from types import ModuleType

from tools.bundle import FUNCTIONS_DIR, function_names

_loaded: dict[str, ModuleType] = {}


def load(name: str) -> ModuleType:
    if name not in _loaded:
        path = Path(FUNCTIONS_DIR) / name / "main.py"
        spec = importlib.util.spec_from_file_location(f"function_{name.replace('-', '_')}", path)
        assert spec is not None
        assert spec.loader is not None
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
        _loaded[name] = module
    return _loaded[name]


def http_routes() -> set[tuple[str, str, str]]:
    routes = set()
    for name in function_names():
        api = getattr(load(name), "api", None)
        if api is None:
            continue  # an event function
        routes |= {(name, r.method, r.path) for r in api.routes.values()}
    return routes
