"""``IMPConfig``: the settings of a ticket search, validated up front (plain types, for ``HfArgumentParser``)."""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from typing import Any

from hf_tickets.core.errors import TicketError
from hf_tickets.core.schedules import imp_schedule
from hf_tickets.core.strategies import STRATEGIES, get_strategy
from hf_tickets.core.structured import GRANULARITIES, HEAD_TARGETS, NEURON_TARGETS, granularity_of

#: What IMPManager matches on when the config names no metric (the recipes name the task's).
DEFAULT_MATCHING_METRIC = "eval_accuracy"
BASELINES = ("none", "random_pruning", "random_reinit", "standard_pruning")
#: How a structured strategy scores a head or neuron: mean |w| of its weights, or its importance on training
#: batches (hf_tickets.training.importance: Michel et al. 2019, Prasanna et al. 2020).
UNIT_SCORES = ("magnitude", "importance")
#: ticket_granularity -> (default strategy, default targets). Heads or neurons alone prune only their units'
#: matrices, so target_sparsity is the fraction of heads or neurons (on "auto" a head strategy would stop near 1/3).
GRANULARITY_DEFAULTS = {
    "weights": ("global_magnitude", "auto"),
    "heads": ("heads", HEAD_TARGETS),
    "neurons": ("neurons", NEURON_TARGETS),
    "heads+neurons": ("heads+neurons", "auto"),
}
#: Settings a resumed run must share with the run in output_dir: they change what a round computes. The
#: schedule itself is checked round by round (so imp_rounds/target_sparsity may extend an unfinished run).
#: ticket_granularity is not listed: it only chooses the strategy and targets, which are.
IDENTITY = (
    "prune_fraction",
    "sparsity_schedule",
    "baseline",
    "rewind",
    "rewind_steps",
    "strategy",
    "targets",
    "imp_seed",
    "reference_dir",
    "early_bird",
    "early_bird_threshold",
    "early_bird_patience",
    "early_bird_interval",
    "unit_score",
    "importance_batches",
)


@dataclass
class IMPConfig:
    """How to search for a ticket. Plain types only: recipes parse it with ``HfArgumentParser``."""

    imp_rounds: int | None = field(
        default=None,
        metadata={"help": "Pruning rounds after the full model (round 0); default: until target_sparsity."},
    )
    target_sparsity: float = field(
        default=0.9, metadata={"help": "Stop once this sparsity is reached (the last round prunes just up to it)."}
    )
    prune_fraction: float = field(
        default=0.1,
        metadata={"help": "Share of the REMAINING weights pruned per round (paper: 0.1 -> 0.1, 0.19, 0.271, ...)."},
    )
    sparsity_schedule: str | None = field(
        default=None,
        metadata={
            "help": "Explicit sparsities, e.g. '0.1,0.2,...,0.9' (the paper's code); overrides prune_fraction "
            "and target_sparsity."
        },
    )
    rewind: str = field(
        default="init",
        metadata={
            "help": "Rewind surviving weights to θ0 ('init') or to θ_i after rewind_steps steps of round 0 ('step').",
            "choices": ["init", "step"],
        },
    )
    rewind_steps: int = field(default=0, metadata={"help": "i for rewind='step'."})
    ticket_granularity: str | None = field(
        default=None,
        metadata={
            "help": "What a round prunes: single weights (the paper's), whole attention heads, whole FFN neurons, or "
            "both. Chooses --strategy (weights: global_magnitude; else the structured strategy of that name) unless "
            "given; with heads or neurons, --targets defaults to those units' matrices, so --target_sparsity is the "
            "fraction of heads or neurons pruned. Default: what --strategy prunes (weights).",
            "choices": list(GRANULARITIES),
        },
    )
    strategy: str | None = field(
        default=None,
        metadata={
            "help": "Pruning strategy. Default: the --ticket_granularity's (global_magnitude, the paper's, for "
            "weights). layerwise_heads / layerwise_neurons prune the same number of units in every layer."
        },
    )
    targets: str | None = field(
        default=None,
        metadata={
            "help": "Which weights to prune: a preset (auto = encoder linears), a regex or module names. Default: "
            "auto; with --ticket_granularity heads or neurons, only those units' matrices."
        },
    )
    unit_score: str = field(
        default="magnitude",
        metadata={
            "help": "Structured strategies only: rank heads and neurons by the mean magnitude of their weights, or by "
            "their importance on training data, sum over --importance_batches batches of |dL/d gate| (Michel et al. "
            "2019), computed from each round's trained weights (extra forward+backward passes per round).",
            "choices": list(UNIT_SCORES),
        },
    )
    importance_batches: int = field(
        default=32,
        metadata={"help": "unit_score=importance: training batches scored per round (the same ones every run)."},
    )
    baseline: str = field(
        default="none",
        metadata={
            "help": "none (IMP), random_pruning, random_reinit (needs reference_dir) or standard_pruning.",
            "choices": list(BASELINES),
        },
    )
    reference_dir: str | None = field(
        default=None, metadata={"help": "random_reinit: output_dir of the IMP run whose masks are reused."}
    )
    early_bird: bool = field(
        default=False, metadata={"help": "Stop a round early once the mask pruning would produce has stopped changing."}
    )
    early_bird_threshold: float = field(
        default=0.1,
        metadata={
            "help": "Early-bird: 'unchanged' = less than this share of the weights to prune changed since the "
            "last check (of the heads and neurons to prune, for a structured strategy: EarlyBERT)."
        },
    )
    early_bird_patience: int = field(
        default=2, metadata={"help": "Early-bird: consecutive checks below the threshold before stopping."}
    )
    early_bird_interval: int = field(default=10, metadata={"help": "Early-bird: optimizer steps between checks."})
    stop_when_not_matching: bool = field(
        default=False, metadata={"help": "Stop after the first round whose score leaves the matching band."}
    )
    matching_metric: str | None = field(
        default=None,
        metadata={
            "help": "Metric that decides matching; default: the task's main metric in the recipes (e.g. eval_f1 for "
            "SQuAD), eval_accuracy for IMPManager used directly."
        },
    )
    matching_tolerance: float | None = field(
        default=None,
        metadata={
            "help": "Matching band below the full model's score; default full_model_std, else 1%% of the full score."
        },
    )
    full_model_std: float | None = field(
        default=None, metadata={"help": "Std of the full model's score over seeds (the paper's band)."}
    )
    matching_greater_is_better: bool | None = field(
        default=None, metadata={"help": "Default: True unless the metric name contains 'loss'."}
    )
    imp_seed: int = field(
        default=42,
        metadata={"help": "Seed set at the start of every round; also seeds random pruning and re-initialisation."},
    )

    def __post_init__(self):
        self.schedule()  # validates imp_rounds, prune_fraction, target_sparsity, sparsity_schedule
        if self.rewind not in ("init", "step"):
            raise TicketError(f"rewind must be 'init' or 'step', got {self.rewind!r}")
        if isinstance(self.rewind_steps, bool) or not isinstance(self.rewind_steps, int) or self.rewind_steps < 0:
            raise TicketError(f"rewind_steps must be a whole number >= 0, got {self.rewind_steps!r}")
        if (self.rewind == "step") != (self.rewind_steps > 0):
            raise TicketError("rewind='step' needs rewind_steps > 0, and rewind_steps > 0 needs rewind='step'")
        self._resolve_granularity()
        if self.baseline not in BASELINES:
            raise TicketError(f"unknown baseline {self.baseline!r}; choose one of {', '.join(BASELINES)}")
        if (self.baseline == "random_reinit") != (self.reference_dir is not None):
            raise TicketError(
                "baseline='random_reinit' needs reference_dir (the IMP run whose masks it reuses), and only it uses one"
            )
        if self.baseline == "standard_pruning" and self.rewind != "init":
            raise TicketError("standard_pruning never rewinds: leave rewind='init', rewind_steps=0")
        if self.baseline == "random_pruning" and self.granularity != "weights":
            raise TicketError(
                f"baseline='random_pruning' prunes random single weights: it has no --ticket_granularity "
                f"{self.granularity} version (--strategy {self.strategy})"
            )
        if self.early_bird and self.baseline in ("random_pruning", "random_reinit"):
            raise TicketError(
                f"early_bird watches the magnitude mask converge; {self.baseline} masks do not depend on training"
            )
        self._check_unit_score()
        if not 0.0 < self.early_bird_threshold <= 1.0:
            raise TicketError(f"early_bird_threshold must be in (0, 1], got {self.early_bird_threshold}")
        if self.early_bird_patience < 1 or self.early_bird_interval < 1:
            raise TicketError("early_bird_patience and early_bird_interval must be >= 1")
        if self.matching_metric is not None and not (isinstance(self.matching_metric, str) and self.matching_metric):
            raise TicketError(
                f"matching_metric must be a metric name such as 'eval_accuracy', got {self.matching_metric!r}"
            )
        for name in ("matching_tolerance", "full_model_std"):
            if getattr(self, name) is not None and not getattr(self, name) >= 0:
                raise TicketError(f"{name} must be >= 0, got {getattr(self, name)}")

    def _check_unit_score(self) -> None:
        if self.unit_score not in UNIT_SCORES:
            raise TicketError(f"unknown unit_score {self.unit_score!r}; choose one of {', '.join(UNIT_SCORES)}")
        batches = self.importance_batches
        if isinstance(batches, bool) or not isinstance(batches, int) or batches < 1:
            raise TicketError(f"importance_batches must be a whole number >= 1, got {batches!r}")
        if self.unit_score == "magnitude":
            return
        if self.granularity == "weights":
            raise TicketError(
                f"unit_score='importance' scores whole heads and neurons; --strategy {self.strategy} prunes single "
                "weights: pass --ticket_granularity heads, neurons or heads+neurons"
            )
        if self.baseline == "random_reinit":
            raise TicketError("random_reinit reuses the reference run's masks: it scores nothing, leave unit_score")
        if self.early_bird:
            raise TicketError(
                "early_bird with unit_score='importance' is not supported: every check would cost "
                "importance_batches forward+backward passes, and early bird watches the magnitude mask"
            )

    def identity(self) -> dict[str, Any]:
        """The settings of ``IDENTITY`` this run's rounds depend on.

        With the magnitude score the importance settings are left out: runs recorded before they existed
        (which scored by magnitude) still resume, and importance_batches changes nothing then.
        """
        values = {k: v for k, v in self.to_dict().items() if k in IDENTITY}
        if self.unit_score == "magnitude":
            del values["unit_score"], values["importance_batches"]
        return values

    def _resolve_granularity(self) -> None:
        """Fill strategy and targets from ticket_granularity; refuse a strategy of another granularity.

        ticket_granularity stays as given (None: not asked for), so ``dataclasses.replace(config, strategy=...)``
        works on a resolved config; ``granularity`` is what the strategy prunes either way.
        """
        given = self.ticket_granularity
        if given is not None and given not in GRANULARITIES:
            raise TicketError(f"unknown ticket_granularity {given!r}; choose one of {', '.join(GRANULARITIES)}")
        if self.strategy is None:
            self.strategy = GRANULARITY_DEFAULTS[given or "weights"][0]
        get_strategy(self.strategy)
        if given is not None and given != self.granularity:
            fitting = [name for name in sorted(STRATEGIES) if granularity_of(name) == given]
            raise TicketError(
                f"--ticket_granularity {given} contradicts --strategy {self.strategy}, which prunes "
                f"{'single weights' if self.granularity == 'weights' else 'whole ' + self.granularity}: leave "
                f"--strategy out or pass one of {', '.join(fitting)}"
            )
        if self.targets is None:  # --strategy alone keeps prune()'s default targets, as before the granularity
            self.targets = GRANULARITY_DEFAULTS[given][1] if given else "auto"

    @property
    def granularity(self) -> str:
        """What a round prunes: ``"weights"``, ``"heads"``, ``"neurons"`` or ``"heads+neurons"`` (from the strategy)."""
        return granularity_of(self.strategy)

    def schedule(self) -> list[float]:
        """Sparsity of every round, round 0 (0.0) first."""
        return imp_schedule(self.prune_fraction, self.target_sparsity, self.imp_rounds, self.sparsity_schedule)

    def to_dict(self) -> dict[str, Any]:
        return json.loads(json.dumps(asdict(self)))
