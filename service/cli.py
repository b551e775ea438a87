"""The `parry` command.

`parry evaluate` runs an evaluation locally, without a server. It is the one command that reaches
into `workers` (and so TensorFlow), and it does so lazily, inside the command: the API process and
the server-side commands never load TensorFlow.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path

from pydantic import ValidationError
from rich.console import Console

from service.attack_syntax import AttackSyntaxError, describe_validation_error, parse_attack
from service.client_cli import add_client_commands
from service.datasets import DatasetError, is_builtin
from service.keys_cli import add_keys_commands
from service.schemas import EvaluationOptions, Progress
from service.tables import result_table

EXIT_OK, EXIT_BELOW_THRESHOLD, EXIT_ERROR = 0, 1, 2


class UsageError(Exception):
    """Bad command-line input; printed as one sentence, exit code 2."""


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not hasattr(args, "run"):
        parser.print_help(sys.stderr)
        return EXIT_ERROR
    try:
        code: int = args.run(args)
    except (UsageError, AttackSyntaxError, DatasetError) as exc:
        print(f"parry: {exc}", file=sys.stderr)
        return EXIT_ERROR
    except KeyboardInterrupt:
        print("parry: interrupted", file=sys.stderr)
        return 130
    return code


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="parry", description="Adversarial-robustness evaluation for TensorFlow models."
    )
    commands = parser.add_subparsers(title="commands", metavar="COMMAND")
    _add_evaluate(commands)
    _add_server_commands(commands)
    add_client_commands(commands)
    add_keys_commands(commands)
    return parser


def _add_evaluate(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    cmd = commands.add_parser(
        "evaluate",
        help="run attacks on a model locally (no server)",
        description="Run attacks on a model locally and print robust accuracy per attack and eps.",
    )
    cmd.add_argument(
        "--model", required=True, type=Path, help="SavedModel directory or archive, .keras or .h5 file"
    )
    cmd.add_argument(
        "--dataset", required=True, help=".npz file with x and y, or builtin:mnist-5k[:test] / builtin:digits"
    )
    cmd.add_argument(
        "--attack",
        action="append",
        required=True,
        metavar="SPEC",
        help="e.g. 'pgd:eps=0.3,steps=40' or 'fgsm:eps=0.1,0.2,0.3'; repeat for several attacks",
    )
    cmd.add_argument(
        "--input-range", default="0,1", metavar="LO,HI", help="the model's input range (default 0,1)"
    )
    cmd.add_argument("--max-samples", type=int, default=None, help="evaluate only the first N samples")
    cmd.add_argument("--batch-size", type=int, default=256)
    cmd.add_argument("--seed", type=int, default=0)
    cmd.add_argument(
        "--output",
        choices=("auto", "logits", "probabilities"),
        default="auto",
        help="what the model outputs (default: detected)",
    )
    cmd.add_argument(
        "--json", type=Path, default=None, metavar="FILE", help="write the result object (API.md) here"
    )
    cmd.add_argument(
        "--per-sample",
        type=Path,
        default=None,
        metavar="FILE",
        help="write per-sample outcomes (which samples fell to which attack) as .npz",
    )
    cmd.add_argument("--quiet", action="store_true", help="no progress output")
    cmd.set_defaults(run=_run_evaluate)


def parse_input_range(text: str) -> tuple[float, float]:
    try:
        lo, hi = (float(part) for part in text.split(","))
    except ValueError:
        raise UsageError(f"--input-range takes two numbers 'LO,HI' (e.g. 0,255), got {text!r}") from None
    if not lo < hi:
        raise UsageError(f"--input-range needs LO < HI, got {text!r}")
    return lo, hi


def _run_evaluate(args: argparse.Namespace) -> int:
    attacks = [parse_attack(text) for text in args.attack]
    try:
        options = EvaluationOptions(
            attacks=attacks,
            input_range=parse_input_range(args.input_range),
            max_samples=args.max_samples,
            batch_size=args.batch_size,
            seed=args.seed,
        )
    except ValidationError as exc:
        raise UsageError(describe_validation_error(exc)) from None
    if not args.model.exists():
        raise UsageError(f"model {args.model} does not exist")
    if not is_builtin(args.dataset) and not Path(args.dataset).is_file():
        raise UsageError(f"dataset {args.dataset} does not exist (give an .npz file or a builtin: id)")

    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")  # TensorFlow's C++ start-up chatter is not for users
    logging.getLogger("tensorflow").setLevel(logging.ERROR)
    from workers.local import LocalEvaluationError, run_local_evaluation

    err = Console(stderr=True)
    report = _progress_printer(err, quiet=args.quiet)
    try:
        outcome = run_local_evaluation(args.model, args.dataset, options, output=args.output, progress=report)
    except LocalEvaluationError as exc:
        print(f"parry: {exc}", file=sys.stderr)
        return EXIT_ERROR
    out = Console()
    if not out.is_terminal:
        out = Console(width=140)  # logs and pipes: rich would assume 80 columns and wrap the table's cells
    out.print(result_table(outcome.result))
    for warning in outcome.result.warnings:
        err.print(f"[yellow]warning:[/yellow] {warning}", highlight=False)
    if args.json:
        args.json.write_text(json.dumps(outcome.result.model_dump(mode="json"), indent=2) + "\n")
    if args.per_sample:
        outcome.save_per_sample(args.per_sample)
    return EXIT_OK


def _progress_printer(console: Console, *, quiet: bool) -> Callable[[Progress], None]:
    """Progress on stderr: a live line on a terminal, a plain line every few seconds otherwise."""
    last = 0.0

    def report(progress: Progress) -> None:
        nonlocal last
        now = time.monotonic()
        if quiet or (now - last < (0.5 if console.is_terminal else 5.0) and progress.fraction < 1):
            return
        last = now
        eta = f", ETA {progress.eta_seconds:.0f} s" if progress.eta_seconds is not None else ""
        line = f"[{100 * progress.fraction:5.1f}%] {progress.stage}{eta}"
        if console.is_terminal:
            console.print(line, end="\r", highlight=False)
        else:
            console.print(line, highlight=False)

    return report


# ---- server-side commands: serve, api, worker (process management lives in service/serve.py) -----------


def _add_server_commands(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    serve = commands.add_parser("serve", help="run the service: Redis (bundled if needed), a worker, the API")
    api = commands.add_parser("api", help="run only the HTTP API (needs PARRY_REDIS_URL)")
    for cmd in (serve, api):
        cmd.add_argument("--host", default=None, help="address to bind (default PARRY_HOST, 127.0.0.1)")
        cmd.add_argument("--port", type=int, default=None, help="port (default PARRY_PORT, 8000)")
    serve.set_defaults(run=_run_server_command, command_name="serve")
    api.set_defaults(run=_run_server_command, command_name="api")
    worker = commands.add_parser("worker", help="run one Celery worker (needs PARRY_REDIS_URL)")
    worker.add_argument("--loglevel", default="info", help="worker log level (default info)")
    worker.add_argument(
        "--gpu",
        default=None,
        help="pin the worker to this GPU index (sets CUDA_VISIBLE_DEVICES); default: as is",
    )
    worker.set_defaults(run=_run_server_command, command_name="worker")


def _run_server_command(args: argparse.Namespace) -> int:
    from service import serve

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    try:
        if args.command_name == "serve":
            return serve.serve(args.host, args.port)
        if args.command_name == "api":
            return serve.api(args.host, args.port)
        return serve.worker(loglevel=args.loglevel, gpu=args.gpu)
    except serve.ServeError as exc:
        raise UsageError(str(exc)) from exc


if __name__ == "__main__":
    sys.exit(main())
