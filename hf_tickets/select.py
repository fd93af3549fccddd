"""Exact global selection of the k lowest scores across many tensors, in about one pass.

``torch.kthvalue`` over a concatenated copy costs a 4-byte copy of every weight and a full
selection; ``torch.nn.utils.prune.global_unstructured`` even sorts everything. Here:

1. a strided sample (about 1 in 300 weights, read in memory order) brackets the k-th score in
   a narrow band [lo, hi];
2. one pass per tensor writes ``score >= lo`` straight into the output mask, counts what lies
   below, and gathers the few scores inside the band with their positions (skipping 8 flags
   at a time: ``nonzero`` would cost as much per element as the comparisons);
3. a linear-time selection on the band alone finds the exact threshold and prunes up to it.

If the sample was unrepresentative and the k-th score lies outside the band, the band is widened and
the pass repeated, so the answer is always exact. Ties are broken by position (tensor order,
then flat index): of equal scores, the earlier ones are pruned first.
Extra memory beyond the output masks: one tensor's scores at a time, plus the band.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping

import torch

#: Elementwise score: ``score_fn(values, out=None) -> float32 scores`` (``out`` reuses a buffer).
ScoreFn = Callable[..., torch.Tensor]

_SAMPLE_SIZE = 1 << 18
_BAND_SIGMAS = 4.5
_MAX_WIDENINGS = 4


def magnitude(values: torch.Tensor, out: torch.Tensor | None = None) -> torch.Tensor:
    if values.dtype == torch.float32:
        return torch.abs(values, out=out) if out is not None else values.abs()
    return values.float().abs_()


def as_scores(values: torch.Tensor, out: torch.Tensor | None = None) -> torch.Tensor:
    """For precomputed scores (e.g. random ones)."""
    return values.float()


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
        scores = score_fn(tensor.detach().reshape(-1)[places]).cpu()
        if keep is not None:
            scores[~keep[name].reshape(-1)[places].cpu()] = -math.inf
        samples.append(scores)
    sample = torch.cat(samples)
    m = sample.numel()
    q = k / total
    half_width = (_BAND_SIGMAS * math.sqrt(max(m * q * (1 - q), 1.0)) + 8) * 4**widening
    low_rank, high_rank = math.floor(q * m - half_width), math.ceil(q * m + half_width)
    lo = -math.inf if low_rank < 0 else sample.kthvalue(low_rank + 1).values.item()
    hi = math.inf if high_rank >= m else sample.kthvalue(high_rank + 1).values.item()
    return lo, hi


def _positions(flags: torch.Tensor) -> torch.Tensor:
    """``flags.nonzero()`` for a sparse flat bool tensor, scanning 8 flags per step.

    ``nonzero`` costs the same per element however few are set; the band is a small fraction, so
    most 8-byte words hold no flag and are skipped whole.
    """
    n = flags.numel()
    body = n - n % 8
    words = flags[:body].view(torch.int64).nonzero().squeeze(1)
    within = flags[:body].view(-1, 8).index_select(0, words).nonzero()
    places = words.index_select(0, within[:, 0]).mul_(8).add_(within[:, 1])
    if body < n:
        places = torch.cat([places, flags[body:].nonzero().squeeze(1) + body])
    return places


def _one_pass(tensors, keep, lo, hi, score_fn):
    """Masks ``score >= lo`` (and previously kept), the count below lo, and the band's contents."""
    largest = max(t.numel() for t in tensors.values())
    score_buf = torch.empty(largest)
    band_buf = torch.empty(largest, dtype=torch.bool)
    masks, band_values, band_places, below = {}, [], [], 0
    for name, tensor in tensors.items():
        n = tensor.numel()
        flat = tensor.detach().reshape(-1)
        if flat.device.type != "cpu":
            flat = flat.cpu()
        scores = score_fn(flat, out=score_buf[:n])
        mask = torch.ge(scores, lo, out=torch.empty(n, dtype=torch.bool))
        if keep is not None:
            mask &= keep[name].reshape(-1)
        in_band = torch.le(scores, hi, out=band_buf[:n])
        in_band &= mask
        places = _positions(in_band)
        below += n - int(torch.count_nonzero(mask))
        band_values.append(scores[places])
        band_places.append(places)
        masks[name] = mask
    return masks, below, band_values, band_places


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
    already = 0 if keep is None else sum(int((~m).sum()) for m in keep.values())
    if not already <= k <= total:
        raise ValueError(f"cannot prune {k} of {total} entries when {already} are already pruned")
    if k == already and keep is not None:
        return {name: keep[name].clone() for name in tensors}
    if k == total or k == 0:
        return {name: torch.full(t.shape, k == 0, dtype=torch.bool) for name, t in tensors.items()}

    for widening in range(_MAX_WIDENINGS + 1):
        lo, hi = _band_limits(tensors, keep, k, total, score_fn, widening)
        masks, below, band_values, band_places = _one_pass(tensors, keep, lo, hi, score_fn)
        band = torch.cat(band_values)
        if below <= k <= below + band.numel():
            break

    # Prune the j lowest of the band: everything under the j-th value, then equal ones by position.
    j = k - below
    if j > 0:
        threshold = band.kthvalue(j).values
        chosen = band < threshold
        ties = (band == threshold).nonzero().squeeze(1)
        chosen[ties[: j - int(torch.count_nonzero(chosen))]] = True
        chosen_idx = chosen.nonzero().squeeze(1)
        bounds = torch.tensor([p.numel() for p in band_places]).cumsum(0)
        owners = torch.bucketize(chosen_idx, bounds, right=True)
        starts = torch.cat([torch.zeros(1, dtype=bounds.dtype), bounds[:-1]])
        split = torch.bincount(owners, minlength=len(band_places)).tolist()
        for (name, places), start, local in zip(zip(masks, band_places), starts.tolist(), chosen_idx.split(split)):
            if local.numel():
                masks[name].index_fill_(0, places[local - start], False)
    return {name: masks[name].reshape(tensors[name].shape) for name in tensors}
