"""shrink(): the physically smaller model computes what the masked one does, and loads without hf_tickets."""

import argparse
import json
import os
import subprocess
import sys

import pytest
import torch
from tiny import tiny_checkpoint, tiny_model
from transformers import AutoTokenizer, BertForMaskedLM, BertForSequenceClassification

from hf_tickets import Ticket, TicketError, prune
from hf_tickets.commands import shrink_command
from hf_tickets.core.shrink import MODELING_FILE, RECORD_KEY, save_shrunk, shrink
from hf_tickets.hub.sparse_checkpoint import save_sparse_checkpoint

HIDDEN, HEADS, FFN = 32, 2, 64


def inputs(vocab: int = 99, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    ids = torch.randint(0, vocab, (3, 11), generator=g)
    attention = torch.ones_like(ids)
    attention[0, 7:] = 0  # padding must stay masked out in the narrower attention too
    return {"input_ids": ids, "attention_mask": attention}


def logits(model, batch):
    with torch.no_grad():
        return model.eval()(**batch).logits


def masked_and_shrunk(cls, strategy, sparsity, stock_config=False, **prune_options):
    model = tiny_model(cls)
    ticket = prune(model, sparsity, strategy=strategy, **prune_options)
    ticket.apply(model)
    batch = inputs()
    expected = logits(model, batch)
    returned = shrink(model, ticket, stock_config=stock_config)
    assert returned is model
    return model, ticket, batch, expected


@pytest.mark.parametrize("cls", [BertForSequenceClassification, BertForMaskedLM])
@pytest.mark.parametrize("strategy", ["heads+neurons", "layerwise_heads", "layerwise_neurons"])
def test_shrunk_model_computes_what_the_masked_model_does(cls, strategy):
    model, ticket, batch, expected = masked_and_shrunk(cls, strategy, 0.2)
    torch.testing.assert_close(logits(model, batch), expected, rtol=1e-5, atol=1e-6)
    record = getattr(model.config, RECORD_KEY)
    assert record["parameters_after"] < record["parameters_before"]
    assert record["ticket_sparsity"] == ticket.sparsity


def whole_neurons_per_layer(ticket):
    return [int((~ticket.masks[f"encoder.layer.{i}.intermediate.dense.weight"].any(dim=1)).sum()) for i in range(2)]


def zero_rows(model):
    return [int((layer.intermediate.dense.weight.abs().sum(dim=1) == 0).sum()) for layer in model.bert.encoder.layer]


def test_every_whole_head_and_neuron_goes_with_per_layer_shapes_in_the_config():
    model, ticket, batch, _ = masked_and_shrunk(BertForSequenceClassification, "heads+neurons", 0.45)
    record = getattr(model.config, RECORD_KEY)
    heads = record["removed_heads"]
    assert heads and model.config.pruned_heads == heads
    per_layer = whole_neurons_per_layer(ticket)
    assert per_layer[0] != per_layer[1]  # global pruning: unequal widths
    assert model.config.intermediate_sizes == [FFN - n for n in per_layer]
    assert model.config.intermediate_size == FFN - min(per_layer)
    for index, layer in enumerate(model.bert.encoder.layer):
        kept_heads = HEADS - len(heads.get(str(index), []))
        assert layer.attention.self.query.weight.shape == (kept_heads * HIDDEN // HEADS, HIDDEN)
        assert layer.attention.output.dense.weight.shape == (HIDDEN, kept_heads * HIDDEN // HEADS)
        assert layer.intermediate.dense.weight.shape == (FFN - per_layer[index], HIDDEN)
        assert layer.output.dense.weight.shape == (HIDDEN, FFN - per_layer[index])
    assert record["zero_neurons_left"] == 0 and zero_rows(model) == [0, 0]


def test_stock_config_keeps_heads_and_removes_the_same_number_of_neurons_per_layer():
    model, ticket, batch, expected = masked_and_shrunk(
        BertForSequenceClassification, "heads+neurons", 0.45, stock_config=True
    )
    assert model.bert.encoder.layer[0].attention.self.query.weight.shape == (HIDDEN, HIDDEN)
    assert not getattr(model.config, "pruned_heads", None) and not getattr(model.config, "intermediate_sizes", None)
    per_layer = whole_neurons_per_layer(ticket)
    record = getattr(model.config, RECORD_KEY)
    assert record["removed_neurons"] == {"0": min(per_layer), "1": min(per_layer)}
    assert model.config.intermediate_size == FFN - min(per_layer)
    # The rest of each layer's pruned neurons stay as zero rows.
    assert record["zero_neurons_left"] == max(per_layer) - min(per_layer) > 0
    assert sorted(zero_rows(model)) == [0, record["zero_neurons_left"]]
    torch.testing.assert_close(logits(model, batch), expected, rtol=1e-5, atol=1e-6)


def test_an_unstructured_ticket_removes_nothing_and_changes_nothing():
    model, _, batch, expected = masked_and_shrunk(BertForSequenceClassification, "global_magnitude", 0.5)
    record = getattr(model.config, RECORD_KEY)
    assert record["parameters_after"] == record["parameters_before"]
    assert torch.equal(logits(model, batch), expected)


def test_the_last_head_of_a_layer_stays_as_zeros():
    model = tiny_model(BertForSequenceClassification)
    masks = {
        n: torch.ones_like(p, dtype=torch.bool) for n, p in model.bert.named_parameters() if "layer.0.attention" in n
    }
    masks = {n: m for n, m in masks.items() if n.endswith("weight") and "LayerNorm" not in n}
    for name in masks:
        masks[name].fill_(False)  # every head of layer 0
    ticket = Ticket(masks)
    batch = inputs()
    ticket.apply(model, verify_base=False)  # a hand-made mask: no base fingerprint
    expected = logits(model, batch)
    shrink(model, ticket)
    assert model.config.pruned_heads == {"0": [0]}
    torch.testing.assert_close(logits(model, batch), expected, rtol=1e-5, atol=1e-6)


# ---------------------------------------------------------------- loading in a fresh process
LOAD_SCRIPT = """
import json, sys, torch, transformers
folder, auto, remote = sys.argv[1], sys.argv[2], sys.argv[3] == "1"
model = getattr(transformers, auto).from_pretrained(folder, trust_remote_code=remote).eval()
probe = torch.load(folder + "/probe.pt")
with torch.no_grad():
    out = model(input_ids=probe["input_ids"], attention_mask=probe["attention_mask"]).logits
print(json.dumps({"diff": (out - probe["expected"]).abs().max().item(), "hf_tickets": "hf_tickets" in sys.modules,
                  "class": type(model).__name__}))
"""


def load_in_fresh_process(folder, auto: str, remote: bool, tmp_path) -> dict:
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH",)}
    env.update(HF_HUB_OFFLINE="1", HF_HOME=str(tmp_path / "hf_home"))
    done = subprocess.run(
        [sys.executable, "-c", LOAD_SCRIPT, str(folder), auto, "1" if remote else "0"],
        capture_output=True,
        text=True,
        env=env,
        cwd=tmp_path,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    return json.loads(done.stdout.strip().splitlines()[-1])


def save_with_probe(model, folder, batch, expected):
    save_shrunk(model, folder)
    torch.save({**batch, "expected": expected}, folder / "probe.pt")


def test_shrunk_heads_load_with_from_pretrained_and_remote_code_in_a_fresh_process(tmp_path):
    model, _, batch, expected = masked_and_shrunk(BertForSequenceClassification, "heads+neurons", 0.45)
    out = tmp_path / "shrunk"
    save_with_probe(model, out, batch, expected)
    assert (out / MODELING_FILE).is_file()
    config = json.loads((out / "config.json").read_text())
    assert config["pruned_heads"] and config["auto_map"]["AutoModelForSequenceClassification"]
    result = load_in_fresh_process(out, "AutoModelForSequenceClassification", True, tmp_path)
    assert result["diff"] < 1e-5 and not result["hf_tickets"]
    assert result["class"] == "ShrunkBertForSequenceClassification"


def test_unequal_widths_without_removed_heads_load_with_remote_code(tmp_path):
    model, _, batch, expected = masked_and_shrunk(BertForMaskedLM, "neurons", 0.3)
    assert not getattr(model.config, "pruned_heads", None) and model.config.intermediate_sizes
    out = tmp_path / "shrunk"
    save_with_probe(model, out, batch, expected)
    result = load_in_fresh_process(out, "AutoModelForMaskedLM", True, tmp_path)
    assert result["diff"] < 1e-5 and not result["hf_tickets"] and result["class"] == "ShrunkBertForMaskedLM"


def test_stock_config_loads_with_plain_from_pretrained(tmp_path):
    model, _, batch, expected = masked_and_shrunk(BertForSequenceClassification, "heads+neurons", 0.45, True)
    out = tmp_path / "shrunk"
    save_with_probe(model, out, batch, expected)
    assert not (out / MODELING_FILE).exists()
    result = load_in_fresh_process(out, "AutoModelForSequenceClassification", False, tmp_path)
    assert result["diff"] < 1e-5 and result["class"] == "BertForSequenceClassification"


def test_shrunk_neurons_load_with_plain_from_pretrained(tmp_path):
    model, _, batch, expected = masked_and_shrunk(BertForMaskedLM, "layerwise_neurons", 0.3)
    out = tmp_path / "shrunk"
    save_with_probe(model, out, batch, expected)
    assert not (out / MODELING_FILE).exists()
    config = json.loads((out / "config.json").read_text())
    assert "auto_map" not in config and config["intermediate_size"] < FFN
    result = load_in_fresh_process(out, "AutoModelForMaskedLM", False, tmp_path)
    assert result["diff"] < 1e-5 and not result["hf_tickets"] and result["class"] == "BertForMaskedLM"


# ---------------------------------------------------------------- command line
def run_cli(*argv) -> int:
    parser = argparse.ArgumentParser()
    shrink_command.register_cli(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(["shrink", *map(str, argv)])
    return args.func(args)


@pytest.mark.parametrize("compact", [False, True])
def test_cli_shrinks_a_sparse_checkpoint_folder(tmp_path, compact, capsys):
    base = tiny_checkpoint(tmp_path / "base", cls=BertForSequenceClassification)
    model = BertForSequenceClassification.from_pretrained(base)
    ticket = prune(model, 0.3, strategy="layerwise_neurons")
    sparse = tmp_path / "sparse"
    save_sparse_checkpoint(model, ticket, sparse, compact=compact, tokenizer=AutoTokenizer.from_pretrained(base))
    batch = inputs(vocab=model.config.vocab_size)
    expected = logits(model, batch)
    assert run_cli(sparse, tmp_path / "out") == 0
    assert "AutoModelForSequenceClassification.from_pretrained" in capsys.readouterr().out
    loaded = BertForSequenceClassification.from_pretrained(tmp_path / "out")
    assert loaded.config.intermediate_size < FFN
    torch.testing.assert_close(logits(loaded, batch), expected, rtol=1e-5, atol=1e-6)
    assert (tmp_path / "out" / "tokenizer_config.json").is_file()


def test_cli_applies_a_ticket_to_its_base_model(tmp_path):
    base = tiny_checkpoint(tmp_path / "base", cls=BertForMaskedLM)
    model = BertForMaskedLM.from_pretrained(base)
    ticket = prune(model, 0.2, strategy="layerwise_heads")
    ticket.save_pretrained(tmp_path / "ticket")
    ticket.apply(model)
    batch = inputs(vocab=model.config.vocab_size)
    expected = logits(model, batch)
    assert run_cli(tmp_path / "ticket", tmp_path / "out", "--model", base) == 0
    config = json.loads((tmp_path / "out" / "config.json").read_text())
    assert config["pruned_heads"] and config[RECORD_KEY]["ticket_strategy"] == "layerwise_heads"
    torch.save({**batch, "expected": expected}, tmp_path / "out" / "probe.pt")
    result = load_in_fresh_process(tmp_path / "out", "AutoModelForMaskedLM", True, tmp_path)
    assert result["diff"] < 1e-5 and result["class"] == "ShrunkBertForMaskedLM"


def test_cli_refuses_a_model_folder_without_a_ticket(tmp_path):
    base = tiny_checkpoint(tmp_path / "base")
    with pytest.raises(TicketError, match="no ticket"):
        run_cli(base, tmp_path / "out")
