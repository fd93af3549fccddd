"""Exactness of the one-pass global selection against a brute-force stable sort."""

import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from hf_tickets.core import selection
from hf_tickets.core.selection import prune_lowest


def brute_force(tensors, k, keep=None):
    scores = []
    for name, t in tensors.items():
        s = t.abs().reshape(-1).clone()
        if keep is not None:
            s[~keep[name].reshape(-1)] = -float("inf")
        scores.append(s)
    order = torch.cat(scores).sort(stable=True).indices[:k]
    flat = torch.ones(sum(t.numel() for t in tensors.values()), dtype=torch.bool)
    flat[order] = False
    return flat


def flatten(masks, names):
    return torch.cat([masks[n].reshape(-1) for n in names])


tensor_sizes = st.lists(st.integers(1, 60), min_size=1, max_size=4)


@settings(max_examples=150, deadline=None)
@given(sizes=tensor_sizes, data=st.data(), integer_values=st.booleans())
def test_exactly_k_lowest_with_ties_broken_by_position(sizes, data, integer_values):
    g = torch.Generator().manual_seed(data.draw(st.integers(0, 10_000)))
    make = (
        (lambda n: torch.randint(-3, 4, (n,), generator=g).float())
        if integer_values
        else (lambda n: torch.randn(n, generator=g))
    )
    tensors = {f"t{i}": make(n) for i, n in enumerate(sizes)}
    k = data.draw(st.integers(0, sum(sizes)))
    masks = prune_lowest(tensors, k)
    assert int(sum((~m).sum() for m in masks.values())) == k
    assert torch.equal(flatten(masks, tensors), brute_force(tensors, k))


@settings(max_examples=100, deadline=None)
@given(sizes=tensor_sizes, data=st.data())
def test_cumulative_keeps_what_was_pruned(sizes, data):
    g = torch.Generator().manual_seed(data.draw(st.integers(0, 10_000)))
    tensors = {f"t{i}": torch.randint(-2, 3, (n,), generator=g).float() for i, n in enumerate(sizes)}
    total = sum(sizes)
    k1 = data.draw(st.integers(0, total))
    k2 = data.draw(st.integers(k1, total))
    first = prune_lowest(tensors, k1)
    second = prune_lowest(tensors, k2, keep=first)
    for name in tensors:
        assert not (second[name] & ~first[name]).any(), "a pruned weight came back"
    assert torch.equal(flatten(second, tensors), brute_force(tensors, k2, keep=first))


def test_large_tensors_take_the_sampled_band_path_and_stay_exact():
    g = torch.Generator().manual_seed(0)
    tensors = {"a": torch.randn(300_000, generator=g), "b": torch.randn(200, 1000, generator=g) * 3}
    for k in (1, 12345, 250_000, 499_999):
        masks = prune_lowest(tensors, k)
        assert torch.equal(flatten(masks, tensors), brute_force(tensors, k))


def test_many_equal_values_across_the_threshold():
    tensors = {"a": torch.zeros(50_000), "b": torch.ones(50_000), "c": torch.zeros(1000)}
    masks = prune_lowest(tensors, 50_500)
    assert torch.equal(flatten(masks, tensors), brute_force(tensors, 50_500))
    assert not masks["a"].any() and not masks["c"][:500].any() and masks["c"][500:].all() and masks["b"].all()


def test_a_layout_that_fools_the_strided_sample_still_gives_the_exact_answer():
    """The sample sees only large values here, so its band misses the k-th score and must widen."""
    g = torch.Generator().manual_seed(1)
    weight = torch.rand(400, 768, generator=g) * 0.01
    n = weight.numel()
    sampled = torch.zeros(n, dtype=torch.bool)
    sampled[selection._sample_places(n, 768, selection._SAMPLE_SIZE)] = True
    weight.view(-1)[sampled] = 100 + torch.rand(int(sampled.sum()), generator=g)
    lo, hi = selection._band_limits({"w": weight}, None, n // 2, n, selection.magnitude, 0)
    assert lo >= 100  # the first band misses the k-th score (about 0.005)
    for k in (n // 2, n - int(sampled.sum()) + 3):
        masks = prune_lowest({"w": weight}, k)
        assert torch.equal(flatten(masks, {"w": weight}), brute_force({"w": weight}, k))


def test_threaded_pass_gives_the_same_masks_as_one_thread():
    g = torch.Generator().manual_seed(3)
    tensors = {f"t{i}": torch.randn(256, 1536, generator=g) for i in range(4)}  # 1.5M entries: threaded
    k = 700_001
    threads = torch.get_num_threads()
    try:
        torch.set_num_threads(1)
        alone = prune_lowest(tensors, k)
        torch.set_num_threads(2)
        together = prune_lowest(tensors, k)
    finally:
        torch.set_num_threads(threads)
    assert all(torch.equal(alone[n], together[n]) for n in tensors)
    assert torch.equal(flatten(together, tensors), brute_force(tensors, k))


def test_half_precision_weights_are_scored_in_float32():
    g = torch.Generator().manual_seed(4)
    tensors = {"a": torch.randn(3000, generator=g).bfloat16(), "b": torch.randn(50, 40, generator=g).half()}
    as_float = {n: t.float() for n, t in tensors.items()}
    masks = prune_lowest(tensors, 2500)
    assert torch.equal(flatten(masks, tensors), brute_force(as_float, 2500))


def test_count_pruned_matches_count_nonzero():
    g = torch.Generator().manual_seed(5)
    mask = torch.rand(37, 41, generator=g) < 0.3
    for view in (mask, mask.t(), mask[:, ::3], mask[5:6]):
        assert selection.count_pruned(view) == view.numel() - int(torch.count_nonzero(view))
