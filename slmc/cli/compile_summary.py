"""The summary ``slmc compile`` prints: what a person reads in two seconds after a compile.

Every figure comes from the artifact's manifest (``slmc.artifact.manifest``) and the compile's
timings; nothing is measured here.
"""

from __future__ import annotations

from typing import Any

import click

MIB = 1024 * 1024


def _mib(n: int) -> str:
    return f"{n / MIB:.1f} MiB"


def _size_lines(m: Any) -> list[str]:
    """Weights before -> after with the ratio, bits per weight, the artifact's files on disk."""
    after, before, params = m.weights.bytes, m.model.weight_bytes, m.model.parameters
    on_disk = sum(e.size for e in m.files.values())
    lines = []
    if before:
        lines.append(f"  size: weights {_mib(before)} -> {_mib(after)} ({after / before:.3f}x, {before / after:.1f}x smaller); "
                     f"{_mib(on_disk)} on disk")
    else:
        lines.append(f"  size: weights {_mib(after)}; {_mib(on_disk)} on disk")
    if params:
        lines.append(f"  bits/weight: {after * 8 / params:.2f} (stored weight bytes x 8 / {params:,} parameters)")
    return lines


def _quality_lines(v: Any) -> list[str]:
    lines = []
    p = v.perplexity
    if p is not None:
        lines.append(f"  perplexity: {p.original:.4g} -> {p.artifact:.4g} ({p.increase:+.2%}) on {p.tokens_scored:,} held-out tokens")
    q = v.compressed_vs_original
    if q is not None:
        lines.append(f"  vs original: top-1 agreement {q.top1_agreement:.2%}, cosine {q.cosine:.6f} (min row {q.min_row_cosine:.6f})")
    for g in v.gates:
        measured = "not measured" if g.measured is None else f"measured {g.measured:.4g}"
        threshold = "" if g.threshold is None else f" vs threshold {g.threshold:g}"
        lines.append(f"  gate {g.gate}: {measured}{threshold}: {'pass' if g.passed else 'FAIL'}")
    return lines


def _verification_lines(v: Any) -> list[str]:
    n = v.artifact_vs_eager
    if not (v.executed and n is not None):
        return [f"  verified: no, not executed here: {v.reason}"]
    return [f"  verified: {v.how}",
            f"    max abs error {n.max_abs_error:.3g} (atol {n.atol:g}, rtol {n.rtol:g}) over {n.elements_compared:,} elements"]


def _speed_line(v: Any) -> str:
    s = v.speed
    if s is None:
        why = v.reason if not v.executed else "not a causal LM"
        return f"  decode speed: not measured ({why})"
    if not s.measured:
        return f"  decode speed: not measured ({s.reason})"
    return (f"  decode speed: {s.original_tokens_per_s:.0f} -> {s.artifact_tokens_per_s:.0f} tokens/s "
            f"({s.artifact_tokens_per_s / s.original_tokens_per_s:.1f}x; {s.how})")


def print_compile_summary(result: Any) -> None:
    """``result``: a ``slmc.driver.compile.CompileResult``. A cache hit says so and shows no pass timings
    (they belong to the compile that stored it)."""
    m, v = result.manifest, result.manifest.verification
    hit = result.cache is not None and result.cache.get("status") == "hit"
    click.echo(f"compiled {m.model.name} for target '{m.target.name}' in {result.timings['total']:.1f} s"
               + (" (cache hit: the stored artifact, copied)" if hit else ""))
    click.echo(f"  artifact: {result.artifact}")
    if m.recipe_choice:
        click.echo(f"  recipe: {m.recipe_choice}")
    for line in _size_lines(m) + _quality_lines(v) + _verification_lines(v):
        click.echo(line)
    click.echo(_speed_line(v))
    if not hit:
        for p in m.passes:
            stats = ", ".join(f"{k}={val}" for k, val in p.stats.items() if not isinstance(val, (list, dict)))  # per-layer: --report
            click.echo(f"  pass {p.name}: {p.seconds:.2f} s" + (f" ({stats})" if stats else ""))
            for skip in p.skipped:
                click.echo(f"    skipped {skip.node}: {skip.reason}")
    if result.cache is not None:
        click.echo(f"  cache: {result.cache['status']} ({result.cache['key'][:16]} in {result.cache['dir']})")
