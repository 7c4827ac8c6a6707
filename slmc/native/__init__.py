"""slmc's native (Python-free) runtime: C++17 sources shipped as package data, and their build.

This package sits in the artifact layer: it imports only ``slmc.errors``. Today it holds the
native tokenizer and the C API header ``include/slmc_runtime.h`` (docs/runtime.md); the model part
of that header is declared, not implemented.
"""
