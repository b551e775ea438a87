"""A command whose install is missing names it in one sentence, exit code 2, before doing anything else.

Each case runs `parry` in a subprocess in which the named modules cannot be imported, as if not installed.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[3]
WITHOUT = """
import sys
for name in sys.argv[1].split(","):
    sys.modules[name] = None
from service.cli.main import main
sys.exit(main(sys.argv[2:]))
"""


def _parry_without(modules: tuple[str, ...], *argv: str, tmp_path: Path) -> subprocess.CompletedProcess[str]:
    # No PARRY_REDIS_URL, an empty data dir: had the check come late, the command would fail otherwise.
    env = {"PATH": "/usr/bin:/bin", "PARRY_DATA_DIR": str(tmp_path / "data")}
    return subprocess.run(
        [sys.executable, "-c", WITHOUT, ",".join(modules), *argv],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=ROOT,
        env=env,
    )


@pytest.mark.parametrize(
    ("blocked", "argv", "install"),
    [
        (
            ("tensorflow",),
            ["evaluate", "--model", "nope", "--dataset", "nope.npz", "--attack", "x"],
            "worker",
        ),
        (("tensorflow",), ["worker"], "worker"),
        (("tensorflow", "keras"), ["demo"], "worker"),
        (("sklearn", "mlxtend"), ["worker", "--gpu", "0"], "worker"),
        (("fastapi",), ["serve"], "server"),
        (("tensorflow", "fastapi"), ["serve"], "worker"),  # the worker install brings the server's too
        (("uvicorn", "fastapi"), ["api"], "server"),
        (("sqlalchemy",), ["keys", "list"], "server"),
        (("pydantic_settings",), ["keys", "create", "--name", "ci"], "server"),
    ],
)
def test_a_missing_install_is_named(
    blocked: tuple[str, ...], argv: list[str], install: str, tmp_path: Path
) -> None:
    done = _parry_without(blocked, *argv, tmp_path=tmp_path)
    assert done.returncode == 2, done.stderr
    lines = done.stderr.splitlines()
    assert len(lines) == 1 and lines[0].endswith(f"pip install 'parry[{install}]'"), done.stderr
    assert lines[0].startswith(f"parry: parry {argv[0]} needs the {install} install")
    assert all(name in lines[0] for name in blocked)
    assert not (tmp_path / "data").exists()  # nothing was started or created


def test_with_its_install_a_command_goes_on_to_its_own_checks(tmp_path: Path) -> None:
    done = _parry_without(("mlxtend_unrelated",), "worker", tmp_path=tmp_path)
    assert done.returncode == 2 and "PARRY_REDIS_URL is not set" in done.stderr, done.stderr
