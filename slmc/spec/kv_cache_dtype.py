"""The dtypes a resident KV cache can be stored in: the recipe's ``kv_cache.dtype`` (``slmc.spec.recipe``), the
graph's ``KVCacheSpec.dtype`` (``slmc.graph.kv_cache``) and the manifest's ``kv_cache.dtype``.

A module of its own so that reading a manifest (``slmc.load``) does not import the recipe schema and the pass
registry with it (issue 22.3: about 1.2 MB of a runtime process's RSS, docs/dev-notes.md session 12)."""

from __future__ import annotations

from typing import Literal

KvCacheDtype = Literal["float32", "float16", "int8"]
