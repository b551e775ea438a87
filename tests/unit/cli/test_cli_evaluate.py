"""`parry evaluate`: the local, server-less evaluation command."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from service.cli.main import main
from service.domain.results import EvaluationResult

ATTACKS = ["--attack", "fgsm:eps=0.05,0.1,0.2", "--attack", "pgd:eps=0.1,steps=5"]


def test_evaluate_prints_a_table_and_writes_the_result(
    model_files: dict[str, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out, per_sample = tmp_path / "result.json", tmp_path / "per_sample.npz"
    argv = ["evaluate", "--model", str(model_files["keras"]), "--dataset", "builtin:mnist-5k:test"]
    argv += [*ATTACKS, "--max-samples", "100", "--json", str(out), "--per-sample", str(per_sample)]
    assert main(argv) == 0
    printed = capsys.readouterr().out
    assert "pgd-5" in printed and "worst case" in printed

    result = EvaluationResult.model_validate_json(out.read_text())
    assert result.num_samples == 100 and len(result.attacks) == 4
    assert [a.eps for a in result.attacks] == [0.05, 0.1, 0.2, 0.1]
    fgsm = [a.robust_accuracy for a in result.attacks[:3]]
    assert fgsm[0] >= fgsm[2]  # a larger budget never helps the model much on a clean-trained CNN
    worst = next(w for w in result.worst_case if w.eps == 0.1)
    assert worst.robust_accuracy <= min(a.robust_accuracy for a in result.attacks if a.eps == 0.1)
    arrays = np.load(per_sample)
    assert arrays["clean_pred"].shape == (100,)


def test_the_same_seed_gives_the_same_numbers(model_files: dict[str, Path], tmp_path: Path) -> None:
    figures = []
    for run in range(2):
        out = tmp_path / f"r{run}.json"
        argv = [
            "evaluate",
            "--model",
            str(model_files["saved_model_zip"]),
            "--dataset",
            "builtin:mnist-5k:test",
        ]
        argv += ["--attack", "pgd:eps=0.1,steps=3", "--max-samples", "40", "--json", str(out), "--quiet"]
        assert main(argv) == 0
        result = EvaluationResult.model_validate_json(out.read_text())
        figures.append([(a.robust_accuracy, a.mean_perturbation, a.cost) for a in result.attacks])
    assert figures[0] == figures[1]


@pytest.mark.parametrize(
    ("change", "says"),
    [
        ({"--model": "missing.keras"}, "does not exist"),
        ({"--dataset": "missing.npz"}, "does not exist"),
        ({"--dataset": "builtin:cifar"}, "unknown built-in dataset"),
        ({"--attack": "deepfool:eps=1"}, "unknown attack"),
        ({"--attack": "pgd:eps=0.1,stpes=3"}, "'stpes' is not a field"),
        ({"--input-range": "0"}, "two numbers"),
        ({"--input-range": "1,0"}, "LO < HI"),
        ({"--dataset": "builtin:digits"}, "shape"),
    ],
)
def test_bad_input_is_one_sentence_and_exit_2(
    model_files: dict[str, Path],
    change: dict[str, str],
    says: str,
    capsys: pytest.CaptureFixture[str],
) -> None:
    args = {"--model": str(model_files["keras"]), "--dataset": "builtin:mnist-5k:test"}
    args |= {"--attack": "fgsm:eps=0.1", "--max-samples": "10"}
    args |= change
    argv = ["evaluate", *(item for pair in args.items() for item in pair), "--quiet"]
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert says in err and "Traceback" not in err
    assert err.startswith("parry: ") and err.count("\n") == 1


def test_labels_and_ranges_that_do_not_fit_the_model(
    model_files: dict[str, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    x = np.random.default_rng(0).random((8, 28, 28, 1)).astype(np.float32)
    bad_labels, raw_pixels = tmp_path / "labels.npz", tmp_path / "raw.npz"
    np.savez(bad_labels, x=x, y=np.array([0, 1, 2, 3, 4, 5, 6, 12]))
    np.savez(raw_pixels, x=x * 255, y=np.arange(8))
    base = ["evaluate", "--model", str(model_files["h5"]), "--attack", "fgsm:eps=0.1", "--quiet"]
    assert main([*base, "--dataset", str(bad_labels)]) == 2
    assert "12" in capsys.readouterr().err
    assert main([*base, "--dataset", str(raw_pixels)]) == 2
    assert "input_range" in capsys.readouterr().err


def test_json_is_the_api_result_object(model_files: dict[str, Path], tmp_path: Path) -> None:
    out = tmp_path / "r.json"
    argv = ["evaluate", "--model", str(model_files["saved_model_dir"]), "--dataset", "builtin:mnist-5k:test"]
    assert (
        main([*argv, "--attack", "fgsm:eps=0.1", "--max-samples", "50", "--json", str(out), "--quiet"]) == 0
    )
    body = json.loads(out.read_text())
    for key in ("num_samples", "clean_accuracy", "attacks", "warnings", "model_sha256", "dataset_sha256"):
        assert key in body
    assert {
        "robust_accuracy",
        "attack_success_rate",
        "mean_perturbation",
        "per_class_robust_accuracy",
    } <= set(body["attacks"][0])
