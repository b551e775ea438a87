"""The Docker files checked without a Docker engine: compose services, settings names, ports, healthchecks,
volumes, non-root images, and images that install their pyproject extra at the lock's versions (the API's
without TensorFlow, scikit-learn or mlxtend)."""

from __future__ import annotations

import ast
import re
import tomllib
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
# Each image, the extra it installs, and the file that pins that extra's whole closure.
IMAGES = [
    ("Dockerfile.api", "server", "requirements-api.txt"),
    ("Dockerfile.worker", "worker", "requirements-worker.txt"),
    ("Dockerfile.worker-gpu", "worker-gpu", "requirements-worker-gpu.txt"),
]
ENGINE = {"tensorflow", "tensorflow-cpu", "keras", "h5py", "tf-keras", "scikit-learn", "mlxtend", "scipy"}
LINUX = {"sys_platform": "linux", "platform_system": "Linux", "python_version": "3.11"}
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


@pytest.mark.parametrize(("dockerfile", "extra", "pins"), IMAGES)
def test_each_image_installs_its_extra_at_the_pinned_versions(dockerfile: str, extra: str, pins: str) -> None:
    lines = _dockerfile(dockerfile)
    installs = [line for line in lines if "pip install" in line]
    assert f"COPY docker/{pins} /tmp/{pins}" in lines
    assert installs == [
        f"RUN pip install --no-deps -r /tmp/{pins}",
        f'RUN pip install "/src[{extra}]" && pip check',
    ]
    header = (DOCKER / pins).read_text().splitlines()[1]
    assert f"uv pip compile pyproject.toml --extra {extra} -c requirements.lock " in header
    assert header.endswith(f" -o docker/{pins}")


@pytest.mark.parametrize(("extra", "pins"), [(extra, pins) for _, extra, pins in IMAGES])
def test_the_pinned_files_agree_with_the_extras_and_the_lock(extra: str, pins: str) -> None:
    pinned, lock = _pins(DOCKER / pins), _pins(ROOT / "requirements.lock")
    differ = {
        name: (version, lock[name]) for name, version in pinned.items() if lock.get(name, version) != version
    }
    assert differ == {}, "pinned at another version than requirements.lock"
    if extra != "worker-gpu":  # the lock covers server + worker; the CUDA build's packages are the GPU's own
        assert set(pinned) - set(lock) == set()
    for req in _extra_requirements(extra):
        name = canonicalize_name(req.name)
        assert name in pinned, f"{req} ({extra}) is not in docker/{pins}"
        assert req.specifier.contains(pinned[name], prereleases=True), f"{pins} pins {name}=={pinned[name]}"


def test_the_api_image_installs_nothing_of_the_engine() -> None:
    assert set(_pins(DOCKER / "requirements-api.txt")) & ENGINE == set()
    assert not re.search(
        r"tensorflow|keras|sklearn|scikit|mlxtend", "\n".join(_dockerfile("Dockerfile.api")), re.I
    )


def test_the_gpu_extra_is_the_worker_extra_with_the_cuda_build() -> None:
    optional = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["optional-dependencies"]
    cpu, gpu = set(optional["worker"]), set(optional["worker-gpu"])
    assert cpu - gpu == {"tensorflow-cpu==2.21.0; sys_platform == 'linux'"}
    assert gpu - cpu == {"tensorflow[and-cuda]==2.21.0; sys_platform == 'linux'"}


def test_every_third_party_import_of_service_is_in_the_api_image_or_deferred_to_the_worker() -> None:
    """A module-level import must be in the server extra's pins; a deferred one at least in the worker's
    (datasets.load_builtin imports mlxtend and scikit-learn, and runs only in workers)."""
    importable = metadata.packages_distributions()
    api, worker = set(_pins(DOCKER / "requirements-api.txt")), set(_pins(DOCKER / "requirements-worker.txt"))
    missing = {}
    for path in (ROOT / "service").rglob("*.py"):
        for module, top_level in _imports(path):
            if module in {"service", "workers", "__future__"} or module in _stdlib():
                continue
            dists = {canonicalize_name(d) for d in importable.get(module, [])}
            assert dists, f"{path.relative_to(ROOT)} imports {module}, which is not installed here"
            if dists.isdisjoint(api if top_level else worker):
                missing[module] = f"{path.relative_to(ROOT)} ({sorted(dists)})"
    assert missing == {}


def test_the_gpu_worker_pins_one_gpu_and_the_images_ignore_local_state() -> None:
    final = _final_stage("Dockerfile.worker-gpu")
    assert any(line.startswith("CMD ") and '"--gpu"' in line for line in final)
    gpu_pins = _pins(DOCKER / "requirements-worker-gpu.txt")
    assert "tensorflow" in gpu_pins and "tensorflow-cpu" not in gpu_pins  # two builds would clash
    assert "nvidia-cudnn-cu12" in gpu_pins and "tensorflow-cpu" in _pins(DOCKER / "requirements-worker.txt")
    ignored = (ROOT / ".dockerignore").read_text().split()
    assert {".git", "tests", "parry-data", ".env"} <= set(ignored)


def test_operations_doc_lists_every_setting() -> None:
    documented = set(PARRY_VAR.findall((ROOT / "docs" / "operations.md").read_text()))
    assert SETTING_NAMES - documented == set(), "settings missing from docs/operations.md"
    assert documented - SETTING_NAMES == set(), "docs/operations.md names variables that do not exist"


def _pins(path: Path) -> dict[str, str]:
    pins = {}
    for line in path.read_text().splitlines():
        if line and not line.startswith((" ", "#")):
            name, _, version = line.partition("==")
            assert version, f"{path.name}: {line!r} is not an exact pin"
            pins[canonicalize_name(Requirement(name).name)] = version.split(";")[0].strip()
    return pins


def _extra_requirements(extra: str) -> list[Requirement]:
    """What installing parry[extra] asks for directly on Linux: the base dependencies, the extra's, and
    those of the extras it names (`parry[server]`)."""
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    wanted, todo, found = set(), [extra], [Requirement(r) for r in project["dependencies"]]
    while todo:
        name = todo.pop()
        wanted.add(name)
        for raw in project["optional-dependencies"][name]:
            req = Requirement(raw)
            if canonicalize_name(req.name) == "parry":
                todo += sorted(req.extras - wanted)
            elif req.marker is None or req.marker.evaluate(LINUX):
                found.append(req)
    return found


def _imports(path: Path) -> set[tuple[str, bool]]:
    """Top-level module names imported, each with whether the import runs at module level."""
    tree = ast.parse(path.read_text())
    deferred = {id(n) for fn in ast.walk(tree) if isinstance(fn, ast.FunctionDef) for n in ast.walk(fn)}
    modules = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            modules |= {(alias.name.split(".")[0], id(node) not in deferred) for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            modules.add((node.module.split(".")[0], id(node) not in deferred))
    return modules


def _stdlib() -> frozenset[str]:
    import sys

    return frozenset(sys.stdlib_module_names)
