"""The ``slmc`` command line: one module per command group; exit codes and ``--json`` in one place.

Layer 11 (top): may import anything.
"""
