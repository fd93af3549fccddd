"""The ``hf-tickets`` command line and the commands built on the library (demo, transfer, compare)."""
