"""Tiny benign and hostile SavedModels for the op allowlist tests (built in seconds, never trained).

Benign: what Keras 3 `model.export()` and `tf.saved_model.save` write for the layers people use.
Hostile: one graph per family of operations a model must not contain (files, Python callbacks, ...).
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any


def _keras_benign() -> dict[str, Callable[[], Any]]:
    import keras
    from keras import layers as L

    def seq(shape: tuple[int, ...], *body: Any, classes: int = 3) -> Any:
        return keras.Sequential([keras.Input(shape=shape), *body, L.Dense(classes)])

    def residual() -> Any:
        x = keras.Input(shape=(8, 8, 3))
        a = L.Conv2D(4, 3, padding="same", activation="relu")(x)
        b = L.Conv2D(4, 1, padding="same")(x)
        h = L.Add()([a, b])
        h = L.Concatenate()([h, L.Multiply()([a, b])])
        h = L.GlobalMaxPooling2D()(h)
        return keras.Model(x, L.Dense(3)(h))

    def attention() -> Any:
        x = keras.Input(shape=(6, 8))
        h = L.MultiHeadAttention(num_heads=2, key_dim=4)(x, x)
        h = L.LayerNormalization()(L.Add()([x, h]))
        return keras.Model(x, L.Dense(3)(L.GlobalAveragePooling1D()(h)))

    def tokens() -> Any:
        x = keras.Input(shape=(6,))
        h = L.Embedding(20, 4)(x)
        return keras.Model(x, L.Dense(3)(L.Flatten()(h)))

    normalization = L.Normalization(mean=0.5, variance=0.25)
    return {
        "conv2d": lambda: seq((8, 8, 1), L.Conv2D(4, 3, activation="relu"), L.MaxPooling2D(), L.Flatten()),
        "conv1d": lambda: seq((12, 2), L.Conv1D(4, 3, strides=2, padding="same"), L.GlobalAveragePooling1D()),
        "conv3d": lambda: seq((4, 4, 4, 1), L.Conv3D(2, 2), L.AveragePooling3D(1), L.Flatten()),
        "depthwise_separable": lambda: seq(
            (8, 8, 3), L.DepthwiseConv2D(3), L.SeparableConv2D(4, 3), L.GlobalAveragePooling2D()
        ),
        "conv_transpose": lambda: seq((4, 4, 2), L.Conv2DTranspose(2, 3, strides=2), L.Flatten()),
        "batchnorm_dropout": lambda: seq(
            (10,), L.Dense(8), L.BatchNormalization(), L.ReLU(), L.Dropout(0.5), L.GaussianNoise(0.1)
        ),
        "layernorm_gelu": lambda: seq((10,), L.Dense(8, activation="gelu"), L.LayerNormalization()),
        "activations": lambda: seq(
            (10,),
            L.Dense(8, activation="swish"),
            L.Activation("tanh"),
            L.Activation("elu"),
            L.Activation("selu"),
            L.Activation("softplus"),
            L.Activation("sigmoid"),
            L.LeakyReLU(),
            L.PReLU(),
            L.Activation("hard_sigmoid"),
            L.Activation("mish"),
        ),
        "softmax_head": lambda: keras.Sequential([keras.Input(shape=(10,)), L.Dense(3), L.Softmax()]),
        "lstm": lambda: seq((5, 3), L.LSTM(4)),
        "gru_bidirectional": lambda: seq((5, 3), L.Bidirectional(L.GRU(3, return_sequences=True)), L.GRU(2)),
        "simple_rnn": lambda: seq((5, 3), L.SimpleRNN(4)),
        "attention": attention,
        "embedding": tokens,
        "residual_concat": residual,
        "preprocessing": lambda: seq(
            (10, 10, 3),
            L.Rescaling(1 / 255.0),
            normalization,
            L.Resizing(6, 6),
            L.CenterCrop(4, 4),
            L.Flatten(),
        ),
        "augmentation_inference": lambda: seq(
            (8, 8, 3), L.RandomFlip(), L.RandomRotation(0.1), L.RandomZoom(0.1), L.Flatten()
        ),
        "pooling_padding": lambda: seq(
            (8, 8, 2),
            L.ZeroPadding2D(1),
            L.Cropping2D(1),
            L.UpSampling2D(),
            L.MaxPooling2D(),
            L.GlobalMaxPooling2D(),
        ),
        "reshape_permute": lambda: seq(
            (4, 6), L.Permute((2, 1)), L.Reshape((24,)), L.RepeatVector(2), L.Flatten()
        ),
        "unit_norm_spectral": lambda: seq((10,), L.UnitNormalization(), L.SpectralNormalization(L.Dense(4))),
        "group_norm": lambda: seq((6, 6, 4), L.GroupNormalization(groups=2), L.Flatten()),
    }


def benign_names() -> list[str]:
    return [*_keras_benign(), "tf_module_while_cond", "tf_module_math"]


def export_benign(name: str, path: Path) -> Path:
    """Write the benign model `name` as a SavedModel folder at `path`."""
    import numpy as np

    builders = _keras_benign()
    if name in builders:
        model = builders[name]()
        model(np.zeros((1, *model.input_shape[1:]), np.float32))  # build every variable
        model.export(str(path), verbose=False)
        return path
    if name == "tf_module_while_cond":
        return _save_module(_while_cond_module(), path)
    if name == "tf_module_math":
        return _save_module(_math_module(), path)
    raise KeyError(name)


def _save_module(module: Any, path: Path) -> Path:
    import tensorflow as tf

    tf.saved_model.save(module, str(path), signatures={"serving_default": module.__call__})
    return path


def _while_cond_module() -> Any:
    import tensorflow as tf

    class Iterated(tf.Module):
        def __init__(self) -> None:
            self.w = tf.Variable(tf.ones([4, 3]) * 0.1)

        @tf.function(input_signature=[tf.TensorSpec([None, 4], tf.float32)])
        def __call__(self, x: tf.Tensor) -> dict[str, tf.Tensor]:
            i0 = tf.constant(0)
            _, h = tf.while_loop(lambda i, h: i < 3, lambda i, h: (i + 1, tf.tanh(h) * 0.9), [i0, x])
            h = tf.cond(tf.reduce_sum(h) > 0, lambda: h * 2.0, lambda: h - 1.0)
            return {"logits": tf.matmul(h, self.w)}

    return Iterated()


def _math_module() -> Any:
    import tensorflow as tf

    class Maths(tf.Module):
        def __init__(self) -> None:
            self.w = tf.Variable(tf.random.stateless_normal([4, 3], seed=[1, 2]))

        @tf.function(input_signature=[tf.TensorSpec([None, 4], tf.float32)])
        def __call__(self, x: tf.Tensor) -> dict[str, tf.Tensor]:
            h = tf.clip_by_value(tf.abs(x) + tf.sqrt(tf.square(x) + 1.0), 0.0, 10.0)
            h = tf.math.log1p(h) * tf.exp(-h) + tf.math.reduce_logsumexp(h, axis=1, keepdims=True)
            h = tf.concat([h[:, :2], tf.reverse(h[:, 2:], axis=[1])], axis=1)
            h = tf.where(h > 0.5, h, tf.nn.relu6(h)) + tf.cast(tf.argmax(h, axis=1)[:, None], tf.float32)
            logits = tf.einsum("bi,ij->bj", h, self.w)
            return {"logits": tf.nn.log_softmax(logits) + tf.reduce_mean(tf.gather(h, [0, 1], axis=1))}

    return Maths()


# ---- hostile ---------------------------------------------------------------------------------------


def hostile_names() -> list[str]:
    return list(_HOSTILE)


def export_hostile(name: str, path: Path, *, target: Path) -> Path:
    """A SavedModel whose serving function does something a model must not; `target` is a file it
    would touch (read, write or list) if it ever ran."""
    import tensorflow as tf

    body = _HOSTILE[name]

    class Hostile(tf.Module):
        def __init__(self) -> None:
            self.w = tf.Variable(tf.ones([4, 3]))
            if name.startswith("InitializeTableFromTextFile"):  # a table must belong to the module
                init = tf.lookup.TextFileInitializer(
                    str(target),
                    tf.string,
                    tf.lookup.TextFileIndex.WHOLE_LINE,
                    tf.int64,
                    tf.lookup.TextFileIndex.LINE_NUMBER,
                )
                self.table = tf.lookup.StaticHashTable(init, default_value=-1)

        @tf.function(input_signature=[tf.TensorSpec([None, 4], tf.float32)])
        def __call__(self, x: tf.Tensor) -> dict[str, tf.Tensor]:
            side = body(self, x, str(target))
            return {"logits": tf.matmul(x, self.w) + side}

    return _save_module(Hostile(), path)


def _read_file(_module: Any, x: Any, target: str) -> Any:
    import tensorflow as tf

    return tf.cast(tf.strings.length(tf.io.read_file(target)), tf.float32)


def _write_file(_module: Any, x: Any, target: str) -> Any:
    import tensorflow as tf

    with tf.control_dependencies([tf.io.write_file(target, "pwned")]):
        return tf.constant(0.0)


def _matching_files(_module: Any, x: Any, target: str) -> Any:
    import tensorflow as tf

    return tf.cast(tf.size(tf.io.matching_files(target + "*")), tf.float32)


def _print_to_file(_module: Any, x: Any, target: str) -> Any:
    import tensorflow as tf

    with tf.control_dependencies([tf.print(x, output_stream=f"file://{target}")]):
        return tf.constant(0.0)


def _text_line_dataset(_module: Any, x: Any, target: str) -> Any:
    import tensorflow as tf

    return tf.cast(tf.data.TextLineDataset([target]).reduce(0, lambda n, _: n + 1), tf.float32)


def _tfrecord_dataset(_module: Any, x: Any, target: str) -> Any:
    import tensorflow as tf

    return tf.cast(tf.data.TFRecordDataset([target]).reduce(0, lambda n, _: n + 1), tf.float32)


def _table_from_file(module: Any, x: Any, target: str) -> Any:
    import tensorflow as tf

    return tf.cast(module.table.lookup(tf.constant("x")), tf.float32)


def _py_function(_module: Any, x: Any, target: str) -> Any:
    import tensorflow as tf

    return tf.py_function(lambda t: t * 0.0, [tf.reduce_sum(x)], tf.float32)


def _read_file_in_while(_module: Any, x: Any, target: str) -> Any:
    import tensorflow as tf

    def body(i: Any, acc: Any) -> tuple[Any, Any]:
        return i + 1, acc + tf.cast(tf.strings.length(tf.io.read_file(target)), tf.float32)

    _, total = tf.while_loop(lambda i, acc: i < 1, body, [tf.constant(0), tf.constant(0.0)])
    return total


def _read_file_in_cond(_module: Any, x: Any, target: str) -> Any:
    import tensorflow as tf

    return tf.cond(
        tf.reduce_sum(x) > 1e9,
        lambda: tf.cast(tf.strings.length(tf.io.read_file(target)), tf.float32),
        lambda: tf.constant(0.0),
    )


def _debug_identity(_module: Any, x: Any, target: str) -> Any:
    from tensorflow.python.ops import gen_debug_ops

    return tf_sum(gen_debug_ops.debug_identity_v2(x, debug_urls=[f"file://{target}"]))


def _immutable_const(_module: Any, x: Any, target: str) -> Any:
    import tensorflow as tf
    from tensorflow.python.ops import gen_array_ops

    return tf.reduce_sum(
        gen_array_ops.immutable_const(dtype=tf.float32, shape=[1], memory_region_name=target)
    )


def _save_v2_in_serving(_module: Any, x: Any, target: str) -> Any:
    import tensorflow as tf
    from tensorflow.python.ops import gen_io_ops

    with tf.control_dependencies([gen_io_ops.save_v2(target, ["t"], [""], [tf.reduce_sum(x)])]):
        return tf.constant(0.0)


def tf_sum(t: Any) -> Any:
    import tensorflow as tf

    return tf.reduce_sum(t)


_HOSTILE: dict[str, Callable[[Any, Any, str], Any]] = {
    "ReadFile": _read_file,
    "WriteFile": _write_file,
    "MatchingFiles": _matching_files,
    "PrintV2": _print_to_file,
    "TextLineDataset": _text_line_dataset,
    "TFRecordDataset": _tfrecord_dataset,
    "InitializeTableFromTextFileV2": _table_from_file,
    "EagerPyFunc": _py_function,
    "ReadFile in While": _read_file_in_while,
    "ReadFile in If": _read_file_in_cond,
    "DebugIdentityV2": _debug_identity,
    "ImmutableConst": _immutable_const,
    "SaveV2": _save_v2_in_serving,
}


# ---- TensorFlow 1 exports that would take over the loader (findings F1 and F2) ----------------------


def tf1_names() -> list[str]:
    return list(_TF1)


def export_tf1(name: str, path: Path, *, target: Path) -> Path:
    """A TF1-style SavedModel (no object graph) whose loader would touch `target` if it ever ran.

    - "main_op writes" (F1): the saver's save tensor names the model's `main_op`, which runs SaveV2 at
      `target` (a checkpoint prefix: `target.index` appears if it runs). `tf.saved_model.load` runs the
      `main_op` of a TF1 model.
    - "restore reads :1" (F2): the restore ops read output 1 of the node the saver's filename tensor
      names, which passes on a constant holding `target`: a checkpoint of someone else's weights, which
      this writes first. The check used to compare node names only, so it took this for the saver's file.
    """
    import tensorflow as tf
    from tensorflow.python.ops import gen_io_ops

    v1 = tf.compat.v1
    graph = tf.Graph()
    with graph.as_default():
        x = v1.placeholder(tf.float32, [None, 4], name="x")
        w = v1.get_variable("w", initializer=tf.ones([4, 3]), use_resource=True)
        logits = tf.matmul(x, w, name="logits")
        main_op = None
        if name == "main_op writes":
            payload = gen_io_ops.save_v2(str(target), ["pwned"], [""], [tf.constant([1.0])])
            main_op = tf.group(payload, name="main_op")
        with v1.Session(graph=graph) as sess:
            sess.run(v1.global_variables_initializer())
            if name == "restore reads :1":  # the other tenant's weights, at a path the attacker knows
                sess.run(w.assign(tf.fill([4, 3], 7.0)))
                v1.train.Saver({"w": w}).save(sess, str(target), write_meta_graph=False)
                sess.run(w.assign(tf.ones([4, 3])))
            builder = v1.saved_model.Builder(str(path))
            signature = v1.saved_model.predict_signature_def({"x": x}, {"logits": logits})
            builder.add_meta_graph_and_variables(
                sess, ["serve"], signature_def_map={"serving_default": signature}, main_op=main_op
            )
            builder.save()
    _TF1[name](path / "saved_model.pb", str(target))
    return path


def _save_tensor_is_main_op(pb: Path, target: str) -> None:
    proto = _parse(pb)
    proto.meta_graphs[0].saver_def.save_tensor_name = "main_op"
    pb.write_bytes(proto.SerializeToString())


def _restore_reads_output_1(pb: Path, target: str) -> None:
    import tensorflow as tf

    proto = _parse(pb)
    meta = proto.meta_graphs[0]
    graph = meta.graph_def
    filename = meta.saver_def.filename_tensor_name.split(":")[0]
    evil = graph.node.add()
    evil.name, evil.op = "evil_path", "Const"
    evil.attr["dtype"].type = tf.string.as_datatype_enum
    evil.attr["value"].tensor.CopyFrom(tf.make_tensor_proto(target))
    pair = graph.node.add()
    pair.name, pair.op = "filename_pair", "IdentityN"
    pair.input.extend([filename, "evil_path"])
    pair.attr["T"].list.type.extend([tf.string.as_datatype_enum] * 2)
    meta.saver_def.filename_tensor_name = "filename_pair:0"
    for node in graph.node:
        if node.op == "RestoreV2":
            node.input[0] = "filename_pair:1"
    pb.write_bytes(proto.SerializeToString())


def _parse(pb: Path) -> Any:
    from tensorflow.core.protobuf import saved_model_pb2

    proto = saved_model_pb2.SavedModel()
    proto.ParseFromString(pb.read_bytes())
    return proto


_TF1: dict[str, Callable[[Path, str], None]] = {
    "main_op writes": _save_tensor_is_main_op,
    "restore reads :1": _restore_reads_output_1,
}


# ---- faults: models that never return (F3) -------------------------------------------------------------


def export_hanging(path: Path, *, above: int) -> Path:
    """A digits-shaped (8, 8, 1) SavedModel that loops forever on batches of more than `above` samples.

    Only allowlisted ops (a While on a counter): nothing the graph checks can refuse, so only the worker's
    deadlines stop it. `above=0` hangs on every call, the validation's probe included.
    """
    import tensorflow as tf

    class Hanging(tf.Module):
        def __init__(self) -> None:
            self.w = tf.Variable(tf.random.stateless_normal([64, 10], seed=[3, 4]) * 0.1)

        @tf.function(input_signature=[tf.TensorSpec([None, 8, 8, 1], tf.float32)])
        def __call__(self, x: tf.Tensor) -> dict[str, tf.Tensor]:
            big = tf.shape(x)[0] > above
            count = tf.while_loop(
                lambda i: tf.logical_and(big, i >= 0), lambda i: i + 1, [tf.constant(0, tf.int64)]
            )[0]
            logits = tf.matmul(tf.reshape(x, [-1, 64]), self.w)
            return {"logits": logits + tf.cast(count, tf.float32) * 0.0}

    return _save_module(Hanging(), path)
