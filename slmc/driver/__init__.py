"""The drivers: ``compile`` (recipe + target + model -> verified artifact), ``compress`` (calibration,
trace, passes; shared with ``eval``), ``tune`` and what ``eval``/``generate`` act on.

Layer 9: imports ``slmc.report.report_json`` and below.
"""
