"""`parry jobs`, `parry models`, `parry datasets`: what the key owns on the server, as tables or JSON."""

from __future__ import annotations

import argparse
import json
from typing import Any

from rich.table import Table

from service.cli.common import EXIT_OK, Commands, guarded, make_client, out
from service.cli.tables import output_console
from service.domain.jobs import JobStatus
from service.domain.verdicts import pct

JOB_KINDS = ("evaluation", "training", "hard_set")


def add_listing_commands(commands: Commands, server: argparse.ArgumentParser) -> None:
    cmd = commands.add_parser("jobs", parents=[server], help="list jobs, newest first")
    cmd.add_argument(
        "--status", action="append", choices=[s.value for s in JobStatus], default=None,
        help="only jobs with this status (repeat for several)",
    )  # fmt: skip
    cmd.add_argument("--kind", choices=JOB_KINDS, default=None, help="only evaluations or only trainings")
    cmd.add_argument("--limit", type=int, default=20, help="at most this many jobs (default 20)")
    cmd.add_argument("--json", action="store_true", help="print the Jobs as JSON")
    cmd.set_defaults(run=guarded(_run_jobs))

    for noun in ("models", "datasets"):
        cmd = commands.add_parser(noun, parents=[server], help=f"list the {noun} on the server")
        cmd.add_argument("--json", action="store_true", help=f"print the {noun} as JSON")
        cmd.set_defaults(run=guarded(_run_models if noun == "models" else _run_datasets))


def _run_jobs(args: argparse.Namespace) -> int:
    limit = max(1, args.limit)
    jobs: list[dict[str, Any]] = []
    with make_client(args) as client:
        for status in args.status or [None]:
            jobs += _jobs(client, kind=args.kind, status=status, limit=limit)
    jobs = sorted(jobs, key=lambda j: str(j.get("created_at", "")), reverse=True)[:limit]
    if args.json:
        out(json.dumps(jobs, indent=2))
    else:
        output_console().print(jobs_table(jobs))
    return EXIT_OK


def _jobs(client: Any, *, kind: str | None, status: str | None, limit: int) -> list[dict[str, Any]]:
    found: list[dict[str, Any]] = []
    cursor: str | None = None
    while len(found) < limit:
        page = client.list_jobs(kind=kind, status=status, limit=min(200, limit - len(found)), cursor=cursor)
        found += page.get("items", [])
        cursor = page.get("next_cursor")
        if not cursor:
            break
    return found


def jobs_table(jobs: list[dict[str, Any]]) -> Table:
    table = Table(title=f"{len(jobs)} job{'s' if len(jobs) != 1 else ''}", title_justify="left")
    for column in ("id", "kind", "status", "created", "model", "dataset"):
        table.add_column(column, no_wrap=True)
    table.add_column("outcome")
    for job in jobs:
        spec = job.get("spec") or {}
        table.add_row(
            str(job["id"]),
            str(job.get("kind", "")),
            str(job["status"]),
            _when(job.get("created_at")),
            str(spec.get("model_id", "")),
            str(spec.get("dataset_id", "")),
            job_outcome(job),
        )
    return table


def job_outcome(job: dict[str, Any]) -> str:
    """One cell: a running job's progress, a failed one's reason, a finished one's headline figure."""
    status = job["status"]
    if status == JobStatus.RUNNING:
        fraction = float((job.get("progress") or {}).get("fraction") or 0)
        return f"{100 * fraction:.0f}%"
    if status == JobStatus.FAILED:
        return str((job.get("error") or {}).get("detail") or "")
    result = job.get("result")
    if status != JobStatus.SUCCEEDED or not isinstance(result, dict):
        return ""
    if job.get("kind") == "training":
        return f"new model {result.get('model_id')}" if result.get("model_id") else ""
    if job.get("kind") == "hard_set":
        dataset = f", new dataset {result['dataset_id']}" if result.get("dataset_id") else ""
        return f"kept {result.get('kept', 0)} of {result.get('pool_size', 0)}{dataset}"
    rows = result.get("worst_case") or result.get("attacks") or []
    robust = [float(r["robust_accuracy"]) for r in rows if "robust_accuracy" in r]
    clean = result.get("clean_accuracy")
    text = f"clean {pct(float(clean))}" if clean is not None else ""
    if robust:
        text += f", worst robust {pct(min(robust))}"
    return text


def _run_models(args: argparse.Namespace) -> int:
    with make_client(args) as client:
        models = client.list_models()
    if args.json:
        out(json.dumps(models, indent=2))
        return EXIT_OK
    table = Table(title=f"{len(models)} model{'s' if len(models) != 1 else ''}", title_justify="left")
    for column in ("id", "name", "format", "status", "input", "classes", "output", "created"):
        table.add_column(column)
    for m in models:
        status = str(m["status"]) + (f": {m['rejection']}" if m.get("rejection") else "")
        table.add_row(
            str(m["id"]),
            str(m.get("name", "")),
            str(m.get("format", "")),
            status,
            _shape(m.get("input_shape")),
            _text(m.get("num_classes")),
            str(m.get("output", "")),
            _when(m.get("created_at")),
        )
    output_console().print(table)
    return EXIT_OK


def _run_datasets(args: argparse.Namespace) -> int:
    with make_client(args) as client:
        datasets = client.list_datasets()
    if args.json:
        out(json.dumps(datasets, indent=2))
        return EXIT_OK
    table = Table(title=f"{len(datasets)} dataset{'s' if len(datasets) != 1 else ''}", title_justify="left")
    for column in ("id", "name", "samples", "shape", "classes", "created"):
        table.add_column(column, justify="right" if column in ("samples", "classes") else "left")
    for d in datasets:
        table.add_row(
            str(d["id"]),
            str(d.get("name", "")),
            _text(d.get("num_samples")),
            _shape(d.get("sample_shape")),
            _text(d.get("num_classes")),
            "built-in" if d.get("builtin") else _when(d.get("created_at")),
        )
    output_console().print(table)
    return EXIT_OK


def _shape(shape: Any) -> str:
    return "×".join(str(n) for n in shape) if isinstance(shape, list) else ""


def _text(value: Any) -> str:
    return "" if value is None else str(value)


def _when(stamp: Any) -> str:
    # RFC 3339 to the second is enough to tell jobs apart in a table; --json keeps the full value.
    return str(stamp or "").replace("T", " ")[:19]
