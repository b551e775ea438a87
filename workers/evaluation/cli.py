"""`parry evaluate`: run attacks on a model locally, without a server.

The `parry` command (service/cli/main.py) finds this command through the `parry.commands` entry point:
the engine stays in `workers`, and `service` never imports it. The client install loads this module to
build the parser, so it imports neither TensorFlow nor NumPy; running the command first checks that the
worker install is there (one sentence and exit code 2 if not), then the inputs, and imports TensorFlow
only to run.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING

from pydantic import ValidationError
from rich.console import Console

from service.cli.common import EXIT_OK, CommandError, Commands, check_evaluation_work, parse_input_range
from service.cli.corruption_options import add_corruption_arguments, corruptions_from_args
from service.cli.installs import require_install
from service.cli.tables import corruption_table, output_console, result_table
from service.domain.attack_syntax import describe_validation_error, parse_attack
from service.domain.builtins import UNLABELLED, DatasetError, is_builtin
from service.domain.results import Progress
from service.domain.specs import EvaluationOptions, OODSpec
from service.vetting.archives import ArchiveError, detect_model_format
from service.vetting.keras_config import UnsafeKerasConfig, check_keras_file

if TYPE_CHECKING:  # NumPy: not in the client install, which builds this command's parser
    from service.domain.datasets import ArrayDataset


def add_evaluate_command(commands: Commands) -> None:
    """The `parry.commands` entry point: adds `evaluate` to the `parry` parser."""
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
        default=[],
        metavar="SPEC",
        help="e.g. 'pgd:eps=0.3,steps=40' or 'fgsm:eps=0.1,0.2,0.3'; repeat for several attacks "
        "(at least one unless --ood-dataset is given)",
    )
    cmd.add_argument(
        "--ood-dataset",
        default=None,
        metavar="D",
        help="measure OOD detection against this .npz (x only will do) or builtin: id",
    )
    cmd.add_argument(
        "--ood-scores", default=None, metavar="LIST", help="msp,max_logit,energy (the default: all three)"
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
        "--json", type=Path, default=None, metavar="FILE", help="write the result object (docs/api.md) here"
    )
    cmd.add_argument(
        "--per-sample",
        type=Path,
        default=None,
        metavar="FILE",
        help="write per-sample outcomes (which samples fell to which attack) as .npz",
    )
    add_corruption_arguments(cmd)
    cmd.add_argument("--quiet", action="store_true", help="no progress output")
    cmd.add_argument("--verbose", action="store_true", help="show TensorFlow's start-up log lines")
    cmd.set_defaults(run=_run_evaluate)


def _run_evaluate(args: argparse.Namespace) -> int:
    require_install("evaluate")
    options, dataset, ood_dataset = _checked_inputs(args)
    with tensorflow_start_up(verbose=args.verbose):
        from workers.evaluation.local import LocalEvaluationError, run_local_evaluation

    err = Console(stderr=True)
    report = _progress_printer(err, quiet=args.quiet)
    try:
        outcome = run_local_evaluation(
            args.model, dataset, options, output=args.output, progress=report, ood_dataset=ood_dataset
        )
    except LocalEvaluationError as exc:
        raise CommandError(str(exc)) from exc
    output_console().print(result_table(outcome.result))
    corruptions = corruption_table(outcome.result)
    if corruptions is not None:
        output_console().print(corruptions)
    for warning in outcome.result.warnings:
        err.print(f"[yellow]warning:[/yellow] {warning}", highlight=False)
    if args.json:
        args.json.write_text(json.dumps(outcome.result.model_dump(mode="json"), indent=2) + "\n")
    if args.per_sample:
        outcome.save_per_sample(args.per_sample)
    return EXIT_OK


def _checked_inputs(args: argparse.Namespace) -> tuple[EvaluationOptions, ArrayDataset, ArrayDataset | None]:
    """Everything that can be checked without TensorFlow, checked before it loads (it takes seconds):
    the attacks and options, the model file's format, and the dataset read whole (keys, shapes, labels)."""
    attacks = [parse_attack(text) for text in args.attack]
    corruptions = corruptions_from_args(args)
    check_evaluation_work(args, corruptions=corruptions)
    try:
        ood = None
        if args.ood_dataset is not None:
            scores = None if args.ood_scores is None else [s.strip() for s in args.ood_scores.split(",")]
            ood = OODSpec.model_validate(
                {"dataset_id": args.ood_dataset} | ({} if scores is None else {"scores": scores})
            )
        options = EvaluationOptions(
            attacks=attacks,
            ood=ood,
            input_range=parse_input_range(args.input_range),
            max_samples=args.max_samples,
            batch_size=args.batch_size,
            seed=args.seed,
            corruptions=corruptions,
        )
    except ValidationError as exc:
        raise CommandError(describe_validation_error(exc)) from None
    if not args.model.exists():
        raise CommandError(f"model {args.model} does not exist")
    if not is_builtin(args.dataset) and not Path(args.dataset).is_file():
        raise CommandError(f"dataset {args.dataset} does not exist (give an .npz file or a builtin: id)")
    try:
        if detect_model_format(args.model) == "keras":
            check_keras_file(args.model)
    except (ArchiveError, UnsafeKerasConfig) as exc:
        raise CommandError(f"model {args.model}: {exc}") from None
    from service.domain.datasets import load_dataset  # NumPy, and the built-ins' packages: worker install

    try:
        dataset = load_dataset(args.dataset)
    except DatasetError as exc:
        raise CommandError(f"dataset {args.dataset}: {exc}") from None
    if dataset.num_classes == 0:
        raise CommandError(f"dataset {args.dataset} {UNLABELLED}")
    ood_dataset = None
    if args.ood_dataset is not None:
        if not is_builtin(args.ood_dataset) and not Path(args.ood_dataset).is_file():
            raise CommandError(
                f"OOD dataset {args.ood_dataset} does not exist (give an .npz file or a builtin: id)"
            )
        try:
            ood_dataset = load_dataset(args.ood_dataset)
        except DatasetError as exc:
            raise CommandError(f"OOD dataset {args.ood_dataset}: {exc}") from None
    return options, dataset, ood_dataset


@contextmanager
def tensorflow_start_up(*, verbose: bool) -> Iterator[None]:
    """Keep TensorFlow's start-up lines (absl, oneDNN, CUDA probes) off stderr unless `verbose`.

    They are written by C++ code straight to file descriptor 2, before TF_CPP_MIN_LOG_LEVEL applies to
    all of them, so descriptor 2 itself points elsewhere while TensorFlow loads; they are shown after
    all when the import fails, since then they may say why.
    """
    if verbose:
        yield
        return
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    sys.stderr.flush()
    saved = os.dup(2)
    with tempfile.TemporaryFile() as sink:
        os.dup2(sink.fileno(), 2)
        try:
            yield
        except BaseException:
            os.dup2(saved, 2)
            sink.seek(0)
            sys.stderr.write(sink.read().decode(errors="replace"))
            raise
        finally:
            os.dup2(saved, 2)
            os.close(saved)
    logging.getLogger("tensorflow").setLevel(logging.ERROR)


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
