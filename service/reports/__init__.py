"""Reports of an evaluation for pipelines: JUnit XML and Markdown, pure functions of a result and verdicts.

The report route (`GET /v1/jobs/{id}/report?format=junit|markdown`) and `parry check` both call them,
so a pipeline gets the same text from either.
"""

from __future__ import annotations

from pydantic import ValidationError

from service.domain.attack_syntax import describe_validation_error
from service.domain.results import EvaluationResult
from service.domain.verdicts import outcomes_for_job
from service.errors import FormatNotAvailable
from service.reports.junit import junit_report
from service.reports.markdown import markdown_report
from service.store.records import JobRecord

PIPELINE_MEDIA_TYPES = {"junit": "application/xml", "markdown": "text/markdown; charset=utf-8"}


def pipeline_report(job: JobRecord, format: str) -> str:
    """The JUnit or Markdown report of a succeeded evaluation job, judged against its spec's thresholds."""
    if job.kind != "evaluation":
        raise FormatNotAvailable(
            f"{format} reports exist for evaluation jobs; job {job.id} is a {job.kind} job"
        )
    try:
        result = EvaluationResult.model_validate(job.result)
        outcomes = outcomes_for_job(job.spec, result)
    except ValueError as exc:  # pydantic's ValidationError included
        why = describe_validation_error(exc) if isinstance(exc, ValidationError) else str(exc)
        raise FormatNotAvailable(f"the result of job {job.id} cannot be shown as {format}: {why}") from exc
    render = junit_report if format == "junit" else markdown_report
    return render(result, outcomes, job_id=job.id, reused_from=job.reused_from)
