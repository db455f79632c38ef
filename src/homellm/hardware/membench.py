"""How fast this machine reads memory: every core summing its own slice of a large array.

numpy's reductions release the GIL, so the threads run in parallel, like llama.cpp's threads
reading their share of the weights. The best of a few rounds is taken (others share the machine).
"""

from __future__ import annotations

import os
import threading
import time

PROBE_BYTES = 512 * 1024 * 1024  # well beyond any CPU cache


def memory_bandwidth_gbs(rounds: int = 5, nbytes: int = PROBE_BYTES, threads: int | None = None) -> float:
    import numpy as np

    n = threads or os.cpu_count() or 1
    data = np.ones(nbytes // 4, dtype=np.float32)
    parts = np.array_split(data, n)
    sink = [0.0] * n

    def read(i: int) -> None:
        sink[i] = float(np.add.reduce(parts[i]))

    best = 0.0
    for _ in range(rounds + 1):  # the first round pages the array in
        workers = [threading.Thread(target=read, args=(i,)) for i in range(n)]
        start = time.perf_counter()
        for w in workers:
            w.start()
        for w in workers:
            w.join()
        best = max(best, data.nbytes / (time.perf_counter() - start) / 1e9)
    return best
