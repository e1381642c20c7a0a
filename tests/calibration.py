"""A fixed, seconds-long CPU calibration: the machine-speed figure printed at the start and the
end of the suite, so a slow day is visible beside the total (these machines run the same
work 1.9-2.4x slower on some days).

The workload is what the suite spends its time on, in miniature: interpreted Python (imports,
config checks, polars glue) and single-threaded float maths (tiny models on the CPU). It is
the same work every time, so only the machine changes its time. `REFERENCE_S` is its time on
the project's 2-core machine on a day of normal speed (docs/benchmarks.md, "The test suite
from cold");
`factor` = measured / reference, and a suite time divided by it is the normalised time.

Run alone: .venv/bin/python tests/calibration.py
"""

from __future__ import annotations

import time
import zlib

REFERENCE_S = 1.25  # the 2-core machine, 2026-12-06 (docs/benchmarks.md)


def _python_work() -> int:
    acc, table = 0, {}
    for i in range(9_000_000):
        acc = (acc * 31 + i) % 1_000_003
        table[acc & 1023] = i
    return acc + len(table)


def _float_work() -> float:
    import numpy as np
    from threadpoolctl import threadpool_limits

    rng = np.random.default_rng(0)
    a = rng.standard_normal((384, 384), dtype=np.float32)
    with threadpool_limits(1):  # one core, whatever else runs beside the suite
        for _ in range(400):
            a = np.tanh(a @ a * 0.05)
    return float(a.sum())


def _bytes_work() -> int:
    data = bytes(range(256)) * 16384
    return sum(len(zlib.compress(data[i:] + data[:i], 6)) for i in range(0, 4096, 512))


def calibrate() -> dict[str, float]:
    """Seconds of the fixed workload (the best of two rounds, so a single hiccup does not
    count) and its factor against the reference day."""
    best = float("inf")
    for _ in range(2):
        t = time.perf_counter()
        _python_work()
        _float_work()
        _bytes_work()
        best = min(best, time.perf_counter() - t)
    return {"seconds": best, "factor": best / REFERENCE_S}


if __name__ == "__main__":
    c = calibrate()
    print(f"machine speed: calibration {c['seconds']:.2f} s ({c['factor']:.2f}x the "
          f"reference {REFERENCE_S:.2f} s)")
