"""Texts and tokenizers: the data a compile, an evaluation and the runtime read.

Layer 1: imports only ``slmc.errors`` and ``slmc.progress``.
"""
