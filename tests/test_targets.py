"""Default targets: the encoder's linear weight matrices, found by type and name, for each BERT family."""

import pytest
import torch
from tiny import TINY, tiny_model
from transformers import (
    BertForMaskedLM,
    BertForSequenceClassification,
    BertModel,
    DistilBertConfig,
    DistilBertModel,
    ElectraConfig,
    ElectraModel,
    RobertaConfig,
    RobertaForSequenceClassification,
)

from hf_tickets import TicketError, resolve_targets


def test_bert_base_shape_has_72_encoder_matrices():
    model = tiny_model(BertModel, num_hidden_layers=12)
    names = resolve_targets(model)
    assert len(names) == 72
    assert all(n.startswith("encoder.layer.") and n.endswith(".weight") for n in names)
    kinds = {n.split(".", 3)[3] for n in names}
    assert kinds == {
        "attention.self.query.weight",
        "attention.self.key.weight",
        "attention.self.value.weight",
        "attention.output.dense.weight",
        "intermediate.dense.weight",
        "output.dense.weight",
    }


def test_names_are_relative_to_the_base_model_whatever_the_head():
    assert resolve_targets(tiny_model(BertForSequenceClassification)) == resolve_targets(tiny_model(BertForMaskedLM))


@pytest.mark.parametrize(
    "model",
    [
        RobertaForSequenceClassification(RobertaConfig(**{**TINY, "vocab_size": 120})),
        DistilBertModel(DistilBertConfig(vocab_size=99, dim=32, n_layers=2, n_heads=2, hidden_dim=64)),
        ElectraModel(ElectraConfig(**TINY, embedding_size=16)),
    ],
    ids=["roberta", "distilbert", "electra"],
)
def test_other_bert_families_get_six_matrices_per_layer(model):
    names = resolve_targets(model)
    assert len(names) == 12
    assert not any("embed" in n or "pooler" in n for n in names)


def test_presets_add_pooler_and_embeddings():
    model = tiny_model(BertForSequenceClassification)
    assert resolve_targets(model, "encoder+pooler") == resolve_targets(model) + ["pooler.dense.weight"]
    with_embeddings = resolve_targets(model, "all")
    assert "embeddings.word_embeddings.weight" in with_embeddings and "pooler.dense.weight" in with_embeddings


def test_regex_and_suffix_lists_like_peft_target_modules():
    model = tiny_model(BertModel)
    assert resolve_targets(model, ["query", "value"]) == [
        f"encoder.layer.{i}.attention.self.{k}.weight" for i in range(2) for k in ("query", "value")
    ]
    assert resolve_targets(model, r".*\.intermediate\.dense") == [
        "encoder.layer.0.intermediate.dense.weight",
        "encoder.layer.1.intermediate.dense.weight",
    ]


def test_targets_that_match_nothing_are_an_error():
    model = tiny_model(BertModel)
    with pytest.raises(TicketError, match="matched no weight"):
        resolve_targets(model, ["q_lin"])
    with pytest.raises(TicketError, match="neither a preset"):
        resolve_targets(model, "encoder.(")


def test_ddp_style_wrappers_are_unwrapped():
    model = tiny_model(BertModel)
    wrapper = torch.nn.Module()
    wrapper.module = model
    assert resolve_targets(wrapper) == resolve_targets(model)
