"""What each function's code needs from Google Cloud, read from its source (AST), not declared.

    python -m tools.code_facts [--json]

A function can run any code its `main.py` imports, directly or through `shared/` (imports in
function bodies included), so its needs are those of that closure:

- Firebase Auth: `admin` if any module calls a write of `firebase_admin.auth` (create, update,
  delete, custom claims, revoking, session cookies, action links), `viewer` if it only reads;
- Cloud Tasks: whether it imports the Cloud Tasks client (it creates tasks);
- FCM: whether it imports `firebase_admin.messaging` (it sends push);
- IAM permissions: what those Auth calls and FCM sends need (AUTH_PERMISSIONS, FCM_PERMISSIONS),
  which terraform/ puts in one custom role per function (generated/code.json);
- environment: the variables it reads, directly or through a `shared.platform.settings` field.

terraform/ grants secrets and queues from a hand-kept table and the Auth and FCM permissions
from generated/code.json (`python -m tools.terraform_inputs`); tests/test_terraform.py holds
both to these facts, so a permission the code stops needing, or a secret it starts reading,
fails CI.
The same module lists the log lines the code writes (logger, severity, format string), which
monitoring's log-based metrics must match.
"""

from __future__ import annotations

import argparse
import ast
import functools
import json
import re
import sys
from collections.abc import Iterable, Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
FUNCTIONS_DIR = ROOT / "functions"
SHARED_DIR = ROOT / "shared"
SETTINGS = SHARED_DIR / "platform" / "settings.py"

AUTH_MODULE = "firebase_admin.auth"
# firebase_admin.auth calls that change Auth state (`auth` = admin) and calls that only read it
# (`viewer`); what each needs from IAM is AUTH_PERMISSIONS below.
AUTH_WRITES = frozenset(
    {
        "create_user",
        "update_user",
        "delete_user",
        "delete_users",
        "import_users",
        "set_custom_user_claims",
        "revoke_refresh_tokens",
        "create_session_cookie",
        "create_custom_token",
        "generate_password_reset_link",
        "generate_email_verification_link",
        "generate_sign_in_with_email_link",
    }
)
AUTH_READS = frozenset(
    {"get_user", "get_users", "get_user_by_email", "get_user_by_phone_number", "list_users"}
)
# The IAM permission each firebase_admin.auth call needs: the Identity Toolkit method it calls
# and that method's permission in Identity Platform's access-control table
# (cloud.google.com/identity-platform/docs/access-control). A call missing here cannot be
# granted: `permissions` refuses it. create_custom_token is absent on purpose: on Cloud Run it
# signs through the IAM Credentials API as the function's own account (signBlob), a grant on
# that account, not a project role.
AUTH_PERMISSIONS: dict[str, tuple[str, ...]] = {
    "create_user": ("firebaseauth.users.create",),  # accounts (SignUp)
    "import_users": ("firebaseauth.users.create",),  # accounts:batchCreate (UploadAccount)
    "update_user": ("firebaseauth.users.update",),  # accounts:update (SetAccountInfo)
    "set_custom_user_claims": ("firebaseauth.users.update",),  # accounts:update
    "revoke_refresh_tokens": ("firebaseauth.users.update",),  # accounts:update (validSince)
    "delete_user": ("firebaseauth.users.delete",),  # accounts:delete (DeleteAccount)
    "delete_users": ("firebaseauth.users.delete",),  # accounts:batchDelete
    "get_user": ("firebaseauth.users.get",),  # accounts:lookup (GetAccountInfo)
    "get_users": ("firebaseauth.users.get",),  # accounts:lookup
    "get_user_by_email": ("firebaseauth.users.get",),  # accounts:lookup
    "get_user_by_phone_number": ("firebaseauth.users.get",),  # accounts:lookup
    "list_users": ("firebaseauth.users.get",),  # accounts:batchGet (DownloadAccount)
    "create_session_cookie": ("firebaseauth.users.createSession",),  # :createSessionCookie
    # accounts:sendOobCode with returnOobLink (GetOobCode): the link is returned, not mailed.
    "generate_password_reset_link": ("firebaseauth.users.sendEmail",),
    "generate_email_verification_link": ("firebaseauth.users.sendEmail",),
    "generate_sign_in_with_email_link": ("firebaseauth.users.sendEmail",),
}
TASKS_MODULES = ("google.cloud.tasks_v2", "google.cloud.tasks")
FCM_MODULE = "firebase_admin.messaging"
# Sending through FCM's HTTP v1 API (projects.messages.send, what send, send_each and
# send_each_for_multicast call) needs this one permission; roles/firebasecloudmessaging.admin
# adds topic subscriptions and delivery data, which the code never touches.
FCM_PERMISSIONS = ("cloudmessaging.messages.create",)
_ENV_NAME = re.compile(r"^[A-Z][A-Z0-9]*(_[A-Z0-9]+)+$")
_LEVELS = {
    "debug": "DEBUG",
    "info": "INFO",
    "warning": "WARNING",
    "error": "ERROR",
    "exception": "ERROR",
    "critical": "CRITICAL",
}


@dataclass
class Needs:
    """What one function's code needs (see the module docstring)."""

    function: str
    modules: list[str]
    auth: str | None  # "admin", "viewer" or None
    auth_calls: list[str]  # "module:call", to say why
    creates_tasks: bool
    sends_push: bool
    env: list[str]
    is_http: bool
    permissions: list[str]  # IAM permissions its Auth calls and FCM sends need


class UnknownPermission(ValueError):
    """The code calls a firebase_admin.auth function AUTH_PERMISSIONS has no permission for."""


def permissions(auth_calls: Iterable[str], sends_push: bool) -> list[str]:
    """The IAM permissions these firebase_admin.auth calls (names) and FCM sends need."""
    found: set[str] = set(FCM_PERMISSIONS) if sends_push else set()
    for call in auth_calls:
        if call not in AUTH_PERMISSIONS:
            raise UnknownPermission(
                f"firebase_admin.auth.{call} has no IAM permission in "
                "tools/code_facts.AUTH_PERMISSIONS: look it up and add it"
            )
        found |= set(AUTH_PERMISSIONS[call])
    return sorted(found)


@dataclass(frozen=True)
class LogLine:
    """One logging call of the code: who logs it, how severe, and its format string."""

    module: str
    path: str
    line: int
    logger: str
    severity: str
    message: str


@dataclass
class _Module:
    name: str
    path: Path
    tree: ast.Module
    imports: set[str] = field(default_factory=set)


def _module_name(path: Path) -> str:
    parts = path.relative_to(ROOT).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _shared_modules() -> dict[str, Path]:
    return {_module_name(p): p for p in sorted(SHARED_DIR.rglob("*.py"))}


def _imports(tree: ast.AST, name: str, is_package: bool, known: Iterable[str]) -> set[str]:
    """Every module `tree` imports, deferred ones too (`X` or `X.y` when y is a module)."""
    known = set(known)
    package = name if is_package else name.rpartition(".")[0]
    found: set[str] = set()
    for node in _nodes(tree):
        if isinstance(node, ast.Import):
            found |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                parent = package.rsplit(".", node.level - 1)[0]
                base = f"{parent}.{base}" if base else parent
            for alias in node.names:
                sub = f"{base}.{alias.name}"
                # `from firebase_admin import auth` imports the module firebase_admin.auth.
                found.add(sub if sub in known or not base.startswith("shared") else base)
    return found


def _load(path: Path, name: str, known: Iterable[str]) -> _Module:
    tree = _parse(path)
    module = _Module(name, path, tree)
    module.imports = _imports(tree, name, path.name == "__init__.py", known)
    return module


@functools.cache
def _nodes(top: ast.AST) -> tuple[ast.AST, ...]:
    # Parsed trees are cached, so each piece of code is walked once however often it is asked.
    return tuple(ast.walk(top))


@functools.cache
def _parse(path: Path) -> ast.Module:
    # One parse per file and process: tests ask about every function, which share modules.
    return ast.parse(path.read_text(), filename=str(path))


def _parents(module: str) -> Iterator[str]:
    parts = module.split(".")
    for n in range(1, len(parts)):
        yield ".".join(parts[:n])


def closure(function: str) -> list[_Module]:
    """main.py of `function` and every shared module it can reach (package __init__s too)."""
    shared = _shared_modules()
    main = FUNCTIONS_DIR / function / "main.py"
    loaded: dict[str, _Module] = {}
    todo = [_load(main, f"functions.{function}.main", shared)]
    while todo:
        module = todo.pop()
        if module.name in loaded:
            continue
        loaded[module.name] = module
        for imported in module.imports:
            for name in (*_parents(imported), imported):
                if name in shared and name not in loaded:
                    todo.append(_load(shared[name], name, shared))
    return sorted(loaded.values(), key=lambda m: m.name)


def _bindings(tree: ast.Module, name: str, is_package: bool, known: set[str]) -> dict[str, str]:
    """Names bound by imports anywhere in a module -> the module or `module:attr` they name."""
    package = name if is_package else name.rpartition(".")[0]
    bound: dict[str, str] = {}
    for node in _nodes(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                if alias.asname:
                    bound[alias.asname] = alias.name
                else:
                    bound[alias.name.split(".")[0]] = alias.name.split(".")[0]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                parent = package.rsplit(".", node.level - 1)[0]
                base = f"{parent}.{base}" if base else parent
            for alias in node.names:
                sub = f"{base}.{alias.name}"
                is_module = sub in known or (not base.startswith("shared") and alias.name.islower())
                bound[alias.asname or alias.name] = sub if is_module else f"{base}:{alias.name}"
    return bound


_FUNCTION_DEFS = (ast.FunctionDef, ast.AsyncFunctionDef)
Unit = tuple[str, str]  # (module, top-level function or class name; "" for module-level code)


class _Graph:
    """Which functions of the closure can run: a call graph, resolved the way Python would
    resolve names statically, and conservative where it cannot (`obj.method()` reaches every
    method of that name in the closure)."""

    def __init__(self, modules: list[_Module]) -> None:
        self.modules = {m.name: m for m in modules}
        known = set(self.modules)
        self.bound = {
            m.name: _bindings(m.tree, m.name, m.path.name == "__init__.py", known) for m in modules
        }
        self.defs: dict[Unit, ast.AST] = {}
        self.methods: dict[str, list[Unit]] = {}
        for m in modules:
            for node in m.tree.body:
                if isinstance(node, (*_FUNCTION_DEFS, ast.ClassDef)):
                    self.defs[(m.name, node.name)] = node
                if isinstance(node, ast.ClassDef):
                    for item in node.body:
                        if isinstance(item, _FUNCTION_DEFS):
                            self.methods.setdefault(item.name, []).append((m.name, node.name))

    def body_of(self, unit: Unit) -> list[ast.AST]:
        module, name = unit
        if name:
            return [self.defs[unit]]
        # Module-level code runs on import (class bodies too); functions and methods only
        # when called.
        code: list[ast.AST] = []
        for node in self.modules[module].tree.body:
            if isinstance(node, ast.ClassDef):
                code += [n for n in node.body if not isinstance(n, _FUNCTION_DEFS)]
                code += node.decorator_list
            elif isinstance(node, _FUNCTION_DEFS):
                code += node.decorator_list
            else:
                code.append(node)
        return code

    def _target(self, module: str, ref: str) -> Unit | None:
        if ":" in ref:
            mod, attr = ref.split(":", 1)
            return (mod, attr) if (mod, attr) in self.defs else None
        return None

    def edges(self, unit: Unit) -> set[Unit]:
        module = unit[0]
        bound = self.bound[module]
        found: set[Unit] = set()
        for top in self.body_of(unit):
            for node in _nodes(top):
                if isinstance(node, ast.Name):
                    if (module, node.id) in self.defs and (module, node.id) != unit:
                        found.add((module, node.id))
                    elif node.id in bound and (target := self._target(module, bound[node.id])):
                        found.add(target)
                elif isinstance(node, ast.Attribute):
                    value = node.value
                    if isinstance(value, ast.Name) and bound.get(value.id) in self.modules:
                        target_module = bound[value.id]
                        if (target_module, node.attr) in self.defs:
                            found.add((target_module, node.attr))
                    else:
                        found |= set(self.methods.get(node.attr, []))
        return found

    def reachable(self, roots: Iterable[Unit]) -> set[Unit]:
        seen: set[Unit] = set()
        todo = list(roots)
        while todo:
            unit = todo.pop()
            if unit in seen:
                continue
            seen.add(unit)
            todo += [u for u in self.edges(unit) if u not in seen]
        return seen


def _aliases_of(tree: ast.Module, target: str) -> set[str]:
    """Names bound to module `target` anywhere in `tree` (`from a import b as c`, `import a.b`)."""
    names: set[str] = set()
    head, _, last = target.rpartition(".")
    for node in _nodes(tree):
        if isinstance(node, ast.ImportFrom) and node.module == head:
            names |= {a.asname or a.name for a in node.names if a.name == last}
        elif isinstance(node, ast.Import):
            names |= {a.asname for a in node.names if a.name == target and a.asname}
    return names


@functools.cache
def settings_env() -> dict[str, list[str]]:
    """Each field of shared.platform.settings.Settings -> the environment variables it reads."""
    tree = ast.parse(SETTINGS.read_text())
    helpers = {
        f.name: _env_constants(f)
        for f in tree.body
        if isinstance(f, ast.FunctionDef) and f.name.startswith("_")
    }
    fields: dict[str, list[str]] = {}
    for node in _nodes(tree):
        if isinstance(node, ast.Call) and getattr(node.func, "id", None) == "Settings":
            for keyword in node.keywords:
                if keyword.arg is None:
                    continue
                names = _env_constants(keyword.value)
                # A field computed by a helper (`_session_seconds()`) reads what it reads.
                for call in ast.walk(keyword.value):
                    if isinstance(call, ast.Call) and isinstance(call.func, ast.Name):
                        names |= helpers.get(call.func.id, set())
                fields[keyword.arg] = sorted(names)
    return fields


def _env_constants(node: ast.AST) -> set[str]:
    return {
        c.value
        for c in ast.walk(node)
        if isinstance(c, ast.Constant) and isinstance(c.value, str) and _ENV_NAME.match(c.value)
    }


def _is_os_environ(node: ast.AST) -> bool:
    return (
        isinstance(node, ast.Attribute)
        and node.attr == "environ"
        and isinstance(node.value, ast.Name)
        and node.value.id == "os"
    )


def _env_read(nodes: Iterable[ast.AST], fields: dict[str, list[str]]) -> set[str]:
    """Variables read by this code: named in os.environ / os.getenv, or via a settings field."""
    names: set[str] = set()
    for top in nodes:
        for node in _nodes(top):
            if isinstance(node, ast.Attribute) and node.attr in fields:
                names |= set(fields[node.attr])
            if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute):
                func = node.func
                if (func.attr == "get" and _is_os_environ(func.value)) or (
                    func.attr == "getenv" and getattr(func.value, "id", None) == "os"
                ):
                    names |= _env_constants(node)
            if isinstance(node, ast.Subscript) and _is_os_environ(node.value):
                names |= _env_constants(node.slice)
    return names


@functools.cache
def needs(function: str) -> Needs:
    modules = closure(function)
    graph = _Graph(modules)
    main_module = f"functions.{function}.main"
    # Everything main.py defines can run: its routes are registered by decorators.
    roots = [(main_module, "")] + [u for u in graph.defs if u[0] == main_module]
    roots += [(m.name, "") for m in modules]  # import-time code of every module
    reached = graph.reachable(roots)
    fields = settings_env()
    auth_calls: set[tuple[str, str]] = set()
    env: set[str] = set()
    imported: set[str] = set()
    known = set(graph.modules)
    auth_aliases = {name: _aliases_of(m.tree, AUTH_MODULE) for name, m in graph.modules.items()}
    for unit in sorted(reached):
        module = graph.modules[unit[0]]
        body = graph.body_of(unit)
        aliases = auth_aliases[module.name]
        for top in body:
            for node in _nodes(top):
                if (
                    isinstance(node, ast.Call)
                    and isinstance(node.func, ast.Attribute)
                    and isinstance(node.func.value, ast.Name)
                    and node.func.value.id in aliases
                    and node.func.attr in AUTH_WRITES | AUTH_READS
                ):
                    auth_calls.add((f"{module.name}:{node.func.attr}", node.func.attr))
            imported |= _imports(top, module.name, module.path.name == "__init__.py", known)
        if module.path != SETTINGS:
            env |= _env_read(body, fields)
    writes = {call for _, call in auth_calls} & AUTH_WRITES
    auth = "admin" if writes else ("viewer" if auth_calls else None)
    main = (FUNCTIONS_DIR / function / "main.py").read_text()
    sends_push = any(i == FCM_MODULE or i.startswith(FCM_MODULE + ".") for i in imported)
    return Needs(
        function=function,
        modules=[m.name for m in modules],
        auth=auth,
        auth_calls=sorted(where for where, _ in auth_calls),
        creates_tasks=any(i == m or i.startswith(m + ".") for i in imported for m in TASKS_MODULES),
        sends_push=sends_push,
        env=sorted(env),
        is_http="@functions_framework.http" in main,
        permissions=permissions({call for _, call in auth_calls}, sends_push),
    )


def _logger_names(tree: ast.Module) -> dict[str, str]:
    """Module-level `log = logs.get("name")` / `logging.getLogger("name")` assignments."""
    names: dict[str, str] = {}
    for node in tree.body:
        if (
            isinstance(node, ast.Assign)
            and len(node.targets) == 1
            and isinstance(node.targets[0], ast.Name)
            and isinstance(node.value, ast.Call)
            and isinstance(node.value.func, ast.Attribute)
            and node.value.func.attr in ("get", "getLogger")
            and node.value.args
            and isinstance(node.value.args[0], ast.Constant)
            and isinstance(node.value.args[0].value, str)
        ):
            names[node.targets[0].id] = node.value.args[0].value
    return names


@functools.cache
def log_lines() -> tuple[LogLine, ...]:
    """Every logging call with a literal format string in shared/ and functions/."""
    lines: list[LogLine] = []
    paths = sorted(SHARED_DIR.rglob("*.py")) + sorted(FUNCTIONS_DIR.glob("*/main.py"))
    for path in paths:
        tree = _parse(path)
        loggers = _logger_names(tree)
        constants = _string_constants(tree)
        for node in _nodes(tree):
            if not (
                isinstance(node, ast.Call)
                and isinstance(node.func, ast.Attribute)
                and node.func.attr in _LEVELS
                and isinstance(node.func.value, ast.Name)
                and node.func.value.id in loggers
                and node.args
                and isinstance(node.args[0], ast.Constant)
                and isinstance(node.args[0].value, str)
            ):
                continue
            lines.append(
                LogLine(
                    module=_module_name(path) if path.is_relative_to(SHARED_DIR) else str(path),
                    path=str(path.relative_to(ROOT)),
                    line=node.lineno,
                    logger=loggers[node.func.value.id],
                    severity=_LEVELS[node.func.attr],
                    message=_resolved(node.args[0].value, node.args[1:], constants),
                )
            )
    return tuple(lines)


def _string_constants(tree: ast.Module) -> dict[str, str]:
    return {
        node.targets[0].id: node.value.value
        for node in tree.body
        if isinstance(node, ast.Assign)
        and len(node.targets) == 1
        and isinstance(node.targets[0], ast.Name)
        and isinstance(node.value, ast.Constant)
        and isinstance(node.value.value, str)
    }


def _resolved(message: str, args: list[ast.expr], constants: dict[str, str]) -> str:
    """The format string with its leading `%s` filled in where the argument is a module
    constant (`log.error("%s %s", ALERT_MARK, what)` logs "PAYOUT_ALERT ...")."""
    parts = message.split("%s")
    done = parts[0]
    for index, rest in enumerate(parts[1:]):
        arg = args[index] if index < len(args) else None
        if "%" in done or not (isinstance(arg, ast.Name) and arg.id in constants):
            return done + "%s" + "%s".join(parts[index + 1 :])
        done += constants[arg.id] + rest
    return done


def function_names() -> list[str]:
    return sorted(p.name for p in FUNCTIONS_DIR.iterdir() if (p / "main.py").is_file())


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m tools.code_facts",
        description="Print what each function's code needs from Google Cloud.",
    )
    parser.add_argument("--json", action="store_true", help="machine-readable output")
    args = parser.parse_args(argv)
    found = [needs(name) for name in function_names()]
    if args.json:
        print(json.dumps([{k: v for k, v in asdict(n).items() if k != "modules"} for n in found]))
        return 0
    for n in found:
        extras = [
            f"auth={n.auth}" if n.auth else "",
            "tasks" if n.creates_tasks else "",
            "push" if n.sends_push else "",
        ]
        kind = "http " if n.is_http else "event"
        print(f"{n.function:16} {kind} {' '.join(e for e in extras if e)}")
        print(f"{'':16} env: {', '.join(n.env) or '-'}")
        print(f"{'':16} iam: {', '.join(n.permissions) or '-'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
