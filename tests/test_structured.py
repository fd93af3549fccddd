"""Structured strategies: whole heads and FFN neurons, exact slices, unit counts, cumulative rounds, IMP resume."""

import json
import math

import pytest
import torch
from tiny import tiny_model
from torch.utils.data import DataLoader
from transformers import BertForSequenceClassification, BertModel

from hf_tickets import IMPConfig, IMPManager, Ticket, TicketError, prune
from hf_tickets.core.strategies import get_strategy
from hf_tickets.core.structured import HEAD_TARGETS, NEURON_TARGETS
from hf_tickets.core.targets import resolve_targets

HEADS, HIDDEN, FFN, LAYERS = 2, 32, 64, 2  # tests/tiny.py
HEAD_DIM = HIDDEN // HEADS
HEAD_SIZE = 4 * HEAD_DIM * HIDDEN  # Q, K, V rows + output columns
NEURON_SIZE = 2 * HIDDEN  # an intermediate row + an output column
ATTENTION = ("attention.self.query", "attention.self.key", "attention.self.value")


def layer(i: int) -> str:
    return f"encoder.layer.{i}."


def head_slices(i: int, h: int):
    rows = slice(h * HEAD_DIM, (h + 1) * HEAD_DIM)
    return [(layer(i) + f"{m}.weight", rows, slice(None)) for m in ATTENTION] + [
        (layer(i) + "attention.output.dense.weight", slice(None), rows)
    ]


def neuron_slices(i: int, j: int):
    return [
        (layer(i) + "intermediate.dense.weight", slice(j, j + 1), slice(None)),
        (layer(i) + "output.dense.weight", slice(None), slice(j, j + 1)),
    ]


def expected_masks(ticket: Ticket, heads=(), neurons=()) -> dict[str, torch.Tensor]:
    """All-True masks with exactly the given (layer, head) and (layer, neuron) slices False."""
    masks = {n: torch.ones_like(m) for n, m in ticket.masks.items()}
    for i, h in heads:
        for name, rows, cols in head_slices(i, h):
            masks[name][rows, cols] = False
    for i, j in neurons:
        for name, rows, cols in neuron_slices(i, j):
            masks[name][rows, cols] = False
    return masks


def pruned_units(ticket: Ticket) -> tuple[set, set]:
    """The heads and neurons whose every weight the ticket prunes (among the kinds it targets)."""
    has = lambda slices: all(n in ticket.masks for n, _, _ in slices)  # noqa: E731
    heads = {
        (i, h)
        for i in range(LAYERS)
        for h in range(HEADS)
        if has(head_slices(i, h)) and all(not ticket.masks[n][r, c].any() for n, r, c in head_slices(i, h))
    }
    neurons = {
        (i, j)
        for i in range(LAYERS)
        for j in range(FFN)
        if has(neuron_slices(i, j)) and all(not ticket.masks[n][r, c].any() for n, r, c in neuron_slices(i, j))
    }
    return heads, neurons


def assert_whole_units(ticket: Ticket) -> tuple[set, set]:
    heads, neurons = pruned_units(ticket)
    expected = expected_masks(ticket, heads, neurons)
    for name, mask in ticket.masks.items():
        assert torch.equal(mask, expected[name]), f"{name} prunes more than whole units"
    return heads, neurons


def scale(model, slices, factor: float) -> None:
    with torch.no_grad():
        for name, rows, cols in slices:
            model.get_parameter(name)[rows, cols] *= factor


def round_half_down(x: float) -> int:
    return math.ceil(x - 0.5)


# ------------------------------------------------------------------ exact slices
def test_heads_prune_exactly_the_weakest_heads_slices():
    model = tiny_model(BertModel)
    scale(model, head_slices(0, 1) + head_slices(1, 0), 0.01)  # the two weakest heads, one per layer
    ticket = prune(model, 2 * HEAD_SIZE / 16384, strategy="heads")  # num_heads comes from the config
    assert ticket.num_pruned == 2 * HEAD_SIZE
    expected = expected_masks(ticket, heads=[(0, 1), (1, 0)])
    assert all(torch.equal(ticket.masks[n], expected[n]) for n in ticket.masks)
    ticket.apply(model)
    for name, rows, cols in head_slices(0, 1):
        assert not model.get_parameter(name)[rows, cols].any()
    assert model.get_parameter(layer(0) + "attention.self.query.weight")[:HEAD_DIM].abs().min() > 0


def test_neurons_prune_exactly_the_weakest_rows_and_columns():
    model = tiny_model(BertModel)
    weak = [(0, 3), (0, 40), (1, 7)]
    for i, j in weak:
        scale(model, neuron_slices(i, j), 0.01)
    ticket = prune(model, 3 * NEURON_SIZE / 16384, strategy="neurons")
    expected = expected_masks(ticket, neurons=weak)
    assert all(torch.equal(ticket.masks[n], expected[n]) for n in ticket.masks)


def test_a_neurons_score_is_its_mean_magnitude_across_both_matrices():
    model = tiny_model(BertModel)
    # Neuron 5: tiny intermediate row but a large output column; neuron 9: both moderately small.
    scale(model, neuron_slices(0, 5)[:1], 0.001)
    scale(model, neuron_slices(0, 5)[1:], 3.0)
    scale(model, neuron_slices(0, 9), 0.2)
    ticket = prune(model, NEURON_SIZE / 16384, strategy="neurons")
    assert pruned_units(ticket)[1] == {(0, 9)}


# ------------------------------------------------------------- how many units
@pytest.mark.parametrize("strategy", ["heads", "layerwise_heads"])
@pytest.mark.parametrize("sparsity", [0.0, 0.05, 0.0625, 0.1, 0.2, 0.25])
def test_head_count_follows_from_the_sparsity_over_all_targets(strategy, sparsity):
    ticket = prune(tiny_model(BertModel), sparsity, strategy=strategy)
    heads, neurons = assert_whole_units(ticket)
    step = LAYERS if strategy.startswith("layerwise") else 1  # layerwise: one head per layer at a time
    assert len(heads) == step * round_half_down(round(sparsity * ticket.num_weights) / (step * HEAD_SIZE))
    assert ticket.num_pruned == len(heads) * HEAD_SIZE and not neurons
    assert ticket.sparsity == ticket.num_pruned / ticket.num_weights


@pytest.mark.parametrize("sparsity", [0.1, 0.3, 0.5, 0.74])
def test_with_unit_targets_sparsity_is_the_fraction_of_units(sparsity):
    model = tiny_model(BertModel)
    neurons = prune(model, sparsity, strategy="layerwise_neurons", targets=NEURON_TARGETS)
    assert len(pruned_units(neurons)[1]) == LAYERS * round_half_down(sparsity * FFN)
    heads = prune(model, 0.5, strategy="heads", targets=HEAD_TARGETS)
    assert heads.sparsity == 0.5 and len(pruned_units(heads)[0]) == LAYERS * HEADS // 2


def test_layerwise_prunes_the_same_number_in_every_layer_global_does_not():
    model = tiny_model(BertModel)
    with torch.no_grad():
        model.encoder.layer[1].intermediate.dense.weight.mul_(0.1)
        model.encoder.layer[1].output.dense.weight.mul_(0.1)
    per_layer = prune(model, 0.25, strategy="layerwise_neurons")
    counts = [sum(1 for i, _ in pruned_units(per_layer)[1] if i == k) for k in range(LAYERS)]
    assert counts[0] == counts[1] == 0.25 * 16384 / NEURON_SIZE / LAYERS
    overall = prune(model, 48 * NEURON_SIZE / 16384, strategy="neurons")
    assert {i for i, _ in pruned_units(overall)[1]} == {1}  # the scaled-down layer pays for all


def test_heads_and_neurons_compete_by_relative_magnitude_and_hit_the_count():
    model = tiny_model(BertModel)
    scale(model, head_slices(1, 1), 0.01)
    ticket = prune(model, 0.4, strategy="heads+neurons")
    heads, neurons = assert_whole_units(ticket)
    assert (1, 1) in heads and neurons
    assert abs(ticket.num_pruned - round(0.4 * ticket.num_weights)) <= NEURON_SIZE / 2


def test_the_split_between_heads_and_neurons_ignores_the_scale_of_each_kind():
    model = tiny_model(BertModel)
    before = prune(model, 0.4, strategy="heads+neurons")
    with torch.no_grad():  # attention 10x larger, FFN 10x smaller: each kind's ranking is unchanged
        for name, p in model.named_parameters():
            if name.endswith("weight") and "LayerNorm" not in name and "encoder" in name:
                p.mul_(10.0 if ".attention." in name else 0.1)
    assert prune(model, 0.4, strategy="heads+neurons").equals(before)
    assert pruned_units(before)[0] and pruned_units(before)[1]


def test_every_layer_keeps_a_head_and_too_much_is_a_clear_error():
    model = tiny_model(BertModel)
    with pytest.raises(TicketError, match="out of reach.*at most 0.2500") as default_targets:
        prune(model, 0.4, strategy="heads")
    assert "belong to no unit and stay dense (e.g. encoder.layer.0.intermediate.dense.weight)" in str(
        default_targets.value
    )
    with pytest.raises(TicketError, match="at most 0.5000") as head_targets:  # 3 of 4 heads: a layer would have none
        prune(model, 0.75, strategy="heads", targets=HEAD_TARGETS)
    assert "narrow" not in str(head_targets.value)  # already only the heads' matrices: nothing to narrow


def test_ties_are_broken_by_layer_then_index_and_results_are_repeatable():
    model = tiny_model(BertModel)
    with torch.no_grad():
        for p in model.encoder.parameters():
            p.fill_(0.5)
    ticket = prune(model, 0.5, strategy="heads", targets=HEAD_TARGETS)
    assert pruned_units(ticket)[0] == {(0, 0), (1, 0)}
    neurons = prune(model, 3 / FFN / LAYERS, strategy="neurons", targets=NEURON_TARGETS)
    assert pruned_units(neurons)[1] == {(0, 0), (0, 1), (0, 2)}
    assert neurons.equals(prune(model, 3 / FFN / LAYERS, strategy="neurons", targets=NEURON_TARGETS))


def test_head_strategies_need_the_head_count():
    weights = {n: p for n, p in tiny_model(BertModel).named_parameters() if "attention" in n and n.endswith("weight")}
    weights = {n: w for n, w in weights.items() if "LayerNorm" not in n}
    with pytest.raises(TicketError, match="num_heads"):
        get_strategy("heads")(weights, None, 0.5)
    with pytest.raises(TicketError, match="do not split into num_heads=3"):
        get_strategy("heads")(weights, None, 0.5, num_heads=3)
    assert get_strategy("heads")(weights, None, 0.5, num_heads=2)


def test_missing_unit_tensors_are_named():
    with pytest.raises(TicketError, match="missing: attention.output.dense.weight"):
        prune(tiny_model(BertModel), 0.1, strategy="heads", targets=r".*\.attention\.self\..*")


# ------------------------------------------------------------- cumulative
@pytest.mark.parametrize("strategy", ["heads+neurons", "layerwise_neurons"])
def test_cumulative_rounds_keep_what_was_pruned(strategy):
    model = tiny_model(BertModel)
    ticket, previous = None, None
    for sparsity in (0.1, 0.19, 0.271, 0.3439):
        ticket = prune(model, sparsity, strategy=strategy, ticket=ticket)
        ticket.apply(model)
        assert abs(ticket.num_pruned - round(sparsity * ticket.num_weights)) <= HEAD_SIZE / 2
        assert_whole_units(ticket)
        if previous is not None:
            assert all(not (m & ~previous.masks[n]).any() for n, m in ticket.masks.items())
            assert ticket.num_pruned > previous.num_pruned
        previous = ticket


def test_cumulative_pruning_continues_from_earlier_weights_not_from_fresh_scores():
    model = tiny_model(BertModel)
    scale(model, neuron_slices(0, 0), 0.01)
    first = prune(model, NEURON_SIZE / 16384, strategy="neurons")
    scale(model, neuron_slices(0, 0), 1000.0)  # training revived it; the ticket still prunes it
    second = prune(model, 2 * NEURON_SIZE / 16384, strategy="neurons", ticket=first)
    assert (0, 0) in pruned_units(second)[1] and len(pruned_units(second)[1]) == 2


# ------------------------------------------------------------- IMP
def token_five(n: int, seed: int):
    g = torch.Generator().manual_seed(seed)
    ids = torch.randint(6, 99, (n, 12), generator=g)
    labels = torch.arange(n) % 2
    ids[labels == 1, 3] = 5
    return torch.utils.data.TensorDataset(ids, labels)


def run_imp(out, stop_in_round: int | None = None, steps: int = 6):
    torch.manual_seed(0)
    model = tiny_model(BertForSequenceClassification).train()
    config = IMPConfig(imp_rounds=2, strategy="heads+neurons", imp_seed=0)
    manager = IMPManager(model, config, out)
    for rnd in manager.rounds():
        optimizer = torch.optim.AdamW(model.parameters(), lr=3e-3, weight_decay=0.1)
        for step, (ids, labels) in enumerate(DataLoader(token_five(48, 0), batch_size=8, shuffle=True)):
            model(input_ids=ids, labels=labels).loss.backward()
            optimizer.step()
            optimizer.zero_grad()
            manager.apply_masks()
            if step + 1 == steps:
                break
        if rnd.index == stop_in_round:
            return manager  # "killed" mid-round: the round never finishes
        rnd.finish({"eval_accuracy": 0.5})
    return manager


def test_imp_with_a_structured_strategy_resumes_with_identical_masks(tmp_path):
    whole = run_imp(tmp_path / "whole")
    run_imp(tmp_path / "resumed", stop_in_round=1)
    resumed = run_imp(tmp_path / "resumed")
    assert whole.done and resumed.done
    for r in range(3):
        a, b = whole.round_ticket(r), resumed.round_ticket(r)
        assert a.equals(b), f"round {r}"
        assert a.config.strategy == "heads+neurons"
        assert_whole_units(a)
    assert whole.round_ticket(2).num_pruned > whole.round_ticket(1).num_pruned > 0


# ------------------------------------------------------------- Trainer + shrink
class TokenFiveDicts(torch.utils.data.Dataset):
    def __init__(self, n: int):
        self.ids, self.labels = token_five(n, 0).tensors

    def __len__(self):
        return len(self.labels)

    def __getitem__(self, i):
        return {"input_ids": self.ids[i], "labels": self.labels[i]}


def test_a_structured_ticket_trains_with_the_stock_trainer_and_shrinks_to_the_same_logits(tmp_path):
    from transformers import Trainer, TrainingArguments

    from hf_tickets import TicketCallback
    from hf_tickets.core.shrink import shrink

    model = tiny_model(BertForSequenceClassification).train()
    ticket = prune(model, 0.3, strategy="heads+neurons")
    before = {n: p.detach().clone() for n, p in ticket.parameters_of(model).items()}
    args = TrainingArguments(
        output_dir=str(tmp_path), use_cpu=True, report_to=[], max_steps=4, learning_rate=1e-2, weight_decay=0.1,
        per_device_train_batch_size=8, save_strategy="no", disable_tqdm=True, seed=0,
    )  # fmt: skip
    Trainer(model=model, args=args, train_dataset=TokenFiveDicts(32), callbacks=[TicketCallback(ticket)]).train()
    params = ticket.parameters_of(model)
    assert all(not params[n].detach()[~m].any() for n, m in ticket.masks.items())  # whole units stay zero
    assert all(not torch.equal(params[n].detach()[m], before[n][m]) for n, m in ticket.masks.items())  # trained
    ids = token_five(4, 1).tensors[0]
    with torch.no_grad():
        expected = model.eval()(input_ids=ids).logits
        shrink(model, ticket)
        torch.testing.assert_close(model(input_ids=ids).logits, expected, rtol=1e-5, atol=1e-6)
    assert model.config.hf_tickets_shrink["parameters_after"] < model.config.hf_tickets_shrink["parameters_before"]


def test_a_round_below_a_rounded_up_ticket_prunes_nothing_more():
    # 4 heads of 25%: 0.2 rounds up to one head (0.25); a next round at 0.22 is below what is pruned.
    model = tiny_model(BertModel)
    first = prune(model, 0.2, strategy="heads", targets=HEAD_TARGETS)
    assert first.sparsity == 0.25
    assert prune(model, 0.22, strategy="heads", ticket=first).equals(first)
    assert prune(model, 0.4, strategy="heads", ticket=first).sparsity == 0.5
    with pytest.raises(TicketError, match="below the ticket's 0.2500"):
        prune(model, 0.05, strategy="heads", ticket=first)  # more than half a head below: a real mistake


# ------------------------------------------------------------- early bird (EarlyBERT)
def test_the_unit_distance_counts_heads_and_neurons_not_weights():
    from hf_tickets.core.strategies import weight_distance
    from hf_tickets.core.structured import unit_distance

    dense = prune(tiny_model(BertModel), 0.0)
    masks = lambda heads=(), neurons=(): expected_masks(dense, heads, neurons)  # noqa: E731
    previous = masks(heads=[(0, 0)], neurons=[(1, 3), (1, 4)])
    head_moved = masks(heads=[(0, 1)], neurons=[(1, 3), (1, 4)])  # 2 units changed: 2 x 2048 weights
    neuron_moved = masks(heads=[(0, 0)], neurons=[(1, 3), (1, 5)])  # 2 units changed: 2 x 64 weights
    kinds = ("head", "neuron")
    for current in (head_moved, neuron_moved):
        # 2 units changed out of the 3 + 3 each prunes.
        assert unit_distance(previous, current, None, kinds, num_heads=HEADS) == pytest.approx(2 / 6)
    assert weight_distance(previous, head_moved, None) > 10 * weight_distance(previous, neuron_moved, None)
    assert unit_distance(previous, previous, None, kinds, num_heads=HEADS) == 0.0
    # Units the round's ticket pruned already are no decision of this round: the same share, of fewer units.
    keep = masks(neurons=[(0, 7)])
    before, after = (masks(heads=[(0, 0)], neurons=[(0, 7), (1, 3)]), masks(heads=[(0, 0)], neurons=[(0, 7), (1, 5)]))
    assert unit_distance(before, after, keep, kinds, num_heads=HEADS) == pytest.approx(2 / 4)
    # The strategies carry it (what the IMP round asks for); neurons alone need no head count.
    assert get_strategy("heads+neurons").mask_distance(previous, neuron_moved, None, num_heads=HEADS) == 2 / 6
    assert get_strategy("neurons").mask_distance(previous, neuron_moved, None) == pytest.approx(2 / 4)
    assert not hasattr(get_strategy("global_magnitude"), "mask_distance")


# 1 head (2048 weights) + 1 neuron (64) of the 16384 default targets: heads+neurons prunes exactly those two.
ONE_HEAD_ONE_NEURON = (4 * HEAD_DIM * HIDDEN + NEURON_SIZE) / (LAYERS * 8 * HIDDEN * HIDDEN)


def set_weakest(model, head, neuron) -> None:
    """Every target weight 1, the given head's and neuron's 0.01: the two units a pruning step removes."""
    base = model.bert
    with torch.no_grad():
        for name in resolve_targets(model, "auto"):
            base.get_parameter(name).fill_(1.0)
        for name, rows, cols in head_slices(*head) + neuron_slices(*neuron):
            base.get_parameter(name)[rows, cols] = 0.01


@pytest.mark.parametrize(
    "weakest, stops",
    [
        (lambda check: ((0, 1), (1, 5)), True),  # the same head and neuron at every check: settled
        (lambda check: ((0, 1), [(1, 5), (0, 7)][check % 2]), False),  # the weakest neuron alternates
        (lambda check: ([(0, 1), (1, 0)][check % 2], (1, 5)), False),  # the weakest head alternates
    ],
)
def test_structured_early_bird_stops_when_the_units_settle_and_not_while_they_change(tmp_path, weakest, stops):
    model, steps = tiny_model(BertForSequenceClassification).train(), 12
    config = IMPConfig(
        sparsity_schedule=str(ONE_HEAD_ONE_NEURON),
        strategy="heads+neurons",
        early_bird=True,
        early_bird_interval=2,
        early_bird_patience=2,
        early_bird_threshold=0.1,
    )
    manager = IMPManager(model, config, tmp_path)
    for rnd in manager.rounds(total_steps=steps):
        for step in range(1, steps + 1 if rnd.index == 0 else 1):
            set_weakest(model, *weakest(step // 2))  # "training": which units are weakest at this check
            manager.apply_masks()
            if rnd.should_stop:
                break
        rnd.finish({"eval_accuracy": 0.5})
    row = manager.results["rounds"][0]
    head, neuron = weakest(row["train_steps"] // 2)  # the round prunes what is weakest where it stopped
    assert pruned_units(manager.round_ticket(1)) == ({head}, {neuron})
    # Checks at steps 2, 4, ...: a distance from the second on, recorded in the round's row.
    distances = row["early_bird_distances"]
    if stops:
        assert distances == [[4, 0.0], [6, 0.0]] and row["early_bird_stopped"] and row["train_steps"] == 6
    else:
        # Each check swaps one unit of two: half of the units to prune changed, a head or a neuron alike.
        assert distances == [[s, 0.5] for s in range(4, steps + 1, 2)]
        assert not row["early_bird_stopped"] and row["train_steps"] == steps
    assert json.loads((tmp_path / "round_00" / "metrics.json").read_text())["early_bird_distances"] == distances


def test_counted_in_weights_a_swapped_neuron_would_have_stopped_the_round():
    from hf_tickets.core.strategies import weight_distance

    tickets = []
    for neuron in ((1, 5), (0, 7)):
        model = tiny_model(BertForSequenceClassification)
        set_weakest(model, (0, 1), neuron)
        tickets.append(prune(model, ONE_HEAD_ONE_NEURON, strategy="heads+neurons"))
    assert pruned_units(tickets[0]) == ({(0, 1)}, {(1, 5)}) and pruned_units(tickets[1]) == ({(0, 1)}, {(0, 7)})
    # 2 x 64 of the 2 x 2112 weights to prune: 3%, under the threshold, though a unit of two changed.
    assert weight_distance(tickets[0].masks, tickets[1].masks, None) == pytest.approx(128 / 4224)
