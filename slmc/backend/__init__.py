"""One backend per target kind (cpu, opencl, npu) behind one interface, and what they share:
lowering an fx graph to TVM Relax, the Relax pipeline, export, the tuning database.

Layer 6: imports ``slmc.passes``, ``slmc.schedules``, ``slmc.npu`` and below.
"""
