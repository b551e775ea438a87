"""TensorFlow SavedModels (a folder, or a zip/tar archive of one) as a batch -> output callable."""

from __future__ import annotations

import hashlib
import shutil
import tempfile
import weakref
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import tensorflow as tf

from service.vetting.archives import ArchiveError, safe_extract
from workers.models.errors import ModelLoadError, describe_shape, first_sentence, fixed_input_shape
from workers.models.graph_ops import (
    ForbiddenOp,
    find_forbidden_in_graph_def,
    find_forbidden_op,
    parse_saved_model,
    tf1_refusal,
)


@dataclass
class SignatureModel:
    """The chosen signature of a loaded SavedModel.

    Args:
        call: float32 batch -> float32 output of the signature (what the model emits).
        input_shape: the input shape without the batch dimension.
        keep_alive: the loaded object and the extracted files; the signature holds its variables
            weakly, so whoever keeps `call` must keep this too.
    """

    call: Callable[[tf.Tensor], tf.Tensor]
    input_shape: tuple[int, ...]
    keep_alive: Any


def load_signature(path: Path, *, sha256: str = "", work_dir: Path | None = None) -> SignatureModel:
    """Load a SavedModel folder or archive and pick its serving signature.

    Archives are extracted (safely) into `work_dir / "saved_model-<digest>"`, reusing a complete
    earlier extraction, or into a temporary folder removed when the model is dropped.
    """
    scratch: _ScratchDir | None = None
    try:
        if path.is_dir():
            root = _saved_model_dir(path)
        else:
            if work_dir is None:
                scratch = _ScratchDir()
                base = scratch.path
            else:
                base = Path(work_dir)
            root = safe_extract(path, base / f"saved_model-{(sha256 or _file_sha256(path))[:32]}")
    except ArchiveError as exc:
        raise ModelLoadError(str(exc)) from exc

    # The allowlist is checked on the protobuf before TensorFlow loads (and so may run) anything.
    try:
        proto = parse_saved_model(root)
    except Exception as exc:
        raise ModelLoadError(f"The saved_model.pb file cannot be parsed: {first_sentence(exc)}") from exc
    if refusal := tf1_refusal(proto):
        raise ModelLoadError(refusal)
    _refuse(find_forbidden_op(proto))
    try:
        loaded = tf.saved_model.load(str(root))
    except Exception as exc:
        raise ModelLoadError(f"The SavedModel could not be loaded: {first_sentence(exc)}") from exc
    fn, name = _pick_signature(loaded)
    _refuse(find_forbidden_in_graph_def(fn.graph.as_graph_def()))  # what will run, once more, stricter
    in_name, in_spec = _single_input(fn, name)
    out_name = _pick_output(fn, name)
    shape = fixed_input_shape(in_spec.shape)
    in_dtype = in_spec.dtype

    def call(x: tf.Tensor) -> tf.Tensor:
        return tf.cast(fn(**{in_name: tf.cast(x, in_dtype)})[out_name], tf.float32)

    return SignatureModel(call, shape, (loaded, scratch))


class _ScratchDir:
    """A temporary folder removed when this object is collected (quietly, unlike TemporaryDirectory)."""

    def __init__(self) -> None:
        self.path = Path(tempfile.mkdtemp(prefix="parry-model-"))
        weakref.finalize(self, shutil.rmtree, self.path, ignore_errors=True)


def _saved_model_dir(path: Path) -> Path:
    if (path / "saved_model.pb").is_file():
        return path
    candidates = [p.parent for p in path.glob("*/saved_model.pb")]
    if len(candidates) != 1:
        raise ModelLoadError("No saved_model.pb was found in the folder or in exactly one folder inside it.")
    return candidates[0]


def _refuse(found: ForbiddenOp | None) -> None:
    if found is not None:
        raise ModelLoadError(found.sentence())


def _pick_signature(loaded: Any) -> tuple[Any, str]:
    signatures = dict(getattr(loaded, "signatures", {}) or {})
    for name in ("serving_default", "serve"):
        if name in signatures:
            return signatures[name], name
    if len(signatures) == 1:
        name, fn = next(iter(signatures.items()))
        return fn, name
    if not signatures:
        raise ModelLoadError(
            "The SavedModel has no signatures; export it with `model.export(path)` (Keras) or "
            "`tf.saved_model.save(obj, path, signatures=...)`."
        )
    raise ModelLoadError(
        f"The SavedModel has several signatures ({', '.join(sorted(signatures))}) and none is named "
        "serving_default or serve; export the one to evaluate as serving_default."
    )


def _single_input(fn: Any, sig_name: str) -> tuple[str, tf.TensorSpec]:
    args, kwargs = fn.structured_input_signature
    specs = dict(kwargs)
    if args or len(specs) != 1:
        names = ", ".join(sorted(specs)) or "positional arguments"
        raise ModelLoadError(
            f"The signature {sig_name} takes several inputs ({names}); "
            "Parry needs a model with a single input."
        )
    name, spec = next(iter(specs.items()))
    if not isinstance(spec, tf.TensorSpec):
        raise ModelLoadError(f"The signature {sig_name}'s input {name} is not a dense tensor.")
    if not spec.dtype.is_floating:
        raise ModelLoadError(
            f"The model's input {name} has dtype {spec.dtype.name}; Parry needs a floating-point input "
            "to compute gradients."
        )
    if spec.shape.rank is not None and spec.shape.rank >= 1 and spec.shape[0] is not None:
        raise ModelLoadError(
            f"The model's input shape {describe_shape(spec.shape)} has a fixed batch size; "
            "export it with a batch dimension of None."
        )
    return name, spec


def _pick_output(fn: Any, sig_name: str) -> str:
    """The name of the output to use.

    With several outputs, the one with shape (batch, classes >= 2) and a floating dtype is taken
    when it is the only such output (e.g. logits beside a vector of predicted class ids); otherwise
    the model is refused and the outputs are named.
    """
    outputs: dict[str, Any] = dict(fn.structured_outputs)
    if len(outputs) == 1:
        return next(iter(outputs))
    candidates = [
        n
        for n, s in outputs.items()
        if isinstance(s, tf.TensorSpec)
        and s.dtype.is_floating
        and s.shape.rank == 2
        and (s.shape[1] or 0) >= 2
    ]
    if len(candidates) == 1:
        return candidates[0]
    raise ModelLoadError(
        f"The signature {sig_name} has several outputs ({', '.join(sorted(outputs))}); "
        "export a signature whose only output is the logits or probabilities."
    )


def _file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as f:
        while chunk := f.read(1 << 20):
            digest.update(chunk)
    return digest.hexdigest()
