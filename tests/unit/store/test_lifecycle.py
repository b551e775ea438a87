"""The job lifecycle as a state machine: random interleavings of every worker, user and shard operation
on one job must keep its invariants. Time comes from an injectable clock, so leases expire without sleeps.
"""

from __future__ import annotations

import ast
import shutil
import tempfile
from pathlib import Path

from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, precondition, rule

from service.domain.jobs import TERMINAL_STATUSES, TRANSITIONS, JobPhase, JobStatus
from service.domain.results import Progress
from service.store import lifecycle
from service.store.jobs import JobStore
from service.store.records import JobRecord
from service.store.shards import ShardSpan, ShardStore
from tests.clock import ManualClock

ROOT = Path(__file__).resolve().parents[3]
LEASE = 30.0
MAX_ATTEMPTS = 2
WORKERS = st.sampled_from(["w1", "w2", "w3"])
SHARD = st.integers(min_value=0, max_value=2)
# Ending a job ends the run's interest in it: rarer than the other steps, so that runs reach deep states
# (a third attempt, a merge) before a cancel or a finish closes them.
RARELY = st.integers(min_value=0, max_value=5).map(lambda n: n == 0)


class JobLifecycle(RuleBasedStateMachine):
    def __init__(self) -> None:
        super().__init__()
        self.folder = Path(tempfile.mkdtemp(prefix="parry-lifecycle-"))
        self.clock = ManualClock()
        self.store = JobStore(f"sqlite:///{self.folder / 'parry.db'}", clock=self.clock)
        self.store.create_schema()
        self.shards = ShardStore(self.store)
        job, _ = self.store.create_job(owner="o", kind="evaluation", spec={}, max_attempts=MAX_ATTEMPTS)
        self.job_id = job.id
        self.successes = 0  # finishes that applied with `succeeded`
        self.history: list[JobStatus] = [JobStatus.QUEUED]

    def teardown(self) -> None:
        self.store.dispose()
        shutil.rmtree(self.folder, ignore_errors=True)

    def job(self) -> JobRecord:
        return self.store.get_job(self.job_id)

    # ---- the whole job ------------------------------------------------------------------------------

    @rule(worker=WORKERS)
    def claim(self, worker: str) -> None:
        before = self.job()
        claimed = self.store.claim(self.job_id, worker=worker, lease_seconds=LEASE)
        if claimed is not None:
            assert before.status not in TERMINAL_STATUSES and not before.cancel_requested
            assert claimed.worker == worker and claimed.attempts == before.attempts + 1

    @rule(worker=WORKERS, fraction=st.floats(0, 1))
    def progress(self, worker: str, fraction: float) -> None:
        before = self.job()
        kept_on = self.store.report_progress(
            self.job_id, worker=worker, progress=Progress(fraction=fraction), lease_seconds=LEASE
        )
        if kept_on:
            assert before.status == JobStatus.RUNNING and before.worker == worker and before.phase is None

    @rule(worker=WORKERS, status=st.sampled_from(sorted(TERMINAL_STATUSES)), now=RARELY)
    def finish(self, worker: str, status: JobStatus, now: bool) -> None:
        if not now:
            return
        before = self.job()
        if self.store.finish(self.job_id, worker=worker, status=status, result={"ok": True}):
            assert before.status == JobStatus.RUNNING and before.worker == worker
            self.successes += status == JobStatus.SUCCEEDED

    @rule(worker=WORKERS)
    def release(self, worker: str) -> None:
        self.store.release(self.job_id, worker=worker)

    @rule(now=RARELY)
    def cancel(self, now: bool) -> None:
        if now:
            self.store.request_cancel(self.job_id, owner="o")

    @rule(seconds=st.sampled_from([1.0, LEASE + 1]))
    def time_passes(self, seconds: float) -> None:
        self.clock.advance(seconds)

    # ---- a sharded job ------------------------------------------------------------------------------

    @rule(worker=WORKERS, shards=st.integers(min_value=1, max_value=3))
    def plan(self, worker: str, shards: int) -> None:
        if self.shards.get_plan(self.job_id) is not None:
            return  # one plan per job: a coordinator plans once
        spans = [ShardSpan(i, i + 1, 1.0) for i in range(shards)]
        if self.shards.create_plan(
            self.job_id, coordinator=worker, spans=spans, clean_units=1.0, total_units=1.0 + shards
        ):
            job = self.job()
            assert job.phase == JobPhase.SHARDED and job.worker is None and job.lease_until is None

    @precondition(lambda self: self.shards.get_plan(self.job_id) is not None)
    @rule(worker=WORKERS, index=SHARD)
    def claim_shard(self, worker: str, index: int) -> None:
        shard = self.shards.claim_shard(self.job_id, index, worker=worker, lease_seconds=LEASE)
        if shard is None:
            self.shards.settle_shard(self.job_id, index)
        else:
            assert self.job().phase == JobPhase.SHARDED and not self.job().cancel_requested

    @precondition(lambda self: self.shards.get_plan(self.job_id) is not None)
    @rule(worker=WORKERS, index=SHARD, fraction=st.floats(0, 1))
    def shard_progress(self, worker: str, index: int, fraction: float) -> None:
        self.shards.report_shard_progress(
            self.job_id, index, worker=worker, fraction=fraction, lease_seconds=LEASE, stage="attacking"
        )

    @precondition(lambda self: self.shards.get_plan(self.job_id) is not None)
    @rule(worker=WORKERS, index=SHARD, status=st.sampled_from(["succeeded"] * 4 + ["failed", "cancelled"]))
    def finish_shard(self, worker: str, index: int, status: str) -> None:
        applied, merge = self.shards.finish_shard(
            self.job_id,
            index,
            worker=worker,
            status=status,
            lease_seconds=LEASE,  # type: ignore[arg-type]
        )
        if merge:
            job = self.job()
            assert applied and job.worker == worker and job.phase is None and job.status == JobStatus.RUNNING
        elif applied and status != "succeeded":
            self.shards.end_parent(self.job_id, status=status)  # type: ignore[arg-type]

    @precondition(lambda self: self.shards.get_plan(self.job_id) is not None)
    @rule(worker=WORKERS, index=SHARD)
    def release_shard(self, worker: str, index: int) -> None:
        self.shards.release_shard(self.job_id, index, worker=worker)

    @precondition(lambda self: self.shards.get_plan(self.job_id) is not None)
    @rule(worker=WORKERS)
    def hand_back_to_shards(self, worker: str) -> None:
        self.shards.hand_to_shards(self.job_id, worker=worker)

    # ---- what must always hold ----------------------------------------------------------------------

    @invariant()
    def the_status_moves_only_along_the_table(self) -> None:
        status = self.job().status
        if status != self.history[-1]:
            assert status in TRANSITIONS[self.history[-1]], (self.history, status)
            self.history.append(status)

    @invariant()
    def never_succeeds_twice(self) -> None:
        assert self.successes <= 1
        assert self.history.count(JobStatus.SUCCEEDED) <= 1

    @invariant()
    def a_cancelled_job_never_runs_again(self) -> None:
        if JobStatus.CANCELLED in self.history:
            assert self.history[-1] == JobStatus.CANCELLED

    @invariant()
    def attempts_never_exceed_the_limit(self) -> None:
        job = self.job()
        assert job.attempts <= job.max_attempts
        assert all(shard.attempts <= shard.max_attempts for shard in self.shards.shards(self.job_id))

    @invariant()
    def a_job_its_shards_hold_has_no_worker_and_no_lease(self) -> None:
        job = self.job()
        if job.phase == JobPhase.SHARDED:
            assert job.status == JobStatus.RUNNING and job.worker is None and job.lease_until is None
        if job.status == JobStatus.RUNNING and job.phase is None:
            assert job.worker is not None and job.lease_until is not None


JobLifecycle.TestCase.settings = settings(
    max_examples=100, stateful_step_count=50, deadline=None, suppress_health_check=[HealthCheck.too_slow]
)
TestJobLifecycle = JobLifecycle.TestCase


def test_every_change_is_allowed_by_the_transition_table() -> None:
    assert {name for name, _, _ in lifecycle.CHANGES} >= {"start", "finish", "release", "end_sharded"}
    for name, sources, targets in lifecycle.CHANGES:
        assert all(target in TRANSITIONS[source] for source in sources for target in targets), name


def test_nothing_but_the_lifecycle_module_writes_to_the_jobs_table() -> None:
    writers = set()
    for path in [*(ROOT / "service").rglob("*.py"), *(ROOT / "workers").rglob("*.py")]:
        for node in ast.walk(ast.parse(path.read_text())):
            if (
                isinstance(node, ast.Call)
                and isinstance(node.func, ast.Attribute)
                and node.func.attr in ("update", "delete")
                and isinstance(node.func.value, ast.Name)
                and node.func.value.id == "jobs_table"
            ):
                writers.add(path.relative_to(ROOT).as_posix())
    assert writers <= {"service/store/lifecycle.py"}, writers


def test_a_lease_expires_on_the_injected_clock(tmp_path: Path) -> None:
    clock = ManualClock()
    store = JobStore(f"sqlite:///{tmp_path / 'parry.db'}", clock=clock)
    store.create_schema()
    job, _ = store.create_job(owner="o", kind="evaluation", spec={})
    assert store.claim(job.id, worker="w1", lease_seconds=LEASE) is not None
    assert store.claim(job.id, worker="w2", lease_seconds=LEASE) is None
    assert store.expired_leases() == []
    clock.advance(LEASE + 1)
    assert [j.id for j in store.expired_leases()] == [job.id]
    taken = store.claim(job.id, worker="w2", lease_seconds=LEASE)
    assert taken is not None and taken.worker == "w2" and taken.attempts == 2
    assert not store.report_progress(
        job.id, worker="w1", progress=Progress(fraction=0.5), lease_seconds=LEASE
    )
    store.dispose()
