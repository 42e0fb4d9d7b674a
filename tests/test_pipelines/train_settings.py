"""Settings shared by the pipeline tests that train through the real CLI."""

SMALL_TRAIN_TOML = """
[train]
window = 200
eval_periods = 150
mcs_reps = 50
[train.candidates.har]
kind = "har"
[train.candidates.loghar]
kind = "loghar"
[train.candidates.ewma]
kind = "ewma"
[train.candidates.rw]
kind = "rw"
"""
"""A quick train config: the HAR ladder and the baselines on a short window (seconds, not minutes)."""
