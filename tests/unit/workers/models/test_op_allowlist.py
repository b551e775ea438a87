"""The SavedModel op allowlist: benign exports all pass, every hostile family is refused by name.

The models come from tests/op_zoo.py: tiny, never trained, exported once per session (about 10 s).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from tests.op_zoo import benign_names, export_benign, export_hostile, export_tf1, hostile_names, tf1_names
from workers.models.errors import ModelLoadError
from workers.models.graph_ops import (
    ALLOWED_OPS,
    CHECKPOINT_READ_OPS,
    CHECKPOINT_WRITE_OPS,
    find_forbidden_op,
    forbidden_reason,
    parse_saved_model,
    tf1_refusal,
)
from workers.models.loading import load_model

# What the sentence must name for each hostile model (the op, and where it hides when that matters).
EXPECTED = {
    "ReadFile": ("ReadFile (file access)",),
    "WriteFile": ("WriteFile (file access)",),
    "MatchingFiles": ("MatchingFiles (file access)",),
    "PrintV2": ("PrintV2 (file access)",),
    "TextLineDataset": ("Dataset", "a data pipeline that reads files"),
    "TFRecordDataset": ("Dataset", "a data pipeline that reads files"),
    "InitializeTableFromTextFileV2": ("InitializeTableFromTextFileV2 (file access)",),
    "EagerPyFunc": ("EagerPyFunc (a Python callback)",),
    "ReadFile in While": ("ReadFile (file access)", "while_body"),
    "ReadFile in If": ("ReadFile (file access)", "cond_true"),
    "DebugIdentityV2": ("DebugIdentityV2", "debugger tap"),
    "ImmutableConst": ("ImmutableConst (file access)",),
    "SaveV2": ("SaveV2 (file access outside the variables checkpoint)",),
}


@pytest.fixture(scope="session")
def zoo(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("op_zoo")
    return {name: export_benign(name, root / name) for name in benign_names()}


@pytest.fixture(scope="session")
def hostile(tmp_path_factory: pytest.TempPathFactory) -> tuple[dict[str, Path], Path]:
    root = tmp_path_factory.mktemp("hostile_zoo")
    target = root / "secret.txt"
    target.write_text("secret\n")  # a table initializer reads its file when it is built
    models = {
        name: export_hostile(name, root / name.replace(" ", "_"), target=target) for name in hostile_names()
    }
    return models, target


def test_the_zoo_is_broad() -> None:
    assert len(benign_names()) >= 20
    assert set(EXPECTED) == set(hostile_names())


@pytest.mark.parametrize("name", benign_names())
def test_benign_export_is_accepted(zoo: dict[str, Path], name: str) -> None:
    found = find_forbidden_op(parse_saved_model(zoo[name]))
    assert found is None, found.sentence() if found else ""


@pytest.mark.parametrize("name", hostile_names())
def test_hostile_model_is_refused_naming_the_op(hostile: tuple[dict[str, Path], Path], name: str) -> None:
    models, _ = hostile
    found = find_forbidden_op(parse_saved_model(models[name]))
    assert found is not None
    sentence = found.sentence()
    for part in EXPECTED[name]:
        assert part in sentence, sentence
    assert sentence.endswith("Parry only loads models made of math and neural-network operations.")


@pytest.mark.parametrize("name", ["WriteFile", "PrintV2", "ReadFile in While"])
def test_load_model_refuses_before_anything_runs(hostile: tuple[dict[str, Path], Path], name: str) -> None:
    models, target = hostile
    target.write_text("secret\n")
    with pytest.raises(ModelLoadError, match=EXPECTED[name][0].split(" ")[0]):
        load_model(models[name])
    assert target.read_text() == "secret\n"
    assert sorted(p.name for p in target.parent.iterdir() if p.is_file()) == ["secret.txt"]


@pytest.mark.parametrize("name", ["tf_module_while_cond", "attention", "lstm", "preprocessing"])
def test_benign_models_load_through_the_same_check(zoo: dict[str, Path], name: str) -> None:
    loaded = load_model(zoo[name])
    assert loaded.num_classes == 3


# ---- hand-edited protobufs: what an attacker could write without TensorFlow's help -----------------


def _proto(zoo: dict[str, Path]) -> Any:
    return parse_saved_model(zoo["conv2d"])


def _function(proto: Any, prefix: str) -> Any:
    (fn,) = [
        f for f in proto.meta_graphs[0].graph_def.library.function if f.signature.name.startswith(prefix)
    ]
    return fn


def test_calling_the_checkpoint_save_function_from_the_model_is_refused(zoo: dict[str, Path]) -> None:
    proto = _proto(zoo)
    save_fn = _function(proto, "__inference__traced_save").signature.name
    call = _function(proto, "__inference___call__").node_def.add()
    call.name, call.op = "sneaky", save_fn
    found = find_forbidden_op(proto)
    assert found is not None and found.op in CHECKPOINT_WRITE_OPS
    assert "outside the variables checkpoint" in found.sentence() and save_fn in found.where


def test_a_primitive_op_named_in_a_function_attribute_is_checked(zoo: dict[str, Path]) -> None:
    proto = _proto(zoo)
    node = _function(proto, "__inference___call__").node_def.add()
    node.name, node.op = "indirect", "PartitionedCall"
    node.attr["f"].func.name = "ReadFile"
    found = find_forbidden_op(proto)
    assert found is not None and found.op == "ReadFile"


def test_a_function_passed_on_inside_an_attribute_is_checked(zoo: dict[str, Path]) -> None:
    proto = _proto(zoo)
    node = _function(proto, "__inference___call__").node_def.add()
    node.name, node.op = "nested", "StatefulPartitionedCall"
    node.attr["f"].func.name = _function(proto, "__inference___call__").signature.name
    node.attr["f"].func.attr["inner"].func.name = "WriteFile"
    found = find_forbidden_op(proto)
    assert found is not None and found.op == "WriteFile"


def test_an_unknown_or_custom_op_is_refused_by_name(zoo: dict[str, Path]) -> None:
    proto = _proto(zoo)
    node = _function(proto, "__inference___call__").node_def.add()
    node.name, node.op = "custom", "Addons>MyCustomOp"
    found = find_forbidden_op(proto)
    assert found is not None and found.op == "Addons>MyCustomOp"
    assert "an operation Parry does not know, such as a custom op" in found.sentence()


def test_a_top_level_restore_is_refused_whatever_file_it_reads(zoo: dict[str, Path]) -> None:
    """TensorFlow 2 exports restore inside a function; a RestoreV2 node in the graph itself is TF1 style."""
    for source in ("saver_filename", "saver_filename:0", "Const"):
        proto = _proto(zoo)
        meta = proto.meta_graphs[0]
        restore = meta.graph_def.node.add()
        restore.name, restore.op = "old_style_restore", "RestoreV2"
        restore.input.append(source)
        (root,) = [n for n in meta.graph_def.node if n.name == meta.saver_def.restore_op_name]
        root.input.append("^old_style_restore")
        found = find_forbidden_op(proto)
        assert found is not None and found.op == "RestoreV2" and "old_style_restore" in found.where, source


def _saver_node(proto: Any, which: str) -> Any:
    saver = proto.meta_graphs[0].saver_def
    name = (saver.save_tensor_name if which == "save" else saver.restore_op_name).split(":")[0]
    (node,) = [n for n in proto.meta_graphs[0].graph_def.node if n.name == name]
    return node


def _mutate_filename_index(proto: Any) -> None:
    _saver_node(proto, "restore").input[0] = "saver_filename:1"


def _mutate_save_tensor_index(proto: Any) -> None:
    proto.meta_graphs[0].saver_def.save_tensor_name = _saver_node(proto, "save").name + ":1"


def _mutate_save_tensor_to_a_signature(proto: Any) -> None:
    proto.meta_graphs[0].saver_def.save_tensor_name = "StatefulPartitionedCall:0"


def _mutate_restore_operand(proto: Any) -> None:
    _saver_node(proto, "restore").input.append("StatefulPartitionedCall:0")


def _mutate_filename_not_a_placeholder(proto: Any) -> None:
    proto.meta_graphs[0].saver_def.filename_tensor_name = "Const:0"


def _mutate_restore_name_with_index(proto: Any) -> None:
    proto.meta_graphs[0].saver_def.restore_op_name += ":0"


@pytest.mark.parametrize(
    "mutate",
    [
        _mutate_filename_index,
        _mutate_save_tensor_index,
        _mutate_save_tensor_to_a_signature,
        _mutate_restore_operand,
        _mutate_filename_not_a_placeholder,
        _mutate_restore_name_with_index,
    ],
)
def test_the_checkpoint_exception_needs_the_exact_saver_shape(zoo: dict[str, Path], mutate: Any) -> None:
    """Tensor references are matched by node and output index; any other shape loses the exception."""
    proto = _proto(zoo)
    assert find_forbidden_op(proto) is None
    mutate(proto)
    found = find_forbidden_op(proto)
    assert found is not None and found.op in CHECKPOINT_WRITE_OPS | CHECKPOINT_READ_OPS
    assert "outside the variables checkpoint" in found.sentence()


def test_tf2_exports_are_not_refused_as_tf1(zoo: dict[str, Path]) -> None:
    assert not [name for name, path in zoo.items() if tf1_refusal(parse_saved_model(path))]


def test_a_saved_model_without_a_usable_object_graph_is_refused_as_tf1(zoo: dict[str, Path]) -> None:
    emptied = _proto(zoo)
    emptied.meta_graphs[0].object_graph_def.ClearField("nodes")
    assert emptied.meta_graphs[0].HasField("object_graph_def")
    removed = _proto(zoo)
    removed.meta_graphs[0].ClearField("object_graph_def")
    doubled = _proto(zoo)
    doubled.meta_graphs.add().CopyFrom(doubled.meta_graphs[0])
    for proto in (emptied, removed, doubled):
        sentence = tf1_refusal(proto)
        assert sentence and "re-export it with TensorFlow 2" in sentence


@pytest.fixture(scope="module")
def tf1_models(tmp_path_factory: pytest.TempPathFactory) -> dict[str, tuple[Path, Path]]:
    root = tmp_path_factory.mktemp("tf1_zoo")
    out = {}
    for index, name in enumerate(tf1_names()):
        target = root / f"target{index}" / "ckpt"
        target.parent.mkdir()
        out[name] = (export_tf1(name, root / f"model{index}", target=target), target)
    return out


@pytest.mark.parametrize("name", tf1_names())
def test_tf1_saved_models_are_refused_before_the_loader_runs(
    tf1_models: dict[str, tuple[Path, Path]], name: str
) -> None:
    path, target = tf1_models[name]
    before = sorted(p.name for p in target.parent.iterdir())
    with pytest.raises(ModelLoadError, match="re-export it with TensorFlow 2"):
        load_model(path)
    assert sorted(p.name for p in target.parent.iterdir()) == before
    # The second layer holds on its own: the checkpoint ops of a TF1 graph are refused by the allowlist.
    found = find_forbidden_op(parse_saved_model(path))
    assert found is not None and found.op in CHECKPOINT_WRITE_OPS | CHECKPOINT_READ_OPS


def test_the_main_op_payload_is_real(tmp_path: Path) -> None:
    """Without Parry's checks, TensorFlow's own loader runs the F1 model's main_op and writes its file."""
    import tensorflow as tf

    path = export_tf1("main_op writes", tmp_path / "model", target=tmp_path / "written")
    assert not (tmp_path / "written.index").exists()
    tf.saved_model.load(str(path))
    assert (tmp_path / "written.index").is_file()


def test_top_level_save_outside_the_saver_is_refused(zoo: dict[str, Path]) -> None:
    proto = _proto(zoo)
    node = proto.meta_graphs[0].graph_def.node.add()
    node.name, node.op = "stray_save", "SaveV2"
    node.input.append("saver_filename")
    found = find_forbidden_op(proto)
    assert found is not None and found.op == "SaveV2" and "stray_save" in found.where


@pytest.mark.parametrize(
    ("op", "reason"),
    [
        ("EagerPyFunc", "a Python callback"),
        ("PyFunc", "a Python callback"),
        ("PrintV2", "file access"),
        ("TFRecordDatasetV2", "a data pipeline that reads files"),
        ("FixedLengthRecordReaderV2", "file access"),
        ("DebugIdentityV3", "a debugger tap that writes to files or the network"),
        ("CollectiveReduceV2", "network access"),
        ("Rpc", "network access"),
        ("WriteScalarSummary", "file access"),
        ("MyOp", None),
    ],
)
def test_refusal_reasons(op: str, reason: str | None) -> None:
    assert op not in ALLOWED_OPS
    assert forbidden_reason(op) == reason


def test_the_allowlist_has_no_io_op() -> None:
    suspicious = ("File", "Dataset", "Reader", "Writer", "Summary", "Debug", "Rpc", "PyFunc", "Print", "Save")
    # ShardedFilename/Filespec only build a name string (the checkpoint functions need them).
    names_only = {"ShardedFilename", "ShardedFilespec"}
    assert not [op for op in ALLOWED_OPS - names_only if any(word in op for word in suspicious)]
    assert not ALLOWED_OPS & (CHECKPOINT_WRITE_OPS | CHECKPOINT_READ_OPS)
    assert "XlaCallModule" not in ALLOWED_OPS and "ImmutableConst" not in ALLOWED_OPS
