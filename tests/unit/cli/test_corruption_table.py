"""`parry evaluate`'s corruption table: a row per corruption, a column per severity, the mean as caption."""

from __future__ import annotations

from rich.console import Console

from service.cli.tables import corruption_table
from service.domain.results import CorruptionItem, CorruptionsResult
from tests.unit.check_helpers import fake_result


def test_the_table_has_a_row_per_corruption_and_a_column_per_severity() -> None:
    result = fake_result([{"name": "fgsm", "eps": 0.1}], lambda name, eps: 0.5)
    assert corruption_table(result) is None
    items = [CorruptionItem(name="contrast", severity=s, accuracy=a) for s, a in ((1, 0.9), (5, 0.4))]
    result.corruptions = CorruptionsResult(
        items=items, mean_accuracy=0.65, relative_error=3.5, skipped=["saturate"]
    )
    console = Console(width=200, record=True)
    console.print(corruption_table(result))
    text = console.export_text()
    assert "severity 1" in text and "severity 5" in text and "90.0%" in text and "40.0%" in text
    caption = " ".join(text.split())  # the caption wraps at the table's width
    assert "mean accuracy 65.0%, 3.50× the clean error; not applicable: saturate" in caption
