"""Helpers for tests of the model sandbox (workers/sandbox/)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest


def require_bwrap() -> None:
    """Skip unless bubblewrap can make its namespaces here (CI installs it: .ci/run)."""
    from workers.sandbox.isolation import SandboxUnavailable, resolve_mode

    try:
        resolve_mode("bwrap")
    except SandboxUnavailable as exc:
        pytest.skip(str(exc))


def child_processes(marker: str) -> list[int]:
    """PIDs of live processes whose command line mentions `marker` (a child's scratch path, say)."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or int(entry.name) == os.getpid():
            continue
        try:
            cmdline = (entry / "cmdline").read_bytes()
            state = (entry / "stat").read_text().split(") ", 1)[1][0]
        except OSError:
            continue
        if marker.encode() in cmdline and state != "Z":
            found.append(int(entry.name))
    return found
