"""The asv benchmark suite of the estimators package (see README.md and docs/BENCHMARKING.md)."""
