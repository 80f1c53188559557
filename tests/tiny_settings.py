"""Settings of the smallest runs the tests make (a separate module: tests/e2e has a conftest.py too)."""
TINY_RUN = dict(synth={"batch_size": 8, "iterations": 3, "commit_every": 1},
                distill={"steps_per_round": 3, "batch_size": 8}, log_every=1, checkpoint_seconds=0)
