import pytest
import torch
from tiny import tiny_model
from transformers import BertModel

from hf_tickets import Ticket, TicketError, prune
from hf_tickets.commands.cli import main
from hf_tickets.commands.compare import overlap, random_jaccard


def test_identical_tickets_overlap_fully_and_random_ones_as_expected():
    model = tiny_model(BertModel)
    magnitude = prune(model, 0.5)
    assert overlap(magnitude, magnitude).jaccard == 1.0
    rand = prune(model, 0.5, strategy="random", seed=0)
    result = overlap(magnitude, rand)
    assert result.jaccard == pytest.approx(random_jaccard(0.5, 0.5), abs=0.03)
    assert set(result.per_layer) == {"layer 00", "layer 01"}


def test_hand_computed_overlap():
    a = Ticket({"w": torch.tensor([False, False, True, True])})
    b = Ticket({"w": torch.tensor([False, True, False, True])})
    result = overlap(a, b)
    assert result.jaccard == pytest.approx(1 / 3)  # pruned {0,1} vs {0,2}
    assert result.agreement == pytest.approx(0.5)


def test_different_tensors_cannot_be_compared():
    with pytest.raises(TicketError, match="different tensors"):
        overlap(Ticket({"a": torch.ones(3, dtype=torch.bool)}), Ticket({"b": torch.ones(3, dtype=torch.bool)}))


def test_cli_prints_a_table(tmp_path, capsys):
    model = tiny_model(BertModel)
    prune(model, 0.5).save_pretrained(tmp_path / "a")
    prune(model, 0.7).save_pretrained(tmp_path / "b")
    assert main(["compare", str(tmp_path / "a"), str(tmp_path / "b")]) == 0
    out = capsys.readouterr().out
    assert "| layer 01 |" in out and "0.500 | 0.700" in out
