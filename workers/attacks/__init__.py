"""The attack engine: one module per attack, all behind `Attack.__call__`."""

from __future__ import annotations

from service.domain.specs import FGSMSpec, PGDSpec
from workers.attacks.base import Attack, AttackOutput, derive_seed, random_targets
from workers.attacks.fgsm import FGSM
from workers.attacks.pgd import PGD

ATTACKS: dict[str, type[FGSM] | type[PGD]] = {"fgsm": FGSM, "pgd": PGD}


def attack_from_spec(spec: FGSMSpec | PGDSpec) -> Attack:
    """The attack a validated spec describes (eps is not part of it: it is an argument of each call)."""
    if isinstance(spec, PGDSpec):
        return PGD.from_spec(spec)
    return FGSM.from_spec(spec)


__all__ = [
    "ATTACKS",
    "FGSM",
    "PGD",
    "Attack",
    "AttackOutput",
    "attack_from_spec",
    "derive_seed",
    "random_targets",
]
