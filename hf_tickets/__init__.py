"""hf_tickets: lottery tickets for pre-trained BERT networks."""

__version__ = "0.1.0"
