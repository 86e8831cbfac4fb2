"""Everything a person reads about one cell: printed table, summary.md, plots/, report.html.

    write_cell_report(output_dir, results)                       # what pipeline.run writes
    write_cell_report(output_dir, results, sections=[Section(title, html)])   # extra parts of report.html
"""
from __future__ import annotations

from pathlib import Path
from typing import Sequence

from moloch_exp.report.html import Section, write_html
from moloch_exp.report.plots import cell_plots
from moloch_exp.report.tables import cell_rows, markdown, print_table, sentences


def write_cell_report(out: Path, results: dict, sections: Sequence[Section] = ()) -> None:
    header, rows = cell_rows(results)
    cell = results["cell"]
    title = f"{cell['task']} · {cell['model']} · {cell['method']} · seed {cell['seed']}"
    print_table(title, header, rows)
    words = sentences(results)
    for line in words:
        print(line)
    in_words = "".join(f"- {line}\n" for line in words)
    (out / "summary.md").write_text(f"# {title}\n\n" + (f"## In words\n\n{in_words}\n" if words else "")
                                    + markdown(header, rows), encoding="utf-8")
    plots = cell_plots(results, out / "plots")
    write_html(out, results, header, rows, plots, words, sections)
