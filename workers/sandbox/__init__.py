"""Model code runs here, in a child process of the worker, never in the worker itself.

- `isolation.py`: the command that starts a child, in bubblewrap's namespaces or with resource limits only;
- `child.py`: the child's main, which bounds itself and serves requests; `calls.py`: what it can do;
- `protocol.py`: the one-JSON-object-a-line channel and the errors a call ends with;
- `process.py`: one child as the worker sees it (deadlines, kill); `pool.py`: the worker's children and
  the sessions runners use.

docs/security.md says what each mode guarantees.
"""
