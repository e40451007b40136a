"""Step policies: each answers "compute or reuse, and what" at its decision points, and never touches modules.

- `gate.StepGate`: DBCache/FBCache's per-step decision after the first Fn blocks (threshold gate or a fixed
  schedule), and whether the stored middle can serve this step;
- `prune.PrunePolicy`: DBPrune's per-block decision;
- `output.OutputForecast`: `taylorseer_cache_type='output'`, the whole transformer output forecast on a fixed
  schedule.

The block executor (`segments.SegmentExecutor`) carries out what they decide.
"""
