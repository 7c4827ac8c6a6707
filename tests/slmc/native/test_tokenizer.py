"""The native tokenizer (slmc/native) through its C API, against Hugging Face ``tokenizers``.

The library is built once per session (cached by source hash) and loaded with ctypes. Tokenizers:
the fixture LM's (GPT-2-style ByteLevel) and BPEs trained here on standard-library text, configured
like Llama-3 (Split + ByteLevel), Qwen2 (NFC + Split + ByteLevel), Llama-2 legacy (Prepend/Replace
normalizer, byte fallback) and Llama-2/Mistral Metaspace. Ids must equal HF's on a corpus of code,
prose, scripts, emoji, numbers, whitespace, special-token strings and invalid UTF-8.
"""

from __future__ import annotations

import ctypes
import json
import shutil
import subprocess
from pathlib import Path

import pytest
from tokenizers import Regex, Tokenizer, decoders, models, normalizers, pre_tokenizers, processors, trainers

from slmc.native.build import HEADER, build_library

FIXTURE = Path(__file__).resolve().parents[3] / "slmc" / "models" / "fixture_lm" / "tokenizer.json"
LLAMA3 = r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+"
QWEN2 = r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+"

CORPUS = [
    "",
    "def f(x):\n    return x ** 2  # square\n\n\tif x != 0:\r\n        pass\n",
    "The quick brown fox jumps over the lazy dog. It's 5 o'clock; we'll see.",
    "IT'S WE'LL THEY'RE I'M YOU'VE HE'D DON'T 'S 'ſ x'ſ",
    "日本語のテキストと中文文本，한국어 텍스트。",
    "مرحبا بالعالم، هذا نص عربي.",
    "e\u0301 a\u0308 n\u0303 \u1e9b\u0323 A\u030a \u0915\u094d\u0937 \ufb01 \u2126",
    "👩‍👩‍👧‍👦 👍🏽 🏳️‍🌈 🇫🇷 family emoji ❤️‍🔥",
    "1 12 123 1234 12345 123456 1234567 3.14159 1,000,000 ٣٤٥ ²³",
    "a  b   c    d\n\n\n e\t\tf \t \n g   ",
    "   leading and trailing   ",
    "\n",
    " ",
    "x\u00a0y\u2003z\u3000w\u2028v\x1c\x1du\x85t",
    "<|endoftext|>before<|endoftext|> after <|pad|>",
    "<s>hello</s> <s> world <|begin_of_text|><|im_start|>user\nhi<|im_end|>",
    "<0x41> ▁ ▁▁ tokens that look special",
    "mixed: naïve café – “quotes” — … ©®™ ₿ ∑∫√ 𝔘𝔫𝔦𝔠𝔬𝔡𝔢",
]
INVALID_UTF8 = [
    b"\xff\xfe invalid start",
    b"truncated \xe2\x82",
    b"\xed\xa0\x80 surrogate",
    b"over\xc0\xaflong",
    b"\xf0\x9f\x98 emoji cut then ok \xf0\x9f\x98\x80",
    b"\x80\x80\x80",
    b"a\xf4\x90\x80\x80b",
]


@pytest.fixture(scope="module")
def lib():
    library = ctypes.CDLL(str(build_library()))
    library.slmc_tokenizer_open.restype = ctypes.c_void_p
    library.slmc_tokenizer_open.argtypes = [ctypes.c_char_p]
    library.slmc_tokenize_ex.argtypes = [ctypes.c_void_p, ctypes.c_char_p, ctypes.c_size_t, ctypes.c_uint,
                                         ctypes.POINTER(ctypes.c_int32), ctypes.c_size_t, ctypes.POINTER(ctypes.c_size_t)]
    library.slmc_tokenize.argtypes = [ctypes.c_void_p, ctypes.c_char_p, ctypes.c_size_t,
                                      ctypes.POINTER(ctypes.c_int32), ctypes.c_size_t, ctypes.POINTER(ctypes.c_size_t)]
    library.slmc_detokenize.argtypes = [ctypes.c_void_p, ctypes.POINTER(ctypes.c_int32), ctypes.c_size_t, ctypes.c_uint,
                                        ctypes.c_char_p, ctypes.c_size_t, ctypes.POINTER(ctypes.c_size_t)]
    library.slmc_detokenizer_open.restype = ctypes.c_void_p
    library.slmc_detokenizer_open.argtypes = [ctypes.c_void_p, ctypes.c_uint]
    library.slmc_detokenizer_step.argtypes = [ctypes.c_void_p, ctypes.c_int32, ctypes.c_char_p, ctypes.c_size_t,
                                              ctypes.POINTER(ctypes.c_size_t)]
    library.slmc_detokenizer_close.argtypes = [ctypes.c_void_p]
    library.slmc_tokenizer_close.argtypes = [ctypes.c_void_p]
    library.slmc_last_error.restype = ctypes.c_char_p
    return library


class Native:
    """One opened tokenizer through the C API."""

    def __init__(self, lib, path: Path):
        self.lib = lib
        self.handle = lib.slmc_tokenizer_open(str(path).encode())
        assert self.handle, lib.slmc_last_error().decode()

    def encode(self, data: bytes, special: bool = False) -> list[int]:
        count = ctypes.c_size_t()
        rc = self.lib.slmc_tokenize_ex(self.handle, data, len(data), 0 if special else 1, None, 0, ctypes.byref(count))
        if rc == -2:  # capacity too small: the size needed is in count
            buf = (ctypes.c_int32 * count.value)()
            rc = self.lib.slmc_tokenize_ex(self.handle, data, len(data), 0 if special else 1, buf, count.value, ctypes.byref(count))
            assert rc == 0, self.lib.slmc_last_error().decode()
            return list(buf)
        assert rc == 0 and count.value == 0, self.lib.slmc_last_error().decode()
        return []

    def decode(self, ids: list[int], keep_special: bool = False) -> bytes:
        arr = (ctypes.c_int32 * len(ids))(*ids)
        n = ctypes.c_size_t()
        flags = 2 if keep_special else 0
        rc = self.lib.slmc_detokenize(self.handle, arr, len(ids), flags, None, 0, ctypes.byref(n))
        if rc == 0:
            return b""
        assert rc == -2, self.lib.slmc_last_error().decode()
        out = ctypes.create_string_buffer(n.value)
        assert self.lib.slmc_detokenize(self.handle, arr, len(ids), flags, out, n.value, ctypes.byref(n)) == 0
        return out.raw[: n.value]

    def stream(self, ids: list[int]) -> list[bytes]:
        dt = self.lib.slmc_detokenizer_open(self.handle, 0)
        out, buf, n = [], ctypes.create_string_buffer(4096), ctypes.c_size_t()
        for i in ids:
            assert self.lib.slmc_detokenizer_step(dt, i, buf, 4096, ctypes.byref(n)) == 0, self.lib.slmc_last_error().decode()
            out.append(buf.raw[: n.value])
        self.lib.slmc_detokenizer_close(dt)
        return out

    def close(self):
        self.lib.slmc_tokenizer_close(self.handle)


def _training_text() -> list[str]:
    from slmc.data.texts import load_texts

    return load_texts("stdlib-train")[:40]


def _train(tok: Tokenizer, specials: list[str], alphabet: list[str] | None = None, vocab_size: int = 1200) -> Tokenizer:
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=specials, initial_alphabet=alphabet or [],
                                  limit_alphabet=120, show_progress=False)
    tok.train_from_iterator(_training_text(), trainer)
    return tok


def _llama3() -> Tokenizer:
    tok = Tokenizer(models.BPE(ignore_merges=True))
    tok.pre_tokenizer = pre_tokenizers.Sequence([pre_tokenizers.Split(Regex(LLAMA3), "isolated"),
                                                 pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False)])
    tok.decoder = decoders.ByteLevel()
    _train(tok, ["<|begin_of_text|>", "<|end_of_text|>"], pre_tokenizers.ByteLevel.alphabet())
    tok.post_processor = processors.TemplateProcessing(single="<|begin_of_text|> $A",
                                                       special_tokens=[("<|begin_of_text|>", tok.token_to_id("<|begin_of_text|>"))])
    return tok


def _qwen2() -> Tokenizer:
    tok = Tokenizer(models.BPE())
    tok.normalizer = normalizers.NFC()
    tok.pre_tokenizer = pre_tokenizers.Sequence([pre_tokenizers.Split(Regex(QWEN2), "isolated"),
                                                 pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False)])
    tok.decoder = decoders.ByteLevel()
    return _train(tok, ["<|endoftext|>", "<|im_start|>", "<|im_end|>"], pre_tokenizers.ByteLevel.alphabet())


def _sentencepiece_style(metaspace: bool) -> Tokenizer:
    tok = Tokenizer(models.BPE(unk_token="<unk>", fuse_unk=True, byte_fallback=True))
    if metaspace:
        tok.pre_tokenizer = pre_tokenizers.Metaspace(replacement="▁", prepend_scheme="first", split=False)
    else:
        tok.normalizer = normalizers.Sequence([normalizers.Prepend("▁"), normalizers.Replace(" ", "▁")])
    tok.decoder = decoders.Sequence([decoders.Replace("▁", " "), decoders.ByteFallback(), decoders.Fuse(),
                                     decoders.Strip(" ", 1, 0)])
    _train(tok, ["<unk>", "<s>", "</s>"])
    data = json.loads(tok.to_str())
    vocab = data["model"]["vocab"]
    for b in range(256):  # byte tokens in the model vocabulary, not added tokens (as in Llama-2)
        vocab.setdefault(f"<0x{b:02X}>", len(vocab))
    if not metaspace:  # the "a b" string form of merges
        data["model"]["merges"] = [" ".join(m) for m in data["model"]["merges"]]
    tok = Tokenizer.from_str(json.dumps(data))
    tok.post_processor = processors.TemplateProcessing(single="<s> $A", special_tokens=[("<s>", tok.token_to_id("<s>"))])
    return tok


BUILDERS = {"llama3": _llama3, "qwen2": _qwen2, "llama2-legacy": lambda: _sentencepiece_style(False),
            "mistral-metaspace": lambda: _sentencepiece_style(True)}


@pytest.fixture(scope="module", params=["fixture", *BUILDERS])
def pair(request, lib, tmp_path_factory):
    if request.param == "fixture":
        path = FIXTURE
    else:
        path = tmp_path_factory.mktemp("tok") / f"{request.param}.json"
        BUILDERS[request.param]().save(str(path))
    hf = Tokenizer.from_file(str(path))
    hf.no_padding()
    hf.no_truncation()
    native = Native(lib, path)
    yield request.param, hf, native
    native.close()


def _stdlib_samples() -> list[str]:
    from slmc.data.texts import load_texts

    return [doc[:4000] for doc in load_texts("stdlib-heldout")[:6]]


def test_ids_equal_hf_on_corpus(pair):
    name, hf, native = pair
    for text in [*CORPUS, *_stdlib_samples()]:
        assert native.encode(text.encode()) == hf.encode(text, add_special_tokens=False).ids, (name, text)


def test_special_tokens_as_hf_add_special_tokens(pair):
    name, hf, native = pair
    for text in CORPUS:
        assert native.encode(text.encode(), special=True) == hf.encode(text).ids, (name, text)


def test_invalid_utf8_is_read_as_python_replace(pair):
    name, hf, native = pair
    for data in INVALID_UTF8:
        expected = hf.encode(data.decode("utf-8", "replace"), add_special_tokens=False).ids
        assert native.encode(data) == expected, (name, data)


def test_decode_equals_hf_and_round_trips(pair):
    name, hf, native = pair
    for text in [*CORPUS, *_stdlib_samples()]:
        ids = hf.encode(text, add_special_tokens=True).ids
        for keep in (False, True):
            assert native.decode(ids, keep).decode("utf-8") == hf.decode(ids, skip_special_tokens=not keep), (name, text)
        plain = hf.encode(text, add_special_tokens=False).ids
        if hf.decode(plain, skip_special_tokens=False) == text:  # HF round-trips it (no NFC change, no unk)
            assert native.decode(plain, keep_special=True) == text.encode(), (name, text)


def test_fixture_round_trip_is_exact(lib):
    native = Native(lib, FIXTURE)
    for text in CORPUS:
        assert native.decode(native.encode(text.encode()), keep_special=True) == text.encode(), text
    native.close()


def test_streaming_matches_hf_decode_stream(pair):
    name, hf, native = pair
    for text in CORPUS[1:]:
        ids = hf.encode(text, add_special_tokens=True).ids
        stream = decoders.DecodeStream(skip_special_tokens=True)
        expected = [(stream.step(hf, i) or "").encode() for i in ids]
        assert native.stream(ids) == expected, (name, text)


def test_capacity_too_small_reports_the_count(lib):
    native = Native(lib, FIXTURE)
    buf = (ctypes.c_int32 * 1)()
    count = ctypes.c_size_t()
    data = b"hello world, hello"
    assert lib.slmc_tokenize(native.handle, data, len(data), buf, 1, ctypes.byref(count)) == -2
    assert count.value == len(Tokenizer.from_file(str(FIXTURE)).encode("hello world, hello").ids)
    assert b"needed" in lib.slmc_last_error()
    native.close()


def _open_error(lib, path: Path) -> str:
    assert not lib.slmc_tokenizer_open(str(path).encode())
    return lib.slmc_last_error().decode()


def test_missing_file(lib, tmp_path):
    assert "cannot open" in _open_error(lib, tmp_path / "absent.json")


def test_malformed_json_names_the_byte_offset(lib, tmp_path):
    bad = tmp_path / "bad.json"
    bad.write_text('{"model": {"type": "BPE", "vocab": {"a": 0,}}}')
    message = _open_error(lib, bad)
    assert "JSON syntax error at byte 43" in message and str(bad) in message


@pytest.mark.parametrize("model_type", ["WordPiece", "Unigram", "WordLevel"])
def test_unsupported_model_type_is_named(lib, tmp_path, model_type):
    path = tmp_path / "t.json"
    path.write_text(json.dumps({"model": {"type": model_type, "vocab": {}}}))
    assert f'"{model_type}" is not supported' in _open_error(lib, path)


def test_unknown_split_regex_is_named(lib, tmp_path):
    data = json.loads(FIXTURE.read_text())
    data["pre_tokenizer"] = {"type": "Split", "pattern": {"Regex": r"\d+|\w+"}, "behavior": "Isolated", "invert": False}
    path = tmp_path / "t.json"
    path.write_text(json.dumps(data))
    message = _open_error(lib, path)
    assert r'"\d+|\w+" is not one' in message and "pre_tokenizer.pattern" in message


def test_gzip_tokenizer_as_artifacts_store_it(lib, tmp_path):
    import gzip

    if not lib.slmc_tokenizer_supports_gzip():
        pytest.fail("the host build found no zlib (apt-get install zlib1g-dev)")
    path = tmp_path / "tokenizer.json.gz"
    path.write_bytes(gzip.compress(FIXTURE.read_bytes(), mtime=0))
    native = Native(lib, path)
    assert native.encode(b"import os\n") == Tokenizer.from_file(str(FIXTURE)).encode("import os\n").ids
    native.close()


def test_tokenizer_only_library_has_no_model_functions(lib):
    """The model part (test_runtime.py) lives in the runtime library linked with TVM; this one needs no TVM."""
    assert "The tokenizer-only library (no TVM) defines the first part" in " ".join(HEADER.read_text().split())
    with pytest.raises(AttributeError):
        lib.slmc_model_open


def test_aarch64_cross_build_runs_under_qemu(tmp_path):
    for tool in ("aarch64-linux-gnu-g++", "qemu-aarch64-static"):
        if not shutil.which(tool):
            pytest.fail(f"{tool} missing: apt-get install -y g++-aarch64-linux-gnu qemu-user-static")
    static = build_library("aarch64-linux-gnu-g++", "static")
    program = tmp_path / "tokenize_one.c"
    program.write_text(f"""
#include <stdio.h>
#include <string.h>
#include "{HEADER}"
int main(int argc, char** argv) {{
    slmc_tokenizer* tok = slmc_tokenizer_open(argv[1]);
    if (!tok) {{ fprintf(stderr, "%s\\n", slmc_last_error()); return 1; }}
    int32_t ids[256];
    size_t n = 0;
    if (slmc_tokenize_ex(tok, argv[2], strlen(argv[2]), SLMC_NO_SPECIAL_TOKENS, ids, 256, &n)) {{
        fprintf(stderr, "%s\\n", slmc_last_error()); return 1;
    }}
    for (size_t i = 0; i < n; ++i) printf("%d ", ids[i]);
    printf("\\n");
    slmc_tokenizer_close(tok);
    return 0;
}}
""")
    obj, exe = tmp_path / "tokenize_one.o", tmp_path / "tokenize_one"
    subprocess.run(["aarch64-linux-gnu-gcc", "-c", str(program), "-o", str(obj)], check=True)
    subprocess.run(["aarch64-linux-gnu-g++", "-static", str(obj), "-L", str(static.parent), "-lslmc_runtime", "-o", str(exe)],
                   check=True)
    text = "def main():\n    print('héllo, 世界 👍🏽')  # 12345\n"
    run = subprocess.run(["qemu-aarch64-static", "-L", "/usr/aarch64-linux-gnu", str(exe), str(FIXTURE), text],
                         capture_output=True, text=True, check=True)
    assert [int(x) for x in run.stdout.split()] == Tokenizer.from_file(str(FIXTURE)).encode(text).ids
