"""export.onnx_int8: `model-int8.onnx`, a static int8 copy of serving_default's ONNX file for ONNX Runtime on CPUs.

A convolutional net's float32 batch-1 call is bound by the cores' multiply rate (`make bench` item 13 compares it
with a matmul's); int8 convolutions (VNNI on x86) multiply several times as many values a cycle. Built as ONNX
Runtime 1.31's quantisation guide asks: its pre-processing (shape inference, graph folding), then quantize_static in
the QDQ format, with 7-bit int8 weights (−64…64) per output channel and uint8 activations whose ranges are the min
and max seen on calibration inputs (training examples, as served: not augmented). Why 7 bits: on x86 CPUs without
VNNI (AVX2 only, e.g. AMD EPYC Milan), ONNX Runtime multiplies uint8 by int8 with VPMADDUBSW, which adds each pair of
products in 16 bits, saturating past 32767; with weights within ±64 a pair is at most 2·255·64 = 32640. The file is
made on one machine and may be served on any. On a 2-core Milan (ONNX Runtime 1.31), `isbi_unet` after 3 epochs:
pixels agreeing with model.onnx 98.9% → 99.5%, test mean IoU 0.735 → 0.739 (model.onnx 0.739), and the call no
slower (136 against 145 ms, medians of 3 interleaved rounds). The cost on VNNI CPUs (half the weights' resolution)
is not measured here. Two rewrites come first, each exact in float:

- The input's rescaling (Keras's Rescaling(c): a Mul by c, an Add of 0) moves into the first convolution's
  weights, conv(c·x) being conv with c·W (zero padding included). Left in, it quantises to a QLinearMul that took
  5 ms of a 44 ms `isbi_unet` call on a 2-core Zen 5, where the folded input quantises with scale 1.
- The Softmax clamp (onnx_softmax.py) comes out: ONNX Runtime's QLinearSoftmax looks its exponentials up in a
  table, so it has no slow path to avoid, and the clamp would run in float on the dequantised logits.

ONNX Runtime 1.31 has no int8 ConvTranspose on CPUs, so the U-Net's up-convolutions stay float32, between a
DequantizeLinear and a QuantizeLinear.
"""

from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import onnx
from onnx import numpy_helper

from kerasline.export.onnx_softmax import unclamp_softmax_inputs

if TYPE_CHECKING:
    import onnxruntime

INT8_FILE = "model-int8.onnx"
CALIBRATION_SAMPLES = 8  # training inputs; each is one call of the float model with every activation an output


def write_int8(model_path: Path, out: Path, calibration: dict[str, np.ndarray]) -> None:
    """Quantises the float32 ONNX file `model_path` into `out`, calibrated on `calibration` ({input: [N, ...]},
    fed one example at a time)."""
    from onnxruntime.quantization import CalibrationDataReader, QuantFormat, QuantType, quantize_static
    from onnxruntime.quantization.shape_inference import quant_pre_process

    class Feeds(CalibrationDataReader):
        def __init__(self) -> None:
            count = len(next(iter(calibration.values())))
            self.feeds = iter([{k: v[i : i + 1] for k, v in calibration.items()} for i in range(count)])

        def get_next(self) -> dict[str, np.ndarray] | None:
            return next(self.feeds, None)

    rewritten, prepared = out.with_suffix(".rewritten.onnx"), out.with_suffix(".prepared.onnx")
    try:
        # A path, not the ModelProto: ONNX Runtime 1.31's pre-processing saves a given proto with its weights as
        # external data, then fails to read them back.
        onnx.save(unclamp_softmax_inputs(fold_input_scale(onnx.load(model_path))), rewritten)
        # ONNX's own shape inference infers every shape of these fixed-size graphs; ONNX Runtime's symbolic one
        # needs sympy, which nothing else here does.
        quant_pre_process(rewritten, prepared, skip_symbolic_shape=True)
        quantize_static(
            prepared,
            out,
            Feeds(),
            quant_format=QuantFormat.QDQ,
            per_channel=True,
            reduce_range=True,  # 7-bit weights: see the module's docstring
            activation_type=QuantType.QUInt8,
            weight_type=QuantType.QInt8,
        )
    finally:
        rewritten.unlink(missing_ok=True)
        prepared.unlink(missing_ok=True)
    onnx.checker.check_model(onnx.load(out), full_check=True)


def int8_session(path: Path) -> "onnxruntime.InferenceSession":
    """An ONNX Runtime session for the int8 file whose intra-op threads sleep between kernels instead of spinning:
    the int8 graph runs many short kernels, and on 2 cores the spinning threads take turns from the working ones
    (a 2-core Zen 5, ONNX Runtime 1.31: 36.1 → 33.9 ms an `isbi_unet` call; the float32 file's 71 ms unchanged)."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    return ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])


def fold_input_scale(model: onnx.ModelProto) -> onnx.ModelProto:
    """`model` with its first Mul by a scalar c (an Add of 0 may follow) that feeds nothing but a convolution,
    through Reshape and Transpose nodes only, folded into that convolution's weights: exact, as a convolution is
    linear and its zero padding stays zero. `model` unchanged where its graph has no such chain."""
    graph = model.graph
    initializers = {tensor.name: tensor for tensor in graph.initializer}
    consumers = {}
    for node in graph.node:
        for name in node.input:
            consumers.setdefault(name, []).append(node)

    def scalar(name: str) -> float | None:
        value = numpy_helper.to_array(initializers[name]) if name in initializers else None
        return float(value) if value is not None and value.size == 1 else None

    outputs = {output.name for output in graph.output}

    def only_consumer(name: str) -> onnx.NodeProto | None:
        found = consumers.get(name, [])
        return found[0] if len(found) == 1 and name not in outputs else None

    for mul in graph.node:
        if mul.op_type != "Mul" or scalar(mul.input[1]) is None:
            continue
        removed, node = [mul], only_consumer(mul.output[0])
        if node is not None and node.op_type == "Add" and scalar(node.input[1]) == 0.0:
            removed.append(node)
            node = only_consumer(node.output[0])
        while node is not None and node.op_type in ("Reshape", "Transpose"):
            node = only_consumer(node.output[0])
        weights = node.input[1] if node is not None and node.op_type == "Conv" else None
        if weights not in initializers or len(consumers[weights]) != 1:  # a weight shared by another node stays
            continue
        scaled = numpy_helper.to_array(initializers[weights]) * np.float32(scalar(mul.input[1]))
        initializers[weights].CopyFrom(numpy_helper.from_array(scaled.astype(np.float32), weights))
        for consumer in consumers[removed[-1].output[0]]:
            consumer.input[list(consumer.input).index(removed[-1].output[0])] = mul.input[0]
        for gone in removed:
            graph.node.remove(gone)
        return model
    return model
