"""What every bench figure is recorded as, and what makes a timing worth reading.

- `Figure`: one measured number with its unit, the baseline it is compared with (their ratio), its target and
  whether it is met, the load the machine was under when it was measured, and the CPU it ran on.
- `LoadGate`: before a lane (a section, or one run of a race) starts, wait a bounded time for the 1-minute load
  average to fall to 1.0, or for what others use of the CPUs (`busy_cores`) to be small; then refuse to time
  (`LoadTooHigh`), or, with `--allow-load`, time anyway and mark the figure invalid.
- `interleaved`: the order of a race's runs, A B C C B A A B C ..., so drifting load falls on every lane alike;
  `spread` gives the median and the min–max range of a lane's runs.
- `cpu_description`: the CPU model and its vector extensions, from /proc/cpuinfo.
- `write_results` / `read_results`: benchmarks/results.json, one entry per figure, written atomically.

Nothing here imports TensorFlow: the tests check this arithmetic without training anything.
"""

import json
import operator
import os
import statistics
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import asdict, dataclass, fields, is_dataclass
from pathlib import Path
from typing import TypeVar

from kerasline.files import write_text_atomic
from kerasline.timing import median_ms

LATENCY_ROUNDS = 5  # blocks each runtime's latency calls are split into, taken in turn (`timed_in_turn`)
LOAD_LIMIT = 1.0  # the 1-minute load average above which timings on 2 cores are not worth reading
LOAD_WAIT_S = 120.0  # how long a gate waits for the load to fall before it refuses
BUSY_LIMIT = 0.25  # the CPU cores others may keep busy while a lane is timed (an idle machine here: under 0.05)
SAMPLE_S = 2.0  # how long the gate watches the CPUs' time (/proc/stat) to see what others use
TARGET_OPS = {">=": operator.ge, "<=": operator.le, ">": operator.gt, "<": operator.lt}
VECTOR_FLAGS = {  # /proc/cpuinfo flag → how the results name it
    "avx2": "AVX2",
    "avx512f": "AVX-512F",
    "avx512bw": "AVX-512BW",
    "avx512_vnni": "AVX-512 VNNI",
    "avx512_bf16": "AVX-512 BF16",
    "amx_tile": "AMX",
}
T = TypeVar("T")


@dataclass(frozen=True)
class Reading:
    """What the load gate saw before a lane started."""

    load_average: float  # the 1-minute load average when the lane started
    others: float  # the CPU cores others kept busy (`busy_cores`), or the load average where that sufficed
    waited_s: float
    valid: bool  # the load average was at most LOAD_LIMIT, or others' cores at most BUSY_LIMIT

    @staticmethod
    def worst(readings: Iterable["Reading"]) -> "Reading":
        """One reading for a figure made of several lanes' runs: the highest loads; valid only if every run was."""
        readings = list(readings)
        return Reading(
            max(r.load_average for r in readings),
            max(r.others for r in readings),
            sum(r.waited_s for r in readings),
            all(r.valid for r in readings),
        )


@dataclass(frozen=True)
class Figure:
    """A measured value, compared with `baseline` where there is one (`ratio` = value ÷ baseline).

    `target` is an operator and a bound, e.g. ">= 1.5" or "<= 1.05": it applies to the ratio where there is a
    baseline, else to the value. Where a figure is the median of several runs, `value_range` and `baseline_range`
    are their min–max and `runs` their count. `load` is the gate's reading before its lane(s)."""

    name: str
    value: float
    unit: str
    baseline: float | None = None
    target: str | None = None
    value_range: tuple[float, float] | None = None
    baseline_range: tuple[float, float] | None = None
    runs: int = 1
    load: Reading | None = None

    def __post_init__(self) -> None:
        if self.target is not None:
            parse_target(self.target)  # a typo in a target fails where the figure is made, not when it is judged

    @property
    def ratio(self) -> float | None:
        return None if self.baseline is None else self.value / self.baseline

    @property
    def met(self) -> bool | None:
        if self.target is None:
            return None
        compare, bound = parse_target(self.target)
        return bool(compare(self.value if self.ratio is None else self.ratio, bound))

    @property
    def valid(self) -> bool:
        return self.load is not None and self.load.valid

    def record(self, cpu: str) -> dict:
        """Its results.json entry."""
        load = self.load
        return {
            "name": self.name,
            "value": self.value,
            "unit": self.unit,
            "baseline": self.baseline,
            "ratio": self.ratio,
            "target": self.target,
            "met": self.met,
            "value_range": list(self.value_range) if self.value_range else None,
            "baseline_range": list(self.baseline_range) if self.baseline_range else None,
            "runs": self.runs,
            "load_average": None if load is None else load.load_average,
            "others_load": None if load is None else load.others,
            "load_wait_s": None if load is None else load.waited_s,
            "valid": self.valid,
            "cpu": cpu,
        }

    @classmethod
    def from_record(cls, record: dict) -> "Figure":
        """The figure a results.json entry was written from (ratio and met are derived again, not read)."""
        load = None
        if record["load_average"] is not None:
            load = Reading(record["load_average"], record["others_load"], record["load_wait_s"], record["valid"])
        ranges = {k: tuple(record[k]) if record[k] else None for k in ("value_range", "baseline_range")}
        names = {f.name for f in fields(cls)} - {"load", *ranges}
        return cls(**{k: record[k] for k in names}, **ranges, load=load)


def parse_target(target: str) -> tuple[Callable[[float, float], bool], float]:
    op, _, bound = target.partition(" ")
    if op not in TARGET_OPS:
        raise ValueError(f"target {target!r}: expected one of {', '.join(TARGET_OPS)}, a space and a number")
    return TARGET_OPS[op], float(bound)


def spread(values: Sequence[float]) -> tuple[float, tuple[float, float]]:
    """The median of a lane's runs and their (min, max)."""
    return statistics.median(values), (min(values), max(values))


def interleaved(lanes: Sequence[T], rounds: int) -> list[T]:
    """Every lane once a round, every other round reversed: A B C C B A A B C for 3 lanes and 3 rounds. A load that
    drifts during the race falls on every lane alike, and no lane always runs first or last."""
    return [lane for r in range(rounds) for lane in (lanes if r % 2 == 0 else lanes[::-1])]


def timed_in_turn(runs: dict[str, Callable[[], object]], calls: int, rounds: int = LATENCY_ROUNDS) -> dict[str, list]:
    """Each of `runs` called about `calls` times, in `rounds` blocks taken in turn (`interleaved`): the median ms of
    each block, by run. A slow spell of the machine then falls on one block of every run, where the median of the
    blocks drops it, not on one run's whole figure: on 2 vCPUs of an EPYC Zen 4 (2026-12-07) the transformer's
    2-thread ONNX Runtime call went 0.76 → 2.2 ms for a block of 100 calls and back, and one 200-call block each
    had measured ONNX Runtime at 1.02× the SavedModel against 0.37–0.52 in repeats. Each run's first block follows
    5 untimed calls (kernels, caches), every later one a single call (its caches after the other runs)."""
    ms: dict[str, list] = {name: [] for name in runs}
    for name in interleaved(list(runs), rounds):
        ms[name].append(median_ms(runs[name], max(1, calls // rounds), warmup=1 if ms[name] else 5))
    return ms


def block_medians(blocks: dict[str, list]) -> dict[str, float]:
    """The median of each run's block medians (`timed_in_turn`)."""
    return {name: statistics.median(values) for name, values in blocks.items()}


def ort_figure(what: str, rounds: dict, batch: int) -> Figure:
    """ONNX Runtime against the SavedModel: the median of each one's block medians (`rounds`, from
    `timed_in_turn`), with their range. The target is at batch 1."""
    ms = block_medians(rounds)
    return Figure(
        f"{what}: batch-{batch} latency, ONNX Runtime vs SavedModel",
        ms["onnxruntime"],
        "ms",
        baseline=ms["saved_model"],
        target="<= 0.5" if batch == 1 else None,
        value_range=spread(rounds["onnxruntime"])[1],
        baseline_range=spread(rounds["saved_model"])[1],
        runs=len(rounds["saved_model"]),
    )


def busy_cores(sample_s: float, stat: Callable[[], str], sleep: Callable[[float], None] = time.sleep) -> float:
    """The CPU cores kept busy over the next `sample_s`, from two readings of /proc/stat's text (`stat`): the busy
    share of the CPUs' time (user, nice, system, irq, softirq, steal against those plus idle and iowait) times the
    number of CPUs. Read while the bench runs nothing, it is what others use."""

    def times() -> tuple[int, int, int]:
        lines = stat().splitlines()
        user, nice, system, idle, iowait, irq, softirq, steal = (int(v) for v in lines[0].split()[1:9])
        cpus = sum(1 for line in lines[1:] if line.startswith("cpu"))
        return user + nice + system + irq + softirq + steal, idle + iowait, cpus

    busy_0, idle_0, _ = times()
    sleep(sample_s)
    busy_1, idle_1, cpus = times()
    total = (busy_1 - busy_0) + (idle_1 - idle_0)
    return cpus * (busy_1 - busy_0) / total if total else 0.0


class LoadTooHigh(Exception):
    """The gate refused to start a lane: others kept the CPUs busy for the whole wait."""

    def __init__(self, lane: str, reading: Reading, limit: float) -> None:
        super().__init__(
            f"{lane}: the 1-minute load average was {reading.load_average:.2f} and others kept "
            f"{reading.others:.2f} CPU cores busy after waiting {reading.waited_s:.0f} s, above {limit:.2f}: not "
            "timing on a busy machine. Rerun when it is idle, or pass --allow-load to time anyway (figures marked "
            "invalid)."
        )
        self.reading = reading


class LoadGate:
    """Called before each lane: waits up to `wait_s` for the machine to allow timing, then returns its `Reading`, or
    raises `LoadTooHigh` (with `allow`, returns the reading marked invalid instead).

    A lane starts at once where the 1-minute load average is at most `limit`. The average still holds the bench's
    own previous lane for a minute or more after it ends (about 40 s to fall from 2 to 1 on an idle 2-core
    machine), so otherwise the gate measures what others use: the CPU cores kept busy over `sample_s` while the
    bench runs nothing (`busy_cores`), and the lane starts once that is at most `busy_limit`. `read`, `busy` (given
    `sample_s`, it blocks that long) and `clock` are injectable for tests."""

    def __init__(
        self,
        wait_s: float,
        allow: bool = False,
        limit: float = LOAD_LIMIT,
        busy_limit: float = BUSY_LIMIT,
        sample_s: float = SAMPLE_S,
        read: Callable[[], float] = lambda: os.getloadavg()[0],
        busy: Callable[[float], float] = lambda s: busy_cores(s, Path("/proc/stat").read_text),
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.wait_s, self.allow, self.limit, self.busy_limit = wait_s, allow, limit, busy_limit
        self.sample_s, self.read, self.busy, self.clock = sample_s, read, busy, clock

    def __call__(self, lane: str) -> Reading:
        start, load = self.clock(), self.read()
        others = load  # until measured
        while load > self.limit and self.clock() - start < self.wait_s:
            others = self.busy(self.sample_s)
            if others <= self.busy_limit:
                return Reading(load, others, self.clock() - start, True)
            load = self.read()
        reading = Reading(load, min(load, others), self.clock() - start, load <= self.limit)
        if reading.valid or self.allow:
            return reading
        raise LoadTooHigh(lane, reading, self.busy_limit)


def cpu_description(cpuinfo: str, logical_cpus: int | None) -> dict:
    """The CPU model, its logical CPU count and vector extensions, from the text of /proc/cpuinfo."""
    fields_ = {}
    for line in cpuinfo.splitlines():
        key, sep, value = line.partition(":")
        if sep and key.strip() not in fields_:  # the first processor's; every core of one machine says the same
            fields_[key.strip()] = value.strip()
    flags = set(fields_.get("flags", "").split())
    model = fields_.get("model name", "unknown CPU")
    vector = [name for flag, name in VECTOR_FLAGS.items() if flag in flags]
    summary = f"{model}, {logical_cpus} logical CPUs, {' '.join(vector) or 'no AVX2'}"
    return {"model": model, "logical_cpus": logical_cpus, "vector_extensions": vector, "summary": summary}


def this_cpu() -> dict:
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        text = ""
    return cpu_description(text, os.cpu_count())


def _json(value: object) -> object:
    """json.dumps' fallback for what section details hold: dataclasses (readings), paths."""
    return asdict(value) if is_dataclass(value) else str(value)


def write_results(path: Path, header: dict, figures: Sequence[Figure]) -> None:
    """results.json: `header` (the run, the machine, each section's details) and one entry per figure."""
    cpu = header["machine"]["cpu"]["summary"]
    document = {**header, "figures": [figure.record(cpu) for figure in figures]}
    write_text_atomic(path, json.dumps(document, indent=2, default=_json) + "\n")


def read_results(path: Path) -> tuple[dict, list[Figure]]:
    document = json.loads(path.read_text())
    return document, [Figure.from_record(record) for record in document.pop("figures")]


def figure_table(figures: Sequence[Figure]) -> str:
    """The console table: one row per figure."""
    rows = [("figure", "value", "baseline", "ratio", "target", "met?", "load")]
    for f in figures:
        span = f" ({f.value_range[0]:.4g}–{f.value_range[1]:.4g})" if f.value_range and f.runs > 1 else ""
        met = {None: "", True: "yes", False: "NO"}[f.met]
        load = "" if f.load is None else f"{f.load.load_average:.2f}" + ("" if f.valid else " INVALID")
        rows.append(
            (
                f.name,
                f"{f.value:.4g} {f.unit}{span}",
                "" if f.baseline is None else f"{f.baseline:.4g}",
                "" if f.ratio is None else f"{f.ratio:.3f}",
                f.target or "",
                met,
                load,
            )
        )
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    return "\n".join("  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)).rstrip() for row in rows)
