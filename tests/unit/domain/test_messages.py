"""No absolute server path in a message users read: relative to the data directory, or just the name."""

from __future__ import annotations

from pathlib import Path

import pytest

from service.domain.jobs import ErrorType, job_error
from service.domain.messages import without_server_paths

BASE = Path("/srv/parry-data")


@pytest.mark.parametrize(
    ("text", "shown"),
    [
        ("SavedModel file does not exist at: /srv/parry-data/models/ab/x/saved_model.pb.",
         "SavedModel file does not exist at: models/ab/x/saved_model.pb."),
        ("[Errno 2] No such file or directory: '/tmp/parry-keras-abc/model.keras'",
         "[Errno 2] No such file or directory: 'model.keras'"),
        ("Unable to open file (name = /var/tmp/tmpab.h5, errno = 2)",
         "Unable to open file (name = tmpab.h5, errno = 2)"),
        ("x=/home/u/a/b.npz", "x=b.npz"),
        ("upload it with POST /v1/models", "upload it with POST /v1/models"),
        ("see http://127.0.0.1:8000/v1/jobs/job_1 and /docs",
         "see http://127.0.0.1:8000/v1/jobs/job_1 and /docs"),
        ("2.5·eps/steps and/or 1/2", "2.5·eps/steps and/or 1/2"),
    ],
)  # fmt: skip
def test_paths_are_relative_to_the_data_directory_or_cut_to_their_name(text: str, shown: str) -> None:
    assert without_server_paths(text, base=BASE) == shown


def test_a_job_error_names_no_absolute_path(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("PARRY_DATA_DIR", str(tmp_path))
    error = job_error(ErrorType.DATASET_ERROR, f"cannot read {tmp_path}/datasets/ab/cd.npz: truncated")
    assert error["detail"] == "cannot read datasets/ab/cd.npz: truncated"
