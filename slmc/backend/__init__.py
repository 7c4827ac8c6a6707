"""One backend per target kind behind one interface, and what they share: lowering an fx graph to
TVM Relax, the Relax pipeline, export, the tuning database.

``base.Backend`` is the interface (Relax pipeline phases, recipe rules, post-build step, kernel
check, tuning); ``kinds/`` holds one module per descriptor ``kind`` (cpu, gpu, npu). To add a kind,
add one module to ``slmc/backend/kinds/`` with a ``Backend`` subclass decorated
``@register_backend("<kind>")`` (``slmc.spec.backend_registry``); nothing else changes: the package
imports every module in it, descriptors then accept the kind, and drivers reach it through
``base.backend_for(target)``. See ``slmc/backend/kinds/__init__.py``.

Layer 6: imports ``slmc.passes``, ``slmc.schedules``, ``slmc.npu`` and below.
"""
