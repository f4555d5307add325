"""minigrad.kernels: one module per backend, identical function names (see DESIGN.md)."""
