"""Checking an artifact: numerical comparison with eager, quality gates, perplexity, where
verification executes, and ``slmc verify`` on a finished artifact.

Layer 7 (beside ``slmc.frontend``, ``slmc.cache.store`` and ``slmc.device``): imports ``slmc.backend`` and below.
"""
