"""Job statuses, transitions and error types: the public names stay what docs/api.md says."""

from __future__ import annotations

import re
from pathlib import Path

from service.domain.jobs import TERMINAL_STATUSES, TRANSITIONS, ErrorType, JobStatus, can_transition

ROOT = Path(__file__).resolve().parents[3]


def test_the_statuses_are_the_contracts_five() -> None:
    assert [s.value for s in JobStatus] == ["queued", "running", "succeeded", "failed", "cancelled"]
    assert {s for s in JobStatus if s.terminal} == TERMINAL_STATUSES


def test_nothing_leaves_a_terminal_status_and_everything_else_can_end() -> None:
    for status in JobStatus:
        if status.terminal:
            assert not TRANSITIONS[status]
        else:
            assert TRANSITIONS[status] & TERMINAL_STATUSES
    assert can_transition(JobStatus.RUNNING, JobStatus.QUEUED)  # a worker shutting down hands it back
    assert not can_transition(JobStatus.QUEUED, JobStatus.SUCCEEDED)  # only a run (or a reuse) succeeds


def test_the_documented_error_types_are_the_enum() -> None:
    text = (ROOT / "docs" / "api.md").read_text()
    section = text[text.index("### `error.type`") :]
    documented = [k for k in re.findall(r"^\| `([^`]+)` \|", section, flags=re.M) if k != "type"]
    assert documented == [kind.value for kind in ErrorType]


def test_the_first_error_types_keep_their_old_spellings() -> None:
    assert [kind.value for kind in ErrorType][:6] == [
        "ModelLoadError",
        "DatasetError",
        "EvaluationError",
        "InternalError",
        "TimeLimitExceeded",
        "attempts_exhausted",
    ]
