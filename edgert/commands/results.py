"""`edgert compare` and `edgert report`: reading result files."""
from __future__ import annotations

from pathlib import Path

import click

from edgert.commands.options import output_option



@click.command()
@click.argument("a", type=click.Path(path_type=Path))
@click.argument("b", type=click.Path(path_type=Path))
@click.option("--alpha", default=0.01, show_default=True, help="Significance level.")
@click.option("--allow-different-models", is_flag=True, help="Compare results of different models.")
@click.option("--json", "as_json", is_flag=True, help="Print the comparison as JSON.")
def compare(a: Path, b: Path, alpha: float, allow_different_models: bool, as_json: bool) -> None:
    """Is B faster or slower than A? Mann-Whitney U on the raw samples, in plain words."""
    import json

    from edgert.compare import compare as run_compare, render_compare
    from edgert.result import read_json

    report = run_compare(read_json(a), read_json(b), alpha,
                         allow_different_models=allow_different_models)
    click.echo(json.dumps(report, indent=1) if as_json else render_compare(report))


@click.command()
@click.argument("results", nargs=-1, required=True, type=click.Path(path_type=Path))
@output_option("-o", "--output", default=Path("report.html"),
              show_default=True, help="The HTML file (every plot is inside it).")
def report(results: tuple[Path, ...], output: Path) -> None:
    """Render result, sweep and calibration files into one self-contained HTML report."""
    from edgert.report import render_report

    click.echo(str(render_report(list(results), output)))
