"""`parry hard-set`: the pool samples every surrogate misclassifies confidently, as a new dataset.

Without `--wait` it prints the job id, as `submit` and `train` do; with `--wait` it follows the job and
prints only the new dataset's id on stdout (nothing when no sample was kept), so that
`parry submit --dataset "$(parry hard-set ... --wait)"` measures a target model on it. The rest (progress,
what each surrogate got wrong) goes to stderr.
"""

from __future__ import annotations

import argparse
from typing import Any

from service.cli.common import (
    EXIT_OK,
    Commands,
    ensure_dataset_id,
    err,
    guarded,
    make_client,
    out,
    parse_input_range,
    resolve_model_id,
    wait_for_job,
)
from service.domain.hard_sets import DEFAULT_MIN_CONFIDENCE, HardSetSpec


def add_hard_set_command(commands: Commands, server: argparse.ArgumentParser) -> None:
    cmd = commands.add_parser(
        "hard-set",
        parents=[server],
        help="keep the pool samples every surrogate model gets confidently wrong, as a new dataset",
        description="Submit a hard-set job (POST /v1/hard-sets); prints the job id, or with --wait the "
        "new dataset's id.",
    )
    cmd.add_argument("--pool", required=True, help="labelled pool: dataset id or an .npz to upload")
    cmd.add_argument(
        "--surrogate",
        action="append",
        required=True,
        metavar="MODEL",
        help="model id or file; repeat for several (a sample is kept only if all get it wrong)",
    )
    cmd.add_argument(
        "--min-confidence",
        type=float,
        default=DEFAULT_MIN_CONFIDENCE,
        metavar="P",
        help="each surrogate's top softmax probability on a kept sample is at least P (default %(default)s)",
    )
    cmd.add_argument("--name", default=None, help="the new dataset's name")
    cmd.add_argument("--input-range", default="0,1", metavar="LO,HI")
    cmd.add_argument("--max-samples", type=int, default=None)
    cmd.add_argument("--batch-size", type=int, default=256)
    cmd.add_argument("--wait", action="store_true", help="wait for the job and print the new dataset's id")
    cmd.add_argument(
        "--timeout", type=float, default=None, metavar="S", help="give up waiting after S seconds"
    )
    cmd.add_argument("--quiet", action="store_true", help="no progress output")
    cmd.add_argument(
        "--idempotency-key", default=None, help="reuse to make a retried submission return the first job"
    )
    cmd.set_defaults(run=guarded(_run_hard_set))


def _run_hard_set(args: argparse.Namespace) -> int:
    with make_client(args) as client:
        pool = ensure_dataset_id(client, args.pool, name=None, say=err)
        surrogates = [resolve_model_id(client, ref, say=err) for ref in args.surrogate]
        spec = HardSetSpec(  # a bad value is a sentence here, not a 422 later
            pool_dataset_id=pool,
            surrogate_model_ids=surrogates,
            min_confidence=args.min_confidence,
            name=args.name,
            max_samples=args.max_samples,
            input_range=parse_input_range(args.input_range),
            batch_size=args.batch_size,
        )
        job = client.submit_hard_set(
            spec.model_dump(mode="json", exclude_none=True), idempotency_key=args.idempotency_key
        )
        if not args.wait:
            out(str(job["id"]))
            return EXIT_OK
        err(f"job {job['id']} submitted")
        job = wait_for_job(client, str(job["id"]), timeout=args.timeout, quiet=args.quiet)
    result: dict[str, Any] = job.get("result") or {}
    for surrogate in result.get("per_surrogate", []):
        err(
            f"surrogate {surrogate['model_id']}: accuracy {100 * surrogate['accuracy']:.1f}%, "
            f"{surrogate['misclassified_confident']:,} confident mistakes"
        )
    err(f"kept {result.get('kept', 0):,} of {result.get('pool_size', 0):,} samples")
    if result.get("dataset_id"):
        out(str(result["dataset_id"]))
    elif result.get("message"):
        err(str(result["message"]))
    return EXIT_OK
