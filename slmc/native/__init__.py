"""slmc's native (Python-free) runtime: C++17 sources shipped as package data, and their build.

Layer 1 (beside ``slmc.data``): it imports only ``slmc.errors``. It holds the native
tokenizer (``src/``), the model runtime over TVM's C++ runtime (``runtime/``), the C API header
``include/slmc_runtime.h``, the ``slmc-run`` runner (``cli/``) and their build (docs/runtime.md).
"""
