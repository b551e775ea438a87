import pytest

from service.domain.attack_syntax import AttackSyntaxError, parse_attack
from service.domain.specs import ATTACK_NAMES, APGDCESpec, APGDDLRSpec, FGSMSpec, PGDSpec


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
        ("apgd-ce:eps=0.3,step_size=0.1", "'step_size' is not a field"),
        ("apgd-dlr:eps=0.3,targeted=true", "untargeted only"),
        ("apgd-ce:eps=0.3,norm=l1", "'norm'"),
    ],
)
def test_bad_attacks_say_what_is_wrong(text: str, says: str) -> None:
    with pytest.raises(AttackSyntaxError, match=says):
        parse_attack(text)


def test_apgd_with_fields_and_defaults() -> None:
    spec = parse_attack("apgd-ce:eps=0.3,steps=50,norm=l2")
    assert isinstance(spec, APGDCESpec)
    assert (spec.eps, spec.steps, spec.norm, spec.restarts) == (0.3, 50, "l2", 1)
    dlr = parse_attack("APGD-DLR:eps=0.031")  # names are case-insensitive
    assert isinstance(dlr, APGDDLRSpec) and (dlr.steps, dlr.restarts, dlr.norm) == (100, 1, "linf")


def test_unknown_attack_lists_every_known_one_from_the_spec_union() -> None:
    with pytest.raises(AttackSyntaxError) as caught:
        parse_attack("deepfool:eps=0.1")
    assert all(name in str(caught.value) for name in ATTACK_NAMES)
    assert {"fgsm", "pgd", "apgd-ce", "apgd-dlr"} <= set(ATTACK_NAMES)


@pytest.mark.parametrize(
    ("text", "label"),
    [
        ("fgsm:eps=0.1", "fgsm"),
        ("pgd:eps=0.1,steps=20,restarts=5,loss=cw", "pgd-20×5 cw"),
        ("pgd:eps=0.1,targeted=true", "pgd-40 (targeted)"),
        ("apgd-ce:eps=0.1", "apgd-ce-100"),
        ("apgd-dlr:eps=0.1,steps=50,restarts=2", "apgd-dlr-50×2"),
    ],
)
def test_each_spec_carries_its_label(text: str, label: str) -> None:
    assert parse_attack(text).label() == label
