"""`edgert compare` and `edgert report`: reading result files."""
from __future__ import annotations

from pathlib import Path

import click

from edgert.commands.options import output_option, refuse_overwriting_inputs
from edgert.errors import UsageError


@click.command()
@click.argument("files", nargs=-1, required=True, type=click.Path(path_type=Path))
@click.option("--alpha", default=0.01, show_default=True, help="Significance level.")
@click.option("--allow-different-models", is_flag=True, help="Compare results of different models.")
@output_option("--json", "json_path", default=None, metavar="PATH|-",
              help="Write the comparison as JSON to PATH, or to stdout with -.")
def compare(files: tuple[Path, ...], alpha: float, allow_different_models: bool, json_path: Path | None) -> None:
    """Is B (C, ...) faster or slower than A? Mann-Whitney U on the raw samples, p50 and p99
    verdicts in plain words; with 3+ files a table against A and the geometric mean."""
    from edgert.commands.options import refuse_overwriting_inputs, write_json_output
    from edgert.compare import compare as run_compare, compare_many, render_compare, render_many
    from edgert.result import read_json

    if len(files) < 2:
        raise UsageError("compare needs at least two result files: A B [C ...]")
    refuse_overwriting_inputs(json_path, files, "--json")  # the verdict replaced result A
    results = [read_json(f) for f in files]
    if len(results) == 2:
        report = run_compare(*results, alpha, allow_different_models=allow_different_models)
        text = render_compare(report)
    else:
        report = compare_many(results, alpha, allow_different_models=allow_different_models)
        text = render_many(report)
    if json_path is not None:
        write_json_output(report, json_path)
    if str(json_path) != "-":
        click.echo(text)


@click.command()
@click.argument("results", nargs=-1, required=True, type=click.Path(path_type=Path))
@output_option("-o", "--output", default=Path("report.html"),
              show_default=True, help="The HTML file (every plot is inside it).")
def report(results: tuple[Path, ...], output: Path) -> None:
    """Render result, sweep and calibration files into one self-contained HTML report."""
    from edgert.report import render_report

    refuse_overwriting_inputs(output, results, "-o")
    click.echo(str(render_report(list(results), output)))
