"""The command-line form of an attack: `pgd:eps=0.3,steps=40`, `apgd-ce:eps=0.3,steps=100`."""

from __future__ import annotations

import difflib
from collections.abc import Iterable

from pydantic import TypeAdapter, ValidationError

from service.domain.specs import ATTACK_NAMES, ATTACK_SPECS, AttackSpec, AttackSpecUnion

_ADAPTER: TypeAdapter[AttackSpecUnion] = TypeAdapter(AttackSpec)
# From the spec union, so a new attack is known here without touching this module.
KNOWN_ATTACKS = ATTACK_NAMES


class AttackSyntaxError(ValueError):
    """An attack argument that cannot be understood; the message says how to write it."""


def parse_attack(text: str) -> AttackSpecUnion:
    """Parse `NAME:key=value,key=value`; a bare value after `eps=` extends the eps list."""
    name, _, rest = text.strip().partition(":")
    name = name.strip().lower()
    if name not in KNOWN_ATTACKS:
        raise AttackSyntaxError(f"unknown attack {name!r} in {text!r}{unknown_attack_hint(name)}")
    fields: dict[str, str | list[str]] = {}
    last_key: str | None = None
    for token in filter(None, (t.strip() for t in rest.split(","))):
        key, sep, value = token.partition("=")
        if sep:
            last_key = key.strip()
            if last_key in fields:
                raise AttackSyntaxError(f"{last_key!r} is given twice in {text!r}")
            fields[last_key] = value.strip()
        elif last_key == "eps":
            previous = fields["eps"]
            fields["eps"] = [*previous, token] if isinstance(previous, list) else [previous, token]
        else:
            raise AttackSyntaxError(
                f"cannot read {token!r} in {text!r}; write key=value pairs, e.g. 'pgd:eps=0.3,steps=40'"
            )
    unknown = [key for key in fields if key not in attack_fields(name)]
    if unknown:  # before pydantic, whose first complaint about `epsilon=` would be "'eps' is required"
        raise AttackSyntaxError(f"attack {text!r}: {unknown_field(unknown[0], name)}")
    try:
        return _ADAPTER.validate_python({"name": name, **fields})
    except ValidationError as exc:
        raise AttackSyntaxError(f"attack {text!r}: {describe_validation_error(exc)}") from exc


def describe_validation_error(exc: ValidationError) -> str:
    """The first problem of a pydantic error as one sentence a user can act on."""
    problem = exc.errors()[0]
    # The discriminator ("pgd", "apgd-ce", ...) is part of the location pydantic reports; users never
    # typed it.
    # So is the union branch pydantic tried ("constrained-float", "list[...]"): keep field names and indices.
    parts = [
        str(p) for p in problem["loc"] if p not in KNOWN_ATTACKS and (isinstance(p, int) or p.isidentifier())
    ]
    loc = ".".join(parts) or "value"
    if problem["type"] == "extra_forbidden":
        attack = next((str(p) for p in problem["loc"] if p in KNOWN_ATTACKS), None)
        return f"{loc!r} is not a field of this attack" + suggestion(
            str(problem["loc"][-1]), attack_fields(attack) if attack else ()
        )
    if problem["type"] == "missing":
        return f"{loc!r} is required"
    message = str(problem["msg"]).removeprefix("Value error, ")
    if not parts:  # a check of the whole spec: its sentence says what is wrong
        return message
    return f"{loc!r}: {message}"


def unknown_attack_hint(name: str) -> str:
    """ " (did you mean 'pgd'?)" for a near miss, then the known attacks."""
    near = closest(name, KNOWN_ATTACKS) if name else None
    return (f" (did you mean {near!r}?)" if near else "") + f"; known attacks: {', '.join(KNOWN_ATTACKS)}"


def attack_fields(name: str) -> tuple[str, ...]:
    """The fields an attack's spec takes (`name` aside), in the spec's order; none for an unknown attack."""
    spec = ATTACK_SPECS.get(name)
    return tuple(f for f in spec.model_fields if f != "name") if spec is not None else ()


def unknown_field(key: str, attack: str, *, also: Iterable[str] = ()) -> str:
    """ "'epsilon' is not a field of this attack; did you mean 'eps'?" (`also`: other keys allowed there)."""
    return f"{key!r} is not a field of this attack" + suggestion(key, [*attack_fields(attack), *also])


def suggestion(word: str, known: Iterable[str]) -> str:
    """ "; did you mean 'eps'?" for a near miss among `known`, else the known names; '' when none are."""
    names = list(dict.fromkeys(known))
    if not names:
        return ""
    near = closest(word, names)
    return f"; did you mean {near!r}?" if near else f" (known: {', '.join(names)})"


def closest(word: str, known: Iterable[str]) -> str | None:
    """The known name `word` is most likely a slip for, or None."""
    names = list(known)
    lowered = word.lower()
    # A prefix either way ('epsilon' for 'eps', 'min_robust_acc' for 'min_robust_accuracy') is the
    # commonest slip, and difflib's ratio misses short ones.
    close = [n for n in names if len(n) >= 3 and (lowered.startswith(n) or n.startswith(lowered))]
    close = close or difflib.get_close_matches(lowered, names, n=1, cutoff=0.6)
    return close[0] if close else None
