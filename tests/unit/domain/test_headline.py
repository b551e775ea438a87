"""The headline a report quotes first: the autoattack worst case when it ran, else a marked sanity figure."""

from __future__ import annotations

from typing import Any

from rich.console import Console

from service.cli.tables import result_table
from service.domain.headline import SANITY_NOTE, headlines
from service.domain.verdicts import outcomes_for_job
from service.reports.markdown import markdown_report
from tests.unit.check_helpers import fake_result

PGD_ONLY: list[dict[str, Any]] = [{"name": "pgd", "eps": [0.1, 0.3]}, {"name": "fgsm", "eps": 0.3}]
WITH_AUTOATTACK: list[dict[str, Any]] = [
    {"name": "pgd", "eps": [0.1, 0.3, 0.4]},
    {"name": "autoattack", "eps": [0.1, 0.3], "version": "fast"},
]


def _levels(name: str, eps: float) -> float:
    return {"pgd": 0.9, "fgsm": 0.95, "autoattack": 0.8}[name] - eps


def test_without_autoattack_the_largest_eps_worst_case_is_a_marked_sanity_figure() -> None:
    (headline,) = headlines(fake_result(PGD_ONLY, _levels).model_dump(mode="json"))
    assert (headline.norm, headline.eps, headline.robust_accuracy, headline.strong) == (
        "linf",
        0.3,
        0.6,
        False,
    )
    assert headline.title() == "robust accuracy, linf eps=0.3 (worst case of pgd, fgsm)"
    assert headline.note() == SANITY_NOTE and "not a robustness claim" in headline.note()


def test_with_autoattack_the_headline_is_its_worst_case_even_below_a_larger_pgd_eps(
    small_autoattack: Any,
) -> None:
    (headline,) = headlines(fake_result(WITH_AUTOATTACK, _levels).model_dump(mode="json"))
    # pgd also ran at 0.4, but the figure to quote is where autoattack ran.
    assert (headline.eps, headline.robust_accuracy, headline.strong) == (0.3, 0.5, True)
    assert (
        headline.title() == "robust accuracy, linf eps=0.3 (autoattack worst case)" and headline.note() == ""
    )


def test_odd_results_give_no_headline_rather_than_an_error() -> None:
    assert headlines({}) == []
    assert headlines({"worst_case": [{"norm": "linf", "eps": "x"}, "junk"], "attacks": None}) == []


def test_markdown_and_the_terminal_table_quote_the_headline(small_autoattack: Any) -> None:
    strong = fake_result(WITH_AUTOATTACK, _levels)
    text = markdown_report(strong, outcomes_for_job({"attacks": WITH_AUTOATTACK}, strong))
    assert "**Robust accuracy, linf eps=0.3 (autoattack worst case): 50.0%**." in text.splitlines()
    weak = fake_result(PGD_ONLY, _levels)
    text = markdown_report(weak, outcomes_for_job({"attacks": PGD_ONLY}, weak))
    assert f"**Robust accuracy, linf eps=0.3 (worst case of pgd, fgsm): 60.0%** — {SANITY_NOTE}." in text

    console = Console(width=200, record=True)
    console.print(result_table(strong))
    printed = console.export_text()
    assert "robust accuracy, linf eps=0.3 (autoattack worst case): 50.0%" in printed
    assert "autoattack fast" in printed  # the row label comes from the spec registry
