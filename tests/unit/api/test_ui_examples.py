"""The pieces behind the report page: PNG encoding, SVG charts, and choosing and storing examples."""

from __future__ import annotations

import io
import struct
import xml.etree.ElementTree as ET
import zlib
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from service.api.ui.examples import load_example_grid
from service.api.ui.png import encode_png
from service.api.ui.svg import Bars, Series, bar_chart, line_chart
from workers.evaluation.examples import KeptRun, example_arrays, examples_npz, keep_rows, select_examples

SVG = "{http://www.w3.org/2000/svg}"


def _decode_png(data: bytes) -> np.ndarray:
    """Just enough of a PNG reader for our own unfiltered 8-bit images."""
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    pos, chunks = 8, {}
    while pos < len(data):
        (length,) = struct.unpack(">I", data[pos : pos + 4])
        kind, body = data[pos + 4 : pos + 8], data[pos + 8 : pos + 8 + length]
        (crc,) = struct.unpack(">I", data[pos + 8 + length : pos + 12 + length])
        assert crc == zlib.crc32(kind + body) & 0xFFFFFFFF
        chunks[kind] = chunks.get(kind, b"") + body
        pos += 12 + length
    width, height, depth, color = struct.unpack(">IIBB", chunks[b"IHDR"][:10])
    channels = {0: 1, 2: 3}[color]
    assert depth == 8
    raw = np.frombuffer(zlib.decompress(chunks[b"IDAT"]), np.uint8).reshape(height, 1 + width * channels)
    assert (raw[:, 0] == 0).all()
    return raw[:, 1:].reshape(height, width, channels)


@pytest.mark.parametrize("shape", [(5, 7), (5, 7, 1), (3, 4, 3)])
def test_png_round_trip(shape: tuple[int, ...]) -> None:
    pixels = np.random.default_rng(0).integers(0, 256, shape, dtype=np.uint8)
    decoded = _decode_png(encode_png(pixels))
    assert np.array_equal(decoded, pixels.reshape(shape[0], shape[1], -1))


def test_png_refuses_what_it_cannot_encode() -> None:
    with pytest.raises(ValueError, match="uint8"):
        encode_png(np.zeros((2, 2), np.float32))
    with pytest.raises(ValueError, match="image"):
        encode_png(np.zeros((2, 2, 2), np.uint8))


def test_line_chart_maps_points_and_escapes_labels() -> None:
    svg = line_chart(
        [Series("<b>pgd</b>", [(0.0, 1.0), (0.3, 0.0)]), Series("empty", [])],
        title="t & u",
        x_label="eps",
        y_label="acc",
    )
    root = ET.fromstring(str(svg))  # well-formed XML: every label was escaped
    (line,) = root.findall(f"{SVG}polyline")
    assert line.get("data-label") == "<b>pgd</b>"
    (x0, y0), (x1, y1) = (tuple(map(float, p.split(","))) for p in (line.get("points") or "").split())
    assert x0 < x1 and y0 < y1  # accuracy 1 at the top, 0 at the bottom (SVG y grows downwards)
    assert "<b>" not in str(svg)


def test_bar_chart_bar_heights_follow_values() -> None:
    bars = [Bars("clean", [1.0, 0.5]), Bars("eps", [0.25, None])]
    svg = bar_chart(["0", "1"], bars, title="t", x_label="c", y_label="a")
    heights = [float(r.get("height") or 0) for r in ET.fromstring(str(svg)).findall(f"{SVG}rect")]
    assert len(heights) == 3
    # Category by category: clean 1.0, eps 0.25, then clean 0.5 (no eps bar for class 1).
    assert heights[0] == pytest.approx(4 * heights[1]) == pytest.approx(2 * heights[2])


def test_charts_without_data_say_so() -> None:
    assert "no data" in line_chart([], title="t", x_label="x", y_label="y")
    assert "no data" in bar_chart([], [], title="t", x_label="x", y_label="y")


def test_select_examples_balances_classes_and_prefers_clean_correct() -> None:
    labels = np.array([0, 0, 0, 1, 1, 2, 2, 2, 3])
    preds = np.array([1, 0, 0, 1, 0, 2, 2, 2, 0])
    assert select_examples(labels, preds).tolist() == [1, 2, 3, 4, 5, 6, 8]
    # A limit keeps one of every class before a second of any.
    assert select_examples(labels, preds, limit=5).tolist() == [1, 2, 3, 5, 8]
    # Large samples keep the artifact small.
    assert select_examples(labels, preds, sample_size=400_000).tolist() == [1, 3]


def test_example_arrays_keep_the_strongest_attack_per_eps(tmp_path: Path) -> None:
    x = np.full((2, 4, 4, 1), 0.5, np.float32)
    labels = np.array([0, 1])

    def run(name: str, eps: float, robust: float) -> KeptRun:
        return KeptRun(name, "linf", eps, robust, x + eps, np.array([5, 5]))

    runs = [run("fgsm", 0.1, 0.5), run("pgd", 0.1, 0.2), run("fgsm", 0.3, 0.0), run("pgd", 0.3, 0.1)]
    arrays = example_arrays(x, labels, labels, np.array([7, 9]), runs, input_range=(0.0, 1.0))
    assert arrays["attack"].tolist() == ["pgd", "fgsm"] and arrays["eps"].tolist() == [0.1, 0.3]
    assert arrays["x_adv"].shape == (2, 2, 4, 4, 1) and arrays["adv_pred"].shape == (2, 2)
    path = tmp_path / "examples.npz"
    path.write_bytes(examples_npz(arrays))
    with np.load(io.BytesIO(path.read_bytes()), allow_pickle=False) as data:
        assert data["attack"].dtype.kind == "U"
    grid = load_example_grid(path)
    assert grid is not None and grid.columns == ["pgd linf eps=0.1", "fgsm linf eps=0.3"]
    assert [row.label for row in grid.rows] == [0, 1]
    assert grid.rows[1].adversarial[0][0].good is False and grid.rows[1].clean.good is True


def test_non_image_samples_give_no_grid(tmp_path: Path) -> None:
    x = np.zeros((2, 3), np.float32)  # three features: not an image
    arrays = example_arrays(
        x, np.array([0, 1]), np.array([0, 1]), np.array([0, 1]), [], input_range=(0.0, 1.0)
    )
    path = tmp_path / "examples.npz"
    path.write_bytes(examples_npz(arrays))
    assert load_example_grid(path) is None
    assert load_example_grid(tmp_path / "missing.npz") is None


def test_keep_rows_copies_only_kept_samples() -> None:
    kept = np.zeros((2, 3), np.float32)
    keep_rows(kept, np.array([4, 1]), np.array([1, 2, 3]), np.arange(9, dtype=np.float32).reshape(3, 3))
    assert kept.tolist() == [[0, 0, 0], [0, 1, 2]]


def test_evaluation_keeps_the_examples_it_reports(mnist_cnn: Any, mnist_test: Any) -> None:
    from service.domain.datasets import ArrayDataset
    from service.domain.specs import EvaluationOptions, FGSMSpec, PGDSpec
    from workers.evaluation.engine import evaluate
    from workers.models.loading import from_keras

    order = np.random.default_rng(1).permutation(mnist_test.num_samples)[:120]
    data = ArrayDataset(mnist_test.x[order], mnist_test.y[order], mnist_test.sha256, "mixed")
    options = EvaluationOptions(
        attacks=[FGSMSpec(eps=[0.1, 0.2]), PGDSpec(eps=[0.1, 0.2], steps=5)], batch_size=50, seed=2
    )
    outcome = evaluate(from_keras(mnist_cnn, sha256="f" * 64), data, options, keep_examples=2)
    examples = outcome.examples
    assert examples is not None
    index = examples["index"]
    assert len(index) == 20 and sorted(set(examples["label"].tolist())) == list(range(10))
    assert np.array_equal(examples["label"], outcome.per_sample["labels"][index])
    assert examples["eps"].tolist() == [0.1, 0.2]
    results = outcome.result.attacks
    for j, (name, eps) in enumerate(zip(examples["attack"], examples["eps"], strict=True)):
        run = next(i for i, r in enumerate(results) if r.name == name and r.eps == eps)
        assert results[run].robust_accuracy == min(r.robust_accuracy for r in results if r.eps == eps)
        # The kept predictions are the evaluation's own, and the inputs stay in the eps ball.
        assert np.array_equal(examples["adv_pred"][j], outcome.per_sample[f"adv_pred_{run}"][index])
        delta = examples["x_adv"][j] - examples["x_clean"]
        assert np.abs(delta).max() <= eps + 1e-5 and np.abs(delta).max() > 0
    without = evaluate(from_keras(mnist_cnn, sha256="f" * 64), data, options)
    assert without.examples is None
    assert without.result.attacks[0].robust_accuracy == results[0].robust_accuracy
