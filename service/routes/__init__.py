"""HTTP routes, one module per resource; `ROUTERS` is what `create_app()` mounts."""

from __future__ import annotations

from service.routes import datasets, evaluations, health, jobs, models, trainings
from service.ui import routes as ui

ROUTERS = (
    health.router,
    models.router,
    datasets.router,
    evaluations.router,
    trainings.router,
    jobs.router,
    ui.router,
)
