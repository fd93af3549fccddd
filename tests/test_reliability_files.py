"""Nothing wrong is ever accepted from a ticket file, and every refusal is a one-line TicketError.

Hypothesis fuzzes saved tickets (bit flips, truncation, random JSON in every config field, random
mask-file metadata with a matching checksum): the only outcomes allowed are a ``TicketError`` naming
the file, or a clean load of exactly the saved masks and fingerprint. With ``RELIABILITY_FIGURES=path``
the outcome counts are written to ``path`` (docs/reliability.md quotes a run with
``RELIABILITY_EXAMPLES=1000``; the default is 150 examples per fuzz test).
"""

import collections
import json
import logging
import math
import os
import stat
import tempfile
from pathlib import Path

import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from safetensors.torch import load_file, save
from tiny import tiny_model
from transformers import BertModel

from hf_tickets import Ticket, TicketConfig, TicketError, prune
from hf_tickets.commands.cli import main as cli_main
from hf_tickets.core.atomic_files import atomic_write_json, remove_stale_temporaries, sha256_of
from hf_tickets.core.ticket import CONFIG_FILE, MASKS_FILE, PENDING_CONFIG_FILE, fingerprint_positions
from hf_tickets.core.ticket_files import FINGERPRINT_PREFIX, MASK_FORMAT, write_packed_masks
from hf_tickets.hub.sparse_checkpoint import (
    COMPACT_FORMAT,
    MASK_SUFFIX,
    VALUES_SUFFIX,
    compact_tensors,
    convert,
    expand_tensors,
    to_dense,
)

OUTCOMES: collections.Counter = collections.Counter()
FUZZ = settings(
    max_examples=int(os.environ.get("RELIABILITY_EXAMPLES", "150")),
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
)


@pytest.fixture(scope="module", autouse=True)
def report_figures():
    yield
    if os.environ.get("RELIABILITY_FIGURES"):
        Path(os.environ["RELIABILITY_FIGURES"]).write_text(json.dumps(dict(sorted(OUTCOMES.items())), indent=2))


@pytest.fixture(scope="module")
def model():
    return tiny_model(BertModel)


@pytest.fixture(scope="module")
def original(model, tmp_path_factory):
    """A saved ticket: (ticket, {file name: bytes})."""
    ticket = prune(model, 0.6)
    ticket.config.provenance = {"task": "sst2", "round": 2}
    directory = ticket.save_pretrained(tmp_path_factory.mktemp("original"))
    return ticket, {name: (directory / name).read_bytes() for name in (MASKS_FILE, CONFIG_FILE)}


def same_ticket(a: Ticket, b: Ticket) -> bool:
    return (
        a.equals(b)
        and a.fingerprint.keys() == b.fingerprint.keys()
        and all(torch.equal(v, b.fingerprint[k]) for k, v in a.fingerprint.items())
    )


def load_outcome(kind: str, files: dict[str, bytes], original_ticket: Ticket, masks_may_differ: bool = False) -> str:
    """Write ``files`` as a ticket directory and load it; only a TicketError or a clean load may come out."""
    with tempfile.TemporaryDirectory() as directory:
        for name, data in files.items():
            (Path(directory) / name).write_bytes(data)
        try:
            loaded = Ticket.from_pretrained(directory)
        except TicketError as err:
            message = str(err)
            assert "\n" not in message and directory in message, message  # one line, naming the file
            outcome = "clear error"
        else:
            if not masks_may_differ:
                assert same_ticket(loaded, original_ticket), f"{kind}: another ticket was accepted"
            loaded.save_pretrained(Path(directory) / "again")  # what loads can be used and saved again
            outcome = "clean load"
    OUTCOMES[f"{kind}: {outcome}"] += 1
    return outcome


# ------------------------------------------------------------------------------------------ fuzzing
@FUZZ
@given(data=st.data())
def test_fuzz_bit_flips(original, data):
    ticket, files = original
    name = data.draw(st.sampled_from([MASKS_FILE, CONFIG_FILE]))
    flipped = bytearray(files[name])
    for _ in range(data.draw(st.integers(1, 3))):
        flipped[data.draw(st.integers(0, len(flipped) - 1))] ^= 1 << data.draw(st.integers(0, 7))
    outcome = load_outcome(f"bit flips in {name}", {**files, name: bytes(flipped)}, ticket)
    if name == MASKS_FILE and bytes(flipped) != files[name]:
        assert outcome == "clear error"  # every change of the masks file breaks its checksum


@FUZZ
@given(data=st.data())
def test_fuzz_truncation(original, data):
    ticket, files = original
    name = data.draw(st.sampled_from([MASKS_FILE, CONFIG_FILE]))
    cut = data.draw(st.integers(0, len(files[name]) - 1))
    load_outcome(f"truncated {name}", {**files, name: files[name][:cut]}, ticket)


JSON = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=8),
    lambda children: st.lists(children, max_size=3) | st.dictionaries(st.text(max_size=8), children, max_size=3),
    max_leaves=8,
)
CONFIG_FIELDS = [f for f in TicketConfig().to_dict()]


@FUZZ
@given(data=st.data())
def test_fuzz_config_field_values(original, data):
    ticket, files = original
    config = json.loads(files[CONFIG_FILE])
    for field in data.draw(st.lists(st.sampled_from(CONFIG_FIELDS), min_size=1, max_size=3, unique=True)):
        config[field] = data.draw(JSON)
    text = json.dumps(config) if data.draw(st.booleans()) else json.dumps(data.draw(JSON))
    load_outcome("random JSON in ticket_config.json", {**files, CONFIG_FILE: text.encode()}, ticket)


@FUZZ
@given(data=st.data())
def test_fuzz_masks_metadata_and_fingerprints_with_a_matching_checksum(original, data):
    """A consistent but crafted ticket: the masks file's header and fingerprints are random, the config's
    checksum matches them, so every check of the mask-file reader is reached."""
    ticket, files = original
    tensors = load_file_bytes(files[MASKS_FILE])
    header = {"format": MASK_FORMAT, "shapes": {}, "pruned": {}}
    header["shapes"] = {n: list(m.shape) for n, m in ticket.masks.items()}
    header["pruned"] = {n: int((~m).sum()) for n, m in ticket.masks.items()}
    name = data.draw(st.sampled_from(sorted(ticket.masks)))
    what = data.draw(st.sampled_from(["shapes", "pruned", "header", "fingerprint", "extra tensor"]))
    if what in ("shapes", "pruned"):
        header[what][name] = data.draw(JSON)
    elif what == "header":
        header = data.draw(JSON)
    elif what == "fingerprint":
        size = data.draw(st.integers(0, 40))
        dtype = data.draw(st.sampled_from([torch.float32, torch.float16, torch.int64, torch.uint8]))
        tensors[FINGERPRINT_PREFIX + name] = torch.zeros(size).to(dtype)
    else:
        tensors[data.draw(st.text(min_size=1, max_size=12))] = torch.zeros(data.draw(st.integers(0, 9)))
    masks_bytes = save(tensors, metadata={MASK_FORMAT: json.dumps(header)})
    config = json.loads(files[CONFIG_FILE])
    config["masks_sha256"] = sha256_of(masks_bytes)
    load_outcome(
        f"crafted {what} in {MASKS_FILE}",
        {MASKS_FILE: masks_bytes, CONFIG_FILE: json.dumps(config).encode()},
        ticket,
        masks_may_differ=True,
    )


def load_file_bytes(data: bytes) -> dict[str, torch.Tensor]:
    with tempfile.NamedTemporaryFile(suffix=".safetensors") as f:
        f.write(data)
        f.flush()
        return dict(load_file(f.name))


# ------------------------------------------------------------------------------- clear errors
@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("targets", 5),
        ("targets", ["a", 1]),
        ("sparsity", "half"),
        ("sparsity", float("nan")),
        ("per_tensor_sparsity", [0.5]),
        ("provenance", "sst2"),
        ("base_model", 7),
        ("format_version", "2"),
        ("masks_sha256", "abc"),
    ],
)
def test_malformed_config_fields_name_the_file_and_the_field(original, tmp_path, field, value):
    ticket, files = original
    config = json.loads(files[CONFIG_FILE])
    config[field] = value
    (tmp_path / MASKS_FILE).write_bytes(files[MASKS_FILE])
    (tmp_path / CONFIG_FILE).write_text(json.dumps(config))
    with pytest.raises(TicketError, match=rf"ticket_config.json: field '{field}'"):
        Ticket.from_pretrained(tmp_path)


def test_config_that_is_not_an_object_or_too_deep_is_a_clear_error(original, tmp_path):
    (tmp_path / MASKS_FILE).write_bytes(original[1][MASKS_FILE])
    for text, message in [
        ("[1, 2]", "must hold a JSON object"),
        ("[" * 100_000 + "]" * 100_000, "not valid ticket JSON"),
    ]:
        (tmp_path / CONFIG_FILE).write_text(text)
        with pytest.raises(TicketError, match=message):
            Ticket.from_pretrained(tmp_path)


def test_malformed_shapes_and_fingerprints_in_the_masks_file_name_the_field(original, tmp_path):
    ticket, _ = original
    name = next(iter(ticket.masks))

    def attempt(header_change=None, fingerprint=None):
        tensors = {n: t for n, t in load_file_bytes(original[1][MASKS_FILE]).items()}
        header = {
            "format": MASK_FORMAT,
            "shapes": {n: list(m.shape) for n, m in ticket.masks.items()},
            "pruned": {n: int((~m).sum()) for n, m in ticket.masks.items()},
        }
        if header_change:
            header_change(header)
        if fingerprint is not None:
            tensors[FINGERPRINT_PREFIX + name] = fingerprint
        data = save(tensors, metadata={MASK_FORMAT: json.dumps(header)})
        config = {**ticket.config.to_dict(), "masks_sha256": sha256_of(data)}
        (tmp_path / MASKS_FILE).write_bytes(data)
        (tmp_path / CONFIG_FILE).write_text(json.dumps(config))
        return lambda: Ticket.from_pretrained(tmp_path)

    with pytest.raises(TicketError, match=rf"ticket_masks.safetensors: field shapes\['{name}'\]"):
        attempt(lambda h: h["shapes"].__setitem__(name, "32x32"))()
    with pytest.raises(TicketError, match=rf"field shapes\['{name}'\] = \[-1, 32\]"):
        attempt(lambda h: h["shapes"].__setitem__(name, [-1, 32]))()
    with pytest.raises(TicketError, match=rf"field pruned\['{name}'\]"):
        attempt(lambda h: h["pruned"].__setitem__(name, "many"))()
    with pytest.raises(TicketError, match=rf"fingerprint '__fingerprint__.{name}' has shape \(5,\)"):
        attempt(fingerprint=torch.zeros(5))()
    with pytest.raises(TicketError, match="ticket_masks.safetensors is truncated or corrupt"):
        (tmp_path / MASKS_FILE).write_bytes(original[1][MASKS_FILE][:7])
        Ticket.from_pretrained(tmp_path)


def test_two_bit_flips_that_keep_the_pruned_count_are_detected(original, tmp_path):
    ticket, files = original
    masks = {n: m.clone() for n, m in ticket.masks.items()}
    flat = next(iter(masks.values())).view(-1)
    kept, pruned = int(flat.nonzero()[0]), int((~flat).nonzero()[0])
    flat[kept], flat[pruned] = False, True  # same pruned count, another ticket
    write_packed_masks(tmp_path / MASKS_FILE, masks, ticket.fingerprint)
    (tmp_path / CONFIG_FILE).write_bytes(files[CONFIG_FILE])
    with pytest.raises(TicketError, match="does not match field 'masks_sha256'"):
        Ticket.from_pretrained(tmp_path)


def test_a_format_1_ticket_without_checksum_still_loads_with_a_warning(original, tmp_path, caplog):
    ticket, files = original
    config = json.loads(files[CONFIG_FILE])
    del config["masks_sha256"]
    config["format_version"] = 1
    (tmp_path / MASKS_FILE).write_bytes(files[MASKS_FILE])
    (tmp_path / CONFIG_FILE).write_text(json.dumps(config))
    with caplog.at_level(logging.WARNING):
        assert same_ticket(Ticket.from_pretrained(tmp_path), ticket)
    assert "format-1 ticket without a checksum" in caplog.text
    config["format_version"] = 2  # but a format-2 config without its checksum is refused
    (tmp_path / CONFIG_FILE).write_text(json.dumps(config))
    with pytest.raises(TicketError, match="field 'masks_sha256' is missing"):
        Ticket.from_pretrained(tmp_path)


def test_prune_refuses_options_its_strategy_does_not_take(model):
    with pytest.raises(TicketError, match="strategy 'global_magnitude' takes no option 'seed' .*none"):
        prune(model, 0.5, seed=3)
    with pytest.raises(TicketError, match="option 'seed' of pruning strategy 'random' must be int"):
        prune(model, 0.5, strategy="random", seed="3")
    assert prune(model, 0.5, strategy="random", seed=3).sparsity == pytest.approx(0.5, abs=1e-3)


def test_a_mistyped_local_path_is_reported_as_one(hub_server, tmp_path, monkeypatch):
    (tmp_path / "tickets").mkdir()
    monkeypatch.chdir(tmp_path)
    with pytest.raises(TicketError, match=r"no ticket directory at 'tickets/mytcket' \(tickets/ has no 'mytcket'\)"):
        Ticket.from_pretrained("tickets/mytcket")


# ------------------------------------------------------------------------- the base-model check
def test_a_fingerprint_that_cannot_be_checked_is_an_error_unless_verify_base_is_false(model, tmp_path):
    ticket = prune(model, 0.5)
    cases = {
        "no fingerprint": Ticket(ticket.masks, TicketConfig()),
        "inf or NaN": Ticket(
            ticket.masks, TicketConfig(), {n: v * float("nan") for n, v in ticket.fingerprint.items()}
        ),
    }
    everything_pruned_there = {}
    for name, mask in ticket.masks.items():
        mask = mask.clone()
        mask.view(-1)[fingerprint_positions(mask.numel())] = False
        everything_pruned_there[name] = mask
    cases["no fingerprint position survives"] = Ticket(everything_pruned_there, TicketConfig(), ticket.fingerprint)
    for why, bad in cases.items():
        bad.save_pretrained(tmp_path / why)
        loaded = Ticket.from_pretrained(tmp_path / why)
        before = {k: v.clone() for k, v in model.state_dict().items()}
        with pytest.raises(TicketError, match=f"cannot check that the model is the base.*{why}.*verify_base=False"):
            loaded.apply(model)
        assert all(torch.equal(v, before[k]) for k, v in model.state_dict().items())  # nothing changed
    broken = tiny_model(BertModel)
    with torch.no_grad():
        broken.get_parameter(next(iter(ticket.masks))).fill_(float("nan"))
    with pytest.raises(TicketError, match="model's weights hold inf or NaN"):
        ticket.apply(broken)
    assert ticket.apply(broken, verify_base=False).pruned == ticket.num_pruned


# ---------------------------------------------------------------------------- files on disk
def test_written_files_keep_the_users_umask(model, tmp_path):
    old = os.umask(0o027)
    try:
        prune(model, 0.5).save_pretrained(tmp_path / "t")
        atomic_write_json(tmp_path / "x.json", {"a": 1})
    finally:
        os.umask(old)
    modes = {p.name: stat.S_IMODE(p.stat().st_mode) for p in [*(tmp_path / "t").iterdir(), tmp_path / "x.json"]}
    assert modes == {MASKS_FILE: 0o640, CONFIG_FILE: 0o640, "x.json": 0o640}


def test_stale_temporaries_of_dead_writers_are_removed_and_live_ones_kept(model, tmp_path):
    dead = tmp_path / f".{MASKS_FILE}.999999999.abcd1234.tmp"
    dead.mkdir()
    (dead / ".tmpXYZ").write_bytes(b"half a file")
    legacy = tmp_path / f".{CONFIG_FILE}.k2j3h4g5.tmp"  # written by an older hf_tickets: no pid
    legacy.write_text("{")
    live = tmp_path / f".{MASKS_FILE}.{os.getpid()}.abcd1234.tmp"
    live.mkdir()
    (tmp_path / PENDING_CONFIG_FILE).write_text("{}")
    prune(model, 0.5).save_pretrained(tmp_path)
    assert not dead.exists() and not legacy.exists() and live.exists()
    assert not (tmp_path / PENDING_CONFIG_FILE).exists()  # the save published and committed its own
    assert remove_stale_temporaries(tmp_path, [MASKS_FILE]) == []  # the live one stays


# ---------------------------------------------------------------- sparse checkpoints and convert
def compact_file(path: Path, tensors: dict, shapes: dict) -> Path:
    metadata = {
        "format": COMPACT_FORMAT,
        "format_version": "1",
        "shapes": json.dumps(shapes),
        "dense_metadata": json.dumps({"format": "pt"}),
    }
    path.write_bytes(save(tensors, metadata=metadata))
    return path


def test_crafted_compact_tensors_are_never_silently_dropped(tmp_path):
    weight = torch.randn(64, 64)
    weight[weight.abs() < 1.0] = 0
    tensors, shapes = compact_tensors({"w": weight})
    ghost = {**tensors, "ghost" + VALUES_SUFFIX: torch.ones(3)}
    with pytest.raises(TicketError, match=r"x.safetensors: tensors \['ghost'\] have no recorded shape"):
        expand_tensors(ghost, shapes, source="x.safetensors")
    both = {**tensors, "w": weight}
    with pytest.raises(TicketError, match=r"\['w'\] are stored both dense and compact"):
        expand_tensors(both, shapes, source="x.safetensors")
    path = compact_file(tmp_path / "c.safetensors", ghost, shapes)
    with pytest.raises(TicketError, match="c.safetensors: tensors"):
        to_dense(path, tmp_path / "d.safetensors")
    assert not (tmp_path / "d.safetensors").exists()


def test_expansion_is_bounded_before_anything_is_allocated(tmp_path):
    name = "w"
    mask = torch.zeros(1024 * 1024 // 8, dtype=torch.uint8)
    path = compact_file(
        tmp_path / "bomb.safetensors",
        {name + VALUES_SUFFIX: torch.zeros(0, dtype=torch.float64), name + MASK_SUFFIX: mask},
        {name: [1024, 1024]},
    )
    with pytest.raises(TicketError, match=r"expanding would write 8,388,608 bytes, more than the limit of 1,000,000"):
        to_dense(path, tmp_path / "out.safetensors", max_dense_bytes=1_000_000)
    for shapes in ({name: [1024, -1024]}, {name: "big"}, [1, 2], {name: [2**40, 2**40]}):
        compact_file(path, {name + VALUES_SUFFIX: torch.zeros(0), name + MASK_SUFFIX: mask}, shapes)
        with pytest.raises(TicketError, match="bomb.safetensors"):
            to_dense(path, tmp_path / "out.safetensors")
    assert not (tmp_path / "out.safetensors").exists()


def test_convert_refuses_dst_equal_to_src_unless_told(tmp_path, model, capsys):
    prune(model, 0.6).apply(model)
    model.save_pretrained(tmp_path / "ckpt")
    dense = tmp_path / "ckpt" / "model.safetensors"
    before = dense.read_bytes()
    with pytest.raises(TicketError, match="destination .* is the source"):
        convert(dense, dense, "compact")
    assert cli_main(["convert", str(tmp_path / "ckpt"), str(tmp_path / "ckpt"), "--to", "compact"]) == 1
    assert "--in-place" in capsys.readouterr().err
    assert dense.read_bytes() == before
    assert cli_main(["convert", str(tmp_path / "ckpt"), str(tmp_path / "ckpt"), "--to", "compact", "--in-place"]) == 0
    assert (tmp_path / "ckpt" / "model.compact.safetensors").exists() and dense.read_bytes() == before


@pytest.mark.parametrize(
    "make_src",
    [
        lambda d: d / "missing.safetensors",
        lambda d: (d / "random.safetensors").write_bytes(os.urandom(300)) and d / "random.safetensors",
        lambda d: (d / "text.safetensors").write_text('{"a": 1}') and d / "text.safetensors",
        lambda d: (d / "empty").mkdir() or d / "empty",
        lambda d: (
            (d / "huge-header.safetensors").write_bytes((2**62).to_bytes(8, "little") + b"{}")
            and d / "huge-header.safetensors"
        ),
    ],
    ids=["missing", "random bytes", "JSON", "empty directory", "huge header"],
)
@pytest.mark.parametrize("to", ["dense", "compact"])
def test_cli_convert_on_bad_input_prints_one_line(tmp_path, capsys, make_src, to):
    src = make_src(tmp_path)
    assert cli_main(["convert", str(src), str(tmp_path / "out"), "--to", to]) == 1
    captured = capsys.readouterr()
    lines = captured.err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("hf-tickets: error: ") and src.name in lines[0], captured.err
    with pytest.raises(TicketError):  # --debug shows the real exception and its traceback
        cli_main(["convert", str(src), str(tmp_path / "out"), "--to", to, "--debug"])


def test_expanded_size_figure_is_the_claim(tmp_path):
    """The bound is computed from the claims alone: values dtype itemsize times the claimed elements."""
    mask = torch.zeros(math.ceil(300 * 7 / 8), dtype=torch.uint8)
    path = compact_file(
        tmp_path / "c.safetensors",
        {"w" + VALUES_SUFFIX: torch.zeros(0, dtype=torch.float16), "w" + MASK_SUFFIX: mask},
        {"w": [300, 7]},
    )
    with pytest.raises(TicketError, match="4,200 bytes"):
        to_dense(path, tmp_path / "d.safetensors", max_dense_bytes=4_199)
    assert torch.equal(
        load_file(to_dense(path, tmp_path / "d.safetensors", max_dense_bytes=4_200))["w"],
        torch.zeros(300, 7, dtype=torch.float16),
    )
