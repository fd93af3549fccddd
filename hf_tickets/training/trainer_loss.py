"""The Trainer's loss under DDP and gradient accumulation for models that ignore ``num_items_in_batch``."""

from __future__ import annotations

import inspect

import torch

from hf_tickets.core.targets import unwrap_model


def use_true_loss(model: torch.nn.Module) -> torch.nn.Module:
    """Make the Trainer log (and backpropagate) the model's real mean loss under DDP and gradient accumulation.

    transformers 5 treats every model whose ``forward`` takes ``**kwargs`` as normalising its loss
    by ``num_items_in_batch`` (the label count summed over the accumulated micro-batches and, with
    ``average_tokens_across_devices=True`` (the default), over all processes). Trusting that, the
    Trainer multiplies the loss by the number of processes and skips the division by
    ``gradient_accumulation_steps``. BERT's heads take ``**kwargs`` but compute a plain
    ``CrossEntropyLoss``/``MSELoss`` mean and ignore ``num_items_in_batch``, so the logged loss,
    the eval loss and the gradients come out world_size (x accumulation steps) too large; gradient
    clipping then bites on the inflated norm. Declaring ``accepts_loss_kwargs = False`` on such a
    model makes the Trainer average per micro-batch instead. Models whose forward does use
    ``self.loss_function`` (which honours ``num_items_in_batch``) are left alone.
    Call before building the ``Trainer``; returns ``model``.
    """
    target = unwrap_model(model)
    if not _loss_uses_num_items(target):
        target.accepts_loss_kwargs = False
    return model


def _loss_uses_num_items(model: torch.nn.Module) -> bool:
    try:
        source = inspect.getsource(type(model).forward)
    except (OSError, TypeError):  # no source: assume the plain mean, which is always a correct average
        return False
    return "self.loss_function(" in source
