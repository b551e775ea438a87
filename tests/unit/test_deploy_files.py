"""The Docker files checked without a Docker engine: compose services, settings names, ports, healthchecks,
volumes, non-root images, and an API image whose install closure holds no TensorFlow."""

from __future__ import annotations

import ast
import re
from importlib import metadata
from pathlib import Path
from typing import Any

import pytest
import yaml
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

from service.settings import Settings

ROOT = Path(__file__).resolve().parents[2]
DOCKER = ROOT / "docker"
DOCKERFILES = ["Dockerfile.api", "Dockerfile.worker", "Dockerfile.worker-gpu"]
TENSORFLOW = {"tensorflow", "tensorflow-cpu", "keras", "h5py", "tf-keras"}
SETTING_NAMES = {f"PARRY_{name.upper()}" for name in Settings.model_fields}
PARRY_VAR = re.compile(r"\bPARRY_[A-Z0-9_]+\b")


@pytest.fixture(scope="module")
def compose() -> dict[str, Any]:
    data = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
    assert isinstance(data, dict)
    return data


def _dockerfile(name: str) -> list[str]:
    """Instructions with continuation lines joined."""
    text = (DOCKER / name).read_text().replace("\\\n", " ")
    return [line.strip() for line in text.splitlines() if line.strip() and not line.strip().startswith("#")]


def _final_stage(name: str) -> list[str]:
    lines = _dockerfile(name)
    last_from = max(i for i, line in enumerate(lines) if line.startswith("FROM "))
    return lines[last_from:]


def _requirement_names(path: Path) -> set[str]:
    names = set()
    for line in path.read_text().splitlines():
        line = line.split("#", 1)[0].strip()
        if line:
            names.add(canonicalize_name(Requirement(line).name))
    return names


def test_compose_has_the_services_of_the_topology(compose: dict[str, Any]) -> None:
    services = compose["services"]
    assert {"redis", "postgres", "api", "worker", "flower"} <= set(services)
    command = " ".join(services["redis"]["command"])
    assert "--appendonly yes" in command and "--maxmemory-policy noeviction" in command
    assert services["api"]["build"]["dockerfile"] == "docker/Dockerfile.api"
    assert services["worker"]["build"]["dockerfile"] == "docker/Dockerfile.worker"
    assert services["worker-gpu"]["build"]["dockerfile"] == "docker/Dockerfile.worker-gpu"
    assert "gpu" in services["worker-gpu"]["profiles"]
    devices = services["worker-gpu"]["deploy"]["resources"]["reservations"]["devices"]
    assert devices[0]["capabilities"] == ["gpu"] and len(devices[0]["device_ids"]) == 1  # one GPU each
    for name in ("api", "worker"):
        depends = services[name]["depends_on"]
        assert depends["redis"]["condition"] == depends["postgres"]["condition"] == "service_healthy"


def test_every_parry_variable_is_a_setting(compose: dict[str, Any]) -> None:
    used = set(PARRY_VAR.findall((ROOT / "docker-compose.yml").read_text()))
    for name in DOCKERFILES:
        used |= set(PARRY_VAR.findall((DOCKER / name).read_text()))
    assert used, "no PARRY_ variable found at all"
    assert used - SETTING_NAMES == set(), "not fields of service/settings.py"
    for service in ("api", "worker"):
        env = compose["services"][service]["environment"]
        assert {"PARRY_DATA_DIR", "PARRY_DATABASE_URL", "PARRY_REDIS_URL"} <= set(env)
        assert env["PARRY_DATABASE_URL"].startswith("postgresql+psycopg://")
        assert env["PARRY_REDIS_URL"].startswith("redis://redis:")
    assert set(compose["services"]["api"]["environment"]) - SETTING_NAMES == set()


def test_api_port_and_healthchecks_hit_readyz(compose: dict[str, Any]) -> None:
    api = compose["services"]["api"]
    port = api["environment"]["PARRY_PORT"]
    assert any(str(mapping).endswith(f":{port}") for mapping in api["ports"])
    assert "/readyz" in " ".join(api["healthcheck"]["test"]) and f":{port}/readyz" in " ".join(
        api["healthcheck"]["test"]
    )
    assert api["environment"]["PARRY_HOST"] == "0.0.0.0"
    assert "PARRY_API_KEYS" in api["environment"]  # a non-loopback API refuses to start without keys
    health = [line for line in _final_stage("Dockerfile.api") if line.startswith("HEALTHCHECK")]
    assert len(health) == 1 and f":{port}/readyz" in health[0]
    assert f"EXPOSE {port}" in _final_stage("Dockerfile.api")
    for service in ("redis", "postgres", "worker", "worker-gpu"):
        assert compose["services"][service]["healthcheck"]["test"], service


def test_api_and_workers_share_the_data_volume(compose: dict[str, Any]) -> None:
    declared = set(compose["volumes"])
    for service in ("api", "worker", "worker-gpu"):
        spec = compose["services"][service]
        data_dir = spec["environment"]["PARRY_DATA_DIR"]
        mounts = dict(mount.split(":", 1)[::-1] for mount in spec["volumes"])
        assert mounts.get(data_dir) == "parry-data", service
    assert {"parry-data", "redis-data", "postgres-data"} <= declared
    assert "/data" in compose["services"]["redis"]["volumes"][0]
    assert compose["services"]["postgres"]["volumes"][0].endswith(":/var/lib/postgresql/data")


@pytest.mark.parametrize("name", DOCKERFILES)
def test_images_run_as_a_non_root_user_and_copy_what_exists(name: str) -> None:
    final = _final_stage(name)
    users = [line.split()[1] for line in final if line.startswith("USER ")]
    assert users and users[-1] not in {"root", "0"}
    assert any("useradd" in line and users[-1] in line for line in final)
    assert final[0].startswith("FROM python:3.11-slim")  # small base, build tools left in the build stage
    for line in _dockerfile(name):
        if line.startswith("COPY ") and "--from=" not in line:
            for source in line.split()[1:-1]:
                assert (ROOT / source).exists(), f"{name}: {source} does not exist"
    assert any(line.startswith("CMD ") and "parry" in line for line in final)


def test_the_api_image_installs_no_tensorflow() -> None:
    lines = _dockerfile("Dockerfile.api")
    text = "\n".join(lines)
    assert not re.search(r"tensorflow|keras", text, re.IGNORECASE)
    installs = [line for line in lines if "pip install" in line]
    assert any("-r /tmp/requirements-api.txt" in line for line in installs)
    assert [line for line in installs if "/src" in line] == ["RUN pip install --no-deps /src"]
    api_requirements = _requirement_names(DOCKER / "requirements-api.txt")
    assert api_requirements.isdisjoint(TENSORFLOW)
    # Everything pyproject depends on except TensorFlow is in the API image.
    declared = {
        canonicalize_name(Requirement(r).name) for r in metadata.requires("parry") or [] if "extra" not in r
    }
    assert declared - TENSORFLOW - api_requirements == set()
    # ... and nothing those pull in is TensorFlow either (checked on what is installed here).
    closure = _closure(api_requirements)
    assert closure.isdisjoint(TENSORFLOW), closure & TENSORFLOW


def test_the_api_requirements_cover_every_third_party_import_of_service() -> None:
    importable = metadata.packages_distributions()
    closure = _closure(_requirement_names(DOCKER / "requirements-api.txt"))
    missing = {}
    for path in (ROOT / "service").rglob("*.py"):
        for module in _imports(path):
            if module in {"service", "workers", "__future__"} or module in _stdlib():
                continue
            dists = {canonicalize_name(d) for d in importable.get(module, [])}
            if dists and dists.isdisjoint(closure):
                missing[module] = f"{path.relative_to(ROOT)} ({sorted(dists)})"
    assert missing == {}


def test_the_gpu_worker_pins_one_gpu_and_the_images_ignore_local_state() -> None:
    final = _final_stage("Dockerfile.worker-gpu")
    assert any(line.startswith("CMD ") and '"--gpu"' in line for line in final)
    assert any("tensorflow[and-cuda]" in line for line in _dockerfile("Dockerfile.worker-gpu"))
    assert not any("tensorflow-cpu" in line for line in _dockerfile("Dockerfile.worker-gpu"))
    ignored = (ROOT / ".dockerignore").read_text().split()
    assert {".git", "tests", "parry-data", ".env"} <= set(ignored)


def test_operations_doc_lists_every_setting() -> None:
    documented = set(PARRY_VAR.findall((ROOT / "docs" / "operations.md").read_text()))
    assert SETTING_NAMES - documented == set(), "settings missing from docs/operations.md"
    assert documented - SETTING_NAMES == set(), "docs/operations.md names variables that do not exist"


def _closure(names: set[str]) -> set[str]:
    """The installed distributions `names` need, following their requirements (and the extras asked for)."""
    extras = {canonicalize_name(Requirement(line).name): Requirement(line).extras for line in _lines()}
    seen: set[str] = set()
    todo = list(names)
    while todo:
        name = todo.pop()
        if name in seen:
            continue
        seen.add(name)
        try:
            requires = metadata.requires(name) or []
        except metadata.PackageNotFoundError:
            continue
        for raw in requires:
            req = Requirement(raw)
            wanted = {"", *extras.get(name, set())}
            if req.marker is None or any(req.marker.evaluate({"extra": e}) for e in wanted):
                todo.append(canonicalize_name(req.name))
    return seen


def _lines() -> list[str]:
    lines = (DOCKER / "requirements-api.txt").read_text().splitlines()
    return [line.split("#", 1)[0].strip() for line in lines if line.split("#", 1)[0].strip()]


def _imports(path: Path) -> set[str]:
    tree = ast.parse(path.read_text())
    modules = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            modules |= {alias.name.split(".")[0] for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            modules.add(node.module.split(".")[0])
    return modules


def _stdlib() -> frozenset[str]:
    import sys

    return frozenset(sys.stdlib_module_names)
