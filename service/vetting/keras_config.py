"""Vetting a Keras model's configuration as plain JSON, before Keras reads the file.

Keras' `safe_mode` refuses Lambda layers, but it has been bypassed more than once (a layer that wraps
another SavedModel, a custom object from an arbitrary module, a vocabulary read from a file path). So
the configuration is read here as data, with `json` and `zipfile` only, and refused when it names:

- a layer that runs code or files it was not given: Lambda, TFSMLayer, the wrappers of other
  frameworks' modules (TorchModuleWrapper, JaxLayer, FlaxLayer);
- a serialized Python function (`__lambda__`, or a Keras 2 `function_type: lambda`);
- a class from a module outside Keras, or a registered custom object (`package>Name`);
- a lookup layer (StringLookup, IntegerLookup, TextVectorization) whose vocabulary is a file path.

Imports neither Keras nor TensorFlow: the API runs the `.keras` check at upload (a fast 422) and the
worker runs it again, with the `.h5` checks (workers/models/keras_vetting.py), before loading.
"""

from __future__ import annotations

import json
import zipfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

CODE_LAYERS = frozenset({"Lambda", "TFSMLayer", "TorchModuleWrapper", "JaxLayer", "FlaxLayer"})
LOOKUP_LAYERS = frozenset({"StringLookup", "IntegerLookup", "TextVectorization", "Hashing"})
# A config.json larger than this is not a classifier's configuration; refusing it bounds the JSON parse.
MAX_CONFIG_BYTES = 32 * 1024 * 1024


class UnsafeKerasConfig(Exception):
    """The configuration names something Parry will not load; the message is one sentence."""


class MalformedKerasConfig(UnsafeKerasConfig):
    """The configuration is not what `model.save()` writes; the message says what is wrong with it."""


def read_keras_config(path: Path) -> Any:
    """The parsed `config.json` of a `.keras` file (a zip)."""
    try:
        with zipfile.ZipFile(path) as zf:
            try:
                info = zf.getinfo("config.json")
            except KeyError:
                raise UnsafeKerasConfig(
                    "The .keras file has no config.json; save it with model.save()."
                ) from None
            if info.file_size > MAX_CONFIG_BYTES:
                raise UnsafeKerasConfig(
                    f"The .keras file's config.json has {info.file_size} bytes, more than any model needs."
                )
            raw = zf.read(info)
    except (zipfile.BadZipFile, OSError, EOFError) as exc:
        raise UnsafeKerasConfig(f"The .keras file is not a readable zip archive: {exc}.") from exc
    return parse_config(raw, what="config.json")


def parse_config(raw: bytes | str, *, what: str) -> Any:
    try:
        return json.loads(raw)
    except (ValueError, RecursionError) as exc:
        raise UnsafeKerasConfig(f"The model's {what} is not valid JSON.") from exc


def check_keras_file(path: Path) -> None:
    """Refuse a `.keras` file whose configuration is malformed or unsafe (`UnsafeKerasConfig`)."""
    config = read_keras_config(path)
    check_structure(config)
    check_config(config)


def check_structure(config: Any) -> None:
    """Refuse a `.keras` configuration that `model.save()` could not have written, saying what is off,
    before Keras reports it as something else (a malformed Sequential read as an unknown custom object)."""
    _check_object(config, "the model")
    name, layers = config["class_name"], config["config"].get("layers")
    if name in ("Sequential", "Functional", "Model") or layers is not None:
        if layers is None:
            raise _malformed(f"the {name} model has no 'layers'")
        if not isinstance(layers, list) or not layers:
            raise _malformed(f"the {name} model's 'layers' is {_kind(layers)}, not a list of layers")
        for i, layer in enumerate(layers):
            _check_object(layer, f"layer {i}")


def _check_object(obj: Any, what: str) -> None:
    if not isinstance(obj, dict):
        raise _malformed(f"{what} is {_kind(obj)}, not an object")
    name = obj.get("class_name")
    if not isinstance(name, str) or not name:
        raise _malformed(f"{what} has no 'class_name'")
    if "config" not in obj:
        raise _malformed(f"{what} ({name}) has no 'config'")
    if not isinstance(obj["config"], dict):
        raise _malformed(f"{what} ({name}) has {_kind(obj['config'])} as its 'config', not an object")


def _malformed(problem: str) -> MalformedKerasConfig:
    return MalformedKerasConfig(
        f"The .keras file's config.json is malformed: {problem}; save the model again with model.save()."
    )


def _kind(value: Any) -> str:
    if isinstance(value, list):
        return "an empty list" if not value else "a list"
    kinds = {dict: "an object", str: "a string", bool: "a boolean", type(None): "null"}
    return kinds.get(type(value), "a number")


def check_config(config: Any) -> None:
    """Refuse a model configuration (Keras 3 `.keras` or the `model_config` of an `.h5`) that is unsafe."""
    for obj in _objects(config):
        problem = _problem(obj)
        if problem:
            raise UnsafeKerasConfig(
                f"The model's configuration {problem}; Parry refuses it (use built-in Keras layers, "
                "or upload a SavedModel export)."
            )


def _problem(obj: dict[str, Any]) -> str | None:
    class_name = obj.get("class_name")
    if class_name in CODE_LAYERS:
        return f"has a {class_name} layer, which runs code or loads files of its own"
    if class_name == "__lambda__" or obj.get("function_type") == "lambda":
        return "holds a serialized Python function (lambda)"
    module = obj.get("module")
    if module is not None and not (
        isinstance(module, str) and (module == "keras" or module.startswith("keras."))
    ):
        return f"uses the custom object {class_name!r} from the module {module!r}, outside Keras"
    registered = obj.get("registered_name")
    if registered is not None and registered != class_name:
        return f"uses the custom object {registered!r}"
    if class_name in LOOKUP_LAYERS:
        config = obj.get("config")
        vocabulary = config.get("vocabulary") if isinstance(config, dict) else None
        if isinstance(vocabulary, str):
            return f"has a {class_name} layer whose vocabulary is read from the file {vocabulary!r}"
    return None


def _objects(node: Any) -> Iterator[dict[str, Any]]:
    """Every serialized object (a dict with a `class_name`, or a Keras 2 function) in the JSON."""
    todo = [node]
    while todo:
        item = todo.pop()
        if isinstance(item, dict):
            if "class_name" in item or "function_type" in item:
                yield item
            todo += item.values()
        elif isinstance(item, list):
            todo += item
