"""caremesh benchmarks: ratios against baselines measured in the same run, never timed asserts."""
