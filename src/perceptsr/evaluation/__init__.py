"""Measuring models the way the papers did, along one path: `evaluate.run_evaluation` (training validation, `eval`,
`report`, `sweep` and `metrics` all call it) under a `protocol.Protocol`, with strict JSON output (`strict_json`);
`sweep` (the t curve) and `report` (tables, plots, viewer) build on it."""
