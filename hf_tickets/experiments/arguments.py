"""Command-line arguments of the recipes, named as in the Hugging Face example scripts.

``recipes/run_glue.py``, ``run_qa.py`` and ``run_mlm.py`` parse ``(ModelArguments, <data
arguments>, TrainingArguments, IMPConfig, TicketArguments)`` with ``HfArgumentParser``: every stock
flag and JSON config file keeps working, the IMP settings come as their own dataclass (the engine's
``IMPConfig``, parsed as is) and the transfer flags on top.
"""

from __future__ import annotations

from dataclasses import dataclass, field, fields

from hf_tickets.core.errors import TicketError
from hf_tickets.training.imp_config import IMPConfig

DTYPES = ["auto", "bfloat16", "float16", "float32"]


@dataclass
class ModelArguments:
    model_name_or_path: str = field(metadata={"help": "Pre-trained model name on the Hub or local path (θ0)."})
    config_name: str | None = field(default=None, metadata={"help": "Config name or path if not the model's."})
    tokenizer_name: str | None = field(default=None, metadata={"help": "Tokenizer name or path if not the model's."})
    cache_dir: str | None = field(default=None, metadata={"help": "Where to cache downloads from the Hub."})
    use_fast_tokenizer: bool = field(default=True, metadata={"help": "Use a fast (Rust) tokenizer."})
    model_revision: str = field(default="main", metadata={"help": "Model revision: branch, tag or commit id."})
    token: str | None = field(default=None, metadata={"help": "Hub token for private models."})
    trust_remote_code: bool = field(default=False, metadata={"help": "Allow custom model code from the Hub."})
    ignore_mismatched_sizes: bool = field(default=False, metadata={"help": "Allow a head of another size."})


@dataclass
class MLMModelArguments(ModelArguments):
    """``run_mlm.py``'s model flags: a model may also be built from a config (``--model_type``)."""

    model_name_or_path: str | None = field(
        default=None,
        metadata={"help": "Pre-trained model (θ0); leave unset to start from a fresh --model_type/--config_name."},
    )
    model_type: str | None = field(
        default=None, metadata={"help": "Model type of a model built from scratch (e.g. bert), without weights."}
    )
    config_overrides: str | None = field(
        default=None,
        metadata={
            "help": "Override config settings of a model built from scratch, e.g. 'hidden_size=64,num_hidden_layers=2'."
        },
    )
    dtype: str | None = field(
        default=None,
        metadata={"help": "Load the model in this dtype ('auto': the checkpoint's).", "choices": DTYPES},
    )
    torch_dtype: str | None = field(default=None, metadata={"help": "Deprecated alias of --dtype.", "choices": DTYPES})
    low_cpu_mem_usage: bool = field(
        default=False, metadata={"help": "Load the weights without first building a randomly initialised model."}
    )

    def __post_init__(self):
        if self.torch_dtype is not None:
            if self.dtype is not None and self.dtype != self.torch_dtype:
                raise ValueError(
                    f"--torch_dtype {self.torch_dtype} contradicts --dtype {self.dtype}; pass --dtype only"
                )
            self.dtype = self.torch_dtype
        if self.config_overrides is not None and (self.config_name is not None or self.model_name_or_path is not None):
            raise ValueError(
                "--config_overrides can't be used in combination with --config_name or --model_name_or_path"
            )
        if self.model_name_or_path is None and self.config_name is None and self.model_type is None:
            raise ValueError(
                "Need a --model_name_or_path, or a --model_type/--config_name to build a model from scratch"
            )
        if self.model_name_or_path is None and self.tokenizer_name is None:
            raise ValueError("A model built from scratch needs a --tokenizer_name (this recipe trains no tokenizer)")


@dataclass
class DataArguments:
    """The data flags every stock script shares (also what the demo and ``hf-tickets transfer`` set)."""

    dataset_name: str | None = field(default=None, metadata={"help": "Dataset name on the Hub."})
    dataset_config_name: str | None = field(default=None, metadata={"help": "Dataset configuration name."})
    train_file: str | None = field(default=None, metadata={"help": "Local training file."})
    validation_file: str | None = field(default=None, metadata={"help": "Local evaluation file."})
    max_seq_length: int | None = field(default=None, metadata={"help": "Maximum tokens per input after tokenization."})
    overwrite_cache: bool = field(default=False, metadata={"help": "Recompute the preprocessed datasets."})
    pad_to_max_length: bool = field(
        default=True, metadata={"help": "Pad every input to max_seq_length (else per batch)."}
    )
    max_train_samples: int | None = field(
        default=None, metadata={"help": "Truncate the training set (debugging, quick runs)."}
    )
    max_eval_samples: int | None = field(default=None, metadata={"help": "Truncate the evaluation set."})
    preprocessing_num_workers: int | None = field(default=None, metadata={"help": "Processes for preprocessing."})


@dataclass
class GlueDataArguments(DataArguments):
    task_name: str | None = field(
        default=None, metadata={"help": "GLUE task: cola, sst2, mrpc, stsb, qqp, mnli, qnli, rte, wnli."}
    )
    test_file: str | None = field(default=None, metadata={"help": "Local test file."})
    validation_mismatched_file: str | None = field(default=None, metadata={"help": "MNLI dev_mismatched file."})
    max_predict_samples: int | None = field(default=None, metadata={"help": "Truncate the prediction set."})

    def __post_init__(self):
        if self.max_seq_length is None:
            self.max_seq_length = 128
        if self.task_name is None and self.dataset_name is None and self.train_file is None:
            raise ValueError("Need a --task_name, a --dataset_name or a --train_file/--validation_file.")
        if self.task_name is not None:
            self.task_name = self.task_name.lower()


@dataclass
class QADataArguments(DataArguments):
    test_file: str | None = field(default=None, metadata={"help": "Local test file (--do_predict)."})
    max_predict_samples: int | None = field(default=None, metadata={"help": "Truncate the prediction set."})
    doc_stride: int = field(default=128, metadata={"help": "Overlap between windows of a long context."})
    n_best_size: int = field(default=20, metadata={"help": "Start/end candidates considered per window."})
    max_answer_length: int = field(default=30, metadata={"help": "Longest answer, in tokens."})
    version_2_with_negative: bool = field(
        default=False, metadata={"help": "SQuAD v2.0: some questions have no answer (official v2.0 metrics)."}
    )
    null_score_diff_threshold: float = field(
        default=0.0,
        metadata={"help": "SQuAD v2.0: answer nothing when the null score beats the best span's by more than this."},
    )

    def __post_init__(self):
        if self.max_seq_length is None:
            self.max_seq_length = 384
        if (
            self.dataset_name is None
            and self.train_file is None
            and self.validation_file is None
            and (self.test_file is None)
        ):
            raise TicketError("Need a --dataset_name or a --train_file/--validation_file/--test_file (SQuAD JSON).")
        for flag in ("train_file", "validation_file", "test_file"):
            path = getattr(self, flag)
            if path is not None and not str(path).endswith((".json", ".jsonl")):
                raise TicketError(f"--{flag} {path}: SQuAD files must be .json or .jsonl (csv is not read)")
        for flag in ("n_best_size", "max_answer_length", "doc_stride"):
            if getattr(self, flag) < 1:
                raise TicketError(f"--{flag} must be at least 1, got {getattr(self, flag)}")
        if self.null_score_diff_threshold != 0.0 and not self.version_2_with_negative:
            raise TicketError("--null_score_diff_threshold only applies with --version_2_with_negative")


@dataclass
class MLMDataArguments(DataArguments):
    validation_split_percentage: int = field(
        default=5, metadata={"help": "Share of train used for validation without a validation file."}
    )
    mlm_probability: float = field(default=0.15, metadata={"help": "Share of tokens to mask."})
    line_by_line: bool = field(
        default=False,
        metadata={"help": "One sequence per non-empty line (truncated to max_seq_length) instead of blocks."},
    )
    pad_to_max_length: bool = field(
        default=False, metadata={"help": "Pad every input to max_seq_length (else per batch); --line_by_line only."}
    )
    streaming: bool = field(
        default=False, metadata={"help": "Not supported: an IMP search re-reads the data every round."}
    )
    calibrate_head_steps: int | None = field(
        default=None,
        metadata={
            "help": "Before an IMP search, train the MLM head alone (encoder frozen) for up to N steps, stopping "
            "at a plateau of masked-token accuracy. Default: only when the checkpoint has no MLM head; 0: never."
        },
    )

    def __post_init__(self):
        if self.streaming:
            raise ValueError(
                "--streaming is not supported: every IMP round trains on the same data again; load it once instead"
            )
        if self.dataset_name is None and self.train_file is None:
            raise ValueError("Need a --dataset_name or a --train_file (raw text).")
        if not 0 < self.mlm_probability < 1:
            raise ValueError(f"--mlm_probability must be in (0, 1), got {self.mlm_probability}")


def search_flags_given(search: IMPConfig) -> list[str]:
    """The search flags set to something else than their defaults, as a user would have typed them.

    Strategy and targets that ``--ticket_granularity`` filled in are not counted: only the flag that chose them."""
    reference = IMPConfig(ticket_granularity=search.ticket_granularity)
    given = ["--ticket_granularity"] if search.ticket_granularity is not None else []
    return given + [
        f"--{f.name}"
        for f in fields(IMPConfig)
        if f.name != "ticket_granularity" and getattr(search, f.name) != getattr(reference, f.name)
    ]


@dataclass
class TicketArguments:
    """Transfer instead of a search, and what to write beside the ticket. The search settings are
    ``IMPConfig``'s flags (parsed beside these): by default a recipe searches with the paper's protocol;
    ``--imp_rounds 0`` only fine-tunes the dense model; ``--ticket`` fine-tunes θ0 under an existing ticket."""

    ticket: str | None = field(
        default=None,
        metadata={
            "help": "Transfer: apply this ticket (directory or Hub repo) to θ0 and fine-tune; no pruning, so search "
            "flags beside it (--sparsity_schedule, --ticket_granularity, ...) are refused."
        },
    )
    ticket_revision: str | None = field(
        default=None, metadata={"help": "Hub revision (branch, tag or commit) of --ticket."}
    )
    shrink: bool = field(
        default=False,
        metadata={
            "help": "Also write output_dir/shrunk: the final model with the heads and FFN neurons its ticket prunes "
            "whole removed (a structured ticket: --ticket_granularity heads, neurons or heads+neurons, or such a "
            "--ticket). Not pushed with --push_to_hub."
        },
    )
    shrink_stock_config: bool = field(
        default=False,
        metadata={
            "help": "With --shrink: remove only what a stock config describes (pruned heads stay as zeros, the same "
            "number of neurons per layer), so output_dir/shrunk loads without trust_remote_code."
        },
    )

    def check(self, search: IMPConfig, training_args) -> None:
        """Refuse, before any data is read, a --shrink that would have nothing to shrink."""
        if self.ticket and (given := search_flags_given(search)):
            raise TicketError(
                f"--ticket {self.ticket} fine-tunes under an existing ticket, with no search: {', '.join(given)} "
                "would do nothing; leave them out (or leave --ticket out to search)"
            )
        if self.shrink_stock_config and not self.shrink:
            raise TicketError("--shrink_stock_config only applies with --shrink")
        if not self.shrink:
            return
        if not training_args.do_train:
            raise TicketError("--shrink shrinks the trained model a run leaves in output_dir: it needs --do_train")
        if self.ticket:
            return  # the ticket's own granularity is checked once it is loaded (experiment.run_recipe)
        if search.imp_rounds == 0:
            raise TicketError(
                "--shrink needs a ticket: a search (--imp_rounds other than 0) or --ticket; a dense fine-tune "
                "has nothing pruned to remove"
            )
        if search.granularity == "weights":
            raise TicketError(
                f"--shrink removes whole heads and FFN neurons, but --ticket_granularity weights (--strategy "
                f"{search.strategy}) prunes single weights: nothing to remove. Pass --ticket_granularity heads, "
                "neurons or heads+neurons, or leave --shrink out"
            )
