"""Reading a job result defensively (any field may be missing or of another type) and formatting numbers."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any


def as_map(value: Any) -> Mapping[str, Any]:
    return value if isinstance(value, Mapping) else {}


def as_list(value: Any) -> list[Any]:
    return list(value) if isinstance(value, list | tuple) else []


def num(value: Any) -> float | None:
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    return float(value)


def class_map(value: Any) -> dict[str, float]:
    if not isinstance(value, Mapping):
        return {}
    return {str(k): float(v) for k, v in value.items() if num(v) is not None}


def class_key(name: str) -> tuple[int, int | str]:
    return (0, int(name)) if name.lstrip("-").isdigit() else (1, name)


def pct(value: float | None) -> str:
    return "—" if value is None else f"{value * 100:.1f}%"


def fmt(value: Any, pattern: str = "{:.4g}") -> str:
    number = num(value)
    return "—" if number is None else pattern.format(number)


def plain(value: Any) -> str:
    if value is None:
        return "—"
    if isinstance(value, list | tuple):
        return "[" + ", ".join(plain(v) for v in value) + "]"
    return str(value)
