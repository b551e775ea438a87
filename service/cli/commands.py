"""`parry` commands that talk to a server: upload-model, upload-dataset, submit, train, status, wait,
cancel, report, download. `check` (the CI gate) is in `check.py`, the listings (jobs, models, datasets)
in `listings.py`; what they all use is in `common.py`.

The server is `--server`, else PARRY_SERVER, else http://127.0.0.1:8000; the key is `--api-key`, else
PARRY_API_KEY. Exit codes: 0 done, 1 a check failed, 2 the command could not do its work (one sentence
on stderr, never a traceback).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

from rich.console import Console

from service.cli.client import ParryClient
from service.cli.common import (
    EXIT_OK,
    CommandError,
    Commands,
    check_evaluation_work,
    describe_job,
    ensure_dataset_id,
    ensure_ready_model,
    err,
    guarded,
    make_client,
    out,
    parse_input_range,
    resolve_model_id,
    wait_for_job,
)
from service.cli.corruption_options import add_corruption_arguments, corruptions_from_args
from service.cli.tables import WIDE, job_summary, output_console
from service.domain.attack_syntax import parse_attack
from service.domain.specs import EvaluationOptions, OODSpec, TrainingSpec

REPORT_FORMATS = ("table", "json", "markdown", "junit", "html")


def add_client_commands(commands: Commands, server: argparse.ArgumentParser) -> None:
    """Add the server-client commands to the `parry` parser's subcommands (`server`: their options)."""
    _add_upload_commands(commands, server)
    _add_submit(commands, server)
    _add_train(commands, server)
    _add_job_commands(commands, server)


# ---- upload-model, upload-dataset ----------------------------------------------------------------------


def _add_upload_commands(commands: Commands, server: argparse.ArgumentParser) -> None:
    cmd = commands.add_parser(
        "upload-model",
        parents=[server],
        help="upload a model (skipped when the server has these bytes) and wait for its validation",
    )
    cmd.add_argument("file", type=Path, help="SavedModel archive or directory, .keras or .h5 file")
    cmd.add_argument("--name", default=None)
    cmd.add_argument("--output", choices=("auto", "logits", "probabilities"), default="auto")
    cmd.add_argument("--no-wait", action="store_true", help="do not wait for the validation")
    cmd.add_argument("--json", action="store_true", help="print the Model as JSON")
    cmd.set_defaults(run=guarded(_run_upload_model))

    cmd = commands.add_parser(
        "upload-dataset", parents=[server], help="upload an .npz dataset (skipped when the server has it)"
    )
    cmd.add_argument("file", type=Path, help=".npz with arrays x and y")
    cmd.add_argument("--name", default=None)
    cmd.add_argument("--json", action="store_true", help="print the Dataset as JSON")
    cmd.set_defaults(run=guarded(_run_upload_dataset))


def _run_upload_model(args: argparse.Namespace) -> int:
    with make_client(args) as client:
        model = ensure_ready_model(
            client, args.file, name=args.name, output=args.output, wait=not args.no_wait, say=err
        )
    out(json.dumps(model, indent=2) if args.json else str(model["id"]))
    return EXIT_OK


def _run_upload_dataset(args: argparse.Namespace) -> int:
    if not args.file.is_file():
        raise CommandError(f"dataset {args.file} does not exist")
    with make_client(args) as client:
        dataset, uploaded = client.ensure_dataset(args.file, name=args.name)
    err(f"dataset {dataset['id']}: " + ("uploaded" if uploaded else "the server already has these bytes"))
    out(json.dumps(dataset, indent=2) if args.json else str(dataset["id"]))
    return EXIT_OK


# ---- submit, train -------------------------------------------------------------------------------------


def _add_wait_options(cmd: argparse.ArgumentParser) -> None:
    cmd.add_argument("--wait", action="store_true", help="wait for the job and print how it ended")
    cmd.add_argument(
        "--timeout", type=float, default=None, metavar="S", help="give up waiting after S seconds"
    )
    cmd.add_argument("--quiet", action="store_true", help="no progress output")
    cmd.add_argument(
        "--idempotency-key", default=None, help="reuse to make a retried submission return the first job"
    )


def _add_submit(commands: Commands, server: argparse.ArgumentParser) -> None:
    cmd = commands.add_parser(
        "submit",
        parents=[server],
        help="submit an evaluation to the server (`parry evaluate` runs one locally)",
        description="Submit an evaluation; prints the job id (or, with --wait, follows it to the end).",
    )
    cmd.add_argument("--model", required=True, help="model id (mdl_...) or a model file to upload")
    cmd.add_argument(
        "--dataset", required=True, help="dataset id (dst_..., builtin:...) or an .npz to upload"
    )
    cmd.add_argument(
        "--attack",
        action="append",
        default=[],
        metavar="SPEC",
        help="e.g. 'pgd:eps=0.3,steps=40'; at least one unless --ood-dataset is given",
    )
    cmd.add_argument(
        "--ood-dataset",
        default=None,
        metavar="D",
        help="measure OOD detection against this dataset (id or .npz; labels not needed)",
    )
    cmd.add_argument(
        "--ood-scores", default=None, metavar="LIST", help="msp,max_logit,energy (the default: all three)"
    )
    cmd.add_argument("--input-range", default="0,1", metavar="LO,HI")
    cmd.add_argument("--max-samples", type=int, default=None)
    cmd.add_argument("--batch-size", type=int, default=256)
    cmd.add_argument("--seed", type=int, default=0)
    cmd.add_argument(
        "--no-cache", action="store_true", help="run even if an identical evaluation has a result"
    )
    add_corruption_arguments(cmd)
    _add_wait_options(cmd)
    cmd.set_defaults(run=guarded(_run_submit))


def _run_submit(args: argparse.Namespace) -> int:
    corruptions = corruptions_from_args(args)
    check_evaluation_work(args, corruptions=corruptions)
    scores = None if args.ood_scores is None else [s.strip() for s in args.ood_scores.split(",") if s.strip()]
    ood = None if args.ood_dataset is None else OODSpec.model_validate(
        {"dataset_id": "-"} | ({} if scores is None else {"scores": scores})
    )  # fmt: skip
    options = EvaluationOptions(
        attacks=[parse_attack(text) for text in args.attack],
        ood=ood,
        input_range=parse_input_range(args.input_range),
        max_samples=args.max_samples,
        batch_size=args.batch_size,
        seed=args.seed,
        corruptions=corruptions,
    )
    with make_client(args) as client:
        model_id = resolve_model_id(client, args.model, say=err)
        dataset_id = ensure_dataset_id(client, args.dataset, name=None, say=err)
        spec = {**options.model_dump(mode="json"), "model_id": model_id, "dataset_id": dataset_id}
        if ood is not None:
            ood_id = ensure_dataset_id(client, args.ood_dataset, name=None, say=err)
            spec["ood"] = {**ood.model_dump(mode="json"), "dataset_id": ood_id}
        spec["no_cache"] = args.no_cache
        job = client.submit_evaluation(spec, idempotency_key=args.idempotency_key)
        if job.get("reused_from"):
            err(f"job {job['id']}: result reused from job {job['reused_from']} (--no-cache runs it again)")
        return _submitted(client, job, args)


def _add_train(commands: Commands, server: argparse.ArgumentParser) -> None:
    cmd = commands.add_parser(
        "train",
        parents=[server],
        help="submit an adversarial training to the server",
        description="Submit an adversarial training (POST /v1/trainings); prints the job id.",
    )
    cmd.add_argument("--model", required=True, help="model id (mdl_...) or a model file to upload")
    cmd.add_argument("--dataset", required=True, help="training data: dataset id or an .npz to upload")
    cmd.add_argument("--validation-dataset", default=None, help="dataset id or .npz (default: 10%% held out)")
    cmd.add_argument("--method", choices=("pgd", "fgsm-rs", "trades"), default="pgd")
    cmd.add_argument("--eps", type=float, required=True)
    cmd.add_argument("--norm", choices=("linf", "l2"), default="linf")
    cmd.add_argument("--steps", type=int, default=None)
    cmd.add_argument("--epochs", type=int, default=None)
    cmd.add_argument("--batch-size", type=int, default=None)
    cmd.add_argument("--learning-rate", type=float, default=None)
    cmd.add_argument("--seed", type=int, default=None)
    cmd.add_argument("--input-range", default=None, metavar="LO,HI")
    cmd.add_argument(
        "--evaluate", action="append", default=[], metavar="SPEC", help="attack before and after"
    )
    cmd.add_argument("--spec", type=Path, default=None, help="JSON file with more TrainingSpec fields")
    _add_wait_options(cmd)
    cmd.set_defaults(run=guarded(_run_train))


def _run_train(args: argparse.Namespace) -> int:
    extra: dict[str, Any] = {}
    if args.spec is not None:
        try:
            extra = json.loads(args.spec.read_text())
        except (OSError, ValueError) as exc:
            raise CommandError(f"cannot read training spec {args.spec}: {exc}") from None
        if not isinstance(extra, dict):
            raise CommandError(f"training spec {args.spec} must hold a JSON object")
    flags = {
        "method": args.method,
        "eps": args.eps,
        "norm": args.norm,
        "steps": args.steps,
        "epochs": args.epochs,
        "batch_size": args.batch_size,
        "learning_rate": args.learning_rate,
        "seed": args.seed,
        "input_range": parse_input_range(args.input_range) if args.input_range else None,
        "evaluate": [parse_attack(text).model_dump(mode="json") for text in args.evaluate] or None,
    }
    with make_client(args) as client:
        model_id = resolve_model_id(client, args.model, say=err)
        dataset_id = ensure_dataset_id(client, args.dataset, name=None, say=err)
        body = {**extra, **{k: v for k, v in flags.items() if v is not None}}
        body.update(model_id=model_id, dataset_id=dataset_id)
        if args.validation_dataset:
            body["validation_dataset_id"] = ensure_dataset_id(
                client, args.validation_dataset, name=None, say=err
            )
        spec = TrainingSpec.model_validate(body)  # a typo is a sentence here, not a 422 later
        job = client.submit_training(
            spec.model_dump(mode="json", exclude_unset=True), idempotency_key=args.idempotency_key
        )
        return _submitted(client, job, args)


def _submitted(client: ParryClient, job: dict[str, Any], args: argparse.Namespace) -> int:
    if not args.wait:
        out(str(job["id"]))
        return EXIT_OK
    err(f"job {job['id']} submitted")
    return _follow(client, str(job["id"]), timeout=args.timeout, quiet=args.quiet)


# ---- status, wait, report, download --------------------------------------------------------------------


def _add_job_commands(commands: Commands, server: argparse.ArgumentParser) -> None:
    cmd = commands.add_parser("status", parents=[server], help="show a job's status and progress")
    cmd.add_argument("job")
    cmd.add_argument("--json", action="store_true", help="print the whole Job as JSON")
    cmd.set_defaults(run=guarded(_run_status))

    cmd = commands.add_parser(
        "wait", parents=[server], help="wait for a job to finish (exit 0 succeeded, 2 failed or cancelled)"
    )
    cmd.add_argument("job")
    cmd.add_argument("--timeout", type=float, default=None, metavar="S")
    cmd.add_argument("--quiet", action="store_true")
    cmd.set_defaults(run=guarded(_run_wait))

    cmd = commands.add_parser("cancel", parents=[server], help="cancel a queued or running job")
    cmd.add_argument("job")
    cmd.add_argument("--wait", action="store_true", help="wait until the job has stopped")
    cmd.add_argument("--timeout", type=float, default=None, metavar="S")
    cmd.set_defaults(run=guarded(_run_cancel))

    cmd = commands.add_parser(
        "report",
        parents=[server],
        help="print or save a job's report",
        description="Print a job's report: a table on a terminal, JSON when piped or written to a file, "
        "unless --format says otherwise.",
    )
    cmd.add_argument("job")
    cmd.add_argument(
        "--format", choices=REPORT_FORMATS, default=None, help="default: table on a terminal, else json"
    )
    cmd.add_argument("--output", "-o", type=Path, default=None, metavar="FILE", help="write here, not stdout")
    cmd.set_defaults(run=guarded(_run_report))

    cmd = commands.add_parser("download", parents=[server], help="download a job's artifacts")
    cmd.add_argument("job")
    cmd.add_argument("names", nargs="*", metavar="NAME", help="artifacts to fetch (default: all)")
    cmd.add_argument("--dir", type=Path, default=Path("."), help="where to put them (default: .)")
    cmd.set_defaults(run=guarded(_run_download))


def _run_wait(args: argparse.Namespace) -> int:
    with make_client(args) as client:
        return _follow(client, args.job, timeout=args.timeout, quiet=args.quiet)


def _run_status(args: argparse.Namespace) -> int:
    with make_client(args) as client:
        job = client.get_job(args.job)
    out(json.dumps(job, indent=2) if args.json else describe_job(job))
    return EXIT_OK


def _follow(client: ParryClient, job_id: str, *, timeout: float | None, quiet: bool) -> int:
    job = wait_for_job(client, job_id, timeout=timeout, quiet=quiet)
    out(describe_job(job))
    print_summary(job)
    return EXIT_OK


def print_summary(job: dict[str, Any]) -> None:
    """A finished job's result as tables on stdout (`parry wait` and `--wait` end with it)."""
    console = output_console()
    for part in job_summary(job):
        console.print(part)


def _run_cancel(args: argparse.Namespace) -> int:
    with make_client(args) as client:
        job = client.cancel_job(args.job)
        if args.wait:
            job = client.wait_job(args.job, timeout=args.timeout)
    out(describe_job(job))
    return EXIT_OK


def report_format(requested: str | None, *, to_file: bool) -> str:
    """`--format`, else a table for a person at a terminal and JSON for a pipe or a file."""
    if requested is not None:
        return requested
    return "table" if not to_file and sys.stdout.isatty() else "json"


def _run_report(args: argparse.Namespace) -> int:
    fmt = report_format(args.format, to_file=args.output is not None)
    with make_client(args) as client:
        if fmt == "table":
            return _print_report_table(client, args)
        text = client.report(args.job, format=fmt)
    if fmt == "json":
        text = json.dumps(json.loads(text), indent=2) + "\n"
    if args.output is not None:
        args.output.write_text(text, encoding="utf-8")
        err(f"report written to {args.output}")
    else:
        sys.stdout.write(text)
    return EXIT_OK


def _print_report_table(client: ParryClient, args: argparse.Namespace) -> int:
    result = client.result(args.job)  # the server's sentence when the job has no result yet
    job = {**client.get_job(args.job), "result": result}
    parts = job_summary(job)
    if not parts:
        raise CommandError(f"job {args.job}'s result cannot be shown as a table; try --format json")
    console = output_console()
    if args.output is not None:
        with args.output.open("w", encoding="utf-8") as fh:
            console = Console(file=fh, width=WIDE, highlight=False, color_system=None)
            for part in parts:
                console.print(part)
        err(f"report written to {args.output}")
        return EXIT_OK
    for part in parts:
        console.print(part)
    return EXIT_OK


def _run_download(args: argparse.Namespace) -> int:
    with make_client(args) as client:
        available = {a["name"]: a for a in client.list_artifacts(args.job)}
        names = args.names or sorted(available)
        missing = [n for n in names if n not in available]
        if missing:
            have = ", ".join(sorted(available)) or "none"
            raise CommandError(f"job {args.job} has no artifact {missing[0]!r} (it has: {have})")
        if not names:
            raise CommandError(f"job {args.job} has no artifacts")
        args.dir.mkdir(parents=True, exist_ok=True)
        for name in names:
            path = client.download_artifact(args.job, name, args.dir / name)
            out(str(path))
    return EXIT_OK
