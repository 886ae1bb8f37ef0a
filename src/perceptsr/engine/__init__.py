"""The engine: training loop, checkpoints, tiled inference and evaluation (see each module)."""
