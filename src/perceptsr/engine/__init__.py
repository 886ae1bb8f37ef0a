"""The engine: the training loop, checkpoints, run setup, multi-process helpers and the run log."""
