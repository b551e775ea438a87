"""The attack presets of the UI's evaluation form: a few sensible attack lists, from a quick look to a
thorough one. Their eps are for inputs in [0, 1] and scale with the form's input range."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

_EPS = (0.1, 0.2, 0.3)


@dataclass(frozen=True)
class Preset:
    key: str
    title: str
    description: str
    attacks: tuple[dict[str, Any], ...]

    def scaled(self, width: float) -> list[dict[str, Any]]:
        """The attack specs, their eps in units of an input range `width` wide."""
        return [{**a, "eps": [round(e * width, 6) for e in a["eps"]]} for a in self.attacks]


PRESETS: tuple[Preset, ...] = (
    Preset(
        "quick",
        "Quick",
        "FGSM at eps 0.1, 0.2, 0.3: a first look in seconds.",
        ({"name": "fgsm", "eps": _EPS},),
    ),
    Preset(
        "standard",
        "Standard",
        "FGSM and PGD-40 at eps 0.1, 0.2, 0.3: the usual robustness check.",
        ({"name": "fgsm", "eps": _EPS}, {"name": "pgd", "eps": _EPS, "steps": 40}),
    ),
    Preset(
        "thorough",
        "Thorough",
        "PGD-40, APGD-CE and APGD-DLR at eps 0.1, 0.2, 0.3: catches gradient masking; slower.",
        (
            {"name": "pgd", "eps": _EPS, "steps": 40},
            {"name": "apgd-ce", "eps": _EPS},
            {"name": "apgd-dlr", "eps": _EPS},
        ),
    ),
)
BY_KEY = {p.key: p for p in PRESETS}
