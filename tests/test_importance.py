"""Importance unit scores (Michel et al. 2019): the gate algebra, prune(scores=), IMP with unit_score="importance"."""

import pytest
import torch
from imp_kill_script import token_five_data
from tiny import tiny_model
from torch.utils.data import DataLoader
from transformers import BertForSequenceClassification

from hf_tickets import IMPConfig, IMPManager, TicketError, prune
from hf_tickets.core.structured import NEURON_TARGETS
from hf_tickets.training.imp.trainer_glue import importance_batches
from hf_tickets.training.importance import unit_importance

HEADS, HIDDEN, FFN, LAYERS = 2, 32, 64, 2  # tests/tiny.py
HEAD_DIM = HIDDEN // HEADS
HEAD_SIZE = 4 * HEAD_DIM * HIDDEN
NEURON_SIZE = 2 * HIDDEN


def batches(n: int = 3, size: int = 4, seed: int = 0) -> list[dict]:
    g = torch.Generator().manual_seed(seed)
    ids = [torch.randint(5, 99, (size, 10), generator=g) for _ in range(n)]
    return [{"input_ids": x, "labels": torch.randint(0, 2, (size,), generator=g)} for x in ids]


def gate_importance(model, data, module_name: str, columns: slice) -> float:
    """Σ_batches |∂L/∂ξ|, ξ = 1 an explicit gate on the unit's output (``columns`` of ``module_name``'s input)."""
    module = model.get_submodule(module_name)
    total = 0.0
    for batch in data:
        gate = torch.ones((), requires_grad=True)

        def hook(_, args):
            unit = torch.zeros(args[0].shape[-1], dtype=torch.bool)
            unit[columns] = True
            return (args[0] * torch.where(unit, gate, torch.ones(())),)

        handle = module.register_forward_pre_hook(hook)
        try:
            (grad,) = torch.autograd.grad(model(**batch).loss, [gate])
        finally:
            handle.remove()
        total += abs(float(grad))
    return total


@pytest.mark.parametrize("layer, head", [(0, 1), (1, 0)])
def test_a_heads_importance_is_the_gradient_of_a_gate_on_its_output(layer, head):
    model = tiny_model(BertForSequenceClassification)
    data = batches()
    scores = unit_importance(model, data)
    cols = slice(head * HEAD_DIM, (head + 1) * HEAD_DIM)
    expected = gate_importance(model, data, f"bert.encoder.layer.{layer}.attention.output.dense", cols)
    prefix = f"encoder.layer.{layer}."
    for name, rows, c in [
        (prefix + "attention.self.query.weight", cols, slice(None)),
        (prefix + "attention.self.value.weight", cols, slice(None)),
        (prefix + "attention.output.dense.weight", slice(None), cols),
    ]:
        values = scores[name][rows, c]
        assert torch.allclose(values, torch.full_like(values, expected / HEAD_SIZE), rtol=1e-4, atol=1e-9), name
    assert expected > 0


@pytest.mark.parametrize("layer, neuron", [(0, 3), (1, 60)])
def test_a_neurons_importance_is_the_gradient_of_a_gate_on_its_output(layer, neuron):
    model = tiny_model(BertForSequenceClassification)
    data = batches()
    scores = unit_importance(model, data)
    expected = gate_importance(model, data, f"bert.encoder.layer.{layer}.output.dense", slice(neuron, neuron + 1))
    prefix = f"encoder.layer.{layer}."
    row = scores[prefix + "intermediate.dense.weight"][neuron]
    column = scores[prefix + "output.dense.weight"][:, neuron]
    for values in (row, column):
        assert torch.allclose(values, torch.full_like(values, expected / NEURON_SIZE), rtol=1e-4, atol=1e-10)
    assert expected > 0


def test_scoring_leaves_the_models_grads_modes_and_frozen_weights_as_they_were():
    model = tiny_model(BertForSequenceClassification).train()
    model.bert.encoder.layer[0].output.dense.weight.requires_grad_(False)
    model(**batches(1)[0]).loss.backward()
    grads = {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}
    scores = unit_importance(model, batches())
    assert model.training and all(m.training for m in model.modules())
    assert not model.bert.encoder.layer[0].output.dense.weight.requires_grad
    assert {n: p.grad for n, p in model.named_parameters() if p.grad is not None}.keys() == grads.keys()
    assert all(torch.equal(p.grad, grads[n]) for n, p in model.named_parameters() if p.grad is not None)
    assert scores["encoder.layer.0.intermediate.dense.weight"].sum() > 0  # the frozen layer is scored too
    again = tiny_model(BertForSequenceClassification)  # eval mode: no dropout, the same scores
    assert all(torch.equal(scores[n], s) for n, s in unit_importance(again, batches()).items())


def test_a_pruned_unit_scores_zero_and_targets_outside_units_score_zero():
    model = tiny_model(BertForSequenceClassification)
    with torch.no_grad():
        model.bert.encoder.layer[1].output.dense.weight[:, 7] = 0  # neuron 7's output column, as a mask leaves it
    scores = unit_importance(model, batches(), targets="encoder+pooler", kinds=("neuron",))
    assert not scores["encoder.layer.1.output.dense.weight"][:, 7].any()
    assert scores["encoder.layer.1.output.dense.weight"][:, 6].all()
    assert not scores["pooler.dense.weight"].any() and not scores["encoder.layer.0.attention.self.query.weight"].any()


# ------------------------------------------------------------------ prune(scores=)
def neuron_slices(layer: int, j: int) -> list:
    prefix = f"bert.encoder.layer.{layer}."
    return [(prefix + "intermediate.dense.weight", j, slice(None)), (prefix + "output.dense.weight", slice(None), j)]


def pruned_neurons(ticket) -> set:
    return {
        (i, j)
        for i in range(LAYERS)
        for j in range(FFN)
        if not ticket.masks[f"encoder.layer.{i}.intermediate.dense.weight"][j].any()
    }


def test_prune_with_importance_scores_removes_the_unit_magnitude_keeps():
    """Neuron (1, 5): ten times the weights into it, none out of it. Magnitude ranks it high; it changes nothing."""
    model = tiny_model(BertForSequenceClassification)
    with torch.no_grad():
        (into, rows, cols), (out, o_rows, o_cols) = neuron_slices(1, 5)
        model.get_parameter(into)[rows, cols] *= 10
        model.get_parameter(out)[o_rows, o_cols] = 0
    one = NEURON_SIZE / (LAYERS * 2 * HIDDEN * FFN)  # one neuron's share of the neuron targets
    targets = NEURON_TARGETS
    by_magnitude = prune(model, one, strategy="neurons", targets=targets)
    scores = unit_importance(model, batches(), targets=targets, kinds=("neuron",))
    by_importance = prune(model, one, strategy="neurons", targets=targets, scores=scores)
    assert pruned_neurons(by_importance) == {(1, 5)}
    assert len(pruned_neurons(by_magnitude)) == 1 and (1, 5) not in pruned_neurons(by_magnitude)
    # Ten neurons: the ten lowest importances, whatever their magnitudes.
    ten = prune(model, 10 * one, strategy="neurons", targets=targets, scores=scores)
    per_neuron = {(i, j): float(scores[f"encoder.layer.{i}.output.dense.weight"][0, j]) for i, j in pruned_neurons(ten)}
    all_neurons = sorted(
        float(scores[f"encoder.layer.{i}.output.dense.weight"][0, j]) for i in range(2) for j in range(FFN)
    )
    assert len(per_neuron) == 10 and sorted(per_neuron.values()) == all_neurons[:10]


def test_global_magnitude_with_scores_prunes_the_lowest_scores():
    model = tiny_model(BertForSequenceClassification)
    scores = {n: torch.ones(m.shape) for n, m in prune(model, 0.0).masks.items()}
    scores["encoder.layer.0.attention.self.key.weight"][3, :4] = 0.5
    ticket = prune(model, 4 / sum(s.numel() for s in scores.values()), scores=scores)
    assert ticket.num_pruned == 4
    assert not ticket.masks["encoder.layer.0.attention.self.key.weight"][3, :4].any()


@pytest.mark.parametrize(
    "change, message",
    [
        (lambda s: s.pop("encoder.layer.1.output.dense.weight"), "lack target weight 'encoder.layer.1.output.dense"),
        (
            lambda s: s.update({"bert.pooler.dense.weight": torch.ones(32, 32)}),
            "'bert.pooler.dense.weight', which is not",
        ),
        (lambda s: s.update({"encoder.layer.0.output.dense.weight": torch.ones(32, 63)}), r"shape \(32, 64\)"),
        (lambda s: s["encoder.layer.0.output.dense.weight"].__setitem__((0, 0), -1.0), "non-negative"),
        (lambda s: s["encoder.layer.0.output.dense.weight"].__setitem__((0, 0), float("nan")), "finite"),
    ],
)
def test_scores_are_checked_and_the_tensor_named(change, message):
    model = tiny_model(BertForSequenceClassification)
    scores = {n: torch.ones(m.shape) for n, m in prune(model, 0.0).masks.items()}
    change(scores)
    with pytest.raises(TicketError, match=message):
        prune(model, 0.3, strategy="heads+neurons", scores=scores)


# ------------------------------------------------------------------ IMP
@pytest.mark.parametrize(
    "kwargs, message",
    [
        (dict(unit_score="gradient"), "unknown unit_score"),
        (dict(unit_score="importance"), "scores whole heads and neurons.*global_magnitude"),
        (dict(unit_score="importance", strategy="heads+neurons", importance_batches=0), "importance_batches"),
        (dict(unit_score="importance", strategy="neurons", early_bird=True), "early_bird"),
        (dict(unit_score="importance", strategy="heads", baseline="random_reinit", reference_dir="x"), "random_reinit"),
    ],
)
def test_importance_config_refusals(kwargs, message):
    with pytest.raises(TicketError, match=message):
        IMPConfig(**kwargs)


def test_importance_settings_join_the_identity_only_when_used():
    magnitude = IMPConfig(strategy="heads+neurons").identity()
    assert "unit_score" not in magnitude and "importance_batches" not in magnitude  # older runs still resume
    importance = IMPConfig(strategy="heads+neurons", unit_score="importance", importance_batches=4).identity()
    assert (importance["unit_score"], importance["importance_batches"]) == ("importance", 4)
    assert IMPConfig(ticket_granularity="neurons", unit_score="importance", baseline="standard_pruning")


def plain_run(out, unit_score: str, pass_batches: bool = True):
    model = tiny_model(BertForSequenceClassification).train()
    config = IMPConfig(imp_rounds=1, strategy="heads+neurons", unit_score=unit_score, importance_batches=2, imp_seed=0)
    manager = IMPManager(model, config, out)
    data = token_five_data(32, seed=0)
    for rnd in manager.rounds():
        optimizer = torch.optim.AdamW(model.parameters(), lr=3e-3)
        for ids, labels in DataLoader(data, batch_size=8):
            model(input_ids=ids, labels=labels).loss.backward()
            optimizer.step()
            optimizer.zero_grad()
            manager.apply_masks()
        loader = ({"input_ids": ids, "labels": labels} for ids, labels in DataLoader(data, batch_size=8))
        rnd.finish({"eval_accuracy": 0.5}, batches=loader if pass_batches else None)
    return manager


def test_a_plain_loop_passes_its_batches_to_finish_and_is_told_when_it_must_not(tmp_path):
    with pytest.raises(TicketError, match=r"round.finish\(metrics, batches=...\)"):
        plain_run(tmp_path / "none", "importance", pass_batches=False)
    with pytest.raises(TicketError, match="scores by magnitude"):
        plain_run(tmp_path / "magnitude", "magnitude")
    manager = plain_run(tmp_path / "importance", "importance")
    assert manager.done and manager.round_ticket(1).num_pruned > 0
    assert manager.round_ticket(1).config.provenance["unit_score"] == "importance (2 batches)"


class DictData(torch.utils.data.Dataset):
    def __init__(self, data):
        self.ids, self.labels = data.tensors

    def __len__(self):
        return len(self.labels)

    def __getitem__(self, i):
        return {"input_ids": self.ids[i], "labels": self.labels[i]}


def trainer_run(out, unit_score: str, replay: dict | None = None) -> IMPManager:
    """A one-pruning-round IMP with the Trainer; ``replay`` gets round 1's ticket pruned by hand from round 0's end."""
    from transformers import Trainer, TrainingArguments

    model = tiny_model(BertForSequenceClassification).train()
    config = IMPConfig(
        sparsity_schedule="0.3", strategy="heads+neurons", unit_score=unit_score, importance_batches=3, imp_seed=0
    )
    manager = IMPManager(model, config, out)

    def build(model, rnd):
        args = TrainingArguments(
            output_dir=str(rnd.checkpoint_dir), use_cpu=True, report_to=[], max_steps=4, learning_rate=3e-3,
            per_device_train_batch_size=8, save_strategy="no", disable_tqdm=True, seed=0,
        )  # fmt: skip
        return Trainer(model=model, args=args, train_dataset=DictData(token_five_data(64, seed=0)))

    def evaluate(trainer):
        if replay is not None and manager.current_round.index == 0:  # the model holds round 0's trained weights
            rnd = manager.current_round
            batches = importance_batches(trainer, config)
            assert all(
                torch.equal(a["input_ids"], b["input_ids"])
                for a, b in zip(batches, importance_batches(trainer, config))
            )
            scores = unit_importance(model, batches, targets=rnd.ticket.config.targets)
            replay["ticket"] = prune(
                model, rnd.next_sparsity, strategy="heads+neurons", ticket=rnd.ticket, scores=scores
            )
        return {"eval_accuracy": 0.5}

    manager.run_with_trainer(build, evaluate)
    return manager


def test_imp_with_the_trainer_prunes_by_importance_repeatably(tmp_path):
    replay = {}
    importance = trainer_run(tmp_path / "importance", "importance", replay)
    magnitude = trainer_run(tmp_path / "magnitude", "magnitude")
    again = trainer_run(tmp_path / "again", "importance")
    ticket = importance.round_ticket(1)
    assert ticket.equals(replay["ticket"])  # the importance of 3 seeded training batches, pruned by the strategy
    assert not ticket.equals(magnitude.round_ticket(1))
    assert ticket.equals(again.round_ticket(1))  # same batches, same scores, same masks
    with pytest.raises(TicketError, match="unit_score"):  # part of the run's identity
        IMPManager(tiny_model(BertForSequenceClassification), magnitude.config, tmp_path / "importance")
