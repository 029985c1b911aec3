"""The bench's arithmetic, never its timings: the lane order, medians and ranges, targets met or not, the load gate's
decisions (on a simulated machine, no real waiting), results.json and the CPU's description."""

import json
import math

import numpy as np
import pytest

from benchmarks.figures import (
    Figure,
    LoadGate,
    LoadTooHigh,
    Reading,
    block_medians,
    busy_cores,
    cpu_description,
    interleaved,
    ort_figure,
    read_results,
    spread,
    timed_in_turn,
    write_results,
)

IDLE = Reading(0.3, 0.3, 0.0, True)


class Machine:
    """A simulated machine: the 1-minute load average as Linux keeps it (every 5.01 s, L ← L·d + n·(1 − d) with
    d = exp(−5/60), n the runnable tasks: here only others', the bench runs nothing while its gate waits; read to 2
    decimals, as /proc/loadavg shows it), and the cores others keep busy, as the gate's CPU-time sample sees them."""

    def __init__(self, load: float, others: float) -> None:
        self.now, self.load, self.others, self.tick = 0.0, load, others, 1.0
        self.samples = 0

    def read(self) -> float:
        return round(self.load, 2)

    def clock(self) -> float:
        return self.now

    def busy(self, seconds: float) -> float:
        self.samples += 1
        self.now += seconds
        while self.tick <= self.now:
            decay = math.exp(-5 / 60)
            self.load = self.load * decay + self.others * (1 - decay)
            self.tick += 5.01
        return self.others

    def gate(self, **kwargs) -> LoadGate:
        return LoadGate(read=self.read, busy=self.busy, clock=self.clock, **{"wait_s": 120, **kwargs})


def test_lanes_run_interleaved_a_b_c_c_b_a():
    assert "".join(interleaved("ABC", rounds=2)) == "ABCCBA"
    assert "".join(interleaved("ABC", rounds=3)) == "ABCCBAABC"
    assert interleaved(["pipeline", "in_memory"], rounds=2) == ["pipeline", "in_memory", "in_memory", "pipeline"]
    assert interleaved(["ours"], rounds=1) == ["ours"]


def test_spread_is_the_median_and_the_range():
    assert spread([3.0, 1.0, 2.0]) == (2.0, (1.0, 3.0))
    assert spread([4.0, 1.0, 2.0, 3.0]) == (2.5, (1.0, 4.0))


@pytest.mark.parametrize(
    "figure, ratio, met",
    [
        (Figure("steady vs torch", 300.0, "samples/s", baseline=200.0, target=">= 1.5"), 1.5, True),
        (Figure("steady vs torch", 290.0, "samples/s", baseline=200.0, target=">= 1.5"), 1.45, False),
        (Figure("pipeline step", 10.4, "ms/step", baseline=10.0, target="<= 1.05"), 1.04, True),  # lower is better
        (Figure("pipeline step", 10.7, "ms/step", baseline=10.0, target="<= 1.05"), 1.07, False),
        (Figure("ORT vs SavedModel", 0.2, "ms", baseline=0.5, target="<= 0.5"), 0.4, True),
        (Figure("test accuracy", 0.993, "accuracy", target=">= 0.99"), None, True),  # no baseline: on the value
        (Figure("test accuracy", 0.985, "accuracy", target=">= 0.99"), None, False),
        (Figure("transfer vs scratch", 0.9, "accuracy", baseline=0.9, target="> 1.0"), 1.0, False),  # a tie is not >
        (Figure("wall time", 12.0, "s"), None, None),  # no target: nothing to meet
    ],
)
def test_a_target_applies_to_the_ratio_where_there_is_a_baseline(figure, ratio, met):
    assert figure.ratio == pytest.approx(ratio) if ratio is not None else figure.ratio is None
    assert figure.met is met


def test_a_malformed_target_fails_where_the_figure_is_made():
    with pytest.raises(ValueError, match="expected one of"):
        Figure("x", 1.0, "s", target="at least 1.5")


def test_the_gate_lets_a_lane_start_at_once_on_an_idle_machine():
    machine = Machine(load=0.4, others=0.0)
    reading = machine.gate()("race")
    assert reading == Reading(0.4, 0.4, 0.0, True)
    assert machine.samples == 0


def test_the_gate_tells_the_bench_own_last_lane_from_others_load():
    # Just after a lane of ours: the average is 2.6 and falling, nobody else runs. Waiting for it to fall below 1.0
    # would take about 57 s; one look at the CPUs' time shows others use almost nothing.
    machine = Machine(load=2.6, others=0.03)
    reading = machine.gate()("race")
    assert reading == Reading(2.6, 0.03, 2.0, True)
    assert machine.samples == 1


def test_the_gate_refuses_while_others_keep_the_machine_busy():
    machine = Machine(load=1.2, others=1.3)
    with pytest.raises(LoadTooHigh, match="--allow-load") as refused:
        machine.gate()("race imdb_lstm: torch, run 2 of 3")
    assert refused.value.reading.waited_s >= 120
    assert refused.value.reading.others > 1.0
    assert not refused.value.reading.valid


def test_others_light_load_is_still_too_much_while_the_average_is_high():
    # Half a core of others' work skews a 2-core timing; the lane waits until the average falls to the limit.
    machine = Machine(load=2.6, others=0.5)
    reading = machine.gate()("tabular")
    assert reading.valid and reading.load_average <= 1.0
    assert 50 < reading.waited_s < 120


def test_with_allow_load_the_gate_times_anyway_and_marks_the_reading_invalid():
    machine = Machine(load=3.0, others=2.5)
    reading = machine.gate(wait_s=2, allow=True)("race")
    assert not reading.valid
    assert reading.load_average > 1.0 and reading.others == 2.5 and reading.waited_s == pytest.approx(2)


def test_busy_cores_reads_the_busy_share_of_the_cpus_time():
    # /proc/stat's first line sums every CPU: user nice system idle iowait irq softirq steal guest guest_nice.
    before = "cpu  1000 0 500 8000 100 0 0 0 0 0\ncpu0 500 0 250 4000 50 0 0 0 0 0\ncpu1 500 0 250 4000 50 0 0 0 0 0\n"
    after = "cpu  1090 0 510 8290 110 0 0 0 0 0\ncpu0 590 0 255 4005 55 0 0 0 0 0\ncpu1 500 0 255 4285 55 0 0 0 0 0\n"
    texts, slept = iter([before, after]), []
    # 100 of 400 jiffies busy on 2 CPUs: half a core
    assert busy_cores(2.0, lambda: next(texts), slept.append) == pytest.approx(0.5)
    assert slept == [2.0]


def test_a_figure_of_several_runs_carries_the_worst_reading():
    busy = Reading(1.7, 1.4, 12.0, False)
    assert Reading.worst([IDLE, busy, IDLE]) == Reading(1.7, 1.4, 12.0, False)
    assert Reading.worst([IDLE, IDLE]).valid


def test_results_json_round_trips_one_entry_per_figure(tmp_path):
    figures = [
        Figure("race mnist_convnet: steady samples/s, ours vs PyTorch", 2700.0, "samples/s", baseline=720.0,
               target=">= 1.5", value_range=(2500.0, 2900.0), baseline_range=(700.0, 800.0), runs=3, load=IDLE),
        Figure("accuracy mnist_cnn: test accuracy", 0.993, "accuracy", target=">= 0.99",
               load=Reading(1.6, 0.9, 11.0, True)),
        Figure("zoo mnist_mlp: export parity", 3e-7, "abs", target="<= 1e-05", load=Reading(2.2, 1.8, 10.0, False)),
    ]  # fmt: skip
    cpu = cpu_description("model name : Test CPU\nflags : fpu avx2\n", 2)
    header = {"mode": "full", "machine": {"cpu": cpu}, "sections": {"race": {"gate": IDLE}}}
    path = tmp_path / "results.json"
    write_results(path, header, figures)
    assert [p.name for p in tmp_path.iterdir()] == ["results.json"]  # written atomically: no staging file left
    document = json.loads(path.read_text())
    first = document["figures"][0]
    assert {"name", "value", "unit", "baseline", "ratio", "target", "met", "load_average", "cpu", "valid"} <= set(first)
    assert first["ratio"] == pytest.approx(2700 / 720) and first["met"] is True
    assert first["cpu"] == "Test CPU, 2 logical CPUs, AVX2"
    assert [f["valid"] for f in document["figures"]] == [True, True, False]
    assert document["sections"]["race"]["gate"]["load_average"] == 0.3
    again, read = read_results(path)
    assert read == figures
    assert again["mode"] == "full"


def test_cpu_description_names_the_vector_extensions():
    avx512 = "processor : 0\nmodel name : AMD EPYC 9R14\nflags : fpu sse avx2 avx512f avx512bw avx512_bf16\n"
    cpu = cpu_description(avx512 + "processor : 1\nmodel name : AMD EPYC 9R14\n", 2)
    assert cpu["model"] == "AMD EPYC 9R14"
    assert cpu["vector_extensions"] == ["AVX2", "AVX-512F", "AVX-512BW", "AVX-512 BF16"]
    assert cpu_description("model name : Old\nflags : sse4_2 avx\n", 2)["vector_extensions"] == []


def _run(epoch_s: list[float], wall_s: float, accuracy: float = 0.9, reading: Reading = IDLE) -> dict:
    return {"epoch_s": epoch_s, "wall_s": wall_s, "accuracy": accuracy, "gate": reading}


def test_latency_blocks_take_turns_each_after_its_warm_up():
    calls: list[str] = []
    runs = {name: (lambda name=name: calls.append(name)) for name in "AB"}
    blocks = timed_in_turn(runs, calls=6, rounds=3)
    # 2 timed calls a block: the first block of each run after 5 untimed calls, every later one after 1
    assert "".join(calls) == "A" * 7 + "B" * 7 + "B" * 3 + "A" * 3 + "A" * 3 + "B" * 3
    assert {name: len(ms) for name, ms in blocks.items()} == {"A": 3, "B": 3}
    assert all(ms >= 0 for values in blocks.values() for ms in values)


def test_a_slow_block_does_not_move_the_latency_figure():
    rounds = {"saved_model": [2.0, 2.1, 6.0, 1.9, 2.0], "onnxruntime": [0.8, 2.2, 0.8, 0.7, 0.9]}
    ms = block_medians(rounds)
    assert ms == {"saved_model": 2.0, "onnxruntime": 0.8}
    figure = ort_figure("zoo imdb_transformer", rounds, 1)
    assert figure.name == "zoo imdb_transformer: batch-1 latency, ONNX Runtime vs SavedModel"
    assert (figure.ratio, figure.met, figure.runs) == (0.4, True, 5)
    assert (figure.value_range, figure.baseline_range) == ((0.7, 2.2), (1.9, 6.0))


def test_race_figures_are_medians_of_interleaved_runs():
    from benchmarks.perf import LANES, lanes_in_turn, race_figures, summarise

    calls, gated = [], []

    def run(lane: str, last: bool) -> dict:
        calls.append((lane, last))
        return _run([2.0, 1.0], 5.0)

    def gate(what: str) -> Reading:
        gated.append(what)
        return IDLE

    runs = lanes_in_turn(list(LANES), run, 3, gate, "mnist_convnet")
    assert [lane for lane, _ in calls] == ["ours", "keras", "torch", "torch", "keras", "ours", "ours", "keras", "torch"]
    assert [i for i, (lane, last) in enumerate(calls) if last] == [6, 7, 8]  # ours' last run is the one item 12 keeps
    assert len(gated) == 9 and all(run["gate"] == IDLE for lane in runs.values() for run in lane)

    samples, epochs = 1000, 3
    busy = Reading(1.9, 1.3, 10.0, False)
    lanes = {
        "ours": summarise([_run([3, 1.0, 1.0], 10), _run([3, 1.25, 1.25], 12), _run([3, 0.8, 0.8], 11)], samples, 3),
        "keras": summarise([_run([3, 1.0, 1.0], 9)] * 3, samples, epochs),
        "torch": summarise([_run([4, 2.0, 2.0], 20), _run([4, 2.0, 2.0], 20, reading=busy)], samples, epochs),
    }
    race = {"mnist_convnet": {"epochs": epochs, "overrides": ["data.limit=640"], "lanes": lanes}}
    steady, whole, versus_keras, *_ = race_figures(race)
    assert steady.name == "race mnist_convnet (3 epochs, data.limit=640): steady samples/s, ours vs PyTorch"
    assert steady.value == pytest.approx(1000) and steady.value_range == pytest.approx((800, 1250))
    assert steady.baseline == pytest.approx(500) and steady.met  # 2.0 ≥ 1.5
    assert whole.ratio == pytest.approx(20 / 11) and whole.met  # PyTorch's wall time ÷ ours, medians
    assert versus_keras.ratio == pytest.approx(1.0) and versus_keras.met and versus_keras.target == ">= 1.0"
    assert steady.runs == 3 and not steady.valid and steady.load.load_average == 1.9  # a busy PyTorch run
    assert versus_keras.valid


def test_the_pipeline_figure_is_the_median_step_time_against_memory():
    from benchmarks.common import overhead_figure

    overhead = {"steps_per_epoch": 10, "pipeline_epoch_s": [0.11, 0.12, 0.13, 0.10], "in_memory_epoch_s": [0.1] * 4}
    figure = overhead_figure("input pipeline mnist_cnn", overhead)
    assert figure.value == pytest.approx(11.5) and figure.unit == "ms/step"
    assert figure.ratio == pytest.approx(1.15) and figure.met is False
    assert figure.value_range == pytest.approx((10.0, 13.0))


def test_the_first_run_figures_are_the_whole_call_against_the_convnet_and_the_worst_accuracy():
    from benchmarks.first_run import figures

    busy = Reading(1.4, 1.2, 5.0, False)
    runs = {
        "default": [
            {"wall_s": 90.0, "accuracy": 0.992, "gate": IDLE},
            {"wall_s": 110.0, "accuracy": 0.989, "gate": IDLE},
        ],
        "convnet": [{"wall_s": 30.0, "accuracy": 0.97, "gate": IDLE}, {"wall_s": 40.0, "accuracy": 0.97, "gate": busy}],
    }
    wall, accuracy = figures({"experiment": "mnist_cnn", "runs": runs})
    assert wall.value == pytest.approx(100.0) and wall.baseline == pytest.approx(35.0)
    assert wall.ratio == pytest.approx(100 / 35) and wall.met  # ≤ 3× the convnet
    assert wall.value_range == (90.0, 110.0) and wall.baseline_range == (30.0, 40.0) and wall.runs == 2
    assert not wall.valid and wall.load.load_average == 1.4  # one busy convnet run marks both figures
    assert accuracy.value == pytest.approx(0.989) and accuracy.met is False  # the worst run decides
    assert accuracy.value_range == (0.989, 0.992)


def test_the_int8_unet_figure_is_mean_iou_over_all_test_pixels():
    from benchmarks.run import mean_iou

    class Session:  # ONNX Runtime's run(): probabilities [1, H, W, K] of a class-0 image except its first row
        def run(self, outputs, feeds):
            assert outputs == ["probabilities"] and feeds["image"].shape == (1, 2, 2, 1)
            probabilities = np.zeros((1, 2, 2, 2), np.float32)
            probabilities[0, :, :, 0] = 1.0
            probabilities[0, 0, :] = (0.2, 0.8)
            return [probabilities]

    image = np.zeros((2, 2, 1), np.uint8)
    test = [(image, np.array([[1, 1], [0, 0]])), (image, np.array([[1, 0], [0, 0]]))]
    # Predicted [[1, 1], [0, 0]] for both. Class 1: TP 3, FP 1 → 3/4; class 0: TP 4, FN 1 → 4/5.
    assert mean_iou(Session(), test, num_classes=2) == pytest.approx((3 / 4 + 4 / 5) / 2)


def test_conv_macs_counts_each_conv_and_transposed_conv_at_batch_one(tmp_path):
    from onnx import TensorProto, helper, numpy_helper, save

    from benchmarks.perf import conv_macs

    weight = numpy_helper.from_array(np.ones((2, 1, 3, 3), np.float32), "w")  # 1 → 2 channels, 3×3
    up_weight = numpy_helper.from_array(np.ones((2, 3, 2, 2), np.float32), "u")  # 2 → 3 channels, 2×2, stride 2
    graph = helper.make_graph(
        [
            helper.make_node("Conv", ["x", "w"], ["h"], pads=[1, 1, 1, 1]),
            helper.make_node("ConvTranspose", ["h", "u"], ["y"], strides=[2, 2]),
        ],
        "convs",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", 1, 4, 4])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["batch", 3, 8, 8])],
        [weight, up_weight],
    )
    save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), tmp_path / "convs.onnx")
    # Conv: 4·4 outputs × 2 channels × 1·3·3 weights; ConvTranspose: 4·4 inputs × 2·3·2·2 weights.
    assert conv_macs(tmp_path / "convs.onnx") == 16 * 2 * 9 + 16 * 24


UNET_SECTION = {
    "experiment": "isbi_unet",
    "overrides": [],
    "test_metrics": {"mean_iou": 0.8, "dice": 0.9},
    "crops_per_s": 10.0,
    "parity_max_abs_diff": 1e-6,
    "batch1_median_ms": {"saved_model": 80.0, "onnxruntime": 60.0, "onnxruntime_int8": 40.0},
    "batch1_median_ms_rounds": {
        "saved_model": [78.0, 80.0, 83.0],
        "onnxruntime": [60.0],
        "onnxruntime_int8": [41.0, 40.0, 39.0],
    },
    "onnx_mean_iou": {"float32": 0.8, "int8": 0.79},
    "conv_gmac_per_call": 12.0,
    "matmul_gmac_per_s": 200.0,
}


def test_the_unet_conv_rate_is_its_conv_macs_over_each_runtimes_call():
    from benchmarks.run import segmentation_figures

    rates = {
        f.name.split(": ")[1].split(" batch-1")[0]: f for f in segmentation_figures(UNET_SECTION) if f.unit == "GMAC/s"
    }
    assert rates["SavedModel"].value == pytest.approx(150.0) and rates["ONNX Runtime"].value == pytest.approx(200.0)
    assert rates["ONNX Runtime"].ratio == pytest.approx(1.0)  # at the matmul's rate: nothing left in float32


def test_the_unet_int8_file_is_held_to_half_the_savedmodels_batch1_call():
    from benchmarks.run import segmentation_figures

    by_name = {f.name.split(": ", 1)[1]: f for f in segmentation_figures(UNET_SECTION)}
    int8 = by_name["batch-1 latency, ONNX Runtime int8 (export.onnx_int8) vs SavedModel"]
    assert (int8.value, int8.baseline, int8.ratio, int8.met) == (40.0, 80.0, 0.5, True)
    assert (int8.value_range, int8.baseline_range, int8.runs) == ((39.0, 41.0), (78.0, 83.0), 3)
    float32 = by_name["batch-1 latency, ONNX Runtime vs SavedModel"]
    assert float32.ratio == pytest.approx(0.75) and float32.met is False


def test_the_targets_figures_hold_each_experiment_to_issue_17s_bound():
    from benchmarks.targets import SECTION_BEGIN, SECTION_END, figures, results_section

    def run(**metrics: float) -> dict:
        return {"test_metrics": metrics, "wall_s": 60.0}

    results = {
        "mnist_cnn": run(accuracy=0.988),
        "mnist_best": run(accuracy=0.996),
        "imdb_bow_logreg": run(accuracy=0.828),
        "imdb_nb_logreg": run(accuracy=0.852),
        "isbi_unet": run(mean_iou=0.802),
        "digits_dcgan": {"frechet": 18.1, "class_entropy": 2.29, "wall_s": 480.0},
        "real_digits": {"frechet": 4.3},
    }
    by_name = {f.name.removeprefix("targets "): f for f in figures(results)}
    assert by_name["mnist_best: test accuracy"].met
    assert by_name["mnist_best: test accuracy vs mnist_cnn"].ratio == pytest.approx(0.996 / 0.988)
    assert by_name["imdb_nb_logreg: test accuracy"].met is False  # 85.2% < 86%
    lead = by_name["imdb_nb_logreg: lead over imdb_bow_logreg, points"]
    assert lead.value == pytest.approx(2.4) and lead.met is False  # ≥ 3 points over the bag of words
    assert by_name["isbi_unet: test mean IoU"].met is False
    assert by_name["digits_dcgan: Fréchet distance to test digits"].met  # ≤ 20 on the value: no baseline there
    assert by_name["digits_dcgan: entropy of predicted classes (uniform 2.30)"].met
    section = results_section(results, "2026-11-29T22:00:00+00:00", "AMD EPYC")
    assert section.startswith(SECTION_BEGIN) and section.rstrip().endswith(SECTION_END)
    assert "| isbi_unet: test mean IoU | 0.802 |  | >= 0.82 | not met |" in section
    assert "`digits_dcgan` 8.0" in section
