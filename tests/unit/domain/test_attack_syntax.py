from typing import Any

import pytest
from pydantic import TypeAdapter, ValidationError

from service.domain.attack_syntax import AttackSyntaxError, describe_validation_error, parse_attack
from service.domain.specs import (
    ATTACK_NAMES,
    APGDCESpec,
    APGDDLRSpec,
    AttackSpec,
    AutoAttackSpec,
    FGSMSpec,
    PGDSpec,
)


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


def test_autoattack_from_the_command_line(small_autoattack: Any) -> None:
    spec = parse_attack("autoattack:eps=0.1,0.3,version=fast")
    assert isinstance(spec, AutoAttackSpec) and spec.eps == [0.1, 0.3] and spec.label() == "autoattack fast"
    assert [s.name for s in spec.stages()] == ["apgd-ce", "apgd-dlr"]
    assert all(s.eps == [0.1, 0.3] and s.norm == "linf" for s in spec.stages())
    assert parse_attack("autoattack:eps=0.3").version == "standard"  # type: ignore[union-attr]
    with pytest.raises(AttackSyntaxError, match="eps list must be in increasing order"):
        parse_attack("autoattack:eps=0.3,0.1,version=fast")
    with pytest.raises(AttackSyntaxError, match="autoattack is untargeted"):
        parse_attack("autoattack:eps=0.3,targeted=true")


def test_an_autoattack_version_whose_stages_are_missing_says_which_versions_exist(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from service.domain import specs

    monkeypatch.setitem(specs.AUTOATTACK_STAGES, "fast", ({"name": "apgd-ce", "steps": 5},))
    monkeypatch.setitem(specs.AUTOATTACK_STAGES, "standard", ({"name": "no-such-attack"},))
    with pytest.raises(
        AttackSyntaxError, match="needs attacks this server does not have; versions available: fast"
    ):
        parse_attack("autoattack:eps=0.3")


@pytest.mark.skipif(
    "apgd-t" not in ATTACK_NAMES, reason="the stage attacks (apgd-t, fab-t, square) are not in"
)
def test_every_autoattack_version_is_the_papers() -> None:
    from service.domain.specs import available_autoattack_versions

    assert available_autoattack_versions() == ["standard", "fast", "rand"]
    labels = {
        version: [s.label() for s in AutoAttackSpec(eps=0.3, version=version).stages()]  # type: ignore[arg-type]
        for version in ("standard", "fast", "rand")
    }
    assert labels == {
        "standard": ["apgd-ce-100", "apgd-t-100", "fab-t-100", "square-5000"],
        "fast": ["apgd-ce-100", "apgd-t-100"],
        "rand": ["apgd-ce-100 eot20", "apgd-dlr-100 eot20"],
    }
    standard = AutoAttackSpec(eps=[0.1, 0.3])
    assert standard.gradient_steps() == sum(s.gradient_steps() for s in standard.stages())


@pytest.mark.parametrize(
    ("text", "hint"),
    [
        ("pgd:epsilon=0.3", "'epsilon' is not a field of this attack; did you mean 'eps'?"),
        ("pgd:eps=0.3,stpes=3", "did you mean 'steps'?"),
        ("fgsm:eps=0.1,nrom=l2", "did you mean 'norm'?"),
        ("apgd-ce:eps=0.1,restart=2", "did you mean 'restarts'?"),
        ("pgd:eps=0.3,zzz=1", "'zzz' is not a field of this attack (known: eps, norm,"),
    ],
)
def test_a_misspelt_field_gets_a_suggestion(text: str, hint: str) -> None:
    with pytest.raises(AttackSyntaxError) as caught:
        parse_attack(text)
    assert hint in str(caught.value)
    assert "required" not in str(caught.value)  # not pydantic's complaint about the field it meant


def test_a_validation_error_on_an_unknown_field_suggests_too() -> None:
    with pytest.raises(ValidationError) as caught:
        TypeAdapter(AttackSpec).validate_python({"name": "pgd", "eps": 0.1, "setps": 3})
    assert "did you mean 'steps'?" in describe_validation_error(caught.value)


def test_a_misspelt_attack_gets_a_suggestion() -> None:
    with pytest.raises(AttackSyntaxError) as caught:
        parse_attack("pdg:eps=0.1")
    assert "unknown attack 'pdg'" in str(caught.value) and "(did you mean 'pgd'?)" in str(caught.value)
    assert "apgd-dlr" in str(caught.value)  # the known attacks come from the spec union
