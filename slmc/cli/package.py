"""``slmc package ARTIFACT -o BUNDLE``: a deploy bundle that runs without Python (slmc.driver.package),
and ``slmc verify BUNDLE``'s bundle check. Exit codes: 0 written / intact; 1 a build, run or
integrity failure (a damaged file is named); 2 bad input (not a packable artifact, bad -o)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import click

from slmc.cli.output import emit_json, handles_errors


def print_package_summary(result: Any) -> None:
    record = result.record
    click.echo(f"bundle {result.bundle} ({record.flavour}, {len(record.files)} files, {record.architecture}) and {result.archive}")
    click.echo(f"runner: {record.runner.compiler} -> {record.runner.target_triple}, zlib {'yes' if record.runner.zlib else 'no'}"
               f"{' (tokenizer.json stored uncompressed)' if record.tokenizer_unpacked else ''}")
    click.echo(f"check: {record.run.summary}")
    if record.run.executed:
        click.echo(f"  tokens {record.run.tokens}; compared with: {record.run.reference}"
                   f"{'' if record.run.matches_reference is None else ' -> equal'}")
    click.echo(f"run it: {result.bundle.name}/slmc-run {result.bundle.name} --prompt 'Hello'")


@click.command("package")
@click.argument("artifact", type=click.Path(path_type=Path))
@click.option("-o", "--out", required=True, type=click.Path(path_type=Path),
              help="Bundle directory (also written as OUT.tar.gz); replaced if it is an earlier bundle.")
@click.option("--flavour", type=click.Choice(["dynamic", "static"]), default="dynamic", show_default=True,
              help="dynamic: slmc-run with shared libraries and model.so (glibc); static: one static slmc-run (musl) "
                   "with the model linked in, for Android / any Linux of the architecture (needs pip package ziglang).")
@click.option("--json", "as_json", is_flag=True, help="Print bundle.json and the paths as one JSON object.")
@handles_errors
def package_command(artifact: Path, out: Path, flavour: str, as_json: bool) -> None:
    """Package ARTIFACT with the native runtime of its architecture into a deploy bundle: model files,
    slmc-run, libslmc_runtime.so, TVM's runtime libraries and bundle.json (every file's sha256); the
    bundle's runner is executed once (natively, or under qemu for another architecture)."""
    from slmc.driver.package import package_artifact

    result = package_artifact(artifact, out, flavour=flavour)
    if as_json:
        emit_json(result.to_json())
    else:
        print_package_summary(result)


def verify_bundle_command(bundle: Path, as_json: bool) -> None:
    """``slmc verify`` on a bundle directory: every file against bundle.json (``BundleIntegrityError``, exit 1)."""
    from slmc.artifact.bundle import verify_bundle

    report = verify_bundle(bundle)
    if as_json:
        emit_json({"ok": True, "bundle": str(bundle), **report})
    else:
        click.echo(f"verified bundle {bundle}: {report['files_checked']} files match bundle.json (sha256, size); "
                   f"recorded check: {report['run']}")
