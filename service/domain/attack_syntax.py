"""The command-line form of an attack: `pgd:eps=0.3,steps=40`, `apgd-ce:eps=0.3,steps=100`."""

from __future__ import annotations

from pydantic import TypeAdapter, ValidationError

from service.domain.specs import ATTACK_NAMES, AttackSpec, AttackSpecUnion

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
        raise AttackSyntaxError(
            f"unknown attack {name!r} in {text!r}; known attacks: {', '.join(KNOWN_ATTACKS)}"
        )
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
        return f"{loc!r} is not a field of this attack"
    if problem["type"] == "missing":
        return f"{loc!r} is required"
    message = str(problem["msg"]).removeprefix("Value error, ")
    if not parts:  # a check of the whole spec: its sentence says what is wrong
        return message
    return f"{loc!r}: {message}"
