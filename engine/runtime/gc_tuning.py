"""Keep the cyclic garbage collector off long-lived state (the engine's read model, a fleet's pods).

Both hold hundreds of thousands of long-lived objects (100,000 pods); with the default thresholds every
allocation-heavy step triggers collections that walk all of it (a full reconcile at 5,000 nodes measured
37 ms, 20 ms with this; a fleet executor decoding 50,000 commands 3.4 s, 0.7 s with this). Freezing moves
what exists after the initial load out of the collector's sight; a higher first threshold makes
collections of the young rarer. The state holds no reference cycles, so nothing is kept alive longer by
it. Once per process: a process running thousands of executors calls it once, not per executor.
"""

from __future__ import annotations

import gc


def tune_gc() -> None:
    gc.collect()
    gc.freeze()
    gc.set_threshold(100_000, 50, 100)
