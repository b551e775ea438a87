"""`parry evaluate`: the local, server-less evaluation command."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import zipfile
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


def test_an_ood_set_needs_no_attack(
    model_files: dict[str, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out, ood = tmp_path / "r.json", tmp_path / "noise.npz"
    np.savez(ood, x=np.random.default_rng(0).random((30, 28, 28, 1)).astype(np.float32))
    argv = ["evaluate", "--model", str(model_files["keras"]), "--dataset", "builtin:mnist-5k:test",
            "--max-samples", "30", "--ood-dataset", str(ood), "--ood-scores", "msp",
            "--json", str(out)]  # fmt: skip
    assert main([*argv, "--quiet"]) == 0
    assert "ran no attack" in capsys.readouterr().out
    result = EvaluationResult.model_validate_json(out.read_text())
    assert result.attacks == [] and [row.score for row in result.ood or []] == ["msp"]
    assert result.calibration is not None and result.ood_dataset_sha256 is not None
    assert main(["evaluate", "--model", str(model_files["keras"]), "--dataset", "builtin:digits"]) == 2
    assert "at least one --attack, or --ood-dataset" in capsys.readouterr().err


# ---- input checks before TensorFlow, and TensorFlow's start-up lines ------------------------------------

_RUN = """
import sys
from service.cli.main import main
code = main(sys.argv[1:])
print("exit", code, "tensorflow" in sys.modules)
"""


def _run(*argv: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PYTHONWARNINGS": "ignore"}
    env.pop("TF_CPP_MIN_LOG_LEVEL", None)
    return subprocess.run(
        [sys.executable, "-c", _RUN, *argv], capture_output=True, text=True, timeout=300, env=env
    )


def _bad_datasets(root: Path) -> dict[str, tuple[Path, str]]:
    x = np.zeros((4, 28, 28, 1), np.float32)
    cases = {
        "keys": ({"x": x, "labels": np.arange(4)}, "has no labels"),
        "shapes": ({"x": x, "y": np.arange(3)}, "3 labels but x has 4 samples"),
        "negative": ({"x": x, "y": np.array([0, 1, -1, 2])}, "non-negative"),
        "flat": ({"x": np.zeros(4, np.float32), "y": np.arange(4)}, "at least one feature axis"),
    }
    found = {}
    for name, (arrays, says) in cases.items():
        path = root / f"{name}.npz"
        np.savez(path, **arrays)  # type: ignore[arg-type]
        found[name] = (path, says)
    (root / "text.npz").write_text("not a zip")
    found["text"] = (root / "text.npz", "not a readable .npz")
    return found


def test_bad_files_are_refused_before_tensorflow_loads(model_files: dict[str, Path], tmp_path: Path) -> None:
    cases = _bad_datasets(tmp_path)
    model = str(model_files["keras"])
    broken = tmp_path / "broken.keras"
    with zipfile.ZipFile(broken, "w") as zf:
        zf.writestr("config.json", json.dumps({"class_name": "Sequential", "config": {"name": "s"}}))
    runs = [(["--model", model, "--dataset", str(path)], says) for path, says in cases.values()]
    runs.append((["--model", str(broken), "--dataset", "builtin:digits"], "has no 'layers'"))
    runs.append((["--model", str(tmp_path / "text.npz"), "--dataset", "builtin:digits"], "not"))
    runs.append((["--model", model, "--dataset", "builtin:digits", "--attack", "pgd:epsilon=0.1"], "'eps'"))
    for argv, says in runs:
        proc = _run("evaluate", *argv, *([] if "--attack" in argv else ["--attack", "fgsm:eps=0.1"]))
        assert proc.stdout.strip() == "exit 2 False", (argv, proc.stdout, proc.stderr)
        assert says in proc.stderr and proc.stderr.startswith("parry: ") and proc.stderr.count("\n") == 1


def test_tensorflow_start_up_lines_stay_off_stderr_unless_verbose(model_files: dict[str, Path]) -> None:
    argv = ["evaluate", "--model", str(model_files["keras"]), "--dataset", "builtin:mnist-5k:test",
            "--attack", "fgsm:eps=0.1", "--max-samples", "20", "--quiet"]  # fmt: skip
    quiet = _run(*argv)
    assert quiet.stdout.strip().endswith("exit 0 True"), quiet.stderr
    assert quiet.stderr == "", quiet.stderr
    verbose = _run(*argv, "--verbose")
    assert verbose.stdout.strip().endswith("exit 0 True")
    assert "absl" in verbose.stderr or "oneDNN" in verbose.stderr
