"""requirements.lock pins every dependency pyproject.toml names, within its range, and CI installs from it."""

from __future__ import annotations

import re
import tomllib
from pathlib import Path

from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

ROOT = Path(__file__).resolve().parents[2]


def _pins() -> dict[str, str]:
    pins = {}
    for line in (ROOT / "requirements.lock").read_text().splitlines():
        if line and not line.startswith((" ", "#")):
            name, _, version = line.partition("==")
            assert version, f"requirements.lock line {line!r} is not an exact pin"
            pins[canonicalize_name(name)] = version.split(";")[0].strip()
    return pins


def _locked_extras() -> list[str]:
    """The extras the lock was compiled for, read from the command in its header."""
    command = (ROOT / "requirements.lock").read_text().splitlines()[1]
    return re.findall(r"--extra (\S+)", command)


def _declared() -> list[Requirement]:
    """What the locked extras ask for; `parry[server]` inside an extra names another extra, not a package."""
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    names = [*project["dependencies"]]
    for extra in _locked_extras():
        names += project["optional-dependencies"][extra]
    return [r for r in map(Requirement, names) if canonicalize_name(r.name) != "parry"]


def test_the_lock_pins_every_declared_dependency_within_its_range() -> None:
    pins = _pins()
    for req in _declared():
        if req.marker is not None and not req.marker.evaluate({"extra": "test", "sys_platform": "linux"}):
            continue
        name = canonicalize_name(req.name)
        assert name in pins, f"{req.name} is in pyproject.toml but not pinned in requirements.lock"
        assert req.specifier.contains(pins[name], prereleases=True), (
            f"requirements.lock pins {req.name}=={pins[name]}, outside pyproject.toml's {req.specifier}"
        )


def test_the_lock_covers_the_server_worker_and_test_installs_as_the_readme_says() -> None:
    assert sorted(_locked_extras()) == ["server", "test", "worker"]
    command = (ROOT / "requirements.lock").read_text().splitlines()[1].removeprefix("#").strip()
    readme = " ".join((ROOT / "README.md").read_text().replace("\\\n", " ").split())
    assert command in readme, "the README's Development section does not give the lock's command"


def test_ci_runs_the_readme_test_command_verbatim_in_a_fresh_virtualenv() -> None:
    readme = (ROOT / "README.md").read_text()
    ci = (ROOT / ".ci" / "run").read_text()
    command = next(line.strip() for line in readme.splitlines() if "python3 -m pytest" in line)
    assert "requirements.lock" in command and command in ci
    assert re.search(r"python3 -m venv ", ci) and ci.index("python3 -m venv") < ci.index(command)
