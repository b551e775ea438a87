"""Which TensorFlow operations an uploaded SavedModel may contain: an allowlist, checked on the protobuf.

A SavedModel is a program: besides arithmetic its graph can read and write files, open network
connections or call back into Python, and TensorFlow keeps adding operations. So the check is an
allowlist of pure math and neural-network operations, applied to `saved_model.pb` parsed as a protobuf
(nothing is loaded or run): every node of every meta graph and of every function in the library,
which is where While/If/Case bodies live. An operation not on the list is refused with a sentence
naming it. Function names given in attributes (a While's `body`, a PartitionedCall's `f`) are checked
too: an attribute may name a primitive operation instead of a library function.

Checkpoint I/O is the one exception: every TensorFlow 2 export carries a function that writes the
variables (SaveV2) and one that reads them back (RestoreV2), called from the two graph nodes the meta
graph's `saver_def` names. The exception holds only for exports of exactly the shape
`tf.saved_model.save` writes, matched by node and output index: each of the two nodes is a call of a
library function whose first input is output 0 of the saver's filename placeholder, and whose other
inputs are variables or constants. Even then it covers only the functions reached from those two nodes
and from nothing the loader or a signature runs; the TensorFlow 2 loader restores the variables from
the archive's own `variables/` with operations of its own, so neither function ever runs. A checkpoint
operation anywhere else, including in the top-level graph, is refused.

TensorFlow 1 SavedModels (no object graph) are refused outright: their loader runs the model's own
`main_op`/`init_op` and its own restore op, so the model, not Parry, would decide which files are read
and written.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

# Pure computations on tensors: no file, network, process or Python access, no state besides variables.
MATH_OPS = frozenset(
    """
    Abs Acos Acosh AddN AddV2 Add Angle ApproximateEqual ArgMax ArgMin Asin Asinh Atan Atan2 Atanh
    BatchMatMul BatchMatMulV2 BatchMatMulV3 BesselI0e BesselI1e Betainc BiasAdd BiasAddV1 Bincount
    BitwiseAnd BitwiseOr BitwiseXor Bucketize Cast Ceil ClipByValue Complex ComplexAbs Conj Cos Cosh
    Cross Cumprod Cumsum CumulativeLogsumexp Digamma Div DivNoNan Einsum Elu Equal Erf Erfc Erfinv Exp
    Expm1 Floor FloorDiv FloorMod Gelu Greater GreaterEqual HardSigmoid Igamma Igammac Imag Inv Invert
    InvGrad IsFinite IsInf IsNan L2Loss LeakyRelu Lgamma Less LessEqual LinSpace Log Log1p LogicalAnd
    LogicalNot LogicalOr LogSoftmax MatMul Max Maximum Mean Min Minimum Mod Mul MulNoNan Ndtri Neg
    NextAfter NotEqual OnesLike Pow Prod Range Real RealDiv Reciprocal ReciprocalGrad Relu Relu6 Rint
    Round Rsqrt RsqrtGrad Select SelectV2 Selu Sigmoid SigmoidGrad Sign Sin Sinh Softmax Softplus
    Softsign Sqrt SqrtGrad Square SquaredDifference Sub Sum Tan Tanh TanhGrad TruncateDiv TruncateMod
    Xdivy Xlog1py Xlogy ZerosLike Zeta All Any EuclideanNorm LeftShift RightShift PopulationCount
    SegmentSum SegmentMean SegmentMax SegmentMin SegmentProd UnsortedSegmentSum UnsortedSegmentMax
    UnsortedSegmentMin UnsortedSegmentProd SparseSegmentSum SparseSegmentMean SparseSegmentSqrtN
    TopKV2 InTopKV2 Cholesky MatrixInverse MatrixDeterminant LogMatrixDeterminant MatrixSolve
    MatrixTriangularSolve MatrixBandPart MatrixDiag MatrixDiagV2 MatrixDiagV3 MatrixDiagPart
    MatrixDiagPartV2 MatrixDiagPartV3 MatrixSetDiag MatrixSetDiagV2 MatrixSetDiagV3 Qr SelfAdjointEigV2
    Svd BatchMatrixBandPart FFT IFFT FFT2D IFFT2D RFFT IRFFT ComplexAbs
    """.split()
)
NN_OPS = frozenset(
    """
    Conv1D Conv2D Conv3D Conv2DBackpropInput Conv2DBackpropFilter Conv3DBackpropInputV2
    Conv3DBackpropFilterV2 DepthwiseConv2dNative DepthwiseConv2dNativeBackpropInput
    DepthwiseConv2dNativeBackpropFilter Dilation2D AvgPool AvgPool3D MaxPool MaxPoolV2 MaxPool3D
    MaxPoolWithArgmax AvgPoolGrad MaxPoolGrad MaxPoolGradV2 FractionalAvgPool FractionalMaxPool
    FusedBatchNorm FusedBatchNormV2 FusedBatchNormV3 FusedBatchNormGrad FusedBatchNormGradV3
    BatchNormWithGlobalNormalization LRN LRNGrad Softmax SoftmaxCrossEntropyWithLogits
    SparseSoftmaxCrossEntropyWithLogits ReluGrad Relu6Grad EluGrad SeluGrad SoftplusGrad SoftsignGrad
    LeakyReluGrad BiasAddGrad ResizeBilinear ResizeNearestNeighbor ResizeBicubic ResizeArea
    ScaleAndTranslate CropAndResize ImageProjectiveTransformV2 ImageProjectiveTransformV3
    AdjustContrastv2 AdjustSaturation AdjustHue RGBToHSV HSVToRGB ExtractImagePatches
    ExtractVolumePatches NonMaxSuppressionV3 NonMaxSuppressionV4 NonMaxSuppressionV5 CTCGreedyDecoder
    _FusedConv2D _FusedMatMul _FusedBatchNormEx _MklFusedBatchMatMulV2
    """.split()
)
ARRAY_OPS = frozenset(
    """
    BatchToSpaceND BroadcastArgs BroadcastGradientArgs BroadcastTo CheckNumerics CheckNumericsV2
    Concat ConcatOffset ConcatV2 Const DepthToSpace Diag DiagPart DynamicPartition DynamicStitch
    EnsureShape ExpandDims Fill Gather GatherNd GatherV2 Identity IdentityN InvertPermutation
    ListDiff MirrorPad MirrorPadGrad OneHot Pack Pad PadV2 Placeholder PlaceholderWithDefault
    PreventGradient Rank Reshape ResourceGather ResourceGatherNd Reverse ReverseSequence ReverseV2
    Roll ScatterNd Shape ShapeN Size Slice Snapshot SpaceToBatchND SpaceToDepth Split SplitV Squeeze
    StopGradient StridedSlice StridedSliceGrad TensorScatterAdd TensorScatterMax TensorScatterMin
    TensorScatterSub TensorScatterUpdate Tile TileGrad Transpose Unique UniqueV2 Unpack UpperBound
    LowerBound Where ZerosLike Bitcast Empty DeepCopy InplaceAdd InplaceSub InplaceUpdate Assert NoOp
    ClipByValue Bucketize HistogramFixedWidth SparseToDense SparseTensorDenseMatMul
    SparseTensorDenseAdd SparseReshape SparseFillEmptyRows SparseReorder SparseSlice SparseConcat
    ConjugateTranspose GuaranteeConst
    """.split()
)
# In-memory randomness (augmentation layers, dropout and noise in training mode).
RANDOM_OPS = frozenset(
    """
    RandomUniform RandomUniformInt RandomStandardNormal TruncatedNormal RandomShuffle Multinomial
    RandomGamma RandomPoisson RandomPoissonV2 StatelessRandomUniform StatelessRandomUniformV2
    StatelessRandomUniformInt StatelessRandomUniformIntV2 StatelessRandomUniformFullInt
    StatelessRandomUniformFullIntV2 StatelessRandomNormal StatelessRandomNormalV2
    StatelessTruncatedNormal StatelessTruncatedNormalV2 StatelessMultinomial StatelessRandomGetKeyCounter
    StatelessRandomGetKeyCounterAlg StatelessRandomGetAlg StatelessRandomBinomial StatelessRandomGammaV2
    StatelessRandomGammaV3 StatelessRandomPoisson StatelessShuffle StatelessParameterizedTruncatedNormal
    RngReadAndSkip RngSkip StatefulUniform StatefulUniformInt StatefulUniformFullInt
    StatefulStandardNormalV2 StatefulTruncatedNormal
    """.split()
)
# Control flow and calls of library functions (the called functions are checked in turn).
CONTROL_OPS = frozenset(
    """
    While StatelessWhile If StatelessIf Case StatelessCase PartitionedCall StatefulPartitionedCall
    Enter Exit Merge Switch NextIteration LoopCond ControlTrigger _SwitchN
    """.split()
)
# Variables, in-memory tensor lists and arrays (RNN loops), in-memory lookup tables with inline keys.
STATE_OPS = frozenset(
    """
    VarHandleOp ReadVariableOp AssignVariableOp AssignAddVariableOp AssignSubVariableOp
    VarIsInitializedOp VariableShape DestroyResourceOp DisableCopyOnRead ResourceScatterAdd
    ResourceScatterSub ResourceScatterUpdate ResourceScatterMax ResourceScatterMin ResourceScatterMul
    ResourceScatterDiv ResourceStridedSliceAssign ResourceApplyAdam ResourceApplyGradientDescent
    TensorListFromTensor TensorListGetItem TensorListSetItem TensorListReserve TensorListStack
    TensorListLength TensorListPushBack TensorListPopBack TensorListElementShape TensorListConcatV2
    TensorListGather TensorListScatterIntoExistingList TensorListSplit TensorListResize
    EmptyTensorList TensorArrayV3 TensorArrayReadV3 TensorArrayWriteV3 TensorArrayGatherV3
    TensorArrayScatterV3 TensorArraySizeV3 TensorArrayCloseV3 TensorArrayConcatV3 TensorArraySplitV3
    TensorArrayGradV3 HashTableV2 MutableHashTableV2 LookupTableFindV2 LookupTableImportV2
    LookupTableInsertV2 LookupTableSizeV2 LookupTableExportV2 AnonymousHashTable
    """.split()
)
# String operations the checkpoint functions use to build shard file names; they touch no file.
STRING_OPS = frozenset({"StringJoin", "StaticRegexFullMatch", "ShardedFilename", "ShardedFilespec"})

ALLOWED_OPS = MATH_OPS | NN_OPS | ARRAY_OPS | RANDOM_OPS | CONTROL_OPS | STATE_OPS | STRING_OPS

CHECKPOINT_WRITE_OPS = frozenset({"SaveV2", "Save", "SaveSlices", "MergeV2Checkpoints"})
CHECKPOINT_READ_OPS = frozenset({"RestoreV2", "Restore", "RestoreSlice"})

# Only to say why an operation is refused; the decision is the allowlist's.
_REASONS = (
    (frozenset({"PyFunc", "PyFuncStateless", "EagerPyFunc"}), "a Python callback"),
    (
        frozenset({"ReadFile", "WriteFile", "MatchingFiles", "ImmutableConst", "PrintV2", "Print"}),
        "file access",
    ),
    (CHECKPOINT_WRITE_OPS | CHECKPOINT_READ_OPS, "file access outside the variables checkpoint"),
    (
        frozenset({"Rpc", "TryRpc", "RpcClient", "RpcCall", "Send", "Recv", "_Send", "_Recv"}),
        "network access",
    ),
)
_REASON_WORDS = (
    ("Dataset", "a data pipeline that reads files"),
    ("Reader", "file access"),
    ("TextFile", "file access"),
    ("Summary", "file access"),
    ("Debug", "a debugger tap that writes to files or the network"),
    ("Collective", "network access"),
    ("Rpc", "network access"),
)


@dataclass(frozen=True)
class ForbiddenOp:
    """An operation a SavedModel may not contain, and where it was found."""

    op: str
    where: str

    def sentence(self) -> str:
        reason = forbidden_reason(self.op)
        why = f" ({reason})" if reason else " (an operation Parry does not know, such as a custom op)"
        return (
            f"The SavedModel uses the operation {self.op}{why} in {self.where}; Parry only loads models "
            "made of math and neural-network operations."
        )


def forbidden_reason(op: str) -> str | None:
    """A few words on why a refused operation is dangerous, when it is a known one."""
    for ops, reason in _REASONS:
        if op in ops:
            return reason
    for word, reason in _REASON_WORDS:
        if word in op:
            return reason
    return None


def parse_saved_model(saved_model_dir: Path) -> Any:
    """`saved_model.pb` as a protobuf message; nothing in it is loaded or run."""
    from tensorflow.core.protobuf import saved_model_pb2

    proto = saved_model_pb2.SavedModel()
    proto.ParseFromString((saved_model_dir / "saved_model.pb").read_bytes())
    return proto


def tf1_refusal(proto: Any) -> str | None:
    """A sentence refusing a SavedModel that TensorFlow would load with its TF1 loader, or None.

    `tf.saved_model.load` takes the TensorFlow 2 path only for a single meta graph with an object graph;
    anything else goes through the TF1 loader, which runs the model's own init, main and restore ops.
    """
    graphs = list(proto.meta_graphs)
    if len(graphs) == 1 and graphs[0].HasField("object_graph_def") and graphs[0].object_graph_def.nodes:
        return None
    return (
        "The SavedModel was written by TensorFlow 1 (it has no object graph), and Parry loads only "
        "TensorFlow 2 SavedModels; re-export it with TensorFlow 2: `model.export(path)` in Keras, or "
        "`tf.saved_model.save(obj, path)`."
    )


def find_forbidden_op(proto: Any) -> ForbiddenOp | None:
    """The first operation of a parsed SavedModel outside the allowlist (in a stable order), or None."""
    for index, meta_graph in enumerate(proto.meta_graphs):
        found = _check_graph(
            meta_graph.graph_def,
            saver_def=meta_graph.saver_def if meta_graph.HasField("saver_def") else None,
            object_roots=list(meta_graph.object_graph_def.concrete_functions),
            label="" if len(proto.meta_graphs) == 1 else f" of meta graph {index}",
        )
        if found:
            return found
    return None


def find_forbidden_in_graph_def(graph_def: Any) -> ForbiddenOp | None:
    """The same check on a GraphDef with no checkpoint exception (a loaded signature's graph)."""
    return _check_graph(graph_def, saver_def=None, object_roots=[], label="")


def saved_model_ops(saved_model_dir: Path) -> set[str]:
    """Every operation type in saved_model.pb: its graphs and all the functions in their libraries."""
    ops: set[str] = set()
    for meta_graph in parse_saved_model(saved_model_dir).meta_graphs:
        ops |= graph_def_ops(meta_graph.graph_def)
    return ops


def graph_def_ops(graph_def: Any) -> set[str]:
    """Operation types of a GraphDef's nodes and of every function in its library."""
    ops = {node.op for node in graph_def.node}
    for function in graph_def.library.function:
        ops |= {node.op for node in function.node_def}
    return ops


@dataclass(frozen=True)
class _SaverCalls:
    """The two graph nodes of a TensorFlow 2 export's saver, and the library functions they call."""

    save_node: str
    save_function: str
    restore_node: str
    restore_function: str


def _saver_calls(graph_def: Any, saver_def: Any | None, functions: dict[str, Any]) -> _SaverCalls | None:
    """The saver's calls when `saver_def` has exactly the shape `tf.saved_model.save` writes, else None."""
    if saver_def is None:
        return None
    nodes = {node.name: node for node in graph_def.node}
    filename = _tensor_ref(saver_def.filename_tensor_name)
    placeholder = nodes.get(filename[0])
    if filename[1] != 0 or placeholder is None or placeholder.op != "Placeholder" or placeholder.input:
        return None
    save = _tensor_ref(saver_def.save_tensor_name)
    restore = _tensor_ref(saver_def.restore_op_name)
    if save[1] != 0 or restore[1] != 0 or ":" in saver_def.restore_op_name:
        return None

    def call_of(name: str, *, operands: frozenset[str]) -> str | None:
        node = nodes.get(name)
        if node is None or node.op not in ("StatefulPartitionedCall", "PartitionedCall") or not node.input:
            return None
        called = node.attr["f"].func.name if "f" in node.attr else ""
        if called not in functions or _tensor_ref(node.input[0]) != filename:
            return None
        for ref in map(_tensor_ref, node.input[1:]):
            operand = nodes.get(ref[0])
            if ref[1] != 0 or operand is None or operand.op not in operands or operand.input:
                return None
        return str(called)

    save_function = call_of(save[0], operands=frozenset({"VarHandleOp", "Const"}))
    restore_function = call_of(restore[0], operands=frozenset({"VarHandleOp"}))
    if save_function is None or restore_function is None or save[0] == restore[0]:
        return None
    return _SaverCalls(save[0], save_function, restore[0], restore_function)


def _check_graph(
    graph_def: Any, *, saver_def: Any | None, object_roots: list[str], label: str
) -> ForbiddenOp | None:
    functions = {f.signature.name: f for f in graph_def.library.function}
    saver = _saver_calls(graph_def, saver_def, functions)
    saver_nodes = {saver.save_node, saver.restore_node} if saver else set()

    def reach(start: Iterable[str]) -> set[str]:
        seen: set[str] = set()
        todo = [name for name in start if name in functions]
        while todo:
            name = todo.pop()
            if name not in seen:
                seen.add(name)
                todo += [c for c in _callees(functions[name].node_def) if c in functions]
        return seen

    runs = reach([*object_roots, *_callees(n for n in graph_def.node if n.name not in saver_nodes)])
    saves = reach([saver.save_function]) - runs if saver else set()
    restores = reach([saver.restore_function]) - runs if saver else set()

    found: list[ForbiddenOp] = []
    for node in sorted(graph_def.node, key=lambda n: n.name):
        where = f"the graph{label} (node {node.name})"
        found += _check_nodes([node], functions, write_ok=False, read_ok=False, where=where)
    for name in sorted(functions):
        found += _check_nodes(
            functions[name].node_def,
            functions,
            write_ok=name in saves and name not in restores,
            read_ok=name in restores and name not in saves,
            where=f"the function {name}{label}",
        )
    # Name the most telling operation: a known dangerous one before, say, the string formatting it uses.
    known = [f for f in found if forbidden_reason(f.op)]
    return (known or found)[0] if found else None


def _check_nodes(
    nodes: Iterable[Any], functions: dict[str, Any], *, write_ok: bool, read_ok: bool, where: str
) -> list[ForbiddenOp]:
    found: list[ForbiddenOp] = []
    for node in nodes:
        for op in (node.op, *_attr_functions(node)):
            if op in functions or op in ALLOWED_OPS:
                continue
            if (write_ok and op in CHECKPOINT_WRITE_OPS) or (read_ok and op in CHECKPOINT_READ_OPS):
                continue
            found.append(ForbiddenOp(op, where))
    return found


def _callees(nodes: Iterable[Any]) -> list[str]:
    """Names a node may call: its op (when it is a library function) and functions in its attributes."""
    names: list[str] = []
    for node in nodes:
        names.append(node.op)
        names += _attr_functions(node)
    return names


def _attr_functions(node: Any) -> list[str]:
    """Function names in a node's attributes, including those passed on inside a function attribute."""
    names: list[str] = []
    todo = list(node.attr.values())
    while todo:
        value = todo.pop()
        kind = value.WhichOneof("value")
        funcs = [value.func] if kind == "func" else list(value.list.func) if kind == "list" else []
        for func in funcs:
            names.append(func.name)
            todo += list(func.attr.values())
    return names


def _tensor_ref(name: str) -> tuple[str, int]:
    """A graph tensor reference as (node, output index); a control input `^node` has index -1."""
    if name.startswith("^"):
        return name[1:], -1
    node, _, index = name.partition(":")
    if not index:
        return node, 0
    return (node, int(index)) if index.isdigit() else (name, -2)  # -2: not a graph-level reference
