"""HTML pages from job records: Jinja2 templates with autoescaping, server-rendered SVG, PNG data URIs.

Pure functions of their inputs (no store access): `service.api.ui.report` gathers what a page needs.
A result is read defensively as a dict, so a report written by an older or newer worker still renders.
"""

from __future__ import annotations

import base64
import hashlib
import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from functools import lru_cache
from pathlib import Path
from typing import Any

from jinja2 import Environment, FileSystemLoader, StrictUndefined
from markupsafe import Markup

from service.api.ui.evaluation_view import evaluation_view
from service.api.ui.examples import ExampleGrid
from service.api.ui.training_view import training_view
from service.domain.jobs import JobStatus
from service.store.artifacts import ArtifactInfo
from service.store.records import JobRecord

HERE = Path(__file__).parent
STATIC_DIR = HERE / "static"
_MODEL_FILES = ("model.zip", "model.keras")


@dataclass(frozen=True)
class Names:
    """Display names of the things a job refers to (ids when the record is gone)."""

    model: str | None = None
    dataset: str | None = None
    validation_dataset: str | None = None
    new_model: str | None = None


@dataclass(frozen=True)
class PageInputs:
    job: JobRecord
    names: Names = field(default_factory=Names)
    artifacts: Sequence[ArtifactInfo] = ()
    grid: ExampleGrid | None = None


@dataclass(frozen=True)
class Links:
    """Where links point: the UI (cookie auth, shared CSS and script) or a standalone API report."""

    standalone: bool

    def artifact(self, job_id: str, name: str) -> str:
        prefix = "/v1/jobs" if self.standalone else "/ui/jobs"
        return f"{prefix}/{job_id}/artifacts/{name}"


def render_job_page(
    inputs: PageInputs, *, standalone: bool, show_logout: bool = False, csrf: str | None = None
) -> str:
    """The page of one job: status, and for a succeeded one its charts, tables, examples and facts."""
    job = inputs.job
    result = job.result if isinstance(job.result, dict) else None
    context: dict[str, Any] = {
        "job": job,
        "names": inputs.names,
        "links": Links(standalone),
        "terminal": job.terminal,
        "spec_json": json.dumps(job.spec, indent=2, sort_keys=True, default=str),
        "artifacts": list(inputs.artifacts),
        "model_files": [a for a in inputs.artifacts if a.name in _MODEL_FILES],
        "evaluation": None,
        "training": None,
        "grid": inputs.grid,
        "error_detail": (job.error or {}).get("detail") if isinstance(job.error, dict) else None,
        "progress": job.progress or {},
        "show_logout": show_logout and not standalone,
        "csrf": None if standalone else csrf,  # the Cancel button's form; a standalone report has none
    }
    if result is not None and job.status == JobStatus.SUCCEEDED:
        if job.kind == "training":
            context["training"] = training_view(result)
        elif job.kind == "evaluation":
            context["evaluation"] = evaluation_view(result)
    return _render("job.html", standalone, context)


def render_new_page(context: dict[str, Any]) -> str:
    """The forms page: upload a model or a dataset, submit an evaluation (see service/api/ui/actions.py)."""
    return _render("new.html", False, context)


def render_jobs_page(rows: Sequence[Mapping[str, Any]], *, show_logout: bool = False) -> str:
    return _render("jobs.html", False, {"rows": list(rows), "show_logout": show_logout})


def render_login(*, next_path: str, error: str | None) -> str:
    return _render("login.html", False, {"next_path": next_path, "error": error})


def standalone_csp() -> str:
    """The Content-Security-Policy of a standalone report: its inline stylesheet, data: images, no script."""
    return (
        f"default-src 'none'; img-src data:; style-src '{_css_hash()}'; base-uri 'none'; form-action 'none'"
    )


UI_CSP = (
    "default-src 'none'; img-src 'self' data:; style-src 'self'; script-src 'self'; connect-src 'self'; "
    "form-action 'self'; frame-ancestors 'none'; base-uri 'none'"
)
PAGE_HEADERS = {
    "Content-Security-Policy": UI_CSP,
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "same-origin",
    "Cache-Control": "no-store",
}


@lru_cache(maxsize=1)
def _environment() -> Environment:
    env = Environment(
        loader=FileSystemLoader(HERE / "templates"),
        autoescape=True,
        undefined=StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
    )
    env.filters["when"] = _when
    env.filters["size"] = _size
    return env


def _render(template: str, standalone: bool, context: dict[str, Any]) -> str:
    css = Markup(_css()) if standalone else None
    csp = standalone_csp() if standalone else None
    return _environment().get_template(template).render(standalone=standalone, css=css, csp=csp, **context)


@lru_cache(maxsize=1)
def _css() -> str:
    return (STATIC_DIR / "ui.css").read_text(encoding="utf-8")


@lru_cache(maxsize=1)
def _css_hash() -> str:
    digest = hashlib.sha256(_css().encode("utf-8")).digest()
    return "sha256-" + base64.b64encode(digest).decode("ascii")


def _when(value: datetime | None) -> str:
    return "—" if value is None else value.strftime("%Y-%m-%d %H:%M:%S UTC")


def _size(value: int) -> str:
    size = float(value)
    for unit in ("B", "KiB", "MiB"):
        if size < 1024:
            return f"{value} B" if unit == "B" else f"{size:.1f} {unit}"
        size /= 1024
    return f"{size:.1f} GiB"
