"""`--corruptions all|NAME,... --severities 1,3,5`: the corruptions of `parry submit` and `evaluate`."""

from __future__ import annotations

import argparse

from pydantic import ValidationError

from service.cli.common import CommandError
from service.domain.attack_syntax import describe_validation_error
from service.domain.corruptions import CORRUPTION_NAMES
from service.domain.specs import CorruptionsSpec


def add_corruption_arguments(cmd: argparse.ArgumentParser) -> None:
    cmd.add_argument(
        "--corruptions",
        default=None,
        metavar="all|NAME,...",
        help="accuracy under common corruptions: all, or some of " + ", ".join(CORRUPTION_NAMES),
    )
    cmd.add_argument(
        "--severities", default=None, metavar="1,3,5", help="corruption severities, 1 to 5 (default all)"
    )


def corruptions_from_args(args: argparse.Namespace) -> CorruptionsSpec | None:
    """The spec the two options give, None without --corruptions; a CommandError with a sentence."""
    names_text, severities_text = args.corruptions, args.severities
    if names_text is None:
        if severities_text is not None:
            raise CommandError(
                "--severities goes with --corruptions (e.g. --corruptions all --severities 1,3)"
            )
        return None
    fields: dict[str, object] = {}
    names = [n.strip() for n in names_text.split(",") if n.strip()]
    fields["names"] = "all" if names == ["all"] else names
    if severities_text is not None:
        try:
            fields["severities"] = [int(s) for s in severities_text.split(",") if s.strip()]
        except ValueError:
            raise CommandError(
                f"--severities {severities_text!r}: give whole numbers 1 to 5, e.g. 1,3,5"
            ) from None
    try:
        return CorruptionsSpec.model_validate(fields)
    except ValidationError as exc:
        raise CommandError(f"--corruptions: {describe_validation_error(exc)}") from None
