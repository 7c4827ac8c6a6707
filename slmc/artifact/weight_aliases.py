"""Every weight stored once: parameters whose tensors are identical share one stored tensor.

A tied embedding table and output head lowered to the same array, or any two parameters that
a pass left equal, would otherwise be written (and loaded) twice. ``identical_tensors`` finds
them; the weights file stores the first, and the manifest's ``weights.aliases`` maps each other
name to it (``slmc.artifact.manifest.WeightsInfo``; both runtimes resolve it).

Identical means same dtype, same shape, same bytes: a float tensor holding NaNs is compared by its
bits, and a transposed copy is not identical (its bytes are laid out differently).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from slmc.artifact.aligned_safetensors import map_tensors

PREFIX_BYTES = 4096  # candidates are grouped by dtype, shape and their first bytes; only those are compared in full


def identical_tensors(tensors: dict[str, np.ndarray]) -> dict[str, str]:
    """For each tensor (in dict order) identical to an earlier one, its name -> that earlier name."""
    first_of: dict[tuple, list[str]] = {}
    aliases: dict[str, str] = {}
    for name, array in tensors.items():
        data = _bytes(array)
        key = (str(array.dtype), tuple(array.shape), data[:PREFIX_BYTES].tobytes())
        candidates = first_of.setdefault(key, [])
        same = next((c for c in candidates if np.array_equal(_bytes(tensors[c]), data)), None)
        if same is None:
            candidates.append(name)
        else:
            aliases[name] = same
    return aliases


def _bytes(array: np.ndarray) -> np.ndarray:
    """The array's bytes as a flat ``uint8`` array (a view when it is C-contiguous)."""
    return np.ascontiguousarray(array).reshape(-1).view(np.uint8)


def mapped_parameters(path: Path, order: list[str], aliases: dict[str, str]) -> dict[str, np.ndarray]:
    """Every parameter in ``order`` as a view of one memory mapping of the weights file ``path``: a name
    in ``aliases`` views the tensor stored under the name it maps to (``ArtifactError`` if one is missing)."""
    stored = [aliases.get(name, name) for name in order]
    mapped = map_tensors(path, sorted(set(stored)))
    return {name: mapped[key] for name, key in zip(order, stored)}
