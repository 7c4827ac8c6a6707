"""What the user writes and what it is validated into: recipes, target descriptors, the pass registry.

Layer 2: imports only ``slmc.data`` and ``slmc.errors`` / ``slmc.progress``. Nothing here loads a model,
torch or TVM at import time, so a bad recipe or descriptor fails in about a second.
"""
