"""minigrad.profiling: measure and explain."""
