"""The evaluation worker writes `adversarial_examples.npz`, and the job's page shows it as an image grid."""

from __future__ import annotations

from pathlib import Path

from service.api.ui.examples import load_example_grid
from service.domain.artifacts import EXAMPLES_ARTIFACT
from tests.workerkit import DIGITS_FGSM, evaluation_job, ready_model
from workers.context import WorkerContext
from workers.runners import evaluation as jobs


def test_the_worker_writes_the_examples_the_page_shows(ctx: WorkerContext, digits_keras: Path) -> None:
    job_id = evaluation_job(ctx, ready_model(ctx, digits_keras), DIGITS_FGSM)
    assert jobs.run_evaluation(ctx, job_id) == "succeeded"
    grid = load_example_grid(ctx.artifacts.job_artifact_path(job_id, EXAMPLES_ARTIFACT))
    # Ten digit classes, two samples each; one column per eps (FGSM at 0.1 and 0.2).
    assert grid is not None and len(grid.rows) == 20 and len(grid.columns) == 2
    assert sorted({row.label for row in grid.rows}) == list(range(10))
    assert all(
        image.src.startswith("data:image/png;base64,") for row in grid.rows for image, _ in row.adversarial
    )
