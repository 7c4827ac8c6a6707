"""Loading and running a compiled artifact: ``slmc.load(path)`` returns a ``CompiledModel``.

Lean by construction (issue 22): the weights are views of a memory mapping of
``weights.safetensors`` handed to TVM without a copy (``aligned_safetensors.map_tensors``), and
neither torch nor TVM's compiler library is loaded (``slmc.artifact.tvm_runtime``); torch is used
only when the caller passes torch tensors, and then it is already imported.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import sys

import numpy as np

from slmc.artifact.sampling import check_sampling, next_token
from slmc.artifact.heap_trim import release_free_heap
from slmc.artifact.layout import LIBRARY, WEIGHTS, intact_manifest
from slmc.artifact.weight_aliases import mapped_parameters
from slmc.artifact.tvm_runtime import DLPACK_CPU, as_local_tensor, cpu, load_vm, tvm_ffi, use_physical_cores
from slmc.errors import ArtifactNotRunnableError, InputError
from slmc.artifact.resident_cache import ResidentCache
from slmc.graph.kv_cache import RESIDENT_ALL, RESIDENT_LAST, RESIDENT_STEP, CopyDecoder, Decoder, KVCacheSpec
from slmc.data.tokenizer import Tokenizer, load_tokenizer


class CompiledModel:
    """A runnable artifact. Call it with numpy arrays or torch tensors, in the signature's order.

    Returns one array/tensor for single-output models, else a tuple; torch in gives torch out.
    """

    def __init__(self, path: str | Path, check_hashes: bool = True):
        self.path = Path(path)
        self.manifest = intact_manifest(self.path, check_hashes)
        self.target = self.manifest.target
        runs, why = self.target.runs_here()
        if not runs:
            raise ArtifactNotRunnableError(
                f"artifact {self.path} cannot run on this machine: {why}; run it on a TVM RPC server with --device "
                "rpc://HOST:PORT (docs/devices.md)", len(self.manifest.files), why)
        self.inputs = self.manifest.signature.inputs
        self.outputs = self.manifest.signature.outputs
        self._device = cpu()
        self._vm = load_vm(self.path / LIBRARY, self._device)
        self._weights = [as_local_tensor(a) for a in self.stored_weights().values()]
        cache = self.manifest.kv_cache
        self.kv_cache = cache.spec() if cache is not None else None
        self.resident = cache is not None and cache.mode == "resident"  # the library has resident_all
        self._resident: ResidentCache | None = None
        tokenizer = self.manifest.tokenizer
        self._tokenizer_entry = tokenizer.model_dump() if tokenizer is not None else None
        release_free_heap()  # what loading freed, before the weights' pages come in (slmc.artifact.heap_trim)

    def stored_weights(self) -> dict[str, np.ndarray]:
        """Every weight ``main`` takes, in ``manifest.weights.order``, as views of one memory mapping of
        the weights file (a name in ``weights.aliases`` views the tensor stored under the name it maps to)."""
        info = self.manifest.weights
        return mapped_parameters(self.path / WEIGHTS, info.order, info.aliases)

    @property
    def tokenizer(self) -> Tokenizer:
        """The tokenizer stored with the artifact (``ArtifactError`` if it has none)."""
        return load_tokenizer(self.path, self._tokenizer_entry)

    def generate(self, prompt: str, max_new_tokens: int = 32, temperature: float = 0.0, top_p: float = 1.0,
                 stream: bool = False, seed: int = 0) -> str | Iterator[str]:
        """Continue ``prompt`` by up to ``max_new_tokens`` tokens through the KV cache (one prefill call,
        then one call per token), stopping early at the tokenizer's end-of-sequence token.

        ``temperature`` 0 is greedy; above 0, tokens are drawn from the softmax at that temperature within
        the ``top_p`` nucleus, with a numpy generator seeded by ``seed`` (the same call gives the same text).
        Returns the new text, or with ``stream=True`` an iterator of text pieces as tokens arrive (a
        piece is held back while it ends inside a multi-byte character). ``InputError`` for a model that
        is not a causal LM, an argument out of range, or a prompt that does not fit ``max_context``.
        """
        check_sampling(temperature, top_p, max_new_tokens)
        tokenizer = self.tokenizer
        cache = self._causal_cache()
        ids = tokenizer.encode(prompt)
        if not ids:
            raise InputError("the prompt encodes to no tokens")
        if len(ids) + max_new_tokens > cache.max_context:
            raise InputError(f"prompt ({len(ids)} tokens) + {max_new_tokens} new tokens exceed the artifact's "
                             f"max_context {cache.max_context}")
        pieces = self._pieces(tokenizer, ids, max_new_tokens, temperature, top_p, seed)
        return pieces if stream else "".join(pieces)

    def _pieces(self, tokenizer: Tokenizer, prompt: list[int], max_new_tokens: int, temperature: float, top_p: float,
                seed: int) -> Iterator[str]:
        rng = np.random.default_rng(seed)
        stop = self.manifest.tokenizer.eos_token if self.manifest.tokenizer is not None else None
        stop_id = tokenizer.encode(stop)[0] if stop and len(tokenizer.encode(stop)) == 1 else None
        decoder = self.decoder()
        decoder.reset()
        if self._resident is not None:  # the page size for the context this generation can reach (slmc.artifact.kv_pages)
            self._resident.plan(len(prompt) + max_new_tokens - 1)
        logits = decoder.feed(np.asarray([prompt], dtype=np.int64), last_only=True)
        tokens: list[int] = []
        shown = ""
        while len(tokens) < max_new_tokens:
            token = next_token(logits[0, -1], temperature, top_p, rng)
            if token == stop_id:
                break
            tokens.append(token)
            text = tokenizer.decode(tokens)
            if not text.endswith("\ufffd") and len(text) > len(shown):
                yield text[len(shown):]
                shown = text
            if len(tokens) < max_new_tokens:
                logits = decoder.feed(np.asarray([[token]], dtype=np.int64), last_only=True)
        text = tokenizer.decode(tokens)
        if len(text) > len(shown):
            yield text[len(shown):]

    def decoder(self) -> Decoder:
        """The model with its KV cache (``slmc.graph.kv_cache.Decoder``): for an artifact of the resident
        contract the one cache this model allocated once (``reset()`` empties it), else the copy contract's
        step with the cache it returns."""
        cache = self._causal_cache()
        if not self.resident:
            return CopyDecoder(self.step, cache)
        if self._resident is None:
            last = self._vm[RESIDENT_LAST] if self.manifest.kv_cache.last_position else None
            # resident_step: in libraries built with one_token_step (slmc.backend.lowering.build; on by default since session 9)
            step = self._vm[RESIDENT_STEP] if last is not None and self._vm.implements_function(RESIDENT_STEP) else None
            self._resident = ResidentCache(self._vm[RESIDENT_ALL], last, self._weights, cache, step)
        return self._resident

    def reset(self) -> None:
        """Empty the resident KV cache (nothing to do under the copy contract)."""
        if self._resident is not None:
            self._resident.reset()

    def step(self, ids: np.ndarray, keys: np.ndarray, values: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """One call under the causal-LM copy contract (``slmc.graph.kv_cache``). With a resident cache the
        given cache is copied in and the grown one copied out (O(context) copies: for verification;
        ``decoder()`` appends without them)."""
        self._causal_cache()
        logits, new_keys, new_values = self.run_numpy(ids, keys, values)
        return logits, new_keys, new_values

    def _causal_cache(self) -> KVCacheSpec:
        """The artifact's KV cache; ``InputError`` for a model that is not a causal LM."""
        if self.kv_cache is None:
            raise InputError(f"artifact {self.path} is not a causal LM with a KV cache (task {self.manifest.task!r})")
        return self.kv_cache

    def _resident_step(self, ids: np.ndarray, keys: np.ndarray, values: np.ndarray) -> list[np.ndarray]:
        decoder = self.decoder()
        decoder.load(keys, values)
        logits = decoder.feed(ids)
        return [logits, *decoder.snapshot()]

    @property
    def _dim_bounds(self) -> dict[str, tuple[int, int]]:
        """Bounds of each named dynamic dimension, as compiled."""
        return {name: tuple(b) for name, b in self.manifest.signature.dynamic_dims.items()}

    def _check_inputs(self, arrays: list[np.ndarray]) -> None:
        if len(arrays) != len(self.inputs):
            raise InputError(f"the model takes {len(self.inputs)} inputs ({[i.name for i in self.inputs]}), got {len(arrays)}")
        for array, spec in zip(arrays, self.inputs):
            if str(array.dtype) != spec.dtype:
                raise InputError(f"input '{spec.name}' must be {spec.dtype}, got {array.dtype}")
            if array.ndim != len(spec.shape):
                raise InputError(f"input '{spec.name}' must have shape {spec.shape}, got {list(array.shape)}")
            for got, want in zip(array.shape, spec.shape):
                if isinstance(want, int) and got != want:
                    raise InputError(f"input '{spec.name}' must have shape {spec.shape}, got {list(array.shape)}")
                low, high = self._dim_bounds.get(want, (0, None)) if isinstance(want, str) else (0, None)
                if got < low or (high is not None and got > high):
                    raise InputError(f"input '{spec.name}': dimension {want} = {got} is outside [{low}, {high}] "
                                     "(the bounds this artifact was compiled for)")
        if self.kv_cache is not None:
            context = arrays[1].shape[3] - 1 + arrays[0].shape[1]
            if context > self.kv_cache.max_context:
                raise InputError(f"{arrays[1].shape[3] - 1} cached + {arrays[0].shape[1]} new tokens exceed the artifact's "
                                 f"max_context {self.kv_cache.max_context}")

    def _check_token_ids(self, ids: np.ndarray) -> None:
        """Out-of-range ids would read outside the embedding table (TVM's take runs unchecked)."""
        vocab = self.outputs[0].shape[-1]
        if ids.size and isinstance(vocab, int) and (ids.min() < 0 or ids.max() >= vocab):
            raise InputError(f"token ids must lie in [0, {vocab}); got values from {ids.min()} to {ids.max()}")

    def run_numpy(self, *inputs: np.ndarray) -> list[np.ndarray]:
        arrays = [np.asarray(a, order="C") for a in inputs]  # 0-d stays 0-d
        self._check_inputs(arrays)
        if self.kv_cache is not None:
            self._check_token_ids(arrays[0])
        # a float16 or int8 cache (manifest kv_cache.dtype) stores the given cache rounded (ResidentCache.load) and
        # returns the grown one widened or dequantized: eval and generate run the cache as stored
        if self.resident:
            return self._resident_step(*arrays)
        use_physical_cores()  # this thread's TVM pool (per thread in TVM; returns at once once sized)
        result = self._vm["main"](*[_as_tensor(a, self._device) for a in arrays], *self._weights)
        outs = list(result) if isinstance(result, (tvm_ffi().Array, list, tuple)) else [result]
        return [_as_numpy(o) for o in outs]

    def __call__(self, *inputs: Any) -> Any:
        torch = sys.modules.get("torch")  # a torch tensor among the inputs means torch is imported
        is_torch = [torch is not None and isinstance(x, torch.Tensor) for x in inputs]
        as_torch = any(is_torch)
        arrays = [x.detach().cpu().numpy() if t else np.asarray(x) for x, t in zip(inputs, is_torch)]
        outs = self.run_numpy(*arrays)
        if as_torch:
            outs = [torch.from_numpy(o) for o in outs]
        return outs[0] if len(outs) == 1 else tuple(outs)

    def close(self) -> None:
        """Nothing to release in this process (``RemoteModel`` ends its device session)."""

    def __enter__(self) -> CompiledModel:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _as_tensor(array: np.ndarray, device: Any) -> Any:
    """``array`` on ``device`` for the VM: shared without a copy when TVM can take it as it is (a
    contiguous CPU array aligned to 64 bytes, e.g. a KV cache this artifact returned last step: at
    context 512 the SmolLM-135M cache is 2 x 23.6 MB per step), else copied."""
    if device.dlpack_device_type() == DLPACK_CPU:
        return as_local_tensor(array)
    import tvm  # a remote device: its session already imported TVM

    return tvm.runtime.tensor(array, device)


def _as_numpy(tensor: Any) -> np.ndarray:
    """A zero-copy view of a local CPU output (it keeps TVM's buffer alive); a copy of a remote one
    (an RPC session's tensor, whose device numpy cannot address)."""
    return np.from_dlpack(tensor) if tensor.device.dlpack_device_type() == DLPACK_CPU else tensor.numpy()


def load(path: str | Path, check_hashes: bool = True) -> CompiledModel:
    """Load an artifact directory written by ``slmc.compile``."""
    return CompiledModel(path, check_hashes=check_hashes)
