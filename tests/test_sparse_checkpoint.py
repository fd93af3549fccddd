"""Sparse checkpoints: the dense form loads with from_pretrained, the compact form is small and exact."""

import hashlib
import json

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from safetensors import safe_open
from safetensors.torch import load_file, save_file
from tiny import tiny_model
from transformers import AutoModel, AutoModelForMaskedLM, BertForMaskedLM

from hf_tickets import TicketError, prune
from hf_tickets.commands.cli import main as cli_main
from hf_tickets.core.ticket import CONFIG_FILE, MASKS_FILE
from hf_tickets.hub.sparse_checkpoint import (
    COMPACT_FILE,
    DENSE_FILE,
    MASK_SUFFIX,
    VALUES_SUFFIX,
    compact_tensors,
    convert,
    expand_tensors,
    is_compact,
    save_sparse_checkpoint,
    to_compact,
    to_dense,
)


def sha256(path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def same_bits(a: torch.Tensor, b: torch.Tensor) -> bool:
    return (
        a.dtype == b.dtype
        and a.shape == b.shape
        and torch.equal(a.reshape(-1).view(torch.uint8), b.reshape(-1).view(torch.uint8))
    )


@pytest.fixture
def pruned(tmp_path):
    """A tiny MLM pruned to 70% and saved as a dense sparse checkpoint."""
    model = tiny_model(BertForMaskedLM)
    ticket = prune(model, 0.7)
    directory = save_sparse_checkpoint(model, ticket, tmp_path / "dense")
    return model, ticket, directory


def test_dense_checkpoint_is_a_plain_transformers_checkpoint(pruned):
    model, ticket, directory = pruned
    assert {p.name for p in directory.iterdir()} >= {DENSE_FILE, "config.json", MASKS_FILE, CONFIG_FILE}
    loaded = AutoModelForMaskedLM.from_pretrained(directory)
    for name, mask in ticket.masks.items():
        weight = loaded.base_model.get_parameter(name)
        assert torch.all(weight[~mask] == 0), name
        assert torch.equal(weight, model.base_model.get_parameter(name))
    # Any head loads it: the encoder is shared.
    bare = AutoModel.from_pretrained(directory)
    assert torch.all(
        bare.get_parameter("encoder.layer.0.output.dense.weight")[~ticket.masks["encoder.layer.0.output.dense.weight"]]
        == 0
    )


def test_compact_round_trip_restores_the_dense_file_byte_for_byte(pruned, tmp_path):
    _, _, directory = pruned
    dense = directory / DENSE_FILE
    compact = to_compact(dense, tmp_path / COMPACT_FILE)
    restored = to_dense(compact, tmp_path / "restored.safetensors")
    assert sha256(restored) == sha256(dense)
    assert is_compact(compact) and not is_compact(dense)


def test_compact_form_of_pruned_tensors_is_values_plus_one_bit(pruned, tmp_path):
    _, ticket, directory = pruned
    dense = load_file(directory / DENSE_FILE)
    compact_path = to_compact(directory / DENSE_FILE, tmp_path / COMPACT_FILE)
    compact = load_file(compact_path)
    prefix = "bert."
    dense_bytes = compact_bytes = 0
    for name in ticket.masks:
        key = prefix + name
        assert key not in compact and key + VALUES_SUFFIX in compact
        assert compact[key + MASK_SUFFIX].dtype == torch.uint8
        assert compact[key + VALUES_SUFFIX].dtype == dense[key].dtype and compact[key + VALUES_SUFFIX].dim() == 1
        dense_bytes += dense[key].numel() * 4
        compact_bytes += (compact[key + VALUES_SUFFIX].numel() * 4) + compact[key + MASK_SUFFIX].numel()
    assert compact_bytes <= 0.36 * dense_bytes
    # Unpruned tensors (embeddings, LayerNorms) are stored exactly as they were.
    assert torch.equal(
        compact["bert.embeddings.word_embeddings.weight"], dense["bert.embeddings.word_embeddings.weight"]
    )
    assert (tmp_path / COMPACT_FILE).stat().st_size < (directory / DENSE_FILE).stat().st_size


def test_whole_file_at_70_percent_sparsity_is_at_most_36_percent(tmp_path):
    generator = torch.Generator().manual_seed(0)
    tensors = {}
    for i in range(4):
        weight = torch.randn(256, 256, generator=generator)
        weight.view(-1)[torch.randperm(weight.numel(), generator=generator)[: int(0.7 * weight.numel())]] = 0
        tensors[f"layer.{i}.weight"] = weight
    save_file(tensors, tmp_path / "dense.safetensors", metadata={"format": "pt"})
    to_compact(tmp_path / "dense.safetensors", tmp_path / "compact.safetensors")
    ratio = (tmp_path / "compact.safetensors").stat().st_size / (tmp_path / "dense.safetensors").stat().st_size
    assert 0.30 < ratio <= 0.36
    to_dense(tmp_path / "compact.safetensors", tmp_path / "back.safetensors")
    assert sha256(tmp_path / "back.safetensors") == sha256(tmp_path / "dense.safetensors")


def test_negative_zero_and_other_dtypes_restore_bit_exactly():
    weight = torch.randn(64, 64)
    weight[weight.abs() < 1.0] = 0.0
    weight[0, :8] = -0.0  # a surviving weight that happens to be -0.0 must not turn into +0.0
    tensors = {
        "f32": weight,
        "bf16": weight.to(torch.bfloat16),
        "f16": weight.to(torch.float16),
        "i64": (weight * 10).long(),
        "scalar": torch.tensor(3.0),
    }
    compact, shapes = compact_tensors(tensors)
    assert set(shapes) == {"f32", "bf16", "f16", "i64"} and "scalar" in compact
    restored = expand_tensors(compact, shapes)
    for name, tensor in tensors.items():
        assert same_bits(restored[name], tensor), name
    assert torch.signbit(restored["f32"][0, :8]).all()


@settings(max_examples=25, deadline=None)
@given(
    rows=st.integers(1, 40),
    cols=st.integers(1, 70),
    sparsity=st.floats(0.0, 1.0),
    dtype=st.sampled_from([torch.float32, torch.float16, torch.bfloat16, torch.float64]),
    seed=st.integers(0, 2**16),
)
def test_compact_then_expand_is_identity(rows, cols, sparsity, dtype, seed):
    generator = torch.Generator().manual_seed(seed)
    tensor = torch.randn(rows, cols, generator=generator).to(dtype)
    tensor[torch.rand(rows, cols, generator=generator) < sparsity] = 0
    compact, shapes = compact_tensors({"w": tensor})
    assert same_bits(expand_tensors(compact, shapes)["w"], tensor)


def test_compact_file_says_it_is_not_loadable_and_from_pretrained_refuses_it(pruned, tmp_path):
    _, _, directory = pruned
    written = convert(directory, tmp_path / "compact", "compact")
    assert [p.name for p in written] == [COMPACT_FILE]
    with safe_open(str(written[0]), framework="pt") as f:
        metadata = f.metadata()
    assert metadata["format"] == "hf_tickets.compact"
    assert "Not loadable" in metadata["note"] and "--to dense" in metadata["note"]
    assert json.loads(metadata["dense_metadata"]) == {"format": "pt"}
    assert not (tmp_path / "compact" / DENSE_FILE).exists()
    assert (tmp_path / "compact" / MASKS_FILE).exists()  # the rest of the checkpoint is copied along
    with pytest.raises(OSError):
        AutoModelForMaskedLM.from_pretrained(tmp_path / "compact")


def test_save_compact_checkpoint_keeps_only_the_compact_weights(tmp_path):
    model = tiny_model(BertForMaskedLM)
    ticket = prune(model, 0.7)
    directory = save_sparse_checkpoint(model, ticket, tmp_path / "ckpt", compact=True)
    names = {p.name for p in directory.iterdir()}
    assert COMPACT_FILE in names and DENSE_FILE not in names and MASKS_FILE in names


def test_cli_converts_directories_both_ways(pruned, tmp_path, capsys):
    _, _, directory = pruned
    assert cli_main(["convert", str(directory), str(tmp_path / "c"), "--to", "compact"]) == 0
    assert cli_main(["convert", str(tmp_path / "c"), str(tmp_path / "d"), "--to", "dense"]) == 0
    assert "wrote" in capsys.readouterr().out
    assert sha256(tmp_path / "d" / DENSE_FILE) == sha256(directory / DENSE_FILE)
    AutoModelForMaskedLM.from_pretrained(tmp_path / "d")  # a complete checkpoint again


def test_cli_converts_single_files(pruned, tmp_path):
    _, _, directory = pruned
    assert cli_main(["convert", str(directory / DENSE_FILE), str(tmp_path / "x.safetensors"), "--to", "compact"]) == 0
    assert is_compact(tmp_path / "x.safetensors")
    assert cli_main(["convert", str(tmp_path / "x.safetensors"), str(tmp_path / "y.safetensors"), "--to", "dense"]) == 0
    assert sha256(tmp_path / "y.safetensors") == sha256(directory / DENSE_FILE)


def test_clear_errors(pruned, tmp_path):
    _, _, directory = pruned
    with pytest.raises(TicketError, match="not a compact"):
        to_dense(directory / DENSE_FILE, tmp_path / "out.safetensors")
    compact = to_compact(directory / DENSE_FILE, tmp_path / COMPACT_FILE)
    with pytest.raises(TicketError, match="already a compact"):
        to_compact(compact, tmp_path / "again.safetensors")
    (tmp_path / "garbage.safetensors").write_bytes(b"\x10\x00\x00\x00\x00\x00\x00\x00{not json at all")
    with pytest.raises(TicketError, match="garbage.safetensors.*corrupt"):
        to_dense(tmp_path / "garbage.safetensors", tmp_path / "out.safetensors")
    with pytest.raises(TicketError, match="does not exist"):
        convert(tmp_path / "missing.safetensors", tmp_path / "out.safetensors", "dense")
    with pytest.raises(TicketError, match="'dense' or 'compact'"):
        convert(compact, tmp_path / "out.safetensors", "sparse")


def test_damaged_compact_values_are_detected(tmp_path):
    weight = torch.randn(64, 64)
    weight[weight.abs() < 1.0] = 0
    compact, shapes = compact_tensors({"w": weight})
    compact["w" + VALUES_SUFFIX] = compact["w" + VALUES_SUFFIX][:-1]
    with pytest.raises(TicketError, match="values for"):
        expand_tensors(compact, shapes, source="x.safetensors")
