"""What a compile or an evaluation writes for people and CI: report.json, report.html, JUnit XML.

Layer 8: imports the layers below it (``slmc.verify.numerics``, ``slmc.cache.store``, ``slmc.frontend`` and lower).
"""
