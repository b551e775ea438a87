"""The browser UI: a live jobs page and a report page per job, server-rendered, working offline.

Import the router from `service.ui.routes`; this package's `__init__` stays empty so the workers can
import `service.ui.examples` without pulling in FastAPI.
"""
