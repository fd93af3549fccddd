"""prune() and Ticket: exact sparsity, cumulative rounds, files, cross-head use and clear errors."""

import json
import os

import pytest
import torch
from tiny import tiny_model
from transformers import BertForMaskedLM, BertForSequenceClassification, BertModel, DistilBertConfig, DistilBertModel

import hf_tickets
from hf_tickets import Ticket, TicketError, prune
from hf_tickets.core.ticket import CONFIG_FILE, MASKS_FILE


def pruned_values(model, ticket):
    params = ticket.parameters_of(model)
    return torch.cat([params[n].detach()[~m].reshape(-1) for n, m in ticket.masks.items()])


def kept_values(model, ticket):
    params = ticket.parameters_of(model)
    return torch.cat([params[n].detach()[m].reshape(-1) for n, m in ticket.masks.items()])


@pytest.mark.parametrize("strategy", ["global_magnitude", "layerwise_magnitude", "random"])
@pytest.mark.parametrize("sparsity", [0.0, 0.1, 0.5, 0.73, 0.999])
def test_exact_sparsity(strategy, sparsity):
    model = tiny_model(BertModel)
    ticket = prune(model, sparsity, strategy=strategy)
    assert ticket.num_pruned == round(sparsity * ticket.num_weights)
    assert ticket.config.strategy == strategy
    assert ticket.config.sparsity == pytest.approx(ticket.num_pruned / ticket.num_weights)


def test_global_prunes_the_lowest_magnitudes_overall():
    model = tiny_model(BertModel)
    with torch.no_grad():
        model.encoder.layer[0].intermediate.dense.weight.mul_(10)
    ticket = prune(model, 0.6)
    assert pruned_values(model, ticket).abs().max() <= kept_values(model, ticket).abs().min()
    # One threshold for all: the scaled-up layer keeps nearly everything, the others pay for it.
    assert ticket.per_tensor_sparsity["encoder.layer.0.intermediate.dense.weight"] < 0.1
    assert min(s for n, s in ticket.per_tensor_sparsity.items() if "layer.0.intermediate" not in n) > 0.6


def test_layerwise_prunes_the_lowest_within_each_matrix():
    model = tiny_model(BertModel)
    with torch.no_grad():  # make one layer much larger so global and layerwise disagree
        model.encoder.layer[0].intermediate.dense.weight.mul_(10)
    ticket = prune(model, 0.6, strategy="layerwise_magnitude")
    params = ticket.parameters_of(model)
    for name, mask in ticket.masks.items():
        w = params[name].detach().abs()
        assert w[~mask].max() <= w[mask].min()
        assert ticket.per_tensor_sparsity[name] == pytest.approx(0.6, abs=1 / w.numel())
    assert not prune(model, 0.6).equals(ticket)


def test_random_is_seeded_and_not_magnitude():
    model = tiny_model(BertModel)
    a, b = prune(model, 0.5, strategy="random", seed=1), prune(model, 0.5, strategy="random", seed=1)
    assert a.equals(b)
    assert not a.equals(prune(model, 0.5, strategy="random", seed=2))
    # Random pruning removes large weights too.
    assert pruned_values(model, a).abs().max() > kept_values(model, a).abs().median()


@pytest.mark.parametrize("strategy", ["global_magnitude", "layerwise_magnitude", "random"])
def test_cumulative_rounds_keep_what_was_pruned(strategy):
    model = tiny_model(BertModel)
    ticket, previous = None, None
    for sparsity in (0.1, 0.19, 0.271, 0.3439):
        ticket = prune(model, sparsity, strategy=strategy, ticket=ticket)
        ticket.apply(model)  # as IMP does: pruned weights are zero before the next round
        assert ticket.num_pruned == round(sparsity * ticket.num_weights)
        if previous is not None:
            for name, mask in ticket.masks.items():
                assert not (mask & ~previous.masks[name]).any()
        previous = ticket


def test_cumulative_never_lowers_sparsity():
    model = tiny_model(BertModel)
    ticket = prune(model, 0.5)
    with pytest.raises(TicketError, match="below the ticket"):
        prune(model, 0.4, ticket=ticket)


@pytest.mark.parametrize("bad", [-0.1, 1.0, 1.5, float("nan"), "0.5", None])
def test_sparsity_outside_range_is_an_error(bad):
    with pytest.raises(TicketError, match="sparsity"):
        prune(tiny_model(BertModel), bad)


def test_unknown_strategy_lists_the_known_ones():
    with pytest.raises(TicketError, match="global_magnitude"):
        prune(tiny_model(BertModel), 0.5, strategy="magnitude_please")


def test_round_trip_is_bit_identical(tmp_path):
    model = tiny_model(BertForMaskedLM)
    ticket = prune(model, 0.37, strategy="random", seed=4)
    ticket.config.provenance = {"task": "mlm", "round": 3, "rewind": "init"}
    ticket.save_pretrained(tmp_path / "a")
    loaded = Ticket.from_pretrained(tmp_path / "a")
    assert loaded.equals(ticket)
    assert list(loaded.masks) == list(ticket.masks)  # order matters for tie-breaking
    assert loaded.config.to_dict() == ticket.config.to_dict()
    loaded.save_pretrained(tmp_path / "b")
    for name in (MASKS_FILE, CONFIG_FILE):
        assert (tmp_path / "a" / name).read_bytes() == (tmp_path / "b" / name).read_bytes()
    config = json.loads((tmp_path / "a" / CONFIG_FILE).read_text())
    assert config["format_version"] == 2 and config["hf_tickets_version"] == hf_tickets.__version__
    assert config["base_model_prefix"] == "bert" and config["model_type"] == "bert"
    assert set(config["per_tensor_sparsity"]) == set(ticket.masks)
    assert sorted(os.listdir(tmp_path / "a")) == sorted([MASKS_FILE, CONFIG_FILE])


def test_bert_base_ticket_is_at_most_11_mb(tmp_path):
    shapes = [(768, 768)] * 4 + [(3072, 768), (768, 3072)]
    masks = {f"encoder.layer.{i}.m{j}.weight": torch.rand(s) > 0.7 for i in range(12) for j, s in enumerate(shapes)}
    assert sum(m.numel() for m in masks.values()) == 84_934_656
    Ticket(masks).save_pretrained(tmp_path)
    size = sum(f.stat().st_size for f in tmp_path.iterdir())
    assert size <= 11 * 1024 * 1024
    assert Ticket.from_pretrained(tmp_path).equals(Ticket(masks))


def test_cross_head_application(tmp_path):
    mlm = tiny_model(BertForMaskedLM)
    ticket = prune(mlm, 0.6)
    mlm.save_pretrained(tmp_path / "base")
    classifier = BertForSequenceClassification.from_pretrained(tmp_path / "base", num_labels=3)
    report = ticket.apply(classifier)
    assert report.pruned == ticket.num_pruned and report.base_similarity == pytest.approx(1.0)
    assert torch.count_nonzero(pruned_values(classifier, ticket)) == 0
    # and back: a ticket from the classifier applies to the MLM model
    back = prune(classifier, 0.7, ticket=ticket)
    back.apply(mlm)
    assert torch.count_nonzero(pruned_values(mlm, back)) == 0


def test_state_dict_keys_never_change_and_from_pretrained_loads(tmp_path):
    model = tiny_model(BertForSequenceClassification)
    keys = list(model.state_dict())
    prune(model, 0.5).apply(model)
    assert list(model.state_dict()) == keys
    model.save_pretrained(tmp_path)
    reloaded = BertForSequenceClassification.from_pretrained(tmp_path)
    for name, value in model.state_dict().items():
        assert torch.equal(value, reloaded.state_dict()[name])


def test_other_size_names_the_first_mismatching_tensor():
    ticket = prune(tiny_model(BertModel), 0.5)
    wider = tiny_model(BertModel, intermediate_size=128)
    before = {k: v.clone() for k, v in wider.state_dict().items()}
    with pytest.raises(TicketError, match=r"shape mismatch for encoder\.layer\.0\.intermediate\.dense\.weight"):
        ticket.apply(wider)
    assert all(torch.equal(v, before[k]) for k, v in wider.state_dict().items())


def test_other_architecture_names_the_missing_tensor():
    ticket = prune(tiny_model(BertModel), 0.5)
    distil = DistilBertModel(DistilBertConfig(vocab_size=99, dim=32, n_layers=2, n_heads=2, hidden_dim=64))
    with pytest.raises(
        TicketError, match=r"DistilBertModel has no tensor 'encoder\.layer\.0\.attention\.self\.query\.weight'"
    ):
        ticket.apply(distil)


def test_other_base_weights_fail_the_fingerprint_and_change_nothing():
    ticket = prune(tiny_model(BertModel, seed=0), 0.5)
    other = tiny_model(BertModel, seed=1)
    before = {k: v.clone() for k, v in other.state_dict().items()}
    with pytest.raises(TicketError, match="fingerprint similarity"):
        ticket.apply(other)
    assert all(torch.equal(v, before[k]) for k, v in other.state_dict().items())
    ticket.apply(other, verify_base=False)  # on purpose, e.g. the random re-initialisation baseline
    assert torch.count_nonzero(pruned_values(other, ticket)) == 0


def test_fine_tuned_weights_still_match_their_base():
    model = tiny_model(BertModel)
    ticket = prune(model, 0.5)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(torch.randn_like(p) * 0.2 * p.std())
    assert ticket.apply(model).base_similarity > 0.9


def test_missing_target_is_an_error():
    model = tiny_model(BertModel)
    masks = dict(prune(model, 0.5).masks)
    masks["encoder.layer.7.output.dense.weight"] = torch.ones(32, 64, dtype=torch.bool)
    with pytest.raises(TicketError, match="no tensor 'encoder.layer.7.output.dense.weight'"):
        Ticket(masks).apply(model)


def test_truncated_and_corrupt_files_are_clear_errors(tmp_path):
    prune(tiny_model(BertModel), 0.5).save_pretrained(tmp_path)
    masks_file = tmp_path / MASKS_FILE
    data = masks_file.read_bytes()

    masks_file.write_bytes(data[: len(data) // 2])
    with pytest.raises(TicketError, match="truncated or corrupt"):
        Ticket.from_pretrained(tmp_path)

    flipped = bytearray(data)
    flipped[-20] ^= 0xFF  # a bit flip inside the packed masks changes a pruned count
    masks_file.write_bytes(bytes(flipped))
    with pytest.raises(TicketError, match="corrupt"):
        Ticket.from_pretrained(tmp_path)

    masks_file.write_bytes(data)
    (tmp_path / CONFIG_FILE).write_text("{not json")
    with pytest.raises(TicketError, match="not valid ticket JSON"):
        Ticket.from_pretrained(tmp_path)

    (tmp_path / CONFIG_FILE).unlink()
    with pytest.raises(TicketError, match="ticket_config.json is missing"):
        Ticket.from_pretrained(tmp_path)
    with pytest.raises(TicketError, match="no ticket directory"):
        Ticket.from_pretrained(tmp_path / "nowhere")


def test_a_newer_format_is_refused(tmp_path):
    prune(tiny_model(BertModel), 0.5).save_pretrained(tmp_path)
    config = json.loads((tmp_path / CONFIG_FILE).read_text())
    config["format_version"] = 99
    (tmp_path / CONFIG_FILE).write_text(json.dumps(config))
    with pytest.raises(TicketError, match="newer than this hf_tickets"):
        Ticket.from_pretrained(tmp_path)
