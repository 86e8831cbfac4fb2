"""Everything a person reads about one cell: printed table, summary.md, plots/, report.html."""
from __future__ import annotations

from pathlib import Path

from moloch_exp.report.html import write_html
from moloch_exp.report.plots import cell_plots
from moloch_exp.report.tables import cell_rows, markdown, print_table


def write_cell_report(out: Path, results: dict) -> None:
    header, rows = cell_rows(results)
    cell = results["cell"]
    title = f"{cell['task']} · {cell['model']} · {cell['method']} · seed {cell['seed']}"
    print_table(title, header, rows)
    (out / "summary.md").write_text(f"# {title}\n\n" + markdown(header, rows), encoding="utf-8")
    plots = cell_plots(results, out / "plots")
    write_html(out, results, header, rows, plots)
