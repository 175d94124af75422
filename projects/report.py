"""`report` entry point: the reference study's results table from what the tracking store holds.

Rows: the preset's context lengths; columns: the untrained base, the initial run, the final model
(the champion), each on the test split; beside them the reference forecasters, the FLOPs by phase
and the final model's figures. Cells no run measured are evaluated now, each a budgeted child run
(phase `report`); a rerun reuses them. Printed, and logged as `report.md` and `report.html`.
"""

from __future__ import annotations

import click

from lvtrack.options import data_option, eval_series_option, preset_option
from lvtrack.presets import get_preset
from lvtrack.report_run import run_report
from lvtrack.tracking import ui_hint


@click.command()
@preset_option
@data_option
@eval_series_option
def main(preset: str, data_file: str, eval_series: int | None) -> None:
    """Write the experiment's report (docs/report.md); evaluates the cells no run measured."""
    p = get_preset(preset, eval_series=eval_series)
    report = run_report(p, data_file)
    click.echo(report.markdown)
    click.echo(
        f"report: run {report.run_id} (report.md, report.html); {len(report.filled)} cell(s) "
        f"evaluated now, {report.charged:.3e} FLOPs charged",
        err=True,
    )
    click.echo(
        f"report: {ui_hint(report.experiment_id)} (report.html: the report run's artifacts)",
        err=True,
    )


if __name__ == "__main__":
    main()
