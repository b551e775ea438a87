"""HTTP routes, one module per resource; `ROUTERS` is what `create_app()` mounts."""

from __future__ import annotations

from service.api.routes import datasets, evaluations, hard_sets, health, jobs, models, trainings
from service.api.ui import actions as ui_actions
from service.api.ui import routes as ui

ROUTERS = (
    jobs.router,  # first: clients poll job status, and routes are matched in order
    health.router,
    models.router,
    datasets.router,
    evaluations.router,
    trainings.router,
    hard_sets.router,
    ui.router,
    ui_actions.router,
)
