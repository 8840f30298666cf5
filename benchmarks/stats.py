"""Summary statistics of the benchmark suite (``benchmarks/``).

The library package (``lightning_prune``) does not import it.

* :func:`spread`: median with min and max.
* :func:`summarise`: the one summary of interleaved timings: per contender the per-run values and
  their spread and, against a baseline, the per-repeat ratio and speedup as spreads.
* :func:`mean_std`: mean and sample standard deviation (accuracy over seeds), re-exported from
  :mod:`lightning_prune.teaching`, where the notebooks and experiments take it from.
* :func:`loglog_slope`: the growth exponent of ``y ~ x^slope``.
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Mapping, Sequence
from typing import Any

from lightning_prune.teaching import mean_std  # noqa: F401  (defined once, there)


def spread(values: Sequence[float], scale: float = 1.0) -> dict[str, float]:
    """Median with min and max (each times ``scale``) and the number of values."""
    if not values:
        raise ValueError("spread of no values")
    return {"median": statistics.median(values) * scale, "min": min(values) * scale, "max": max(values) * scale,
            "n": len(values)}


def summarise(times: Mapping[str, Sequence[float]], baseline: str | None = None,
              scale: float = 1.0) -> dict[str, dict[str, Any]]:
    """The summary of :func:`benchmarks._common.interleave`'s per-run times, used by every part.

    Args:
        times: Per contender, one value per repeat (repeat ``i`` of every contender ran in the same round).
        baseline: The contender the others are compared with, repeat by repeat.
        scale: Factor for the values in ``runs`` and ``value`` (e.g. ``1e3`` for seconds to ms); the
            ratios do not depend on it.

    Returns:
        Per contender ``{"runs": [...], "value": spread}`` and, with a ``baseline``, ``"ratio"`` (the
        spread of ``value / baseline value`` over the repeats: a time fraction) and ``"speedup"`` (the
        spread of ``baseline value / value``). The median of the per-repeat ratios compares each
        contender with the baseline block next to it in time, which is what makes it usable on a
        machine whose load changes between repeats.

    Raises:
        ValueError: If ``baseline`` is not a contender or the contenders have different numbers of runs.
    """
    if baseline is not None and baseline not in times:
        raise ValueError(f"baseline {baseline!r} is not one of {sorted(times)}")
    lengths = {len(ts) for ts in times.values()}
    if len(lengths) > 1:
        raise ValueError(f"every contender needs the same number of runs, got {sorted(lengths)}")
    out: dict[str, dict[str, Any]] = {}
    for name, ts in times.items():
        entry: dict[str, Any] = {"runs": [t * scale for t in ts], "value": spread(ts, scale)}
        if baseline is not None:
            base = times[baseline]
            entry["ratio"] = spread([t / b for t, b in zip(ts, base)])
            entry["speedup"] = spread([b / t for t, b in zip(ts, base)])
        out[name] = entry
    return out


def loglog_slope(x: Sequence[float], y: Sequence[float]) -> float | None:
    """Least-squares slope of ``log y`` on ``log x``: the growth exponent (``y ~ x^slope``)."""
    pairs = [(math.log(a), math.log(b)) for a, b in zip(x, y) if a > 0 and b > 0]
    if len(pairs) < 2:
        return None
    mx = statistics.mean(p[0] for p in pairs)
    my = statistics.mean(p[1] for p in pairs)
    sxx = sum((p[0] - mx) ** 2 for p in pairs)
    return sum((p[0] - mx) * (p[1] - my) for p in pairs) / sxx if sxx else None
