"""What the model sandbox costs, and how fast it stops a model that never returns (issue 14).

    python bench/sandbox.py [--samples 1000] [--steps 40] [--time-limit 20] [--sandbox auto]

Four figures, with the worker's real runners, store and child processes (no Redis: the runners are called
as the Celery tasks call them):

1. Per-batch overhead: a PGD evaluation of `--samples` images of builtin:mnist-5k:test on the bench CNN,
   run in this process by the engine (compiled, warm) and through a warm child (the same model already
   loaded and traced there). Same seeds, so the same work; the difference is the sandbox's.
2. Start-up per job, reported apart: a fresh child's interpreter and TensorFlow import (until `ready`),
   then the model's load, validation and first trace (a cold job minus the warm one).
3. Cancel: a job on a model that loops forever on large batches, cancelled once running; the time from
   the cancel request until the worker's runner returns (target: within 5 s).
4. Time limit: the same model with `task_time_limit_s = --time-limit`; the time from the job starting
   until the runner returns (target: within the limit + 30 s).
"""

from __future__ import annotations

import argparse
import shutil
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from service.domain.datasets import load_builtin  # noqa: E402
from service.domain.specs import EvaluationSpec  # noqa: E402
from service.settings import Settings  # noqa: E402
from tests.modelzoo import small_cnn, train_clean  # noqa: E402
from tests.op_zoo import export_hanging  # noqa: E402
from tests.workerkit import evaluation_job, upload_model, worker_context  # noqa: E402
from workers.context import WorkerContext  # noqa: E402
from workers.evaluation.engine import evaluate  # noqa: E402
from workers.models.loading import load_model  # noqa: E402
from workers.runners import evaluation as jobs  # noqa: E402
from workers.runners import validation  # noqa: E402
from workers.sandbox.isolation import resolve_mode  # noqa: E402


def _spec(samples: int, steps: int) -> dict[str, object]:
    return {
        "dataset_id": "builtin:mnist-5k:test",
        "attacks": [{"name": "pgd", "eps": 0.1, "steps": steps}],
        "max_samples": samples,
        "batch_size": 100,
        "seed": 1,
        "no_cache": True,
    }


def _timed_job(ctx: WorkerContext, model_id: str, spec: dict[str, object]) -> tuple[float, float]:
    """(the job's wall time through the runner, the attack's own seconds as the engine measured them)."""
    job_id = evaluation_job(ctx, model_id, spec)
    started = time.perf_counter()
    status = jobs.run_evaluation(ctx, job_id)
    took = time.perf_counter() - started
    job = ctx.store.get_job(job_id)
    assert status == "succeeded" and job.result is not None, job.error
    return took, float(job.result["attacks"][0]["seconds"])


def overhead(ctx: WorkerContext, model_file: Path, samples: int, steps: int, runs: int) -> None:
    spec = _spec(samples, steps)
    options = EvaluationSpec.model_validate({"model_id": "m", **spec}).options()
    model = load_model(model_file, output="logits")
    data = load_builtin("builtin:mnist-5k:test")
    evaluate(model, data, options)  # compile

    started = time.perf_counter()
    model_id = upload_model(ctx, model_file)
    assert validation.validate_model(ctx, model_id) == "ready"
    validated = time.perf_counter() - started
    child = ctx.children.warm_child
    ready = child.ready_s if child is not None and child.ready_s is not None else float("nan")
    cold, _ = _timed_job(ctx, model_id, spec)

    # Interleaved, so that load from elsewhere on the machine falls on both alike; the minimum is the
    # figure least disturbed by it.
    inline, inline_attack, warm, warm_attack = [], [], [], []
    for _ in range(runs):
        started = time.perf_counter()
        outcome = evaluate(model, data, options)
        inline.append(time.perf_counter() - started)
        inline_attack.append(outcome.result.attacks[0].seconds)
        took, attack = _timed_job(ctx, model_id, spec)
        warm.append(took)
        warm_attack.append(attack)
    assert ctx.children.started == 1, "the warm child was not reused"

    print(f"## per-batch overhead: PGD-{steps}, {samples} images, batch 100, {runs} runs each, interleaved")
    print("| run | wall: min / median s | wall, runs (s) | the attack's own seconds: min / median |")
    print("|---|---|---|---|")
    for name, walls, attacks in (
        ("engine in this process (warm)", inline, inline_attack),
        ("job through a warm child", warm, warm_attack),
    ):
        print(f"| {name} | {min(walls):.2f} / {statistics.median(walls):.2f} | {_list(walls)} "
              f"| {min(attacks):.2f} / {statistics.median(attacks):.2f} |")  # fmt: skip
    for what, child_s, inline_s in (
        ("wall time per job", warm, inline),
        ("per batch", warm_attack, inline_attack),
    ):
        lowest = 100 * (min(child_s) / min(inline_s) - 1)
        middle = 100 * (statistics.median(child_s) / statistics.median(inline_s) - 1)
        print(
            f"- {what}, warm child against in-process: min {lowest:+.1f}%, median {middle:+.1f}% (target <5%)"
        )
    print("\n## start-up per job (a fresh child)")
    print(f"- child process until ready (interpreter, TensorFlow import, limits): {ready:.1f} s")
    print(f"- validation (start-up included: load, probe, checks): {validated:.1f} s")
    print(f"- first job on the warm child (load of the job's data, the attack's trace): {cold:.1f} s, "
          f"{cold - statistics.median(warm):+.1f} s over a warm job")  # fmt: skip


def stopping(ctx: WorkerContext, hanging: Path, time_limit: float) -> None:
    model_id = upload_model(ctx, hanging, "saved_model")
    assert validation.validate_model(ctx, model_id) == "ready"
    spec = {"dataset_id": "builtin:digits:test", "attacks": [{"name": "fgsm", "eps": 0.1}], "batch_size": 64}

    job_id = evaluation_job(ctx, model_id, spec)
    returned: list[float] = []
    runner = threading.Thread(
        target=lambda: (jobs.run_evaluation(ctx, job_id), returned.append(time.perf_counter()))
    )
    runner.start()
    while ctx.store.get_job(job_id).status != "running":
        time.sleep(0.05)
    time.sleep(5.0)  # well into the hang
    cancelled = time.perf_counter()
    ctx.store.request_cancel(job_id, owner="o")
    runner.join()
    print("\n## stopping a model that never returns")
    print(f"- cancel → worker free: {returned[0] - cancelled:.2f} s "
          f"(status {ctx.store.get_job(job_id).status}; target ≤ 5 s)")  # fmt: skip

    limited = WorkerContext(
        **{**ctx.__dict__, "settings": ctx.settings.model_copy(update={"task_time_limit_s": time_limit})}
    )
    job_id = evaluation_job(limited, model_id, spec)
    started = time.perf_counter()
    jobs.run_evaluation(limited, job_id)
    took = time.perf_counter() - started
    error = limited.store.get_job(job_id).error or {}
    print(f"- time limit {time_limit:g} s → worker free after {took:.1f} s, {took - time_limit:+.1f} s over "
          f"({error.get('type')}; target ≤ limit + 30 s)")  # fmt: skip


def _list(values: list[float]) -> str:
    return ", ".join(f"{v:.2f}" for v in values)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--samples", type=int, default=1000)
    parser.add_argument("--steps", type=int, default=40)
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--time-limit", type=float, default=20.0)
    parser.add_argument("--sandbox", default="auto", choices=["auto", "bwrap", "rlimits"])
    args = parser.parse_args()
    root = Path(tempfile.mkdtemp(prefix="parry-bench-sandbox-"))
    try:
        model = train_clean(small_cnn(), load_builtin("builtin:mnist-5k:train"), epochs=2)
        model_file = root / "cnn.keras"
        model.save(model_file)
        hanging = Path(
            shutil.make_archive(str(root / "hanging"), "zip", export_hanging(root / "h", above=40))
        )
        settings = Settings(data_dir=root / "data", redis_url="redis://unused", sandbox=args.sandbox)
        print(f"sandbox mode: {resolve_mode(args.sandbox)}")
        with worker_context(settings) as ctx:
            overhead(ctx, model_file, args.samples, args.steps, args.runs)
            stopping(ctx, hanging, args.time_limit)
    finally:
        shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    main()
