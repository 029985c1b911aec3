"""Wall-clock timing that the export's model card and the benchmarks share."""

import statistics
import time
from collections.abc import Callable


def median_ms(call: Callable[[], object], calls: int, warmup: int = 10) -> float:
    """Median wall time of `call` in milliseconds, after `warmup` untimed calls (the first ones may build kernels
    or caches)."""
    for _ in range(warmup):
        call()
    times = []
    for _ in range(calls):
        start = time.perf_counter()
        call()
        times.append(time.perf_counter() - start)
    return 1000 * statistics.median(times)
