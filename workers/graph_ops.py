"""Which TensorFlow operations an uploaded SavedModel may contain: an allowlist, checked on the protobuf.

A SavedModel is a program: besides arithmetic its graph can read and write files, open network
connections or call back into Python, and TensorFlow keeps adding operations. So the check is an
allowlist of pure math and neural-network operations, applied to `saved_model.pb` parsed as a protobuf
(nothing is loaded or run): every node of every meta graph and of every function in the library,
which is where While/If/Case bodies live. An operation not on the list is refused with a sentence
naming it. Function names given in attributes (a While's `body`, a PartitionedCall's `f`) are checked
too: an attribute may name a primitive operation instead of a library function.

Checkpoint I/O is the one exception: every export carries a function that writes the variables
(SaveV2) and one that reads them back (RestoreV2). Those operations are allowed only in functions
reached solely from the meta graph's `saver_def` save/restore nodes, never from anything the loader or
a signature runs; the TensorFlow 2 loader restores variables with operations of its own. In a graph
without functions (TensorFlow 1 style) a RestoreV2 must read the saver's filename tensor.
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


def _check_graph(
    graph_def: Any, *, saver_def: Any | None, object_roots: list[str], label: str
) -> ForbiddenOp | None:
    functions = {f.signature.name: f for f in graph_def.library.function}
    nodes = {node.name: node for node in graph_def.node}
    save_nodes = _input_closure(nodes, saver_def.save_tensor_name) if saver_def else set()
    restore_nodes = _input_closure(nodes, saver_def.restore_op_name) if saver_def else set()
    filename_node = _node_name(saver_def.filename_tensor_name) if saver_def else None
    other_nodes = [n for n in graph_def.node if n.name not in save_nodes | restore_nodes]

    def reach(start: Iterable[str]) -> set[str]:
        seen: set[str] = set()
        todo = [name for name in start if name in functions]
        while todo:
            name = todo.pop()
            if name not in seen:
                seen.add(name)
                todo += [c for c in _callees(functions[name].node_def) if c in functions]
        return seen

    runs = reach([*object_roots, *_callees(other_nodes)])
    saves = reach(_callees(nodes[n] for n in sorted(save_nodes))) - runs
    restores = reach(_callees(nodes[n] for n in sorted(restore_nodes))) - runs

    found: list[ForbiddenOp] = []
    for node in sorted(graph_def.node, key=lambda n: n.name):
        write_ok = node.name in save_nodes and node.name not in restore_nodes
        read_ok = (
            node.name in restore_nodes
            and node.name not in save_nodes
            and bool(node.input)
            and _node_name(node.input[0]) == filename_node
        )
        where = f"the graph{label} (node {node.name})"
        found += _check_nodes([node], functions, write_ok=write_ok, read_ok=read_ok, where=where)
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


def _node_name(tensor_name: str) -> str:
    return tensor_name.lstrip("^").split(":", 1)[0]


def _input_closure(nodes: dict[str, Any], tensor_name: str) -> set[str]:
    """The node producing `tensor_name` and every node it depends on (data and control inputs)."""
    seen: set[str] = set()
    todo = [_node_name(tensor_name)] if tensor_name else []
    while todo:
        name = todo.pop()
        if name in seen or name not in nodes:
            continue
        seen.add(name)
        todo += [_node_name(i) for i in nodes[name].input]
    return seen
