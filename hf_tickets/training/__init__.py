"""Training tickets: the Trainer callback, IMP, the one masking implementation, run state."""
