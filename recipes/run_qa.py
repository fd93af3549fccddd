#!/usr/bin/env python
"""Lottery tickets on SQuAD, with the arguments of the Hugging Face ``run_qa.py`` example plus ticket ones.

    python recipes/run_qa.py --model_name_or_path bert-base-uncased --train_file train-v1.1.json \
        --validation_file dev-v1.1.json --do_train --do_eval --max_seq_length 384 --doc_stride 128 \
        --output_dir runs/squad --target_sparsity 0.4
    # SQuAD v2.0 (unanswerable questions), files in the official or the flat ``datasets`` layout
    python recipes/run_qa.py ... --version_2_with_negative --train_file train-v2.0.json --validation_file dev-v2.0.json
    # transfer an MLM ticket to SQuAD
    python recipes/run_qa.py ... --ticket runs/mlm

Scores are the official ones: v1.1 ``eval_exact_match``, ``eval_f1``; v2.0 ``eval_exact``, ``eval_f1``,
``eval_HasAns_*``, ``eval_NoAns_*``, ``eval_best_*``. Answers land in ``output_dir`` as in the stock
script: ``eval_predictions.json``, ``eval_nbest_predictions.json`` (+ ``eval_null_odds.json`` for v2.0)
and, with ``--do_predict --test_file``, the same files prefixed ``predict_``.
"""

from hf_tickets.core.errors import TicketError
from hf_tickets.experiments.arguments import QADataArguments
from hf_tickets.experiments.experiment import load_tokenizer, parse_recipe_args, run_recipe, setup_logging
from hf_tickets.tasks.prepared import prepare_squad


def main(argv=None):
    model_args, data_args, training_args, search_args, ticket_args = parse_recipe_args(QADataArguments, argv)
    setup_logging(training_args)
    tokenizer = load_tokenizer(model_args)
    task = prepare_squad(data_args, tokenizer, cache_dir=model_args.cache_dir)
    if training_args.do_eval and not task.eval_datasets:
        raise TicketError("--do_eval needs a --validation_file (or a dataset with a validation split)")
    if training_args.do_predict and task.predict_fn is None:
        raise TicketError("--do_predict needs a --test_file (or a dataset with a test split)")
    return run_recipe(model_args, task, training_args, search_args, ticket_args, tokenizer)


if __name__ == "__main__":
    main()
