"""Tiny random BERT-family models for fast tests (no download)."""

from __future__ import annotations

import torch
from transformers import BertConfig

TINY = dict(vocab_size=99, hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=64)


def tiny_config(**overrides) -> BertConfig:
    return BertConfig(**{**TINY, **overrides})


def tiny_model(cls, seed: int = 0, **overrides):
    torch.manual_seed(seed)
    return cls(tiny_config(**overrides)).eval()
