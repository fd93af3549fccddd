"""Data loading, preprocessing and metrics for the recipes (GLUE, SQuAD v1.1, MLM, demo data).

The recipes in ``recipes/`` stay as thin as the stock Hugging Face examples: everything they
reuse lives in the sub-modules ``glue``, ``squad``, ``mlm``, ``metrics`` and ``demo_data``.
"""

from __future__ import annotations

import os
from pathlib import Path

DATA_ENV_VAR = "HF_TICKETS_DATA"


def shared_data_dir() -> Path:
    """The folder of public benchmark files (GLUE tsv, SQuAD json, WikiText), kept outside the repo.

    ``$HF_TICKETS_DATA`` if set, else ``shared/data`` beside the checkout.
    """
    default = Path(__file__).resolve().parents[2] / ".." / "shared" / "data"
    path = Path(os.environ.get(DATA_ENV_VAR, default)).resolve()
    if not path.is_dir():
        raise FileNotFoundError(
            f"benchmark data folder {path} not found; set {DATA_ENV_VAR} to the folder holding glue/, squad/ "
            "and wikitext-2/"
        )
    return path
