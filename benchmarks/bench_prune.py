"""How fast is ``hf_tickets.prune(model, 0.5)`` on a bert-base-sized encoder? One run, ratios printed.

Compared, on the same 72 encoder matrices (85M weights, random init, no download):
- peer: ``torch.nn.utils.prune.global_unstructured`` with ``L1Unstructured`` (what the paper's code uses);
- ``torch.kthvalue`` over the concatenated magnitudes (a copy of every weight, then a selection);
- floor: one magnitude compare-and-count per matrix in torch (the issue's floor), and for reference
  the same in numpy, on one thread and on one matrix per thread.
Targets: >= 20x faster than the peer, <= 3x the (torch) floor, exact sparsity, and extra peak memory
below one byte per weight beyond the masks (measured with the kernel's peak-RSS counter).

Run: python benchmarks/bench_prune.py [--repeats 5]
"""

from __future__ import annotations

import argparse
import os
import time
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import torch
import torch.nn.utils.prune as torch_prune
from transformers import BertConfig, BertModel

import hf_tickets
from hf_tickets.core.targets import resolve_targets


def best_time(fn, repeats: int) -> float:
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - start)
    return best


def interleaved_times(fns: dict, repeats: int) -> dict[str, list[float]]:
    """Each function timed ``repeats`` times, round robin: a noisy neighbour slows all of them alike."""
    times = {name: [] for name in fns}
    for _ in range(repeats):
        for name, fn in fns.items():
            start = time.perf_counter()
            fn()
            times[name].append(time.perf_counter() - start)
    return times


def rss_kib(field: str) -> int:
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith(field):
                return int(line.split()[1])
    raise RuntimeError(field)


def reset_peak_rss() -> bool:
    try:  # writing 5 resets VmHWM (Linux >= 4.0)
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
        return True
    except OSError:
        return False


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=7)
    args = parser.parse_args()
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, {os.cpu_count()} cpus")

    torch.manual_seed(0)
    model = BertModel(BertConfig(), add_pooling_layer=False).eval()
    names = resolve_targets(model)
    weights = [model.get_parameter(n).detach() for n in names]
    n = sum(w.numel() for w in weights)
    k = round(0.5 * n)
    print(f"bert-base encoder: {len(names)} matrices, {n:,} weights; pruning 50% = {k:,}")

    # Memory first, in a quiet process state: peak RSS growth during one prune.
    has_peak = reset_peak_rss()
    before = rss_kib("VmRSS")
    ticket = hf_tickets.prune(model, 0.5)
    extra_bytes = (rss_kib("VmHWM") - before) * 1024 - n  # the bool masks are 1 byte per weight
    assert ticket.num_pruned == k, "sparsity not exact"

    threshold = float(torch.cat([w.abs().reshape(-1) for w in weights]).kthvalue(k).values)

    def numpy_count(w):
        return int(np.count_nonzero(np.abs(w.numpy()) <= threshold))

    pool = ThreadPoolExecutor(torch.get_num_threads())
    times = interleaved_times(
        {
            "ours": lambda: hf_tickets.prune(model, 0.5),
            "floor": lambda: sum(int(torch.count_nonzero(w.abs() <= threshold)) for w in weights),
            "raw_floor": lambda: sum(int(torch.count_nonzero(w <= threshold)) for w in weights),
            "numpy_floor": lambda: sum(map(numpy_count, weights)),
            "numpy_threads_floor": lambda: sum(pool.map(numpy_count, weights)),
        },
        args.repeats,
    )
    ours, floor, raw_floor, numpy_floor, numpy_threads_floor = (
        min(times[name]) for name in ("ours", "floor", "raw_floor", "numpy_floor", "numpy_threads_floor")
    )
    # Ratio of each round's pair, then the median: robust to a neighbour that comes and goes.
    pair_ratios = sorted(o / f for o, f in zip(times["ours"], times["floor"]))
    median_ratio = pair_ratios[len(pair_ratios) // 2]
    kth = best_time(lambda: torch.cat([w.abs().reshape(-1) for w in weights]).kthvalue(k), max(1, args.repeats // 2))

    def peer():
        modules = [(model.get_submodule(name.rsplit(".", 1)[0]), "weight") for name in names]
        torch_prune.global_unstructured(modules, pruning_method=torch_prune.L1Unstructured, amount=k)
        pruned = sum(int((m.weight_mask == 0).sum()) for m, _ in modules)
        for module, param in modules:
            torch_prune.remove(module, param)  # restore plain parameters (pruned ones now zero)
        return pruned

    with torch.no_grad():
        original = [w.clone() for w in weights]
    start = time.perf_counter()
    peer_pruned = peer()
    peer_time = time.perf_counter() - start
    with torch.no_grad():
        for w, o in zip(weights, original):
            w.copy_(o)
    assert peer_pruned == k

    print(f"{'hf_tickets.prune':32s} {ours * 1000:9.1f} ms")
    print(
        f"{'torch prune.global_unstructured':32s} {peer_time * 1000:9.1f} ms   {peer_time / ours:6.1f}x slower "
        "(target >= 20x)"
    )
    print(f"{'torch.kthvalue (concatenated)':32s} {kth * 1000:9.1f} ms   {kth / ours:6.1f}x slower")
    print(
        f"{'floor: |w| compare-and-count':32s} {floor * 1000:9.1f} ms   ours = {ours / floor:4.2f}x floor "
        "(target <= 3x)"
    )
    print(f"{'  median of paired rounds':32s} {'':9s}      ours = {median_ratio:4.2f}x floor")
    print(f"{'  (raw w compare-and-count)':32s} {raw_floor * 1000:9.1f} ms   ours = {ours / raw_floor:4.2f}x")
    print(f"{'  (|w| in numpy, 1 thread)':32s} {numpy_floor * 1000:9.1f} ms   ours = {ours / numpy_floor:4.2f}x")
    threads = torch.get_num_threads()
    print(
        f"{f'  (|w| in numpy, {threads} threads)':32s} {numpy_threads_floor * 1000:9.1f} ms   ours = "
        f"{ours / numpy_threads_floor:4.2f}x"
    )
    if has_peak:
        print(f"extra peak memory beyond the masks: {extra_bytes / n:.3f} bytes/weight (target < 1)")
    else:
        print("extra peak memory: not measurable here (/proc/self/clear_refs unavailable)")
    print(f"exact sparsity: {ticket.num_pruned} pruned of {n} = {ticket.sparsity:.6f}")


if __name__ == "__main__":
    main()
