#!/usr/bin/env python
"""Lottery tickets on SQuAD v1.1, with the arguments of the Hugging Face ``run_qa.py`` example plus ticket ones.

    python recipes/run_qa.py --model_name_or_path bert-base-uncased --train_file train-v1.1.json \
        --validation_file dev-v1.1.json --do_train --do_eval --max_seq_length 384 --doc_stride 128 \
        --output_dir runs/squad --target_sparsity 0.4
    # transfer an MLM ticket to SQuAD
    python recipes/run_qa.py ... --ticket runs/mlm

Scores are the official exact match and F1 of SQuAD v1.1 (``eval_exact_match``, ``eval_f1``).
"""

from hf_tickets.experiments.arguments import QADataArguments
from hf_tickets.experiments.experiment import load_tokenizer, parse_recipe_args, run_recipe, setup_logging
from hf_tickets.tasks.prepared import prepare_squad


def main(argv=None):
    model_args, data_args, training_args, search_args, ticket_args = parse_recipe_args(QADataArguments, argv)
    setup_logging(training_args)
    tokenizer = load_tokenizer(model_args)
    task = prepare_squad(data_args, tokenizer)
    return run_recipe(model_args, task, training_args, search_args, ticket_args, tokenizer)


if __name__ == "__main__":
    main()
