"""slmc's graph IR (``torch.export`` -> ``torch.fx``) and what passes work with: linear layers,
calibration statistics, op coverage, the pass manager, the causal-LM KV-cache contract.

Layer 3: imports only ``slmc.spec``, ``slmc.data``, ``slmc.errors``, ``slmc.progress``.
"""
