#!/usr/bin/env python
"""Lottery tickets on GLUE, with the arguments of the Hugging Face ``run_glue.py`` example plus ticket ones.

    # IMP ticket search (paper's protocol: prune 10% of the remaining weights per round, rewind to θ0)
    python recipes/run_glue.py --model_name_or_path bert-base-uncased --task_name mrpc \
        --do_train --do_eval --output_dir runs/mrpc --target_sparsity 0.5
    # a single dense fine-tune, exactly as the stock script
    python recipes/run_glue.py ... --imp_rounds 0
    # transfer: fine-tune θ0 under an existing ticket (a directory or a Hub repo), no pruning
    python recipes/run_glue.py ... --ticket runs/mlm
    # local GLUE tsv files, as distributed by GLUE
    python recipes/run_glue.py ... --task_name cola --train_file glue/CoLA/train.tsv --validation_file glue/CoLA/dev.tsv

Arguments may also come from one JSON file: ``python recipes/run_glue.py args.json``. The run ends as
the stock script's: model + tokenizer, ``*_results.json`` and ``trainer_state.json`` in output_dir
(after a search: the found ticket's trained sparse model, with the ticket and its card).
"""

from hf_tickets.experiments.arguments import GlueDataArguments
from hf_tickets.experiments.experiment import load_tokenizer, parse_recipe_args, run_recipe, setup_logging
from hf_tickets.tasks.prepared import prepare_glue


def main(argv=None):
    model_args, data_args, training_args, search_args, ticket_args = parse_recipe_args(GlueDataArguments, argv)
    setup_logging(training_args)
    tokenizer = load_tokenizer(model_args)
    task = prepare_glue(data_args, tokenizer, cache_dir=model_args.cache_dir, do_predict=training_args.do_predict)
    return run_recipe(model_args, task, training_args, search_args, ticket_args, tokenizer)


if __name__ == "__main__":
    main()
