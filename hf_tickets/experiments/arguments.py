"""Command-line arguments of the recipes, named as in the Hugging Face example scripts.

``recipes/run_glue.py``, ``run_qa.py`` and ``run_mlm.py`` parse ``(ModelArguments, <data
arguments>, TrainingArguments, TicketArguments)`` with ``HfArgumentParser``, so every stock flag and
JSON config file keeps working and the ticket flags come on top.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from hf_tickets.training.imp import IMPConfig


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
class _CommonDataArguments:
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
class GlueDataArguments(_CommonDataArguments):
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
class QADataArguments(_CommonDataArguments):
    doc_stride: int = field(default=128, metadata={"help": "Overlap between windows of a long context."})
    n_best_size: int = field(default=20, metadata={"help": "Start/end candidates considered per window."})
    max_answer_length: int = field(default=30, metadata={"help": "Longest answer, in tokens."})
    version_2_with_negative: bool = field(default=False, metadata={"help": "SQuAD v2 (not supported: v1.1 only)."})

    def __post_init__(self):
        if self.max_seq_length is None:
            self.max_seq_length = 384
        if self.version_2_with_negative:
            raise ValueError(
                "run_qa.py here supports SQuAD v1.1 only (the paper's task); drop --version_2_with_negative."
            )
        if self.dataset_name is None and self.train_file is None and self.validation_file is None:
            raise ValueError("Need a --dataset_name or a --train_file/--validation_file (SQuAD v1.1 JSON).")


@dataclass
class MLMDataArguments(_CommonDataArguments):
    validation_split_percentage: int = field(
        default=5, metadata={"help": "Share of train used for validation without a validation file."}
    )
    mlm_probability: float = field(default=0.15, metadata={"help": "Share of tokens to mask."})
    line_by_line: bool = field(
        default=False, metadata={"help": "Not supported: texts are grouped into blocks, as in the paper."}
    )
    calibrate_head_steps: int | None = field(
        default=None,
        metadata={
            "help": "Before an IMP search, train the MLM head alone (encoder frozen) for up to N steps, stopping "
            "at a plateau of masked-token accuracy. Default: only when the checkpoint has no MLM head; 0: never."
        },
    )

    def __post_init__(self):
        if self.line_by_line:
            raise ValueError("--line_by_line is not supported; texts are grouped into blocks of max_seq_length.")
        if self.dataset_name is None and self.train_file is None:
            raise ValueError("Need a --dataset_name or a --train_file (raw text).")
        if not 0 < self.mlm_probability < 1:
            raise ValueError(f"--mlm_probability must be in (0, 1), got {self.mlm_probability}")


@dataclass
class TicketArguments(IMPConfig):
    """The IMP settings (``IMPConfig``) plus transfer. By default a recipe searches for a ticket with the
    paper's protocol; ``--imp_rounds 0`` only fine-tunes the dense model; ``--ticket`` transfers one."""

    ticket: str | None = field(
        default=None,
        metadata={"help": "Transfer: apply this ticket (directory or Hub repo) to θ0 and fine-tune; no pruning."},
    )
    ticket_revision: str | None = field(
        default=None, metadata={"help": "Hub revision (branch, tag or commit) of --ticket."}
    )
    matching_metric: str | None = field(
        default=None,
        metadata={
            "help": "Metric that decides matching (default: the task's, e.g. eval_matthews_correlation for CoLA)."
        },
    )
