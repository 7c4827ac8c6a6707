"""Helpers for pass tests: run a pass on a clone, LM inputs, calibration samples, output error."""

from __future__ import annotations

import torch

from slmc.spec.pass_registry import PassContext, get_pass


def calibration_samples(spec, num_samples=16, sequence_length=128):
    """Calibration samples as a recipe's ``calibration: {text: stdlib-train}`` loads them: windows of the
    fixture's training text, never its held-out modules."""
    from pathlib import Path

    from slmc.frontend.calibration import load_calibration
    from slmc.spec.recipe import recipe_from_document
    from slmc.spec.yaml_source import parse_yaml

    text = f"calibration: {{text: stdlib-train, num_samples: {num_samples}, sequence_length: {sequence_length}}}"
    return load_calibration(recipe_from_document(parse_yaml(text, "<test recipe>"), Path.cwd()), spec)


def run_pass(name, graph, target, calibration=(), **settings):
    definition = get_pass(name)
    return definition.run(graph.clone(), definition.config(**settings), PassContext(target, calibration))


def lm_samples(spec, lengths=(1, 7, 64), past=5, seed=0):
    """Inputs of a cache-contract LM: ``[1, T]`` ids with a random ``past``-slot cache."""
    gen = torch.Generator().manual_seed(seed)
    vocab = spec.tokenizer.vocab_size if hasattr(spec.tokenizer, "vocab_size") else 256
    keys = spec.example_inputs[1]
    shape = (*keys.shape[:3], past, keys.shape[4])
    return [(torch.randint(0, vocab, (1, t), generator=gen), torch.randn(shape, generator=gen), torch.randn(shape, generator=gen))
            for t in lengths]


def relative_error(before, after, samples):
    """Largest ``max|a - b| / max|a|`` over all outputs of all samples."""
    worst = 0.0
    for sample in samples:
        for a, b in zip(before.run(*sample), after.run(*sample)):
            worst = max(worst, (torch.max(torch.abs(a - b)) / torch.max(torch.abs(a))).item())
    return worst


def heldout_perplexity(graph, spec, max_tokens):
    """Perplexity of ``graph`` (eager) on the first ``max_tokens`` tokens of the fixture's held-out text."""
    from slmc.verify.evaluation import document_tokens, perplexity
    from slmc.graph.kv_cache import eager_step
    from slmc.data.texts import load_texts

    docs = document_tokens(load_texts("stdlib-heldout"), spec.tokenizer, max_tokens)
    return perplexity(eager_step(graph.module), spec.kv_cache, docs, 256, 128)["perplexity"]


def compile_fixture(tmp_path, passes, calibration=""):
    """``slmc.compile`` of fixture-lm on host with the recipe lines ``passes`` (``"  - name: {...}\\n"``
    items) and ``calibration`` (a recipe line), verified on 2 samples at atol 1e-4; checks it passed."""
    import slmc

    recipe = tmp_path / "recipe.yaml"
    recipe.write_text(f"passes:\n{passes}{calibration}verify: {{num_samples: 2, atol: 1.0e-4}}\n")
    result = slmc.compile("fixture-lm", str(recipe), "host", tmp_path / "out")
    assert result.manifest.verification.passed
    return result


def pass_report(result, name):
    """The manifest's report of the one pass called ``name``."""
    (report,) = [p for p in result.manifest.passes if p.name == name]
    return report.model_dump()


class TiedHead(torch.nn.Module):
    """An embedding table that is also the output head (``F.linear`` on the same weight), as in SmolLM."""

    def __init__(self, width: int = 64):
        super().__init__()
        torch.manual_seed(0)
        self.embed = torch.nn.Embedding(96, width)
        self.proj = torch.nn.Linear(width, width, bias=False)

    def forward(self, ids):
        return torch.nn.functional.linear(torch.relu(self.proj(self.embed(ids))), self.embed.weight)
