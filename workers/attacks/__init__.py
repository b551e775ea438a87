"""The attack engine: one module per attack, all behind `Attack.__call__`, found through one registry."""

from __future__ import annotations

from service.domain.specs import AttackSpecBase
from workers.attacks.apgd import APGD, APGDCE, APGDDLR, APGDT
from workers.attacks.base import Attack, AttackNotApplicable, AttackOutput, derive_seed, random_targets
from workers.attacks.cw import CW
from workers.attacks.fab import FABT
from workers.attacks.fgsm import FGSM
from workers.attacks.fmn import FMN
from workers.attacks.iterative import IterativeAttack, IterState
from workers.attacks.minimum_norm import MinimumNormAttack, MinimumNormOutput
from workers.attacks.norms import L1, L2, Linf, Norm, norm_for
from workers.attacks.pgd import PGD
from workers.attacks.square import Square
from workers.attacks.targets import TargetSweep

# Adding an attack: its module, its spec in service/domain/specs.py, and one line here.
ATTACKS: dict[str, type[Attack]] = {
    FGSM.name: FGSM,
    PGD.name: PGD,
    APGDCE.name: APGDCE,
    APGDDLR.name: APGDDLR,
    APGDT.name: APGDT,
    FABT.name: FABT,
    Square.name: Square,
    CW.name: CW,
    FMN.name: FMN,
}


class UnknownAttack(ValueError):
    """A spec whose name no registered attack has (the service and the workers disagree)."""


def attack_from_spec(spec: AttackSpecBase) -> Attack:
    """The attack a validated spec describes (eps is not part of it: it is an argument of each call)."""
    kind = ATTACKS.get(spec.name)
    if kind is None:
        raise UnknownAttack(f"no attack is registered as {spec.name!r}; registered: {', '.join(ATTACKS)}")
    return kind.from_spec(spec)


__all__ = [
    "APGD",
    "APGDCE",
    "APGDDLR",
    "APGDT",
    "ATTACKS",
    "CW",
    "FMN",
    "FABT",
    "FGSM",
    "L1",
    "L2",
    "PGD",
    "Square",
    "TargetSweep",
    "Attack",
    "AttackNotApplicable",
    "AttackOutput",
    "IterState",
    "IterativeAttack",
    "Linf",
    "MinimumNormAttack",
    "MinimumNormOutput",
    "Norm",
    "UnknownAttack",
    "attack_from_spec",
    "derive_seed",
    "norm_for",
    "random_targets",
]
