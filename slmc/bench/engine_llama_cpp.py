"""The llama.cpp bench engines: the benchmark model's own tensors as GGUF Q4_0 / Q8_0, run by llama.cpp.

``prepare`` writes the GGUF (``slmc.bench.gguf_export``) from the checkpoint slmc compiles and checks
it is the same model: the greedy (top-1) token of llama.cpp's logits and of PyTorch eager must agree
on most positions of a short prompt (``top1_agreement`` is recorded). A random-weight model's logits are
nearly tied, so 4-bit rounding alone moves many of its argmaxes (SmolLM-135M's shape: 56% at Q4_0); when
the quantized file agrees on fewer than ``MIN_TOP1_AGREEMENT`` of the positions, the same tensors are
written once more as F32 GGUF (same mapping, no rounding) and that conversion must agree on at least
``MIN_TOP1_AGREEMENT`` (recorded as ``f32_conversion_top1_agreement``), else the engine is refused. Timing goes through llama-cpp-python's low-level C API (``llama_decode`` with a
``llama_batch`` of token ids), so no tokenization or sampling is timed: decode is one ``llama_decode``
of one token after ``context`` cached positions (the position is removed again with
``llama_memory_seq_rm`` for the next sample); prefill is one ``llama_decode`` of the prompt from an
empty memory plus the argmax of the last logits. llama.cpp's own defaults otherwise (``n_batch``
2048, ``n_ubatch`` 512); threads: the count its command-line tools take by default (one per physical
core, ``common``'s ``cpu_get_num_math``) unless a common policy sets one.

``LlamaCppDecoder`` is the same model as a ``slmc.graph.kv_cache.Decoder``, so slmc's own evaluation
(``slmc.verify.evaluation.perplexity``) scores llama.cpp on the same windows as an slmc model
(``benchmarks/llama_cpp_quality.py``).

Precondition: the ``llama-cpp-python`` package (the ``bench`` extra); ``EngineUnavailable`` otherwise.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import numpy as np

from slmc.bench.decode_bytes import gguf_decode_bytes, kv_bytes_per_token
from slmc.bench.prepare import EngineUnavailable, Preparation
from slmc.bench.thread_policy import ThreadPolicy
from slmc.bench.timing import bench_prompt, peak_rss_mb, step_samples
from slmc.errors import InputError, ModelError, SlmcError

# llama.cpp's KV cache element types (``type_k`` / ``type_v``) -> bytes per entry; the bench opens the type its
# prepared info names (``kv_cache_type``), so the bytes its roofline counts are those of the cache it times
KV_TYPE_BYTES = {"F16": 2, "F32": 4}
DEFAULT_KV_TYPE = "F16"  # llama.cpp's own default (llama_context_default_params)
MIN_TOP1_AGREEMENT = 0.9
CHECK_TOKENS = 16


def _llama_cpp() -> Any:
    try:
        import llama_cpp
    except ImportError as exc:
        raise EngineUnavailable("llama-cpp-python is not installed (pip install -e '.[bench]')") from exc
    return llama_cpp


def built_with_amx(llama_cpp: Any) -> bool:
    """Whether the installed llama.cpp was compiled with its AMX kernels (its system info line)."""
    return "AMX_INT8 = 1" in llama_cpp.llama_print_system_info().decode()


def default_threads() -> int:
    """llama.cpp's command-line default: one thread per physical core (of the cores this process may use)."""
    import psutil

    from slmc.bench.machine import cores

    return max(1, min(psutil.cpu_count(logical=False) or cores(), cores()))


def set_flash_attention(L: Any, params: Any, on: bool | None) -> None:
    """Turn llama.cpp's flash attention on or off in context ``params`` (``None``: llama.cpp's default, "auto": on for
    the CPU). With it on, llama.cpp casts an F32 K and V cache to F16 before attending (``build_attn_mha``,
    src/llama-graph.cpp), so an "F32" cache is F16 arithmetic; an F32 control needs it off. llama-cpp-python 0.3.x
    has ``flash_attn_type`` (-1 auto, 0 off, 1 on); older releases a bool ``flash_attn``."""
    if on is None:
        return
    fields = {name for name, _ in params._fields_}
    if "flash_attn_type" in fields:
        params.flash_attn_type = L.LLAMA_FLASH_ATTN_TYPE_ENABLED if on else L.LLAMA_FLASH_ATTN_TYPE_DISABLED
    elif "flash_attn" in fields:
        params.flash_attn = on
    else:
        raise EngineUnavailable("this llama-cpp-python's context parameters have neither flash_attn_type nor flash_attn")


class LlamaCpp:
    """One llama.cpp model and context over a GGUF file, fed token ids. ``flash_attn``: llama.cpp's flash attention
    on or off (``None``: its default, on for the CPU; ``set_flash_attention``)."""

    def __init__(self, path: Path, n_ctx: int, threads: int, kv_type: str = DEFAULT_KV_TYPE,
                 flash_attn: bool | None = None):
        if kv_type not in KV_TYPE_BYTES:
            raise InputError(f"llama.cpp KV cache type {kv_type!r} is not one of {', '.join(KV_TYPE_BYTES)}")
        L = self.L = _llama_cpp()
        L.llama_backend_init()
        self._log = L.llama_log_callback(lambda level, text, user: None)  # kept alive: llama.cpp calls it
        L.llama_log_set(self._log, None)
        params = L.llama_model_default_params()
        # A build with AMX (GGML_NATIVE on a Xeon with AMX) puts Q8_0/Q4_0 weights in the AMX buffer type, and
        # llama_decode then segfaults on this VM; only for such a build are extra buffer types turned off, which
        # also turns off llama.cpp's repacked CPU layouts (a handicap for llama.cpp, recorded in the report as
        # `extra_buffer_types`). The README builds without AMX, so its llama.cpp keeps its defaults.
        self.amx_workaround = built_with_amx(L)
        if self.amx_workaround:
            params.use_extra_bufts = False
        self.model = L.llama_model_load_from_file(str(path).encode(), params)
        if not self.model:
            raise SlmcError(f"llama.cpp could not load {path}")
        params = L.llama_context_default_params()
        params.n_ctx = n_ctx
        params.n_threads = params.n_threads_batch = threads
        params.type_k = params.type_v = getattr(L, f"GGML_TYPE_{kv_type}")
        set_flash_attention(L, params, flash_attn)
        self.flash_attn = flash_attn
        self.ctx = L.llama_init_from_model(self.model, params)
        if not self.ctx:
            raise SlmcError(f"llama.cpp could not create a context of {n_ctx} positions for {path}")
        self.threads = L.llama_n_threads(self.ctx)
        self.n_batch = L.llama_n_batch(self.ctx)  # tokens one llama_decode call takes: min(n_ctx, 2048) by default
        self.n_vocab = L.llama_vocab_n_tokens(L.llama_model_get_vocab(self.model))
        self.memory = L.llama_get_memory(self.ctx)
        self.batch = L.llama_batch_init(n_ctx, 0, 1)

    def decode(self, ids: list[int], start: int, all_logits: bool = False) -> None:
        """Append ``ids`` at positions ``start ...``; then ``logits(i)`` reads row ``i`` of the last
        ``llama_decode`` call (every row with ``all_logits``, else its last; ``-1``: the last). More tokens than
        ``n_batch`` go in calls of ``n_batch`` (as llama.cpp's own tools feed a prompt): ``llama_decode`` aborts
        the process on a longer batch (``GGML_ASSERT(n_tokens_all <= cparams.n_batch)``); ``decode_logits`` keeps
        every row."""
        for first in range(0, len(ids), self.n_batch):
            self._decode_call(ids[first:first + self.n_batch], start + first, all_logits)

    def _decode_call(self, ids: list[int], start: int, all_logits: bool) -> None:
        b = self.batch
        b.n_tokens = len(ids)
        for i, token in enumerate(ids):
            b.token[i], b.pos[i], b.n_seq_id[i] = token, start + i, 1
            b.seq_id[i][0] = 0
            b.logits[i] = all_logits or i == len(ids) - 1
        rc = self.L.llama_decode(self.ctx, b)
        if rc != 0:
            raise SlmcError(f"llama_decode of {len(ids)} tokens at position {start} returned {rc}")
        self.L.llama_synchronize(self.ctx)

    def decode_logits(self, ids: list[int], start: int) -> np.ndarray:
        """``decode`` of ``ids`` at ``start ...`` returning the logits ``[T, V]`` of every position (copies)."""
        rows = []
        for first in range(0, len(ids), self.n_batch):
            chunk = ids[first:first + self.n_batch]
            self._decode_call(chunk, start + first, all_logits=True)
            rows += [self.logits(i).copy() for i in range(len(chunk))]
        return np.stack(rows)

    def logits(self, index: int) -> np.ndarray:
        return np.ctypeslib.as_array(self.L.llama_get_logits_ith(self.ctx, index), shape=(self.n_vocab,))

    def clear(self, start: int = 0) -> None:
        if start == 0:
            self.L.llama_memory_clear(self.memory, True)
        else:
            self.L.llama_memory_seq_rm(self.memory, 0, start, -1)

    def prompt_logits(self, ids: list[int]) -> np.ndarray:
        """Logits ``[T, V]`` of every position of ``ids`` from an empty memory."""
        self.clear()
        return self.decode_logits(ids, 0)


class LlamaCppDecoder:
    """``llama`` as a ``slmc.graph.kv_cache.Decoder`` of ``cache`` (the slmc model's cache shape, whose
    ``max_context`` bounds the evaluation windows; ``llama``'s own context must hold them): ``feed`` appends
    tokens at the next positions of llama.cpp's memory and returns their logits ``[1, T, V]``."""

    def __init__(self, llama: LlamaCpp, cache: Any):
        self.llama, self.cache, self.position = llama, cache, 0

    def reset(self) -> None:
        self.llama.clear()
        self.position = 0

    def feed(self, ids: np.ndarray, last_only: bool = False) -> np.ndarray:
        tokens = [int(i) for i in np.asarray(ids).reshape(-1)]
        if last_only:
            self.llama.decode(tokens, self.position)
            logits = self.llama.logits(-1).copy()[None]
        else:
            logits = self.llama.decode_logits(tokens, self.position)
        self.position += len(tokens)
        return logits[None]


def top1_agreement(prep: Preparation, gguf: Path) -> float:
    """Fraction of positions of a short prompt where llama.cpp's and eager's greedy tokens agree."""
    from slmc.graph.kv_cache import eager_step, prompt_logits

    ids = bench_prompt(CHECK_TOKENS)
    eager = prompt_logits(eager_step(prep.spec.module.eval()), prep.cache, ids)
    ours = LlamaCpp(gguf, CHECK_TOKENS + 1, default_threads()).prompt_logits([int(i) for i in ids[0]])
    return float(np.mean(eager.argmax(-1) == ours.argmax(-1)))


def _prepare(prep: Preparation, qtype: str) -> dict[str, Any]:
    from slmc.bench.gguf_export import write_gguf
    from slmc.bench.models import hf_folder

    _llama_cpp()
    out = prep.work / f"model-{qtype.lower()}.gguf"
    try:
        written = write_gguf(hf_folder(prep.model), out, qtype)
    except ModelError as exc:
        raise EngineUnavailable(f"no GGUF for {prep.model}: {exc}") from exc
    agreement = top1_agreement(prep, out)
    checked = {"top1_agreement_with_eager": agreement}
    if agreement < MIN_TOP1_AGREEMENT:
        checked["f32_conversion_top1_agreement"] = conversion = _f32_conversion_agreement(prep)
        if conversion < MIN_TOP1_AGREEMENT:
            raise SlmcError(f"the GGUF conversion of {prep.model} is not the same model: greedy tokens of its F32 GGUF "
                            f"agree with PyTorch eager on {conversion:.0%} of {CHECK_TOKENS} positions (at least "
                            f"{MIN_TOP1_AGREEMENT:.0%} expected; {qtype}: {agreement:.0%})")
    read = gguf_decode_bytes(out)
    return {**prep.common(), **written, **checked, "weight_bytes": read.weight_bytes, "decode_bytes": read.to_json(),
            "kv_cache_type": DEFAULT_KV_TYPE,
            "kv_cache_bytes_per_token": kv_bytes_per_token(prep.cache.to_json(), KV_TYPE_BYTES[DEFAULT_KV_TYPE])}


def _f32_conversion_agreement(prep: Preparation) -> float:
    """Top-1 agreement of the unrounded (F32) GGUF of the same tensors (the file is removed afterwards)."""
    from slmc.bench.gguf_export import write_gguf
    from slmc.bench.models import hf_folder

    out = prep.work / "model-f32-check.gguf"
    try:
        write_gguf(hf_folder(prep.model), out, "F32")
        return top1_agreement(prep, out)
    finally:
        out.unlink(missing_ok=True)


def prepare_q4_0(prep: Preparation) -> dict[str, Any]:
    return _prepare(prep, "Q4_0")


def prepare_q8_0(prep: Preparation) -> dict[str, Any]:
    return _prepare(prep, "Q8_0")


class LlamaTimer:
    def __init__(self, info: dict[str, Any], policy: ThreadPolicy):
        threads = policy.threads or default_threads()
        self.llama = LlamaCpp(Path(info["gguf"]), info["kv"]["max_context"], threads,
                              info.get("kv_cache_type", DEFAULT_KV_TYPE))  # the type whose bytes prepare counted
        self.threading = {"threads": self.llama.threads, "set_by": "policy" if policy.threads else
                          "llama.cpp command-line default (physical cores)", "spinning": True,
                          "extra_buffer_types": not self.llama.amx_workaround}

    def decode_ms(self, context: int, steps: int, evict_bytes: int = 0) -> list[float]:
        """One token after a ``context``-token prompt, the memory cut back to ``context`` before each (untimed);
        with ``evict_bytes`` the eviction write runs in this process between llama.cpp's steps, as for slmc."""
        lm = self.llama
        lm.clear()
        lm.decode([int(i) for i in bench_prompt(context)[0]], 0)
        return step_samples(lambda: lm.decode([1], context), steps, evict_bytes, before=lambda: lm.clear(context))

    def prefill_s(self, tokens: int, repeats: int) -> list[float]:
        lm, ids = self.llama, [int(i) for i in bench_prompt(tokens)[0]]
        samples = []
        for _ in range(repeats + 1):
            lm.clear()
            start = time.perf_counter()
            lm.decode(ids, 0)
            int(np.argmax(lm.logits(-1)))
            samples.append(time.perf_counter() - start)
        return samples[1:]

    def peak_rss_mb(self) -> float:
        return peak_rss_mb()


def open_timer(info: dict[str, Any], policy: ThreadPolicy) -> LlamaTimer:
    return LlamaTimer(info, policy)
