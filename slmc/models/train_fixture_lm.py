"""Train the small fixture language model that slmc's tests and examples compress.

The fixture is a Llama-architecture causal LM (about 4.85M parameters, under 20 MB as fp32
safetensors) with a 4096-entry byte-level BPE tokenizer. Both are trained from scratch on the
Python source files of the running interpreter's standard library, so nothing is downloaded
and no third-party text is stored in the repository.

Reproduce the committed fixture (CPU, one thread, about 40 minutes):

    HF_HUB_OFFLINE=1 python slmc/models/train_fixture_lm.py --out slmc/models/fixture_lm --seed 0

What is written to ``--out``:

* ``config.json``, ``generation_config.json``, ``model.safetensors``: the model (fp32).
* ``tokenizer.json``, ``tokenizer_config.json``: loadable offline with
  ``AutoTokenizer.from_pretrained(out)`` or ``PreTrainedTokenizerFast(tokenizer_file=...)``.
* ``split.json``: the train/held-out split as lists of module paths relative to the stdlib
  directory (no stdlib text is copied); the held-out text is re-read from the local stdlib.
* ``training.json``: seed, steps, tokens seen, losses, wall time, versions, held-out perplexity.

Determinism: the file list is sorted, the held-out split depends only on the relative path,
the tokenizer trainer sees the documents in a fixed order, weights are initialised after
``torch.manual_seed(seed)`` and batches are drawn from a seeded ``torch.Generator``. With the
default fixed step count (``--steps``) a rerun on the same machine, Python (hence stdlib) and
torch version reproduces the same weights. ``--minutes`` switches to a wall-clock budget,
which is convenient for smoke runs but not reproducible.
"""

from __future__ import annotations

import os

# Offline and polite to a shared 2-core machine. These must be set before tokenizers/torch load.
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("RAYON_NUM_THREADS", "1")
os.environ.setdefault("OMP_NUM_THREADS", "1")

import argparse
import hashlib
import json
import math
import platform
import sys
import sysconfig
import time
from pathlib import Path
from typing import Iterable, Sequence

import torch

# ---------------------------------------------------------------------------------------------
# Fixed hyper-parameters of the fixture. Every matrix dimension is a multiple of 128 so that
# group-wise quantisation with group sizes 32/64/128 applies without padding.
# ---------------------------------------------------------------------------------------------
VOCAB_SIZE = 4096
EOS_TOKEN = "<|endoftext|>"
PAD_TOKEN = "<|pad|>"
SPECIAL_TOKENS = [EOS_TOKEN, PAD_TOKEN]

MODEL_KWARGS = dict(
    vocab_size=VOCAB_SIZE,
    hidden_size=256,
    num_hidden_layers=4,
    num_attention_heads=8,
    num_key_value_heads=4,  # grouped-query attention, 2 query heads per KV head
    intermediate_size=640,
    max_position_embeddings=512,
    rms_norm_eps=1e-5,
    rope_theta=10000.0,
    hidden_act="silu",
    tie_word_embeddings=False,
    attention_bias=False,
    mlp_bias=False,
    attention_dropout=0.0,
    initializer_range=0.02,
)

SEQ_LEN = 256
BATCH_SIZE = 16  # sequences per step -> 4096 tokens per step
# Calibrated so that the default run takes about 40 minutes on one AMD EPYC thread
# (~1.18 s/step, ~3450 tokens/s, measured for this model at batch 16 x 256).
DEFAULT_STEPS = 2000
PEAK_LR = 2e-3
MIN_LR_RATIO = 0.1
WARMUP_FRACTION = 0.05
WEIGHT_DECAY = 0.1
BETAS = (0.9, 0.95)
GRAD_CLIP = 1.0

HELDOUT_MODULUS = 20  # sha256(relative path) % 20 == 0 -> held out (~5% of modules)
EVAL_WINDOW = 256
EVAL_STRIDE = 128

# Path components that exclude a file from the corpus.
EXCLUDED_DIRS = frozenset(
    {
        "test",  # CPython's regression test suite, plus */test packages (ctypes, tkinter, ...)
        "tests",  # lib2to3/tests, distutils/tests, ...
        "idlelib",
        "site-packages",
        "dist-packages",
        "__pycache__",
        "lib-dynload",
        "pydoc_data",  # topics.py is a 750 kB string of documentation, not code
        "encodings",  # mostly generated charmap tables of \x escapes
    }
)


# ---------------------------------------------------------------------------------------------
# Corpus
# ---------------------------------------------------------------------------------------------
def stdlib_dir() -> Path:
    return Path(sysconfig.get_paths()["stdlib"]).resolve()


def _excluded(rel: Path) -> bool:
    parts = rel.parts
    if any(p in EXCLUDED_DIRS for p in parts[:-1]):
        return True
    if parts[0].startswith("config-"):  # config-3.11-x86_64-linux-gnu
        return True
    if rel.name.startswith("_sysconfigdata"):  # machine-specific build data
        return True
    return False


def list_stdlib_modules(root: Path | None = None) -> list[str]:
    """Relative POSIX paths of the stdlib ``*.py`` files used as corpus, sorted."""
    root = root or stdlib_dir()
    out = []
    for p in root.rglob("*.py"):
        if not p.is_file():
            continue
        rel = p.relative_to(root)
        if not _excluded(rel):
            out.append(rel.as_posix())
    return sorted(out)


def is_heldout(rel_path: str) -> bool:
    digest = hashlib.sha256(rel_path.encode("utf-8")).digest()
    return int.from_bytes(digest, "big") % HELDOUT_MODULUS == 0


def read_module(rel_path: str, root: Path | None = None) -> str:
    """Read one stdlib module as text (PEP 263 encoding aware)."""
    import tokenize

    root = root or stdlib_dir()
    with tokenize.open(root / rel_path) as f:
        return f.read()


def split_modules(root: Path | None = None) -> tuple[list[str], list[str]]:
    mods = list_stdlib_modules(root)
    train = [m for m in mods if not is_heldout(m)]
    held = [m for m in mods if is_heldout(m)]
    return train, held


# ---------------------------------------------------------------------------------------------
# Tokenizer
# ---------------------------------------------------------------------------------------------
def train_tokenizer(texts: Sequence[str], vocab_size: int = VOCAB_SIZE):
    """Byte-level BPE (GPT-2 style pre-tokenisation), deterministic for a fixed input order."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers

    tok = Tokenizer(models.BPE(unk_token=None, fuse_unk=False, byte_fallback=False))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True)
    tok.decoder = decoders.ByteLevel()
    tok.post_processor = processors.ByteLevel(trim_offsets=False)
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        min_frequency=2,
        special_tokens=list(SPECIAL_TOKENS),
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(texts, trainer=trainer, length=len(texts))
    return tok


def wrap_tokenizer(tok):
    from transformers import PreTrainedTokenizerFast

    return PreTrainedTokenizerFast(
        tokenizer_object=tok,
        eos_token=EOS_TOKEN,
        bos_token=EOS_TOKEN,
        unk_token=None,
        pad_token=PAD_TOKEN,
        model_max_length=MODEL_KWARGS["max_position_embeddings"],
        clean_up_tokenization_spaces=False,
    )


def encode_documents(tokenizer, texts: Iterable[str]) -> list[list[int]]:
    """Token ids of each document, each preceded by the EOS/BOS separator."""
    eos = tokenizer.convert_tokens_to_ids(EOS_TOKEN)
    backend = tokenizer.backend_tokenizer
    encs = backend.encode_batch(list(texts), add_special_tokens=False)
    return [[eos] + e.ids for e in encs]


# ---------------------------------------------------------------------------------------------
# Evaluation
# ---------------------------------------------------------------------------------------------
@torch.no_grad()
def heldout_perplexity(
    model,
    tokenizer,
    texts: Sequence[str],
    window: int = EVAL_WINDOW,
    stride: int = EVAL_STRIDE,
    batch_size: int = 16,
) -> dict:
    """Token-weighted perplexity of ``model`` over ``texts`` (one document per text).

    Each document is encoded as ``[EOS] + tokens`` (as in training) and every real token is
    predicted exactly once. Windows of ``window`` tokens start every ``stride`` tokens; a
    window scores only the targets not scored by an earlier window, so with ``stride <
    window`` every target (past the first window) sees at least ``window - stride`` tokens of
    context ("sliding window"). ``stride >= window - 1`` gives non-overlapping target blocks
    (consecutive windows share one token, used only as context). Returns a dict with
    ``perplexity``, ``nll`` (mean nats/token), ``tokens``, ``bytes`` and ``bits_per_byte``.
    """
    if window < 2:
        raise ValueError("window must be >= 2")
    stride = max(1, min(stride, window - 1))
    model.eval()
    device = next(model.parameters()).device
    pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0

    # Build (input_ids, first scored position) windows.
    windows: list[tuple[list[int], int]] = []
    for ids in encode_documents(tokenizer, texts):
        n = len(ids)
        if n < 2:
            continue
        begin, scored_until = 0, 1  # ids[0] (EOS) is context only
        while True:
            end = min(begin + window, n)
            # targets ids[scored_until:end] are predicted by logits at positions -1 of them
            windows.append((ids[begin:end], scored_until - begin))
            scored_until = end
            if end == n:
                break
            begin += stride

    total_nll, total_tokens = 0.0, 0
    for i in range(0, len(windows), batch_size):
        chunk = windows[i : i + batch_size]
        length = max(len(w) for w, _ in chunk)
        inp = torch.full((len(chunk), length), pad_id, dtype=torch.long)
        labels = torch.full((len(chunk), length), -100, dtype=torch.long)
        for r, (w, first) in enumerate(chunk):
            t = torch.tensor(w, dtype=torch.long)
            inp[r, : len(w)] = t
            labels[r, first : len(w)] = t[first:]
        # Right padding under a causal mask does not change the real positions' logits.
        logits = model(input_ids=inp.to(device)).logits.float()
        shift_logits = logits[:, :-1].reshape(-1, logits.size(-1))
        shift_labels = labels[:, 1:].reshape(-1).to(device)
        nll = torch.nn.functional.cross_entropy(
            shift_logits, shift_labels, ignore_index=-100, reduction="sum"
        )
        total_nll += float(nll)
        total_tokens += int((shift_labels != -100).sum())

    n_bytes = sum(len(t.encode("utf-8")) for t in texts)
    mean = total_nll / max(total_tokens, 1)
    return {
        "perplexity": math.exp(mean),
        "nll": mean,
        "tokens": total_tokens,
        "bytes": n_bytes,
        "bits_per_byte": total_nll / math.log(2) / max(n_bytes, 1),
        "window": window,
        "stride": stride,
        "method": "sliding" if stride < window - 1 else "non-overlapping",
    }


# ---------------------------------------------------------------------------------------------
# Training
# ---------------------------------------------------------------------------------------------
def lr_at(progress: float) -> float:
    """Linear warm-up then cosine decay to MIN_LR_RATIO * PEAK_LR; progress in [0, 1]."""
    if progress < WARMUP_FRACTION:
        return PEAK_LR * progress / WARMUP_FRACTION
    p = min(1.0, (progress - WARMUP_FRACTION) / (1.0 - WARMUP_FRACTION))
    return PEAK_LR * (MIN_LR_RATIO + (1.0 - MIN_LR_RATIO) * 0.5 * (1.0 + math.cos(math.pi * p)))


def make_chunks(docs: list[list[int]], seq_len: int) -> torch.Tensor:
    """Concatenate documents into one stream and cut it into non-overlapping rows."""
    stream = torch.tensor([t for d in docs for t in d], dtype=torch.long)
    n = stream.numel() // seq_len
    return stream[: n * seq_len].view(n, seq_len)


class BatchSampler:
    """Seeded epoch-wise permutation of the chunk rows."""

    def __init__(self, n_rows: int, batch_size: int, seed: int):
        self.n, self.bs = n_rows, batch_size
        self.gen = torch.Generator().manual_seed(seed)
        self.perm = torch.randperm(self.n, generator=self.gen)
        self.pos = 0
        self.epoch = 0

    def next(self) -> torch.Tensor:
        if self.pos + self.bs > self.n:
            self.perm = torch.randperm(self.n, generator=self.gen)
            self.pos = 0
            self.epoch += 1
        idx = self.perm[self.pos : self.pos + self.bs]
        self.pos += self.bs
        return idx


def main(argv: Sequence[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--out", required=True, help="output directory")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument(
        "--steps",
        type=int,
        default=DEFAULT_STEPS,
        help=f"fixed number of optimizer steps (default {DEFAULT_STEPS}, ~40 min on one thread)",
    )
    ap.add_argument(
        "--minutes",
        type=float,
        default=None,
        help="train for a wall-clock budget instead of --steps (not reproducible; the LR "
        "schedule follows elapsed time)",
    )
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--log-every", type=int, default=25)
    args = ap.parse_args(argv)

    torch.set_num_threads(args.threads)
    from transformers import LlamaConfig, LlamaForCausalLM
    import transformers
    import tokenizers

    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    t_start = time.time()

    def log(msg: str) -> None:
        print(f"[{time.time() - t_start:7.1f}s] {msg}", flush=True)

    # 1. corpus and split -----------------------------------------------------------------
    root = stdlib_dir()
    train_mods, held_mods = split_modules(root)
    train_texts = [read_module(m, root) for m in train_mods]
    held_texts = [read_module(m, root) for m in held_mods]
    corpus_sha = hashlib.sha256()
    for m, t in zip(train_mods, train_texts):
        corpus_sha.update(m.encode() + b"\0" + t.encode("utf-8") + b"\0")
    held_sha = hashlib.sha256()
    for m, t in zip(held_mods, held_texts):
        held_sha.update(m.encode() + b"\0" + t.encode("utf-8") + b"\0")
    split = {
        "description": "Python stdlib *.py modules relative to sysconfig.get_paths()['stdlib']; "
        f"held out iff int(sha256(relative_path)) % {HELDOUT_MODULUS} == 0",
        "python_version": platform.python_version(),
        "excluded_dirs": sorted(EXCLUDED_DIRS) + ["config-*", "_sysconfigdata*.py"],
        "train_sha256": corpus_sha.hexdigest(),
        "heldout_sha256": held_sha.hexdigest(),
        "train_bytes": sum(len(t.encode("utf-8")) for t in train_texts),
        "heldout_bytes": sum(len(t.encode("utf-8")) for t in held_texts),
        "heldout": held_mods,
        "train": train_mods,
    }
    (out / "split.json").write_text(json.dumps(split, indent=1) + "\n")
    log(
        f"corpus: {len(train_mods)} train modules ({split['train_bytes'] / 1e6:.2f} MB), "
        f"{len(held_mods)} held-out modules ({split['heldout_bytes'] / 1e6:.2f} MB)"
    )

    # 2. tokenizer ------------------------------------------------------------------------
    raw_tok = train_tokenizer(train_texts)
    tokenizer = wrap_tokenizer(raw_tok)
    tokenizer.save_pretrained(out)
    tok_sha = hashlib.sha256((out / "tokenizer.json").read_bytes()).hexdigest()
    log(f"tokenizer: vocab {raw_tok.get_vocab_size()}, tokenizer.json sha256 {tok_sha[:16]}")

    docs = encode_documents(tokenizer, train_texts)
    chunks = make_chunks(docs, SEQ_LEN)
    n_train_tokens = sum(len(d) for d in docs)
    log(
        f"train tokens: {n_train_tokens} ({split['train_bytes'] / n_train_tokens:.2f} bytes/token), "
        f"{chunks.size(0)} rows of {SEQ_LEN}"
    )

    # 3. model ----------------------------------------------------------------------------
    torch.manual_seed(args.seed)
    config = LlamaConfig(
        **MODEL_KWARGS,
        bos_token_id=tokenizer.convert_tokens_to_ids(EOS_TOKEN),
        eos_token_id=tokenizer.convert_tokens_to_ids(EOS_TOKEN),
        pad_token_id=tokenizer.pad_token_id,
    )
    model = LlamaForCausalLM(config)
    model.train()
    n_params = sum(p.numel() for p in model.parameters())
    log(f"model: {n_params} parameters ({n_params * 4 / 1e6:.2f} MB fp32)")

    decay, no_decay = [], []
    for name, p in model.named_parameters():
        (decay if p.dim() >= 2 and "embed" not in name else no_decay).append(p)
    opt = torch.optim.AdamW(
        [
            {"params": decay, "weight_decay": WEIGHT_DECAY},
            {"params": no_decay, "weight_decay": 0.0},
        ],
        lr=PEAK_LR,
        betas=BETAS,
        eps=1e-8,
    )
    sampler = BatchSampler(chunks.size(0), BATCH_SIZE, args.seed)

    budget_s = args.minutes * 60.0 if args.minutes is not None else None
    t_train = time.time()
    step, ema, last_losses = 0, None, []
    while True:
        if budget_s is not None:
            progress = (time.time() - t_train) / budget_s
            if progress >= 1.0:
                break
        else:
            if step >= args.steps:
                break
            progress = step / args.steps
        lr = lr_at(progress)
        for g in opt.param_groups:
            g["lr"] = lr
        batch = chunks[sampler.next()]
        loss = model(input_ids=batch, labels=batch).loss
        loss.backward()
        gnorm = torch.nn.utils.clip_grad_norm_(model.parameters(), GRAD_CLIP).item()
        opt.step()
        opt.zero_grad(set_to_none=True)
        step += 1
        lv = loss.item()
        ema = lv if ema is None else 0.95 * ema + 0.05 * lv
        last_losses = (last_losses + [lv])[-50:]
        if step % args.log_every == 0 or step == 1:
            el = time.time() - t_train
            log(
                f"step {step:5d} epoch {sampler.epoch} loss {lv:.4f} ema {ema:.4f} "
                f"lr {lr:.2e} gnorm {gnorm:.2f} {step * BATCH_SIZE * SEQ_LEN / el:.0f} tok/s"
            )
    train_wall = time.time() - t_train
    tokens_seen = step * BATCH_SIZE * SEQ_LEN
    final_loss = sum(last_losses) / max(len(last_losses), 1)
    log(f"trained {step} steps, {tokens_seen} tokens in {train_wall:.0f}s, final loss {final_loss:.4f}")

    # 4. save -----------------------------------------------------------------------------
    model.eval()
    model.generation_config.do_sample = False
    model.save_pretrained(out, safe_serialization=True)
    for f in out.iterdir():  # save_pretrained may create the weights file with mode 0600
        if f.is_file():
            f.chmod(0o644)

    # 5. held-out perplexity --------------------------------------------------------------
    t_eval = time.time()
    ppl = heldout_perplexity(model, tokenizer, held_texts, window=EVAL_WINDOW, stride=EVAL_STRIDE)
    ppl_nonoverlap = heldout_perplexity(
        model, tokenizer, held_texts, window=EVAL_WINDOW, stride=EVAL_WINDOW - 1
    )
    log(
        f"held-out perplexity {ppl['perplexity']:.3f} (sliding window {EVAL_WINDOW}, stride "
        f"{EVAL_STRIDE}, {ppl['tokens']} tokens, {ppl['bits_per_byte']:.3f} bits/byte); "
        f"non-overlapping {ppl_nonoverlap['perplexity']:.3f} ({time.time() - t_eval:.0f}s)"
    )

    info = {
        "seed": args.seed,
        "mode": "wall-clock" if budget_s is not None else "fixed-steps",
        "minutes_budget": args.minutes,
        "steps": step,
        "batch_size": BATCH_SIZE,
        "seq_len": SEQ_LEN,
        "tokens_per_step": BATCH_SIZE * SEQ_LEN,
        "tokens_seen": tokens_seen,
        "epochs_seen": tokens_seen / (chunks.numel()),
        "train_corpus_tokens": n_train_tokens,
        "final_train_loss": final_loss,
        "final_train_loss_note": "mean of the last 50 step losses",
        "last_step_loss": last_losses[-1] if last_losses else None,
        "optimizer": {
            "name": "AdamW",
            "peak_lr": PEAK_LR,
            "min_lr": PEAK_LR * MIN_LR_RATIO,
            "schedule": "linear warm-up then cosine",
            "warmup_fraction": WARMUP_FRACTION,
            "weight_decay": WEIGHT_DECAY,
            "betas": list(BETAS),
            "grad_clip": GRAD_CLIP,
        },
        "parameters": n_params,
        "model": MODEL_KWARGS,
        "dtype": "float32",
        "heldout_perplexity": ppl["perplexity"],
        "heldout_eval": {
            **ppl,
            "modules": len(held_mods),
            "non_overlapping": ppl_nonoverlap,
        },
        "wall_time_s": time.time() - t_start,
        "train_wall_time_s": train_wall,
        "threads": args.threads,
        "tokenizer_sha256": tok_sha,
        "torch_version": torch.__version__,
        "transformers_version": transformers.__version__,
        "tokenizers_version": tokenizers.__version__,
        "python_version": platform.python_version(),
        "command": "python slmc/models/train_fixture_lm.py " + " ".join(sys.argv[1:] if argv is None else argv),
    }
    (out / "training.json").write_text(json.dumps(info, indent=1) + "\n")
    log(f"wrote {out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
