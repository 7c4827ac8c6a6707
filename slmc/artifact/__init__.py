"""The compiled artifact: its directory layout, its typed manifest, and the runtimes that load it
(``slmc.load`` in this process, ``RemoteModel`` through TVM RPC).

Layer 4 (beside ``slmc.models`` and ``slmc.quantization``, which it does not import): imports
``slmc.graph`` and below.
"""
