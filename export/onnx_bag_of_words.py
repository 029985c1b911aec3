"""Rewrites of an ONNX graph, exact but for the order of one sum, that a linear classifier on a wide bag of words
(`imdb_nb_logreg`: 33,266 features) needs to run fast in ONNX Runtime 1.31 at batch 1.

Binary bincounts (Keras's CategoryEncoding multi_hot) without their Unique: tf2onnx 1.17 converts a 2-D DenseBincount
to Unique over the (row, id) pairs, then an int64 ScatterND into zeros, then a Cast. With binary_output the scattered
values are all 1 (a ConstantOfShape), so a pair seen twice writes the same 1 twice (ONNX leaves the order of repeated
writes undefined; equal values make it moot), and the Unique changes nothing but the time: its two Unique nodes took
140 µs of `imdb_nb_logreg`'s 200 µs call on a 2,048-token review. The range check after each Unique (a Compress of
the ids in [0, size), which TensorFlow's bincount drops too) stays.
"""

from collections import defaultdict

import numpy as np
import onnx
from onnx import helper, numpy_helper
from onnx.helper import tensor_dtype_to_np_dtype as np_dtype

WIDE = 2048  # from about here on, MLAS's one-column MatMul is slower than a Mul and a ReduceSum


def graph_index(graph: onnx.GraphProto) -> tuple[dict, defaultdict, set[str]]:
    """The graph's wiring: each tensor's producing node, each tensor's consuming nodes, the graph's output names."""
    producer = {out: node for node in graph.node for out in node.output}
    consumers = defaultdict(list)
    for node in graph.node:
        for name in node.input:
            consumers[name].append(node)
    return producer, consumers, {out.name for out in graph.output}


def drop_binary_bincount_unique(model: onnx.ModelProto) -> onnx.ModelProto:
    """`model` with each top-level Unique that only feeds a ScatterND of ones bypassed and removed."""
    graph = model.graph
    producer, consumers, graph_outputs = graph_index(graph)

    def used(name: str) -> bool:
        return bool(name) and (name in graph_outputs or bool(consumers[name]))

    def writes_ones(node: onnx.NodeProto) -> bool:
        """A ScatterND whose updates are a ConstantOfShape of 1."""
        updates = producer.get(node.input[2]) if node.op_type == "ScatterND" else None
        if updates is None or updates.op_type != "ConstantOfShape":
            return False
        value = next((a.t for a in updates.attribute if a.name == "value"), None)
        return value is not None and numpy_helper.to_array(value).tolist() == [1]

    def only_scatters_ones(values: str) -> bool:
        """`values` reaches nothing but the range check's Slice and Compress, the Compress only Shape and
        ScatterND's indices, and each ScatterND writes ones."""
        compresses = [n for n in consumers[values] if n.op_type == "Compress"]
        if not compresses or any(n.op_type not in ("Slice", "Compress") for n in consumers[values]):
            return False
        for compress in compresses:
            after = consumers[compress.output[0]]
            scatters = [n for n in after if n.op_type == "ScatterND"]
            if not scatters or any(n.op_type != "Shape" and n not in scatters for n in after):
                return False
            if not all(writes_ones(n) and n.input[1] == compress.output[0] for n in scatters):
                return False
        return True

    def scatter_as_cast(scatter: onnx.NodeProto, cast: onnx.NodeProto) -> None:
        """The ScatterND of 0s and 1s that `cast` follows, scattering the Cast's type itself instead."""
        dtype = np_dtype(next(a.i for a in cast.attribute if a.name == "to"))
        constants = [producer.get(scatter.input[0]), producer[scatter.input[2]]]
        if any(c is None or c.op_type != "ConstantOfShape" or len(consumers[c.output[0]]) != 1 for c in constants):
            return
        for constant in constants:
            value = next(a for a in constant.attribute if a.name == "value")
            value.t.CopyFrom(numpy_helper.from_array(numpy_helper.to_array(value.t).astype(dtype)))
        scatter.output[0] = cast.output[0]
        graph.node.remove(cast)

    for unique in [n for n in graph.node if n.op_type == "Unique"]:
        values = unique.output[0]
        if any(used(out) for out in unique.output[1:]) or not only_scatters_ones(values):
            continue
        for node in consumers[values]:
            node.input[:] = [unique.input[0] if name == values else name for name in node.input]
        graph.node.remove(unique)
        # Each scatter wrote int64 (tf2onnx's), then a Cast made it float: 11 µs of the call for 32,769 buckets.
        for compress in [n for n in consumers[values] if n.op_type == "Compress"]:
            for scatter in [n for n in consumers[compress.output[0]] if n.op_type == "ScatterND"]:
                after = consumers[scatter.output[0]]
                if len(after) == 1 and after[0].op_type == "Cast" and scatter.output[0] not in graph_outputs:
                    scatter_as_cast(scatter, after[0])
    return model


def one_column_matmuls_as_sums(model: onnx.ModelProto) -> onnx.ModelProto:
    """`model` with each top-level MatMul by a constant [K, 1], K ≥ WIDE, computed as ReduceSum(x · w, last axis);
    where x is itself a product by a constant [K] (the naive Bayes ratios), the two constants multiplied in advance.

    ONNX Runtime 1.31's MatMul by one column (a logistic regression's logit) reads the weights as a matrix product
    would: 32 µs for K = 33,266 on a 2-core Zen 5, against 8 µs for the Mul and ReduceSum (the same products,
    summed in another order)."""
    graph = model.graph
    weights = {t.name: t for t in graph.initializer if len(t.dims) == 2 and t.dims[1] == 1 and t.dims[0] >= WIDE}
    opset = next((o.version for o in model.opset_import if o.domain in ("", "ai.onnx")), 0)
    if not weights or opset < 13:  # ReduceSum takes its axes as an input from opset 13
        return model
    constants = {t.name: t for t in graph.initializer}
    producer, consumers, graph_outputs = graph_index(graph)

    def scaled_by_constant(x: str, k: int) -> tuple[str, np.ndarray] | None:
        """(y, c) where x = Mul(y, c), c a constant [K], and the MatMul is all that reads x: naive Bayes ratios."""
        mul = producer.get(x)
        if mul is None or mul.op_type != "Mul" or len(consumers[x]) != 1 or x in graph_outputs:
            return None
        y, c = mul.input
        if c not in constants or tuple(constants[c].dims) != (k,):
            return None
        return y, numpy_helper.to_array(constants[c])

    axis = "one_column_matmul/last_axis"
    graph.initializer.append(numpy_helper.from_array(np.array([-1], np.int64), axis))
    folded, dropped, nodes = set(), set(weights) | {axis}, []
    for node in graph.node:
        if node.op_type != "MatMul" or node.input[1] not in weights:
            nodes.append(node)
            continue
        x, column = node.input[0], numpy_helper.to_array(weights[node.input[1]]).reshape(-1)
        scaled = scaled_by_constant(x, column.size)
        if scaled:  # Mul(Mul(y, c), w) as Mul(y, c·w): exact where y is 0 or 1 (a bag), one rounding otherwise
            (x, c), mul = scaled, producer[node.input[0]]
            folded.add(mul.output[0])
            dropped.add(mul.input[1])
            column = (c * column).astype(column.dtype)
        row, products = f"one_column_matmul/{node.name}/row", f"one_column_matmul/{node.name}/products"
        graph.initializer.append(numpy_helper.from_array(column, row))
        nodes += [
            helper.make_node("Mul", [x, row], [products], name=f"{node.name}/mul"),
            helper.make_node("ReduceSum", [products, axis], list(node.output), name=f"{node.name}/sum", keepdims=1),
        ]
    nodes = [node for node in nodes if node.output[0] not in folded]
    del graph.node[:]
    graph.node.extend(nodes)
    still_used = {name for node in graph.node for name in node.input}
    for tensor in [t for t in graph.initializer if t.name in dropped and t.name not in still_used]:
        graph.initializer.remove(tensor)
    return model
