#!/usr/bin/env python
"""Lottery tickets for masked language modelling (the paper's universal tickets), with the arguments
of the Hugging Face ``run_mlm.py`` example plus ticket ones.

    python recipes/run_mlm.py --model_name_or_path bert-base-uncased --train_file wiki.train.raw \
        --validation_file wiki.valid.raw --max_seq_length 128 --do_train --do_eval \
        --output_dir runs/mlm --target_sparsity 0.7
    # then transfer the MLM ticket:  python recipes/run_glue.py ... --ticket runs/mlm

Reports ``eval_loss``, ``eval_perplexity`` and the masked-token ``eval_accuracy`` (15% dynamic
masking; evaluation masks are the same in every round). A checkpoint without an MLM head gets its
head calibrated first (encoder frozen; ``--calibrate_head_steps N``, 0 to skip), so θ0 is a working MLM.
"""

from hf_tickets.experiments.arguments import MLMDataArguments, MLMModelArguments
from hf_tickets.experiments.experiment import load_tokenizer, parse_recipe_args, run_recipe, setup_logging
from hf_tickets.tasks.prepared import prepare_mlm


def main(argv=None):
    model_args, data_args, training_args, search_args, ticket_args = parse_recipe_args(
        MLMDataArguments, argv, MLMModelArguments
    )
    setup_logging(training_args)
    tokenizer = load_tokenizer(model_args)
    task = prepare_mlm(data_args, tokenizer, seed=training_args.seed, cache_dir=model_args.cache_dir)
    return run_recipe(
        model_args,
        task,
        training_args,
        search_args,
        ticket_args,
        tokenizer,
        calibrate_head_steps=data_args.calibrate_head_steps,
    )


if __name__ == "__main__":
    main()
