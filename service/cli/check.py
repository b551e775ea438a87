"""`parry check`, the CI gate: upload what the server lacks, evaluate, judge, report, set the exit code.

Exit codes: 0 every check holds, 1 one failed (a threshold or a regression from the baseline), 2 the
check could not run (bad config, server down, model rejected, job failed), with one sentence on stderr.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
from pathlib import Path
from typing import Any

from pydantic import ValidationError
from rich.console import Console
from rich.table import Table

from service.cli.client import ClientError, ParryClient, new_idempotency_key
from service.cli.common import (
    EXIT_CHECK_FAILED,
    EXIT_OK,
    USER_ERRORS,
    CommandError,
    Commands,
    ensure_dataset_id,
    ensure_ready_model,
    err,
    error_sentence,
    guarded,
    make_client,
    wait_for_job,
)
from service.cli.config import CheckConfig, find_config, load_config
from service.domain.results import EvaluationResult
from service.domain.verdicts import (
    NO_THRESHOLDS,
    BaselineError,
    CheckOutcome,
    baseline_result,
    is_judged,
    judge,
    pct,
)
from service.reports.junit import junit_error_report, junit_report
from service.reports.markdown import markdown_error_report, markdown_report

# Set by CI systems for one run of a pipeline; a step retried within that run keeps them.
_CI_RUN_VARIABLES = ("GITHUB_RUN_ID", "GITHUB_RUN_ATTEMPT", "GITHUB_JOB", "CI_PIPELINE_ID", "CI_JOB_NAME")


def add_check_command(commands: Commands, server: argparse.ArgumentParser) -> None:
    cmd = commands.add_parser(
        "check",
        parents=[server],
        help="run the robustness checks of parry.toml against a server (exit 0 pass, 1 fail, 2 error)",
        description="Evaluate the model of a checks file on a server and judge it against the file's "
        "thresholds. Exit 0 when every check holds, 1 when one fails, 2 when the check could not run.",
    )
    cmd.add_argument(
        "--config", type=Path, default=None, metavar="FILE", help="checks file (default ./parry.toml)"
    )
    cmd.add_argument(
        "--baseline", default=None, metavar="JOB_ID|FILE", help="fail on a regression from this earlier run"
    )
    cmd.add_argument(
        "--tolerance",
        type=float,
        default=None,
        help="largest drop in robust accuracy from the baseline that passes (default 0.02, or the file's)",
    )
    cmd.add_argument("--junit", type=Path, default=None, metavar="FILE", help="write a JUnit XML report")
    cmd.add_argument(
        "--json", type=Path, default=None, metavar="FILE", help="write verdicts and result as JSON"
    )
    cmd.add_argument(
        "--markdown",
        type=Path,
        default=None,
        metavar="FILE",
        help="write a Markdown summary (also appended to $GITHUB_STEP_SUMMARY when set)",
    )
    cmd.add_argument(
        "--no-cache", action="store_true", help="evaluate again even if an identical run has a result"
    )
    cmd.add_argument(
        "--timeout", type=float, default=None, metavar="S", help="give up waiting after S seconds"
    )
    cmd.add_argument(
        "--idempotency-key", default=None, help="default: derived from the CI run and the checks"
    )
    cmd.add_argument("--quiet", action="store_true", help="no progress output")
    cmd.set_defaults(run=guarded(run_check))


def run_check(args: argparse.Namespace) -> int:
    """The check; when it cannot run (exit 2), its JUnit, JSON and Markdown still say why."""
    submitted: dict[str, str] = {}
    try:
        return _run_check(args, submitted)
    except (*USER_ERRORS, ValidationError) as exc:
        _write_error_reports(args, error_sentence(exc), job_id=submitted.get("job_id"))
        raise


def _run_check(args: argparse.Namespace, submitted: dict[str, str]) -> int:
    config_path = find_config(args.config)
    config = load_config(config_path)
    if args.tolerance is not None and not 0 <= args.tolerance <= 1:
        raise CommandError(f"--tolerance must be between 0 and 1, got {args.tolerance:g}")
    say = _sayer(args.quiet)
    with make_client(args) as client:
        baseline = _load_baseline(client, args.baseline, config)
        model_id, dataset_id = _upload_inputs(client, config, say)
        spec = config.evaluation_spec(
            model_id=model_id,
            dataset_id=dataset_id,
            no_cache=args.no_cache,
            ood_dataset_id=_ood_dataset_id(client, config, say),
        )
        key = args.idempotency_key or default_idempotency_key(spec)
        job = client.submit_evaluation(spec, idempotency_key=key)
        if job.get("reused_from"):
            say(
                f"job {job['id']}: same model, data, attacks and seed as job {job['reused_from']}: "
                "its result is reused (--no-cache runs again)"
            )
        else:
            say(f"job {job['id']} submitted")
        submitted["job_id"] = str(job["id"])
        timeout = args.timeout if args.timeout is not None else config.evaluation.timeout_s
        job = wait_for_job(client, str(job["id"]), timeout=timeout, quiet=args.quiet)
    result = EvaluationResult.model_validate(job["result"])
    tolerance = args.tolerance
    if tolerance is None:
        tolerance = config.baseline.tolerance if config.baseline is not None else 0.02
    outcomes = judge(
        result,
        config.attack_specs(),
        config.thresholds(),
        baseline=baseline,
        max_regression=config.regression_limits(tolerance),
    )
    Console(highlight=False).print(outcome_table(result, outcomes))
    _write_reports(args, job, result, outcomes, config_path)
    failed = [o for o in outcomes if not o.passed]
    if not any(is_judged(o) for o in outcomes):
        err(
            f"parry: {NO_THRESHOLDS}: {len(outcomes)} results reported, none judged (add min_robust_accuracy)"
        )
        return EXIT_OK
    if failed:
        first = failed[0]
        more = f" (and {len(failed) - 1} more)" if len(failed) > 1 else ""
        err(f"parry: check failed: {first.name}: {first.message}{more}")
        return EXIT_CHECK_FAILED
    err(f"parry: all {len(outcomes)} checks passed")
    return EXIT_OK


def _sayer(quiet: bool) -> Any:
    def say(text: str) -> None:
        if not quiet:
            err(text)

    return say


def _upload_inputs(client: ParryClient, config: CheckConfig, say: Any) -> tuple[str, str]:
    if config.model.path is not None:
        model = ensure_ready_model(
            client, config.model.path, name=config.model.name, output=config.model.output, say=say
        )
    else:
        assert config.model.id is not None
        model = client.get_model(config.model.id)
        if model["status"] == "validating":
            model = client.wait_model(model["id"])
        if model["status"] == "rejected":
            raise CommandError(f"the server rejected model {model['id']}: {model.get('rejection')}")
    if config.dataset.path is not None:
        dataset_id = ensure_dataset_id(client, str(config.dataset.path), name=config.dataset.name, say=say)
    else:
        assert config.dataset.id is not None
        dataset_id = config.dataset.id
    return str(model["id"]), dataset_id


def _ood_dataset_id(client: ParryClient, config: CheckConfig, say: Any) -> str | None:
    if config.ood is None:
        return None
    if config.ood.path is not None:
        return ensure_dataset_id(client, str(config.ood.path), name=config.ood.name, say=say)
    return config.ood.id


def default_idempotency_key(spec: dict[str, Any]) -> str:
    """Inside a CI run, the same checks give the same key, so a retried step never starts a second job.

    Outside CI every invocation gets a fresh key (result reuse still answers repeats at once).
    """
    run = {name: os.environ[name] for name in _CI_RUN_VARIABLES if os.environ.get(name)}
    if not run:
        return new_idempotency_key()
    canonical = json.dumps({"run": run, "spec": spec}, sort_keys=True, separators=(",", ":"))
    return "parry-ci-" + hashlib.sha256(canonical.encode()).hexdigest()[:48]


def _load_baseline(client: ParryClient, ref: str | None, config: CheckConfig) -> EvaluationResult | None:
    """`--baseline` (a file or a job id), else the file's [baseline]; None when neither is given."""
    path: Path | None = None
    job_id: str | None = None
    if ref is not None:
        path = Path(ref) if Path(ref).is_file() else None
        if path is None:
            if not ref.startswith("job_"):
                raise BaselineError(f"baseline {ref} is neither a file nor a job id (job_...)")
            job_id = ref
    elif config.baseline is not None:
        path, job_id = config.baseline.path, config.baseline.job
    if path is not None:
        try:
            return baseline_result(json.loads(path.read_text(encoding="utf-8")))
        except (OSError, ValueError) as exc:
            if isinstance(exc, BaselineError):
                raise BaselineError(f"baseline {path}: {exc}") from None
            raise BaselineError(f"cannot read baseline {path}: {exc}") from None
    if job_id is not None:
        try:
            return baseline_result(client.result(job_id))
        except ClientError as exc:
            raise BaselineError(f"cannot use job {job_id} as the baseline: {exc}") from None
    return None


def outcome_table(result: EvaluationResult, outcomes: list[CheckOutcome]) -> Table:
    table = Table(
        title=f"{result.num_samples} samples, clean accuracy {pct(result.clean_accuracy)}, "
        f"seed {result.seed}",
        title_justify="left",
    )
    with_baseline = any(o.baseline_robust_accuracy is not None for o in outcomes)
    columns = ["", "check", "robust acc", "95% CI", "required"] + (["baseline"] if with_baseline else [])
    for column in columns:
        table.add_column(column, justify="right" if column not in ("", "check") else "left")
    for o in outcomes:
        lo, hi = o.ci95
        required = o.requirement()
        if required and o.use_lower_bound:
            required += " (CI)" if o.max_value is not None else " (lower)"
        row = [
            ("PASS" if o.passed else "FAIL") if is_judged(o) else "—",
            o.name,
            pct(o.robust_accuracy),
            f"{pct(lo)}–{pct(hi)}",
            required,
        ]
        if with_baseline:
            row.append("" if o.baseline_robust_accuracy is None else pct(o.baseline_robust_accuracy))
        table.add_row(*row, style=None if o.passed else "bold red")
    return table


def _write_reports(
    args: argparse.Namespace,
    job: dict[str, Any],
    result: EvaluationResult,
    outcomes: list[CheckOutcome],
    config_path: Path,
) -> None:
    job_id, reused_from = str(job["id"]), job.get("reused_from")
    if args.junit is not None:
        _write(args.junit, junit_report(result, outcomes, job_id=job_id, reused_from=reused_from))
    if args.json is not None:
        body = {
            "passed": all(o.passed for o in outcomes),
            "thresholds_set": any(is_judged(o) for o in outcomes),
            "job_id": job_id,
            "reused_from": reused_from,
            "config": str(config_path),
            "checks": [o.to_json() for o in outcomes],
            "result": result.model_dump(mode="json"),
        }
        _write(args.json, json.dumps(body, indent=2) + "\n")
    summary = os.environ.get("GITHUB_STEP_SUMMARY")
    if args.markdown is not None or summary:
        text = markdown_report(result, outcomes, job_id=job_id, reused_from=reused_from)
        if args.markdown is not None:
            _write(args.markdown, text)
        if summary:
            try:
                with open(summary, "a", encoding="utf-8") as fh:
                    fh.write(text + "\n")
            except OSError as exc:
                err(f"parry: warning: cannot append to GITHUB_STEP_SUMMARY ({summary}): {exc}")


def _write_error_reports(args: argparse.Namespace, message: str, *, job_id: str | None) -> None:
    """What a pipeline shows when the check could not run; a report that cannot be written is a warning,
    since the error being reported matters more."""
    reports = []
    if args.junit is not None:
        reports.append((args.junit, junit_error_report(message, job_id=job_id)))
    if args.json is not None:
        body = {"passed": False, "error": message, "job_id": job_id, "checks": [], "result": None}
        reports.append((args.json, json.dumps(body, indent=2) + "\n"))
    if args.markdown is not None:
        reports.append((args.markdown, markdown_error_report(message)))
    for path, text in reports:
        try:
            _write(path, text)
        except CommandError as exc:
            err(f"parry: warning: {exc}")


def _write(path: Path, text: str) -> None:
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text, encoding="utf-8")
    except OSError as exc:
        raise CommandError(f"cannot write {path}: {exc}") from None
