"""Data loading, preprocessing and metrics for the recipes (GLUE, SQuAD v1.1, MLM, demo data).

The recipes in ``recipes/`` stay as thin as the stock Hugging Face examples: everything they
reuse lives in the sub-modules ``glue``, ``squad``, ``mlm``, ``metrics`` and ``demo_data``.
"""
