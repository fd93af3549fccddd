"""Where a ticket's base model came from: Hub id and commit, from a repo id or a cache snapshot, never a path."""

import pytest
from tiny import tiny_model
from transformers import BertForMaskedLM

from hf_tickets import prune
from hf_tickets.core.provenance import UNKNOWN, ModelOrigin, cached_revision, is_hub_repo_id, model_origin

SHA = "0123456789abcdef0123456789abcdef01234567"


@pytest.mark.parametrize(
    "name_or_path, commit, expected",
    [
        ("bert-base-uncased", None, ModelOrigin("bert-base-uncased", None)),
        ("google/bert_uncased_L-2_H-128_A-2", SHA, ModelOrigin("google/bert_uncased_L-2_H-128_A-2", SHA)),
        ("org/name", "not-a-sha", ModelOrigin("org/name", None)),
        (f"/home/u/.cache/huggingface/hub/models--org--my-bert/snapshots/{SHA}", None, ModelOrigin("org/my-bert", SHA)),
        (f"/cache/models--bert-base-uncased/snapshots/{SHA}/", None, ModelOrigin("bert-base-uncased", SHA)),
        ("/home/u/checkpoints/bert", SHA, UNKNOWN),
        ("./bert", None, UNKNOWN),
        ("~/bert", None, UNKNOWN),
        ("C:\\models\\bert", None, UNKNOWN),
        ("a/b/c", None, UNKNOWN),
        ("", None, UNKNOWN),
        (None, None, UNKNOWN),
    ],
)
def test_model_origin(name_or_path, commit, expected):
    assert model_origin(name_or_path, commit) == expected


def test_a_relative_local_directory_is_not_a_repo_id(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "out" / "ckpt").mkdir(parents=True)
    assert is_hub_repo_id("out/ckpt") and model_origin("out/ckpt") == UNKNOWN


def test_revision_is_the_cached_snapshot_holding_the_same_weights(tmp_path):
    """transformers 5 keeps no commit hash: the cache snapshot whose weights match names it."""
    model = tiny_model(BertForMaskedLM, seed=0)
    repo = tmp_path / "models--org--tiny"
    other, same = "1" * 40, "2" * 40
    tiny_model(BertForMaskedLM, seed=1).save_pretrained(repo / "snapshots" / other)
    model.save_pretrained(repo / "snapshots" / same)
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text(other)  # main moved on to other weights: not the ones loaded

    ticket = prune(model, 0.5)
    assert cached_revision("org/tiny", ticket.fingerprint, ticket.config.base_model_prefix, tmp_path) == same
    changed = prune(tiny_model(BertForMaskedLM, seed=2), 0.5)
    assert cached_revision("org/tiny", changed.fingerprint, changed.config.base_model_prefix, tmp_path) is None
    assert cached_revision("org/absent", ticket.fingerprint, "bert", tmp_path) is None


def test_prune_records_no_local_path(tmp_path):
    model = tiny_model(BertForMaskedLM)
    model.save_pretrained(tmp_path / "bert")
    ticket = prune(BertForMaskedLM.from_pretrained(tmp_path / "bert"), 0.5)
    assert (ticket.config.base_model, ticket.config.base_model_revision) == (None, None)
