"""Structured tickets through the recipes: --ticket_granularity chooses what a round prunes, --shrink writes
the physically smaller model beside the exported sparse one (issue 18)."""

import dataclasses
import json
import logging
import sys
from pathlib import Path

import pytest
import torch
from test_shrink import load_in_fresh_process
from tiny import TRAIN_EVAL_FLAGS, tiny_model
from transformers import AutoModelForSequenceClassification, AutoTokenizer, BertForMaskedLM, BertModel

import hf_tickets
from hf_tickets.commands import cli
from hf_tickets.core.errors import TicketError
from hf_tickets.core.shrink import MODELING_FILE, RECORD_KEY
from hf_tickets.core.structured import HEAD_TARGETS, NEURON_TARGETS, units_of
from hf_tickets.training.imp_config import IMPConfig

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "recipes"))
import run_glue  # noqa: E402

FAST = TRAIN_EVAL_FLAGS
SENTENCES = ["a great film", "truly awful and boring, a waste of time", "brilliant acting"]


def glue(base, files, out, *extra):
    train, dev = files
    return [
        "--model_name_or_path", base, "--task_name", "sst2", "--train_file", str(train), "--validation_file", str(dev),
        "--output_dir", str(out), *FAST, *extra,
    ]  # fmt: skip


def unit_states(ticket, num_heads=2):
    """Per head/neuron of the ticket: 'kept' or 'pruned', or 'partial' if the mask splits it."""
    states = []
    for layer in units_of(ticket.masks, ("head", "neuron"), num_heads):
        for unit in layer:
            kept = [bool(view.all()) for view in unit.views(ticket.masks)]
            pruned = [not bool(view.any()) for view in unit.views(ticket.masks)]
            states.append((unit.kind, "kept" if all(kept) else "pruned" if all(pruned) else "partial"))
    return states


def shrunk_matches_masked(out: Path, tmp_path) -> dict:
    """Load output_dir/shrunk in a fresh process (remote code if it wrote one) and compare its logits with the
    exported masked model's on a padded batch; returns what the fresh process reports."""
    tokenizer = AutoTokenizer.from_pretrained(out / "shrunk")  # its own tokenizer
    batch = dict(tokenizer(SENTENCES, padding=True, return_tensors="pt"))
    assert (batch["attention_mask"] == 0).any()  # padding must stay masked out in the narrower attention too
    masked = AutoModelForSequenceClassification.from_pretrained(out).eval()
    with torch.no_grad():
        expected = masked(**batch).logits
    torch.save({**batch, "expected": expected}, out / "shrunk" / "probe.pt")
    remote = (out / "shrunk" / MODELING_FILE).is_file()
    result = load_in_fresh_process(out / "shrunk", "AutoModelForSequenceClassification", remote, tmp_path)
    assert result["diff"] < 1e-5 and not result["hf_tickets"]
    assert result["class"] == ("ShrunkBertForSequenceClassification" if remote else "BertForSequenceClassification")
    return result


def test_a_heads_and_neurons_search_exports_whole_units_and_a_shrunk_model_that_computes_the_same(
    tiny_base, sst2, tmp_path, caplog
):
    caplog.set_level(logging.INFO, logger="hf_tickets")
    out = tmp_path / "out"
    args = glue(tiny_base, sst2, out, "--max_steps", "10", "--sparsity_schedule", "0.3,0.5")
    results = run_glue.main([*args, "--ticket_granularity", "heads+neurons", "--shrink"])
    assert [r["round"] for r in results["rounds"]] == [0, 1, 2]
    config = results["config"]
    assert (config["ticket_granularity"], config["strategy"], config["targets"]) == ("heads+neurons",) * 2 + ("auto",)

    ticket = hf_tickets.Ticket.from_pretrained(out)  # the exported one, beside its sparse model
    assert ticket.config.strategy == "heads+neurons" and ticket.sparsity == pytest.approx(0.5, abs=0.01)
    states = unit_states(ticket)
    assert "partial" not in states and ("neuron", "pruned") in states  # whole units only
    model = AutoModelForSequenceClassification.from_pretrained(out)
    weights = ticket.parameters_of(model)
    assert all(not weights[n].detach()[~m].any() for n, m in ticket.masks.items())

    shrunk = out / "shrunk"
    assert (shrunk / "tokenizer_config.json").is_file() and not (shrunk / "ticket_masks.safetensors").exists()
    record = json.loads((shrunk / "config.json").read_text())[RECORD_KEY]
    pruned_neurons = states.count(("neuron", "pruned"))
    pruned_heads = states.count(("head", "pruned"))  # at most one per layer of 2 heads: the last one stays
    assert sum(record["removed_neurons"].values()) == pruned_neurons
    assert sum(len(h) for h in record["removed_heads"].values()) == pruned_heads
    # global pruning leaves unequal layers (or removed heads): the modeling file is needed
    assert (shrunk / MODELING_FILE).is_file()
    result = shrunk_matches_masked(out, tmp_path)
    assert result["diff"] < 1e-5
    line = next(r.getMessage() for r in caplog.records if r.getMessage().startswith("shrunk model in"))
    assert f"parameters {record['parameters_before']} -> {record['parameters_after']}" in line
    assert f"{pruned_heads} heads and {pruned_neurons} FFN neurons removed" in line
    assert "AutoModelForSequenceClassification.from_pretrained(" in line and "trust_remote_code=True" in line
    assert record["parameters_after"] < record["parameters_before"]

    # README: `hf-tickets shrink OUTPUT_DIR ./smaller-model` does the same from the saved sparse model.
    assert cli.main(["shrink", str(out), str(tmp_path / "cli")]) == 0
    again = json.loads((tmp_path / "cli" / "config.json").read_text())[RECORD_KEY]
    assert again["removed_neurons"] == record["removed_neurons"] and again["removed_heads"] == record["removed_heads"]

    # The granularity is part of the run's identity (through the strategy): another one is refused on resume.
    with pytest.raises(TicketError, match=r"config strategy: 'heads\+neurons' there, 'neurons' here"):
        run_glue.main([*args, "--ticket_granularity", "neurons"])


def test_a_transfer_of_a_structured_ticket_shrinks_to_a_stock_config(tiny_base, sst2, tmp_path):
    # heads+neurons prunes a head and unequal layers: fully shrunk, that would need the modeling file
    ticket = hf_tickets.prune(BertForMaskedLM.from_pretrained(tiny_base), 0.45, strategy="heads+neurons")
    assert ("head", "pruned") in unit_states(ticket)
    ticket.save_pretrained(tmp_path / "ticket")
    out = tmp_path / "out"
    args = ["--max_steps", "4", "--ticket", str(tmp_path / "ticket"), "--shrink", "--shrink_stock_config"]
    run_glue.main(glue(tiny_base, sst2, out, *args))
    assert not (out / "shrunk" / MODELING_FILE).exists()  # a stock config: plain from_pretrained
    config = json.loads((out / "shrunk" / "config.json").read_text())
    assert "auto_map" not in config and not config.get("pruned_heads") and config["intermediate_size"] < 64
    assert config[RECORD_KEY]["zero_neurons_left"] > 0  # the layers' extra pruned neurons stay as zeros
    shrunk_matches_masked(out, tmp_path)


def test_a_weights_ticket_with_shrink_is_refused_before_training(tiny_base, sst2, tmp_path):
    # nothing to remove: refused before anything trains, at parse time for a search
    with pytest.raises(TicketError, match="--shrink removes whole heads and FFN neurons, but --ticket_granularity"):
        run_glue.main(glue(tiny_base, sst2, tmp_path / "search", "--shrink"))
    hf_tickets.prune(BertForMaskedLM.from_pretrained(tiny_base), 0.5).save_pretrained(tmp_path / "ticket")
    with pytest.raises(TicketError, match="'global_magnitude' \\(single weights\\): nothing to remove"):
        run_glue.main(glue(tiny_base, sst2, tmp_path / "transfer", "--ticket", str(tmp_path / "ticket"), "--shrink"))
    assert not (tmp_path / "transfer").exists() and not (tmp_path / "search").exists()


@pytest.mark.parametrize(
    "extra, message",
    [
        (
            ["--ticket_granularity", "heads", "--strategy", "global_magnitude"],
            "--ticket_granularity heads contradicts --strategy global_magnitude, which prunes single weights: "
            "leave --strategy out or pass one of heads, layerwise_heads",
        ),
        (["--ticket_granularity", "weights", "--strategy", "neurons"], "contradicts --strategy neurons"),
        (["--ticket_granularity", "neurons", "--baseline", "random_pruning"], "random single weights"),
        (["--ticket_granularity", "neurons", "--shrink", "--imp_rounds", "0"], "--shrink needs a ticket"),
        (["--ticket_granularity", "neurons", "--shrink_stock_config"], "only applies with --shrink"),
        (["--ticket_granularity", "neurons", "--shrink", "--do_train", "false"], "it needs --do_train"),
    ],
)
def test_contradictory_flags_are_refused_at_parse_time_naming_them(tmp_path, extra, message):
    argv = ["--model_name_or_path", "unused", "--task_name", "sst2", "--output_dir", str(tmp_path), *FAST, *extra]
    with pytest.raises(TicketError, match=message.replace("+", r"\+")):
        run_glue.main(argv)


def test_granularity_chooses_strategy_and_targets_unless_given():
    assert (IMPConfig().strategy, IMPConfig().targets, IMPConfig().granularity) == (
        "global_magnitude",
        "auto",
        "weights",
    )
    heads = IMPConfig(ticket_granularity="heads")
    assert (heads.strategy, heads.targets) == ("heads", HEAD_TARGETS)  # sparsity = fraction of heads
    neurons = IMPConfig(ticket_granularity="neurons", strategy="layerwise_neurons")
    assert (neurons.strategy, neurons.targets) == ("layerwise_neurons", NEURON_TARGETS)
    # --strategy alone: its granularity, with prune()'s default targets (as before --ticket_granularity)
    alone = IMPConfig(strategy="layerwise_heads")
    assert (alone.granularity, alone.ticket_granularity, alone.targets) == ("heads", None, "auto")
    assert IMPConfig(ticket_granularity="heads", targets="auto").targets == "auto"  # explicit targets stay
    # A resolved config takes another strategy (the benchmarks' dataclasses.replace); an explicit granularity holds.
    assert dataclasses.replace(IMPConfig(), strategy="heads+neurons").granularity == "heads+neurons"
    assert dataclasses.replace(heads, strategy="layerwise_heads").targets == HEAD_TARGETS
    with pytest.raises(TicketError, match="--ticket_granularity heads contradicts --strategy neurons"):
        dataclasses.replace(heads, strategy="neurons")


def test_heads_at_the_default_target_sparsity_fit_a_12_head_model_and_fail_early_on_2_heads(tiny_base, sst2, tmp_path):
    # --ticket_granularity heads prunes HEAD_TARGETS: 0.9 is 90% of the heads, reachable with 12 heads a layer
    # (11 of 12 may go), where the auto targets would stop near 1/3.
    twelve = tiny_model(BertModel, hidden_size=48, num_attention_heads=12)
    config = IMPConfig(ticket_granularity="heads")
    assert hf_tickets.prune(twelve, 0.9, strategy=config.strategy, targets=config.targets).sparsity == pytest.approx(
        22 / 24
    )
    with pytest.raises(TicketError, match="out of reach"):
        hf_tickets.prune(twelve, 0.9, strategy="heads", targets="auto")
    # The tiny model has 2 heads a layer (at most 1/2 may go): refused on θ0, before round 0 trains.
    with pytest.raises(TicketError, match=r"--ticket_granularity heads .* cannot reach the last round's sparsity 0.9"):
        run_glue.main(glue(tiny_base, sst2, tmp_path, "--max_steps", "2", "--ticket_granularity", "heads"))
    assert not any(tmp_path.iterdir())


def test_a_search_ranks_units_by_importance_when_asked(tiny_base, sst2, tmp_path):
    """--unit_score importance reaches the rounds through run_imp_search: another ticket than magnitude's."""
    args = ["--max_steps", "4", "--sparsity_schedule", "0.3", "--ticket_granularity", "heads+neurons"]
    importance = run_glue.main(
        glue(tiny_base, sst2, tmp_path / "importance", *args, "--unit_score", "importance", "--importance_batches", "2")
    )
    run_glue.main(glue(tiny_base, sst2, tmp_path / "magnitude", *args))
    assert (importance["config"]["unit_score"], importance["config"]["importance_batches"]) == ("importance", 2)
    ticket = hf_tickets.Ticket.from_pretrained(tmp_path / "importance" / "round_01" / "ticket")
    assert ticket.config.provenance["unit_score"] == "importance (2 batches)"
    assert "partial" not in unit_states(ticket) and ticket.sparsity == pytest.approx(0.3, abs=0.02)
    assert not ticket.equals(hf_tickets.Ticket.from_pretrained(tmp_path / "magnitude" / "round_01" / "ticket"))


@pytest.mark.parametrize(
    "extra, named",
    [
        (["--ticket_granularity", "heads"], "--ticket_granularity"),
        (["--sparsity_schedule", "0.5", "--early_bird"], "--sparsity_schedule, --early_bird"),
        (["--imp_rounds", "0"], "--imp_rounds"),
    ],
)
def test_search_flags_beside_a_ticket_are_refused_naming_them(tmp_path, extra, named):
    # --ticket fine-tunes under an existing ticket: no search runs, so a search flag would silently do nothing.
    argv = ["--model_name_or_path", "unused", "--task_name", "sst2", "--output_dir", str(tmp_path), *FAST]
    with pytest.raises(TicketError, match=f"--ticket {tmp_path / 'ticket'} .*: {named} "):
        run_glue.main([*argv, "--ticket", str(tmp_path / "ticket"), *extra])
