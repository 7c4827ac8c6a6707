"""``slmc tune MODEL -r RECIPE -t TARGET``: tune a model's kernels into the tuning database (docs/tuning.md).

Registered by slmc/cli/main.py (``cli.add_command(tune_command)``); ``slmc compile`` then applies the
records automatically (``slmc.backend.tuning_db``).
"""

from __future__ import annotations

from pathlib import Path

import click

from slmc.cli.output import emit_json, handles_errors


@click.command("tune")
@click.argument("model", required=False)
@click.option("-r", "--recipe", default=None, help="Recipe the model is compiled with [default: built-in default].")
@click.option("-t", "--target", default=None, help="CPU target that runs on this machine [default: host].")
@click.option("--trials", default=64, show_default=True, type=int, help="MetaSchedule trials per kernel.")
@click.option("--budget-minutes", default=None, type=float, help="Stop starting new kernels after this many minutes.")
@click.option("--db", type=click.Path(path_type=Path), default=None,
              help="Tuning database root [default: $SLMC_TUNING_DB, else ~/.cache/slmc/tuning].")
@click.option("--json", "as_json", is_flag=True, help="Print the full report as JSON.")
@handles_errors
def tune_command(model: str | None, recipe: str | None, target: str | None, trials: int, budget_minutes: float | None,
                 db: Path | None, as_json: bool) -> None:
    """Tune MODEL's static-shape kernels with MetaSchedule and store the best schedules."""
    from slmc.driver.tune import tune

    report = tune(model, recipe, target, trials=trials, budget_minutes=budget_minutes, db=db)
    if as_json:
        emit_json(report)
        return
    for kernel in report["kernels"]:
        what = kernel.get("skipped") or f"{kernel['trials']} trials, best {kernel['best_us']} us, {kernel['seconds']} s"
        click.echo(f"{kernel['name']:<40} {what}")
    click.echo(f"tuned {report['tuned']} of {len(report['kernels'])} kernels in {report['seconds']} s; "
               f"records in {report['database']}")
