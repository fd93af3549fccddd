"""Exact global selection of the k lowest scores across many tensors, in about one pass.

``torch.kthvalue`` over a concatenated copy costs a 4-byte copy of every weight and a full
selection; ``torch.nn.utils.prune.global_unstructured`` even sorts everything. Here:

1. a strided sample (about 1 in 300 weights, read in memory order) brackets the k-th score in
   a narrow band [lo, hi];
2. one pass per tensor writes ``score >= lo`` straight into the output mask, counts what lies
   below, and gathers the few scores inside the band with their positions;
3. a linear-time selection on the band alone finds the exact threshold and prunes up to it.

If the sample was unrepresentative and the k-th score lies outside the band, the band is widened and
the pass repeated, so the answer is always exact. Ties are broken by position (tensor order,
then flat index): of equal scores, the earlier ones are pruned first.

The pass runs in numpy, one tensor per thread (``torch.get_num_threads()`` of them; numpy
releases the GIL): its SIMD loops write bool flags four times faster than ATen, whose
bool-output comparisons are scalar code. Extra memory beyond the output masks: each thread's
scores of one tensor, plus the band.
"""

from __future__ import annotations

import math
import threading
from collections.abc import Callable, Mapping
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import torch

#: Elementwise score: ``score_fn(values, out=None) -> float32 numpy scores`` (``out`` reuses a
#: buffer). The result may share memory with ``values``: it is only read.
ScoreFn = Callable[..., np.ndarray]

_SAMPLE_SIZE = 1 << 18
_BAND_SIGMAS = 4.5
_MAX_WIDENINGS = 4
_THREADS_FROM = 1 << 20  # entries: below this, starting threads costs more than it saves


def _cpu_float(values: torch.Tensor) -> np.ndarray:
    return values.detach().to("cpu", torch.float32).numpy()


def magnitude(values: torch.Tensor, out: np.ndarray | None = None) -> np.ndarray:
    return np.abs(_cpu_float(values), out=out)


def as_scores(values: torch.Tensor, out: np.ndarray | None = None) -> np.ndarray:
    """For precomputed scores (e.g. random ones)."""
    return _cpu_float(values)


def count_pruned(mask: torch.Tensor) -> int:
    """False entries of a keep-mask; numpy's SIMD count is 3x faster than ``count_nonzero`` on CPU."""
    kept = torch.count_nonzero(mask) if mask.device.type != "cpu" else np.count_nonzero(mask.detach().numpy())
    return mask.numel() - int(kept)


def _kth_smallest(values: np.ndarray, ranks: list[int]) -> list[float]:
    """Values of the given 0-based ranks; numpy's introselect needs no index bookkeeping (2x ``kthvalue``)."""
    if not ranks:
        return []
    chosen = np.partition(values, ranks)
    return [float(chosen[r]) for r in ranks]


def _sample_places(n: int, row: int, count: int) -> slice:
    """Every ``stride``-th position, the stride coprime with the row length so every column is visited.

    A strided view reads memory in order (a random gather waits on a cache miss per element); the
    band it brackets only decides the speed, never the answer (see ``prune_lowest``).
    """
    stride = max(1, n // max(count, 1))
    while math.gcd(stride, row) != 1:
        stride += 1
    return slice(stride // 2, n, stride)


def _band_limits(tensors, keep, k, total, score_fn, widening) -> tuple[float, float]:
    """A sample-quantile bracket [lo, hi] that contains the k-th lowest score with high probability."""
    if widening >= _MAX_WIDENINGS:
        return -math.inf, math.inf
    samples = []
    for name, tensor in tensors.items():
        n = tensor.numel()
        places = _sample_places(n, tensor.shape[-1] if tensor.dim() else 1, round(_SAMPLE_SIZE * n / total))
        scores = score_fn(tensor.detach().reshape(-1)[places])
        if keep is not None:
            scores = np.where(keep[name].reshape(-1)[places].numpy(), scores, -np.inf)
        samples.append(scores)
    sample = np.concatenate(samples)
    m = sample.size
    q = k / total
    half_width = (_BAND_SIGMAS * math.sqrt(max(m * q * (1 - q), 1.0)) + 8) * 4**widening
    low_rank, high_rank = math.floor(q * m - half_width), math.ceil(q * m + half_width)
    ranks = [r for r in (low_rank, high_rank) if 0 <= r < m]
    limits = dict(zip(ranks, _kth_smallest(sample, ranks)))
    return limits.get(low_rank, -math.inf), limits.get(high_rank, math.inf)


def _one_pass(tensors, keep, lo, hi, score_fn):
    """Masks ``score >= lo`` (and previously kept), the count below lo, and the band's contents."""
    sizes = [t.numel() for t in tensors.values()]
    largest = max(sizes)
    # One block for all masks: numpy backs blocks of 4 MB and more with huge pages where the kernel
    # allows, so writing 1 byte per weight takes hundreds of page faults, not tens of thousands.
    block = np.empty(sum(sizes), dtype=bool)
    ends = np.cumsum(sizes)
    outputs = {name: block[end - size : end] for name, size, end in zip(tensors, sizes, ends)}
    buffers = threading.local()

    def one_tensor(name):
        if not hasattr(buffers, "scores"):
            buffers.scores, buffers.band = np.empty(largest, np.float32), np.empty(largest, bool)
        tensor = tensors[name]
        n = tensor.numel()
        scores = score_fn(tensor.reshape(-1), out=buffers.scores[:n])
        mask = np.greater_equal(scores, lo, out=outputs[name])
        if keep is not None:
            mask &= keep[name].reshape(-1).numpy()
        in_band = np.less_equal(scores, hi, out=buffers.band[:n])
        in_band &= mask
        places = np.flatnonzero(in_band)  # skips zero words: cheap on a sparse band
        return n - int(np.count_nonzero(mask)), scores[places], places

    workers = min(torch.get_num_threads(), len(tensors)) if sum(sizes) >= _THREADS_FROM else 1
    if workers > 1:
        with ThreadPoolExecutor(workers, thread_name_prefix="hf_tickets-prune") as pool:
            results = list(pool.map(one_tensor, tensors))
    else:
        results = [one_tensor(name) for name in tensors]
    return outputs, sum(r[0] for r in results), [r[1] for r in results], [r[2] for r in results]


def prune_lowest(
    tensors: Mapping[str, torch.Tensor],
    k: int,
    keep: Mapping[str, torch.Tensor] | None = None,
    score_fn: ScoreFn = magnitude,
) -> dict[str, torch.Tensor]:
    """Keep-masks (True = kept) with exactly the ``k`` lowest-scoring entries pruned overall.

    ``keep``: a previous mask; its pruned entries stay pruned and count towards ``k``.
    """
    total = sum(t.numel() for t in tensors.values())
    already = 0 if keep is None else sum(count_pruned(m) for m in keep.values())
    if not already <= k <= total:
        raise ValueError(f"cannot prune {k} of {total} entries when {already} are already pruned")
    if k == already and keep is not None:
        return {name: keep[name].clone() for name in tensors}
    if k == total or k == 0:
        return {name: torch.full(t.shape, k == 0, dtype=torch.bool) for name, t in tensors.items()}

    for widening in range(_MAX_WIDENINGS + 1):
        lo, hi = _band_limits(tensors, keep, k, total, score_fn, widening)
        masks, below, band_values, band_places = _one_pass(tensors, keep, lo, hi, score_fn)
        band = np.concatenate(band_values)
        if below <= k <= below + band.size:
            break

    # Prune the j lowest of the band: everything under the j-th value, then equal ones by position.
    j = k - below
    if j > 0:
        (threshold,) = _kth_smallest(band, [j - 1])
        chosen = band < threshold
        ties = np.flatnonzero(band == threshold)
        chosen[ties[: j - int(np.count_nonzero(chosen))]] = True
        start = 0
        for name, places in zip(masks, band_places):
            masks[name][places[chosen[start : start + places.size]]] = False
            start += places.size
    return {name: torch.from_numpy(masks[name]).reshape(tensors[name].shape) for name in tensors}
