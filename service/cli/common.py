"""What the `parry` commands share: exit codes, errors, output, server options and job helpers.

The server is `--server`, else PARRY_SERVER, else http://127.0.0.1:8000; the key is `--api-key`, else
PARRY_API_KEY. Exit codes: 0 done, 1 a check failed, 2 the command could not do its work (one sentence
on stderr, never a traceback).
"""

from __future__ import annotations

import argparse
import functools
import sys
import tempfile
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, TypeAlias

from pydantic import ValidationError
from rich.console import Console

from service.cli.client import ClientError, ParryClient, zip_directory
from service.cli.config import CheckConfigError
from service.cli.progress import JobProgressDisplay
from service.domain.attack_syntax import AttackSyntaxError, describe_validation_error
from service.domain.builtins import DatasetError, is_builtin
from service.domain.jobs import TERMINAL_STATUSES, JobStatus
from service.domain.verdicts import BaselineError

EXIT_OK, EXIT_CHECK_FAILED, EXIT_ERROR = 0, 1, 2
Commands: TypeAlias = "argparse._SubParsersAction[argparse.ArgumentParser]"  # not subscriptable at run time


class CommandError(Exception):
    """A command that cannot go on; one sentence, exit code 2."""


USER_ERRORS = (ClientError, CheckConfigError, BaselineError, AttackSyntaxError, DatasetError, CommandError)


def out(text: str) -> None:
    sys.stdout.write(text + "\n")
    sys.stdout.flush()


def err(text: str) -> None:
    sys.stderr.write(text + "\n")
    sys.stderr.flush()


def error_sentence(exc: Exception) -> str:
    """The one sentence a user sees for an error they can cause."""
    return describe_validation_error(exc) if isinstance(exc, ValidationError) else str(exc)


def guarded(run: Callable[[argparse.Namespace], int]) -> Callable[[argparse.Namespace], int]:
    """Every error a user can cause becomes `parry: <sentence>` on stderr and exit code 2."""

    @functools.wraps(run)
    def wrapper(args: argparse.Namespace) -> int:
        try:
            return run(args)
        except (*USER_ERRORS, ValidationError) as exc:
            err(f"parry: {error_sentence(exc)}")
            return EXIT_ERROR

    return wrapper


def server_options() -> argparse.ArgumentParser:
    parent = argparse.ArgumentParser(add_help=False)
    group = parent.add_argument_group("server")
    group.add_argument(
        "--server", default=None, help="server URL (default PARRY_SERVER, http://127.0.0.1:8000)"
    )
    group.add_argument("--api-key", default=None, help="API key (default PARRY_API_KEY)")
    group.add_argument(
        "--request-timeout", type=float, default=30.0, metavar="S", help="seconds per request (default 30)"
    )
    group.add_argument(
        "--retries", type=int, default=5, help="retries on connection errors and 5xx answers (default 5)"
    )
    return parent


def make_client(args: argparse.Namespace) -> ParryClient:
    return ParryClient.from_env(args.server, args.api_key, timeout=args.request_timeout, retries=args.retries)


def parse_input_range(text: str) -> tuple[float, float]:
    """`--input-range LO,HI` as two numbers with LO < HI."""
    try:
        lo, hi = (float(part) for part in text.split(","))
    except ValueError:
        raise CommandError(f"--input-range takes two numbers 'LO,HI' (e.g. 0,255), got {text!r}") from None
    if not lo < hi:
        raise CommandError(f"--input-range needs LO < HI, got {text!r}")
    return lo, hi


def check_evaluation_work(args: argparse.Namespace, *, corruptions: object | None) -> None:
    """`parry submit` and `parry evaluate` need an attack, an OOD set or corruptions to measure."""
    if not args.attack and args.ood_dataset is None and corruptions is None:
        raise CommandError(
            "give at least one --attack, or --ood-dataset or --corruptions to measure OOD detection or "
            "corruption accuracy only"
        )
    if args.ood_scores is not None and args.ood_dataset is None:
        raise CommandError("--ood-scores needs --ood-dataset")


@contextmanager
def model_file(path: Path) -> Iterator[Path]:
    """The file to upload: the path itself, or a SavedModel directory zipped (byte-identical every time)."""
    if not path.exists():
        raise CommandError(f"model {path} does not exist")
    if not path.is_dir():
        yield path
        return
    with tempfile.TemporaryDirectory(prefix="parry-") as tmp:
        yield zip_directory(path, Path(tmp) / f"{path.resolve().name}.zip")


def ensure_ready_model(
    client: ParryClient,
    path: Path,
    *,
    name: str | None,
    output: str,
    wait: bool = True,
    say: Callable[[str], None],
) -> dict[str, Any]:
    """Upload a model unless the server has its bytes, then wait for its validation; rejected is an error."""
    with model_file(path) as upload:
        model, uploaded = client.ensure_model(upload, name=name, output=output)
    say(f"model {model['id']}: " + ("uploaded" if uploaded else "the server already has these bytes"))
    if wait and model["status"] == "validating":
        model = client.wait_model(model["id"])
    if model["status"] == "rejected":
        raise CommandError(
            f"the server rejected model {path.name}: {model.get('rejection') or 'no reason given'}"
        )
    return model


def ensure_dataset_id(client: ParryClient, ref: str, *, name: str | None, say: Callable[[str], None]) -> str:
    """A dataset id for `ref`: an id as given (builtin:..., dst_...), or an .npz file uploaded if needed."""
    path = Path(ref)
    if is_builtin(ref) or (ref.startswith("dst_") and not path.exists()):
        return ref
    if not path.is_file():
        raise CommandError(f"dataset {ref} is neither a file nor a dataset id (dst_... or builtin:...)")
    dataset, uploaded = client.ensure_dataset(path, name=name)
    say(f"dataset {dataset['id']}: " + ("uploaded" if uploaded else "the server already has these bytes"))
    return str(dataset["id"])


def resolve_model_id(client: ParryClient, ref: str, *, say: Callable[[str], None]) -> str:
    """A model id for `ref`: an id as given (mdl_...), or a file uploaded if needed and validated."""
    path = Path(ref)
    if ref.startswith("mdl_") and not path.exists():
        return ref
    return str(ensure_ready_model(client, path, name=None, output="auto", say=say)["id"])


def describe_job(job: dict[str, Any]) -> str:
    text = f"job {job['id']} ({job.get('kind', '?')}): {job['status']}"
    progress = job.get("progress") or {}
    if job["status"] == JobStatus.RUNNING and progress:
        text += f" {100 * float(progress.get('fraction', 0)):.0f}%"
        if progress.get("stage"):
            text += f", {progress['stage']}"
        if progress.get("eta_seconds") is not None:
            text += f", ETA {float(progress['eta_seconds']):.0f} s"
    if job.get("reused_from"):
        text += f" (result reused from {job['reused_from']})"
    if job["status"] == JobStatus.FAILED and job.get("error"):
        text += f": {job['error'].get('detail')}"
    return text


def wait_for_job(client: ParryClient, job_id: str, *, timeout: float | None, quiet: bool) -> dict[str, Any]:
    """Poll the job to its end with a progress display on stderr; failed or cancelled is a CommandError."""
    with JobProgressDisplay(Console(stderr=True), job_id=job_id, quiet=quiet) as display:
        job = client.wait_job(job_id, timeout=timeout, on_update=display.update)
    if job["status"] == JobStatus.FAILED:
        detail = (job.get("error") or {}).get("detail") or "no reason was given"
        raise CommandError(f"job {job_id} failed: {detail}")
    if job["status"] == JobStatus.CANCELLED:
        raise CommandError(f"job {job_id} was cancelled")
    assert job["status"] in TERMINAL_STATUSES
    return job
