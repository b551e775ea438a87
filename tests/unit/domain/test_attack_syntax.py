import pytest

from service.domain.attack_syntax import AttackSyntaxError, parse_attack
from service.domain.specs import FGSMSpec, PGDSpec


def test_pgd_with_fields() -> None:
    spec = parse_attack("pgd:eps=0.3,steps=40,norm=l2,loss=cw,restarts=2")
    assert isinstance(spec, PGDSpec)
    assert (spec.eps, spec.steps, spec.norm, spec.loss, spec.restarts) == (0.3, 40, "l2", "cw", 2)
    assert spec.step_size_for(0.3) == pytest.approx(2.5 * 0.3 / 40)


def test_eps_list_continues_after_commas() -> None:
    spec = parse_attack("fgsm:eps=0.1,0.2,0.3,norm=linf")
    assert isinstance(spec, FGSMSpec)
    assert spec.eps_values() == [0.1, 0.2, 0.3]


@pytest.mark.parametrize(
    ("text", "says"),
    [
        ("deepfool:eps=1", "unknown attack 'deepfool'"),
        ("pgd", "'eps' is required"),
        ("pgd:eps=0.3,stpes=4", "'stpes' is not a field"),
        ("pgd:eps=0.3,steps=0", "'steps'"),
        ("pgd:eps=-1", "'eps'"),
        ("pgd:eps=0.3,eps=0.2", "given twice"),
        ("pgd:steps=4,10", "cannot read '10'"),
        ("fgsm:eps=0.1,target=3", "targeted"),
    ],
)
def test_bad_attacks_say_what_is_wrong(text: str, says: str) -> None:
    with pytest.raises(AttackSyntaxError, match=says):
        parse_attack(text)
