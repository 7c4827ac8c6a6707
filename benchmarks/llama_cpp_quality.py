"""Held-out perplexity of llama.cpp on the same weights as slmc's recipes, scored by slmc's own evaluator.

llama.cpp's Q4_0 matmul is int4 x int8: ggml quantizes the activations to Q8_0 (int8 codes, one scale per
block of 32) and runs the integer dot product ``ggml_vec_dot_q4_0_q8_0`` (llama.cpp,
``ggml/src/ggml-cpu/ggml-cpu.c``: ``type_traits_cpu[GGML_TYPE_Q4_0]`` has ``vec_dot_type = GGML_TYPE_Q8_0``;
the reference loop is ``ggml_vec_dot_q4_0_q8_0_generic`` in ``ggml/src/ggml-cpu/quants.c``). So slmc's W4A8
g32 is the same arithmetic, with other rounding details (docs/benchmarks.md, "Like-for-like").

Every row uses one evaluator, ``slmc.verify.evaluation.perplexity`` (``heldout``: window 256, stride 128, the
first ``--max-tokens`` tokens of ``--text``, as docs/quality.md):

- slmc rows: the model (default ``fixture-lm``) with each RECIPE's passes, evaluated eagerly (what
  ``slmc eval MODEL -r RECIPE`` measures; ``heldout.heldout_perplexity``), and without a recipe (fp32);
- llama.cpp rows: the same checkpoint written as GGUF (``slmc.bench.gguf_export``: every matmul weight and
  the embedding in the given type) and run by llama-cpp-python as a ``Decoder``
  (``slmc.bench.engine_llama_cpp.LlamaCppDecoder``) over the same token ids, once per KV cache type.
  ``F32`` is the conversion's control: llama.cpp without weight rounding. An ``F32`` KV cache runs with llama.cpp's
  flash attention off (``LlamaCpp(flash_attn=False)``), and its row says so: flash attention (on by default on
  CPU) casts an F32 K and V to F16 before attending (``build_attn_mha`` in ``src/llama-graph.cpp``), so with it on
  the F32 rows were the F16 cache's bit for bit (fixture-lm, 100-token prompt: logits identical, 7.5e-3 from eager
  fp32; flash attention off 1.1e-5). The F16 cache keeps llama.cpp's default (flash attention on).

    python benchmarks/llama_cpp_quality.py examples/recipes/int4-g32-rtn.yaml \\
        examples/recipes/bench/w4a8-g32-rtn.yaml examples/recipes/bench/w4a8-g32-a32-rtn.yaml \\
        [--qtypes F32 Q4_0] [--kv-types F16 F32] [--max-tokens 20000] [--json out.json]

Prints one markdown row per engine for docs/quality.md (perplexity, change against slmc's fp32, seconds).
Needs the ``bench`` extra (``gguf``, ``llama-cpp-python``).
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path
from typing import Any

from heldout import STRIDE, WINDOW, add_heldout_arguments, heldout_documents, heldout_perplexity


# llama.cpp's flash attention per KV cache type: off where it would attend in another precision than the cache's
FLASH_ATTENTION = {"F16": None, "F32": False}  # None: llama.cpp's default (on for the CPU)
ATTENTION_LABEL = {None: "", False: ", flash attention off (F32 attention)"}


def llama_cpp_perplexity(model: str, qtype: str, kv_type: str, text: str, max_tokens: int, work: Path) -> float:
    """llama.cpp's perplexity on ``model``'s checkpoint as ``qtype`` GGUF, over the tokens slmc evaluates, with the
    flash attention setting of ``FLASH_ATTENTION[kv_type]``."""
    from slmc.bench.engine_llama_cpp import LlamaCpp, LlamaCppDecoder, default_threads
    from slmc.bench.gguf_export import write_gguf
    from slmc.bench.models import hf_folder
    from slmc.driver.eval_subject import open_subject
    from slmc.verify.evaluation import perplexity

    subject = open_subject(model)
    docs = heldout_documents(subject, text, max_tokens)
    gguf = work / f"{model}-{qtype.lower()}.gguf"
    if not gguf.exists():
        write_gguf(hf_folder(model), gguf, qtype)
    llama = LlamaCpp(gguf, WINDOW, default_threads(), kv_type, flash_attn=FLASH_ATTENTION[kv_type])
    return perplexity(LlamaCppDecoder(llama, subject.kv_cache), subject.kv_cache, docs, WINDOW, STRIDE)["perplexity"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_heldout_arguments(parser, "*")
    parser.add_argument("--qtypes", nargs="+", default=["F32", "Q4_0"], help="GGUF types (slmc.bench.gguf_export.QTYPES)")
    parser.add_argument("--kv-types", nargs="+", default=["F16", "F32"], choices=sorted(FLASH_ATTENTION),
                        help="llama.cpp KV cache types (its default F16; F32 runs with flash attention off, see the docstring)")
    parser.add_argument("--json", type=Path, help="also write the figures here")
    args = parser.parse_args()

    rows: list[dict[str, Any]] = []

    def timed(engine: str, what: str, measure: Any) -> None:
        start = time.perf_counter()
        value = float(measure())
        rows.append({"engine": engine, "what": what, "perplexity": value, "seconds": round(time.perf_counter() - start, 1)})
        base = rows[0]["perplexity"]
        print(f"| {engine} | {what} | {value:.4f} | {value / base - 1:+.2%} | {rows[-1]['seconds']} |", flush=True)

    print(f"{args.model}, first {args.max_tokens} tokens of {args.text}, window {WINDOW}, stride {STRIDE}")
    print("| engine | what | perplexity | vs slmc fp32 | seconds |")
    print("|---|---|---|---|---|")
    timed("slmc", "fp32 (no recipe)", lambda: heldout_perplexity(args.model, None, args.text, args.max_tokens))
    for recipe in args.recipes:
        timed("slmc", f"`{recipe}`", lambda r=recipe: heldout_perplexity(args.model, r, args.text, args.max_tokens))
    with tempfile.TemporaryDirectory(prefix="llama-cpp-quality-") as work:
        for qtype in args.qtypes:
            for kv_type in args.kv_types:
                timed("llama.cpp", f"{qtype} GGUF, KV cache {kv_type}{ATTENTION_LABEL[FLASH_ATTENTION[kv_type]]}",
                      lambda q=qtype, k=kv_type: llama_cpp_perplexity(args.model, q, k, args.text, args.max_tokens, Path(work)))
    if args.json is not None:
        args.json.write_text(json.dumps({"model": args.model, "text": args.text, "max_tokens": args.max_tokens,
                                         "window": WINDOW, "stride": STRIDE, "rows": rows}, indent=2) + "\n")


if __name__ == "__main__":
    main()
