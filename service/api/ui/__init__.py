"""The browser UI: a live jobs page and a report page per job, server-rendered, working offline.

Import the router from `service.api.ui.routes`; this package's `__init__` stays empty so the workers can
import `service.api.ui.examples` without pulling in FastAPI.
"""
