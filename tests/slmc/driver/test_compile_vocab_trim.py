"""Issue 20.1 acceptance: ``vocab_trim`` on the fixture LM with the corpus of one stdlib package (email),
through the CLI. The trimmed artifact (examples/recipes/vocab-trim-email.yaml) and the untrimmed
one (``cleanup``) are compiled once per module; the trimmed one must store the rewritten tokenizer,
smaller embedding and head, and generate (greedy, 64 tokens, ``slmc generate`` and the native
``slmc-run``) the same text as the untrimmed one wherever the untrimmed model's argmax is a kept token.
"""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest
from click.testing import CliRunner

from slmc.artifact.layout import read_manifest
from slmc.cli.main import cli
from slmc.data.tokenizer import load_tokenizer

pytestmark = pytest.mark.slow  # two fixture-LM compiles (and the native runtime build)

RECIPE = Path(__file__).resolve().parents[3] / "examples" / "recipes" / "vocab-trim-email.yaml"
NEW_TOKENS = 64
# In-domain prompts: openings in the style of the email package (none is a held-out module's text).
PROMPTS = ["from email.header import Header\n", "    def __init__(self, policy=None):\n        self.policy = policy\n",
           "import email.utils\n\ndef parse_address(value):\n"]


def compile_cli(out: Path, recipe: str) -> Path:
    result = CliRunner().invoke(cli, ["compile", "-m", "fixture-lm", "-r", recipe, "-o", str(out), "--json", "--no-cache", "-q"])
    assert result.exit_code == 0, result.output
    return Path(json.loads(result.stdout)["artifact"])


@pytest.fixture(scope="module")
def artifacts(tmp_path_factory):
    root = tmp_path_factory.mktemp("vocab-trim")
    return compile_cli(root / "full", "cleanup"), compile_cli(root / "trimmed", str(RECIPE))


def generate(artifact: Path, prompt: str) -> dict:
    result = CliRunner().invoke(cli, ["generate", str(artifact), "-p", prompt, "-n", str(NEW_TOKENS), "--json"])
    assert result.exit_code == 0, result.output
    return json.loads(result.stdout)


def kept_old_ids(full: Path, trimmed: Path) -> dict[int, int]:
    """Old id -> new id, from the two artifacts' tokenizers (token strings are the join)."""
    old = load_tokenizer(full, read_manifest(full).tokenizer.model_dump()).json()["model"]["vocab"]
    new = load_tokenizer(trimmed, read_manifest(trimmed).tokenizer.model_dump()).json()["model"]["vocab"]
    return {old[token]: new_id for token, new_id in new.items()}


def test_manifest_records_the_trim_and_half_the_vocabulary_bytes_remain(artifacts):
    full, trimmed = artifacts
    (report,) = [p for p in read_manifest(trimmed).passes if p.name == "vocab_trim"]
    stats = report.stats
    assert stats["tokens_before"] == 4096 and stats["tokens_kept"] < 4096
    assert read_manifest(full).weights.bytes - read_manifest(trimmed).weights.bytes == stats["embedding_head_bytes_saved"]
    assert stats["verify_text"]["retokenized_tokens"] >= 0  # measured on stdlib-heldout/email


def test_generation_matches_the_untrimmed_artifact_where_its_argmax_is_kept(artifacts):
    full, trimmed = artifacts
    table = kept_old_ids(full, trimmed)
    compared = 0
    for prompt in PROMPTS:
        a, b = generate(full, prompt), generate(trimmed, prompt)
        removed = [i for i, token in enumerate(a["tokens"]) if token not in table]
        upto = removed[0] if removed else len(a["tokens"])
        assert b["tokens"][:upto] == [table[t] for t in a["tokens"][:upto]], prompt
        if not removed:
            assert b["text"] == a["text"]
            compared += 1
    assert compared >= 2  # most in-domain continuations use only kept tokens


def test_native_runner_generates_the_same_tokens(artifacts):
    from slmc.native.build import build_runtime

    _, trimmed = artifacts
    runtime = build_runtime()
    for prompt in PROMPTS:
        result = subprocess.run([str(runtime.executable), str(trimmed), "--prompt", prompt, "--max-new-tokens", str(NEW_TOKENS),
                                 "--json"], capture_output=True, text=True, timeout=300)
        assert result.returncode == 0, result.stderr
        native = json.loads(result.stdout)["tokens"]
        python = generate(trimmed, prompt)["tokens"]
        assert python[: len(native)] == native  # the native runner stops at eos
