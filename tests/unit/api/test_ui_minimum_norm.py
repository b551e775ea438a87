"""The report page's minimum-norm section: the curve as steps, the bounded attacks overlaid, the table."""

from __future__ import annotations

from service.api.ui.evaluation_view import evaluation_view
from service.api.ui.minimum_norm_view import steps
from tests.unit.domain.test_minimum_norm_thresholds import with_norms


def test_the_curve_is_drawn_as_steps() -> None:
    assert steps([(0.0, 0.9), (1.0, 0.5), (2.0, 0.1)]) == [
        (0.0, 0.9), (1.0, 0.9), (1.0, 0.5), (2.0, 0.5), (2.0, 0.1),
    ]  # fmt: skip


def test_the_section_has_a_chart_with_the_bounded_attack_and_a_row_per_entry() -> None:
    view = evaluation_view(with_norms(None).model_dump(mode="json"))["minimum_norm"]
    (chart,) = view["charts"]
    assert "<svg" in chart and "cw minimal norms" in chart and "pgd at its eps" in chart
    assert view["rows"] == [
        {"name": "cw", "norm": "l2", "median": "∞", "mean": "1.4", "quantiles": "0.5 / 0.9 / 2 / 3",
         "found": "180/190"},
    ]  # fmt: skip


def test_a_result_without_minimum_norm_attacks_has_no_section() -> None:
    result = with_norms(1.0).model_dump(mode="json")
    result["minimum_norm"] = []
    assert evaluation_view(result)["minimum_norm"] == {"charts": [], "rows": []}
