"""A faithful θ0 for masked-language-modelling tickets when the checkpoint ships no MLM head.

Many encoders on the Hub (sentence-transformers' MiniLM among them) are saved without BERT's
``cls.predictions`` head. ``AutoModelForMaskedLM`` then initialises that head at random, and an IMP
search from there finds a ticket for *training the head* more than for the pre-trained encoder. The
fix is to calibrate the head first: train the head alone, the encoder frozen (its weights stay
bit-identical), until masked-token accuracy stops improving. θ0 for the search is then the
pre-trained encoder plus the calibrated head, and IMP's rewinding restores that head too (θ0 is
whatever the model holds when ``IMPManager`` starts, so calibrate before creating it).

The stock ``Trainer`` does the training (its optimizer takes only parameters with
``requires_grad``); a callback scores fixed masked blocks every ``eval_every`` steps and stops the
training once the accuracy has plateaued. The curve is returned and goes into the ticket's provenance.
"""

from __future__ import annotations

import dataclasses
import logging
from dataclasses import dataclass, field
from pathlib import Path

import torch
from transformers import AutoModelForMaskedLM, DataCollatorForLanguageModeling, Trainer, TrainerCallback

from hf_tickets.core.atomic_files import atomic_write_json
from hf_tickets.core.errors import TicketError

logger = logging.getLogger(__name__)

#: Steps used when a checkpoint without an MLM head is calibrated and the user asked for no number.
DEFAULT_CALIBRATION_STEPS = 500
#: Plateau: the best accuracy improved by less than MIN_DELTA over the last PATIENCE evaluations, judged
#: after MIN_SHARE of the steps at the earliest (the first steps warm the learning rate up).
MIN_DELTA, PATIENCE, MIN_SHARE = 0.002, 3, 0.25
#: A head trained alone on a frozen encoder takes a larger step than fine-tuning the whole model: on MiniLM
#: (WikiText-2, batch 16) 5e-3 reached in 25 steps the masked-token accuracy 1e-3 had after 60.
HEAD_LEARNING_RATE = 5e-3
CALIBRATION_FILE = "head_calibration.json"


@dataclass
class HeadCalibration:
    """What calibrating the MLM head did: the curve of masked-token accuracy and where it stopped."""

    steps: int
    curve: list[dict] = field(default_factory=list)  # {"step", "accuracy", "loss"}, step 0 = before training
    plateaued: bool = False
    trained_parameters: list[str] = field(default_factory=list)
    learning_rate: float | None = None

    @property
    def initial_accuracy(self) -> float | None:
        return self.curve[0]["accuracy"] if self.curve else None

    @property
    def final_accuracy(self) -> float | None:
        return self.curve[-1]["accuracy"] if self.curve else None

    def to_provenance(self) -> dict:
        """The record kept in a ticket's provenance: steps, final accuracy and a summary of the curve."""
        return {
            "steps": self.steps,
            "plateaued": self.plateaued,
            "learning_rate": self.learning_rate,
            "initial_masked_token_accuracy": self.initial_accuracy,
            "final_masked_token_accuracy": self.final_accuracy,
            "curve": [[p["step"], round(p["accuracy"], 4)] for p in self.curve],
            "trained_parameters": len(self.trained_parameters),
        }

    def save(self, path: str | Path) -> Path:
        return atomic_write_json(path, dataclasses.asdict(self))

    @classmethod
    def load(cls, path: str | Path) -> HeadCalibration:
        import json

        path = Path(path)
        try:
            data = json.loads(path.read_text())
            return cls(**data)
        except (OSError, ValueError, TypeError) as exc:
            raise TicketError(f"{path}: not a head-calibration record ({exc})") from exc


# ----------------------------------------------------------------------------- detection
def missing_mlm_head_keys(model_name_or_path: str, **from_pretrained_kwargs) -> list[str]:
    """The MLM head's weights the checkpoint does not have (empty: it ships a pre-trained head).

    Read from ``from_pretrained``'s loading info: keys the model expects and the checkpoint lacks,
    outside the encoder (``base_model_prefix``).
    """
    model, info = AutoModelForMaskedLM.from_pretrained(
        model_name_or_path, output_loading_info=True, **from_pretrained_kwargs
    )
    prefix = model.base_model_prefix + "."
    return sorted(k for k in info.get("missing_keys", []) if not k.startswith(prefix))


def resolve_calibration_steps(requested: int | None, model_name_or_path: str, **from_pretrained_kwargs) -> int:
    """Steps to calibrate: the user's number, else ``DEFAULT_CALIBRATION_STEPS`` if the checkpoint has
    no MLM head (logged), else 0. ``requested=0`` turns calibration off."""
    if requested is not None:
        if requested < 0:
            raise TicketError(f"calibrate_head_steps must be >= 0, got {requested}")
        return requested
    missing = missing_mlm_head_keys(model_name_or_path, **from_pretrained_kwargs)
    if not missing:
        return 0
    logger.warning(
        "%s has no pre-trained MLM head (missing %s): calibrating a fresh head for up to %d steps, encoder "
        "frozen, before the search (pass --calibrate_head_steps 0 to skip)",
        model_name_or_path,
        ", ".join(missing[:3]) + (", ..." if len(missing) > 3 else ""),
        DEFAULT_CALIBRATION_STEPS,
    )
    return DEFAULT_CALIBRATION_STEPS


# ----------------------------------------------------------------------------- calibration
def head_parameter_names(model) -> list[str]:
    """Parameters outside the encoder. A decoder tied to the word embeddings is the encoder's tensor:
    ``named_parameters`` lists it once, under the embeddings, so it stays frozen."""
    prefix = model.base_model_prefix + "."
    return [name for name, _ in model.named_parameters() if not name.startswith(prefix)]


def fixed_masked_batches(eval_dataset, tokenizer, mlm_probability: float, seed: int, batch_size: int) -> list[dict]:
    """The evaluation blocks masked once (seeded), so every point of the curve scores the same masks."""
    collator = DataCollatorForLanguageModeling(tokenizer=tokenizer, mlm_probability=mlm_probability, seed=seed)
    columns = [
        c
        for c in ("input_ids", "attention_mask", "token_type_ids", "special_tokens_mask")
        if c in eval_dataset.column_names
    ]
    rows = [{c: eval_dataset[i][c] for c in columns} for i in range(len(eval_dataset))]
    return [collator(rows[i : i + batch_size]) for i in range(0, len(rows), batch_size)]


@torch.no_grad()
def masked_token_scores(model, batches: list[dict]) -> tuple[float, float]:
    """(accuracy, mean loss) over the masked positions of ``batches``."""
    was_training = model.training
    model.eval()
    correct = total = 0
    loss_sum = 0.0
    device = next(model.parameters()).device
    for batch in batches:
        batch = {k: v.to(device) for k, v in batch.items()}
        out = model(**batch)
        labels = batch["labels"]
        masked = labels != -100
        correct += int((out.logits.argmax(-1)[masked] == labels[masked]).sum())
        n = int(masked.sum())
        total += n
        loss_sum += float(out.loss) * n
    model.train(was_training)
    return (correct / total if total else 0.0), (loss_sum / total if total else 0.0)


class _CurveCallback(TrainerCallback):
    """Scores the fixed masked blocks every ``eval_every`` steps; stops training at a plateau."""

    def __init__(self, batches: list[dict], eval_every: int, min_delta: float, patience: int, min_steps: int):
        self.batches, self.eval_every, self.min_delta, self.patience = batches, eval_every, min_delta, patience
        self.min_steps = min_steps
        self.curve: list[dict] = []
        self.plateaued = False

    def _score(self, model, step: int) -> None:
        accuracy, loss = masked_token_scores(model, self.batches)
        self.curve.append({"step": step, "accuracy": accuracy, "loss": loss})
        logger.info("MLM head calibration, step %d: masked-token accuracy %.4f, loss %.3f", step, accuracy, loss)

    def on_train_begin(self, args, state, control, model=None, **kwargs):
        self._score(model, 0)

    def on_step_end(self, args, state, control, model=None, **kwargs):
        if state.global_step % self.eval_every and state.global_step != state.max_steps:
            return
        self._score(model, state.global_step)
        accuracies = [p["accuracy"] for p in self.curve]
        if len(accuracies) > self.patience and state.global_step >= self.min_steps:
            before = max(accuracies[: -self.patience])
            if max(accuracies[-self.patience :]) - before < self.min_delta:
                self.plateaued = True
                control.should_training_stop = True
                logger.info("MLM head calibration: accuracy plateaued at step %d", state.global_step)


def calibrate_mlm_head(
    model,
    train_dataset,
    eval_dataset,
    tokenizer,
    training_args,
    max_steps: int,
    eval_every: int | None = None,
    mlm_probability: float = 0.15,
    seed: int = 0,
    learning_rate: float = HEAD_LEARNING_RATE,
    min_delta: float = MIN_DELTA,
    patience: int = PATIENCE,
) -> HeadCalibration:
    """Train only the MLM head of ``model`` (in place) for up to ``max_steps`` steps; the encoder is frozen.

    ``training_args`` are the run's (batch size, seed, device; not its learning rate: ``learning_rate``,
    default ``HEAD_LEARNING_RATE``); calibration writes into
    ``<output_dir>/head_calibration`` and saves nothing but its record. Stops early once the masked-token
    accuracy on ``eval_dataset`` (masked once, seeded) has plateaued. Returns the curve.
    """
    if max_steps <= 0:
        raise TicketError(f"calibrate_mlm_head needs max_steps > 0, got {max_steps}")
    if eval_dataset is None or len(eval_dataset) == 0:
        raise TicketError("calibrate_mlm_head needs evaluation blocks to score the head (eval_dataset is empty)")
    head = set(head_parameter_names(model))
    if not head:
        raise TicketError(f"{type(model).__name__} has no parameters outside its encoder: no MLM head to calibrate")
    eval_every = eval_every or max(1, max_steps // 10)
    args = dataclasses.replace(
        training_args,
        output_dir=str(Path(training_args.output_dir) / "head_calibration"),
        max_steps=max_steps,
        num_train_epochs=1.0,
        learning_rate=learning_rate,
        eval_strategy="no",
        save_strategy="no",
        logging_strategy="no",
        load_best_model_at_end=False,
        report_to=[],
    )
    batches = fixed_masked_batches(
        eval_dataset, tokenizer, mlm_probability, seed, training_args.per_device_eval_batch_size
    )
    curve = _CurveCallback(batches, eval_every, min_delta, patience, min_steps=round(MIN_SHARE * max_steps))
    logger.info(
        "Calibrating the MLM head (%d tensors, encoder frozen) for up to %d steps at learning rate %g",
        len(head),
        max_steps,
        learning_rate,
    )
    frozen = {name: p.requires_grad for name, p in model.named_parameters()}
    for name, p in model.named_parameters():
        p.requires_grad_(name in head)
    try:
        trainer = Trainer(
            model=model,
            args=args,
            train_dataset=train_dataset,
            data_collator=DataCollatorForLanguageModeling(
                tokenizer=tokenizer, mlm_probability=mlm_probability, seed=seed
            ),
            callbacks=[curve],
        )
        result = trainer.train()
    finally:
        for name, p in model.named_parameters():
            p.requires_grad_(frozen[name])
    calibration = HeadCalibration(
        steps=result.global_step,
        curve=curve.curve,
        plateaued=curve.plateaued,
        trained_parameters=sorted(head),
        learning_rate=args.learning_rate,
    )
    logger.info(
        "MLM head calibrated in %d steps%s: masked-token accuracy %.4f -> %.4f",
        calibration.steps,
        " (plateau)" if calibration.plateaued else "",
        calibration.initial_accuracy,
        calibration.final_accuracy,
    )
    return calibration
