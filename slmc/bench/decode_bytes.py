"""The bytes one decode step reads, per engine, from the files the engine runs (issue 22's bandwidth goal).

A single-token step reads every stored tensor a matmul/GEMV of the step reads -- codes, scales and zero
points at their stored widths --, the norms' weights, and of an embedding table only the row it gathers;
a table tied to the output head is read once, in full, by the head. Each tensor is counted once, however
many parameters alias it (a read from cache is not a DRAM read). The KV cache at the context comes on top
(``kv_bytes_per_token`` x context). Counted from what each engine stores, never from the fp32 model:

- slmc: the tensors of the artifact's weights file (``manifest.weights.order`` / ``aliases``); the
  parameters of an ``nn.Embedding`` of the source model are gathered, unless the table is tied to a
  linear layer that stores nothing of its own (then the head reads the embedding's tensors in full); an
  embedding's own quantized copy beside a tied head's tensors (``slmc.quantization.stored_names``) is gathered;
- llama.cpp: the GGUF file's tensors; ``token_embd.weight`` / ``position_embd.weight`` are gathered,
  except that without ``output.weight`` the head reads ``token_embd.weight`` in full (llama.cpp's tied head);
- ONNX Runtime: the initializers; one consumed only as the data of ``Gather`` nodes (axis 0) is gathered;
- PyTorch eager: the module's parameters at their dtype, embeddings as for slmc.

The roofline follows Williams et al., "Roofline" (CACM 2009): time >= bytes / bandwidth.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

GGUF_GATHERED = ("token_embd.weight", "position_embd.weight")
GGUF_HEAD = "output.weight"


@dataclass(frozen=True)
class DecodeBytes:
    """What one decode step reads of the stored weights: ``full`` tensors read whole, ``gathered`` tables
    read one row each (name -> (stored bytes, bytes of a row))."""
    full: dict[str, int]
    gathered: dict[str, tuple[int, int]] = field(default_factory=dict)

    @property
    def weight_bytes(self) -> int:
        return sum(self.full.values()) + sum(row for _, row in self.gathered.values())

    @property
    def stored_bytes(self) -> int:
        return sum(self.full.values()) + sum(size for size, _ in self.gathered.values())

    def to_json(self) -> dict[str, Any]:
        return {"weight_bytes_read": self.weight_bytes, "weight_bytes_stored": self.stored_bytes,
                "tensors_read_whole": len(self.full),
                "gathered_tables": {name: {"stored_bytes": size, "row_bytes": row} for name, (size, row) in self.gathered.items()}}


def _split(sizes: dict[str, tuple[int, int]], gathered: Iterable[str]) -> DecodeBytes:
    """``sizes``: stored tensor -> (bytes, rows); the ``gathered`` ones are read one row each."""
    chosen = set(gathered)
    return DecodeBytes({n: b for n, (b, _) in sizes.items() if n not in chosen},
                       {n: (b, b // max(rows, 1)) for n, (b, rows) in sizes.items() if n in chosen})


def gathered_modules(module: Any) -> dict[str, list[str]]:
    """The source model's embedding tables: ``nn.Embedding`` path -> the paths of the other modules that share
    its weight (a tied output head)."""
    import torch

    owners: dict[int, list[str]] = {}
    for path, sub in module.named_modules():
        weight = getattr(sub, "weight", None)
        if isinstance(weight, torch.nn.Parameter):
            owners.setdefault(id(weight), []).append(path)
    return {path: [p for p in owners[id(sub.weight)] if p != path]
            for path, sub in module.named_modules() if isinstance(sub, torch.nn.Embedding)}


def exported_prefix(path: str) -> str:
    """The prefix torch.export gives the parameters of module ``path`` (``p_`` + the path, dots as underscores)."""
    return "p_" + path.replace(".", "_") + "_"


def slmc_decode_bytes(weights_file: Path, order: list[str], aliases: dict[str, str], module: Any) -> DecodeBytes:
    """slmc's artifact (module docstring): ``order`` and ``aliases`` from ``manifest.weights``, ``module`` the
    source model the artifact was compiled from (it names the embeddings)."""
    from slmc.artifact.aligned_safetensors import map_tensors
    from slmc.quantization.stored_names import own_copy_name

    stored = {name: aliases.get(name, name) for name in order}
    arrays = map_tensors(weights_file, sorted(set(stored.values())))  # views of a mapping: nothing is read
    sizes = {name: (int(a.nbytes), int(a.shape[0]) if a.ndim else 1) for name, a in arrays.items()}

    def under(path: str) -> list[str]:
        return [n for n in order if n.startswith(exported_prefix(path))]

    gather_names: set[str] = set()
    for path, tied in gathered_modules(module).items():
        if not tied or any(under(head) for head in tied):  # a tied head that stores its own tensors reads those
            gather_names.update(under(path))
        for table in (path, *tied):  # the embedding's own copy beside a tied head's tensors (named after either
            gather_names.update(under(own_copy_name(table)))  # module's path, as the graph named the shared table)
    readers: dict[str, list[str]] = {}
    for name, key in stored.items():
        readers.setdefault(key, []).append(name)
    return _split(sizes, [key for key, names in readers.items() if all(n in gather_names for n in names)])


def gguf_decode_bytes(path: Path) -> DecodeBytes:
    """llama.cpp's GGUF file (module docstring): each tensor's stored bytes; a table's rows are its last dimension
    (GGML lists dimensions fastest first)."""
    from gguf import GGUFReader

    tensors = GGUFReader(str(path)).tensors
    sizes = {t.name: (int(t.n_bytes), int(t.shape[-1])) for t in tensors}
    gathered = [n for n in GGUF_GATHERED if n in sizes and not (n == "token_embd.weight" and GGUF_HEAD not in sizes)]
    return _split(sizes, gathered)


def onnx_decode_bytes(path: Path) -> DecodeBytes:
    """ONNX Runtime's model file (module docstring); the initializers' sizes from their dims (external data is
    not loaded)."""
    import onnx
    from onnx.helper import tensor_dtype_to_np_dtype

    graph = onnx.load(str(path), load_external_data=False).graph
    sizes = {t.name: (int(np.prod(t.dims, dtype=np.int64)) * tensor_dtype_to_np_dtype(t.data_type).itemsize,
                      int(t.dims[0]) if t.dims else 1) for t in graph.initializer}
    uses: dict[str, list[bool]] = {}  # initializer -> per use: is it a Gather's data along axis 0
    for node in _nodes(graph):
        axis = next((a.i for a in node.attribute if a.name == "axis"), 0)
        for i, name in enumerate(node.input):
            if name in sizes:
                uses.setdefault(name, []).append(node.op_type == "Gather" and i == 0 and axis == 0)
    return _split(sizes, [n for n, gathers in uses.items() if all(gathers)])


def _nodes(graph: Any) -> Iterable[Any]:
    """Every node of ``graph`` and of its subgraphs (If/Loop bodies)."""
    for node in graph.node:
        yield node
        for attribute in node.attribute:
            subgraphs = [attribute.g] if attribute.HasField("g") else []
            for sub in [*subgraphs, *attribute.graphs]:
                yield from _nodes(sub)


def kv_bytes_per_token(cache: dict[str, int], entry_bytes: int) -> int:
    """Bytes one cached position holds: keys and values of every layer and KV head (``cache`` as
    ``KVCacheSpec.to_json``), ``entry_bytes`` each (fp32 4; llama.cpp's default f16 cache 2)."""
    return 2 * cache["layers"] * cache["kv_heads"] * cache["head_dim"] * entry_bytes


def torch_decode_bytes(module: Any) -> DecodeBytes:
    """PyTorch eager (module docstring): every parameter once (tied ones share storage), at its dtype."""
    names = {id(p): n for n, p in module.named_parameters()}  # named_parameters lists a tied parameter once
    params = {n: p for n, p in module.named_parameters()}
    sizes = {n: (p.numel() * p.element_size(), int(p.shape[0]) if p.dim() else 1) for n, p in params.items()}
    modules = dict(module.named_modules())
    gathered = [names[id(modules[path].weight)] for path, tied in gathered_modules(module).items() if not tied]
    return _split(sizes, gathered)
