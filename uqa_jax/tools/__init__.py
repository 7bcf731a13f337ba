"""Command-line tools beside `uqa_jax.main`: `plan` (memory planner), `score` (any predictions
file), `seeds` (one table across seeds), `sweep` (scaling sweeps). Run as `python -m uqa_jax.tools.<name>`."""
