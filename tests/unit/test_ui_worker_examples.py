"""The evaluation worker writes `adversarial_examples.npz`, and the job's page shows it as an image grid."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from service.settings import Settings
from service.ui.examples import EXAMPLES_ARTIFACT, load_example_grid
from tests.unit.test_jobs import DIGITS_FGSM, _job, _ready_model
from tests.workerkit import worker_context
from workers import jobs


@pytest.fixture
def ctx(tmp_path: Path) -> Iterator[jobs.WorkerContext]:
    with worker_context(Settings(data_dir=tmp_path, redis_url="redis://unused")) as context:
        yield context


def test_the_worker_writes_the_examples_the_page_shows(ctx: jobs.WorkerContext, digits_keras: Path) -> None:
    job_id = _job(ctx, _ready_model(ctx, digits_keras), DIGITS_FGSM)
    assert jobs.run_evaluation(ctx, job_id) == "succeeded"
    grid = load_example_grid(ctx.artifacts.job_artifact_path(job_id, EXAMPLES_ARTIFACT))
    # Ten digit classes, two samples each; one column per eps (FGSM at 0.1 and 0.2).
    assert grid is not None and len(grid.rows) == 20 and len(grid.columns) == 2
    assert sorted({row.label for row in grid.rows}) == list(range(10))
    assert all(
        image.src.startswith("data:image/png;base64,") for row in grid.rows for image, _ in row.adversarial
    )
