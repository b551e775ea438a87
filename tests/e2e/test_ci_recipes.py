"""The CI recipes run: the steps of `action.yml` and the script of `ci/gitlab/parry-check.yml`, as a
runner would run them, in a fresh virtualenv (the client install: `pip install parry`, here from this
checkout) against the real API, worker and Redis."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import xml.etree.ElementTree as ET
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.e2e.conftest import ROOT, Service, one_database

CHECKS = """
[model]
path = "{model}"
[dataset]
path = "{dataset}"
[evaluation]
batch_size = 100
max_samples = 100
seed = 7
[[checks]]
attack = "fgsm"
eps = 0.05
min_robust_accuracy = {bar}
"""
_EXPRESSION = re.compile(r"\$\{\{\s*inputs\.([\w-]+)\s*\}\}")


@pytest.fixture(scope="module")
def client_venv(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """An empty virtualenv: the action's own install step fills it."""
    venv = tmp_path_factory.mktemp("client") / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True, timeout=120)
    return venv


def _env(venv: Path, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PARRY_", "GITHUB_", "CI_"))}
    env.pop("VIRTUAL_ENV", None)
    env.pop("PYTHONPATH", None)
    env["PATH"] = f"{venv / 'bin'}{os.pathsep}{env.get('PATH', '')}"
    return {**env, **extra}


def action_steps(inputs: dict[str, str]) -> list[tuple[str, str, dict[str, str]]]:
    """(name, script, env) of each `run` step of action.yml, its `${{ inputs.* }}` filled in; `uses`
    steps (actions/setup-python) are the runner's business: the test brings its own Python."""
    action = yaml.safe_load((ROOT / "action.yml").read_text())
    values = {name: str(spec.get("default", "")) for name, spec in action["inputs"].items()} | inputs
    assert set(inputs) <= set(action["inputs"]), "the test passes an input the action does not declare"

    def fill(text: Any) -> str:
        return _EXPRESSION.sub(lambda m: values[m.group(1)], str(text))

    return [
        (step["name"], fill(step["run"]), {k: fill(v) for k, v in (step.get("env") or {}).items()})
        for step in action["runs"]["steps"]
        if "run" in step
    ]


def run_action(venv: Path, workdir: Path, inputs: dict[str, str]) -> tuple[int, dict[str, str]]:
    """The steps in order, as a composite action runs them (bash -e); the last exit code and outputs."""
    outputs, summary = workdir / "github_output", workdir / "step_summary.md"
    outputs.write_text("")
    code = 0
    for name, script, step_env in action_steps(inputs):
        env = _env(venv, GITHUB_OUTPUT=str(outputs), GITHUB_STEP_SUMMARY=str(summary), **step_env)
        proc = subprocess.run(
            ["bash", "-e", "-c", script], cwd=workdir, env=env, capture_output=True, text=True, timeout=900
        )
        code = proc.returncode
        if code != 0:
            assert name == "parry check", f"step {name!r} failed:\n{proc.stdout}\n{proc.stderr}"
            break
    found = dict(line.split("=", 1) for line in outputs.read_text().splitlines() if "=" in line)
    return code, found


def _project(tmp_path: Path, files: dict[str, Path], *, bar: float) -> Path:
    (tmp_path / "parry.toml").write_text(
        CHECKS.format(model=files["keras"], dataset=files["dataset"], bar=bar)
    )
    return tmp_path


@one_database
def test_the_github_action_installs_the_client_and_runs_parry_check(
    service: Service, e2e_files: dict[str, Path], client_venv: Path, tmp_path: Path
) -> None:
    workdir = _project(tmp_path, e2e_files, bar=0.0)
    inputs = {"server": service.base_url, "package": str(ROOT)}
    code, outputs = run_action(client_venv, workdir, inputs)
    assert code == 0 and outputs == {"exit-code": "0"}
    installed = subprocess.run(
        [str(client_venv / "bin" / "python"), "-m", "pip", "list", "--format=json"],
        capture_output=True, text=True, check=True,
    ).stdout  # fmt: skip
    names = {p["name"].lower() for p in json.loads(installed)}
    assert "parry" in names and not names & {"numpy", "tensorflow", "tensorflow-cpu", "fastapi", "keras"}
    root = ET.parse(workdir / "parry-junit.xml").getroot()
    assert root.get("tests") == "1" and root.get("failures") == "0"
    assert json.loads((workdir / "parry-check.json").read_text())["passed"] is True
    assert "Parry robustness check" in (workdir / "step_summary.md").read_text()

    # A bar the model cannot clear: the step fails with exit 1, and the reports say which check failed.
    _project(tmp_path, e2e_files, bar=1.0)
    code, outputs = run_action(client_venv, workdir, inputs)
    assert code == 1 and outputs == {"exit-code": "1"}
    failure = ET.parse(workdir / "parry-junit.xml").getroot().find("testsuite/testcase/failure")
    assert failure is not None and "below the required 100.0%" in str(failure.get("message"))


@one_database
def test_the_gitlab_template_runs_parry_check(
    service: Service, e2e_files: dict[str, Path], client_venv: Path, tmp_path: Path
) -> None:
    job = yaml.safe_load((ROOT / "ci/gitlab/parry-check.yml").read_text())[".parry-check"]
    variables = {k: str(v) for k, v in job["variables"].items()}
    variables |= {"PARRY_CHECK_PACKAGE": str(ROOT), "PARRY_SERVER": service.base_url}
    workdir = _project(tmp_path, e2e_files, bar=0.0)
    script = "\n".join(job["script"])
    proc = subprocess.run(
        ["bash", "-e", "-c", script], cwd=workdir, env=_env(client_venv, **variables),
        capture_output=True, text=True, timeout=900,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stdout + proc.stderr
    for path in [*job["artifacts"]["paths"], job["artifacts"]["reports"]["junit"]]:
        assert (workdir / path).is_file(), path
