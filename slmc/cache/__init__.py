"""The compile cache: content-addressed artifacts, the key, and the cache's step in a compile.

Layer 7 (beside ``slmc.frontend``, ``slmc.verify.numerics`` and ``slmc.device``): imports ``slmc.backend`` and below.
"""
