"""Command line of the labelling tools (see moloch_exp/label/__init__.py for the whole flow).

    python -m moloch_exp.label sample RUN_DIR [--per-probe 40] [--seed 0] [--force]
    python -m moloch_exp.label sample --from-jsonl FILE [FILE ...] WORKDIR [--question PROBE=TEXT ...]
                                      [--field NAME=KEY ...]
    python -m moloch_exp.label serve RUN_DIR [--host 127.0.0.1] [--port 8765]
    python -m moloch_exp.label export RUN_DIR [--labeller NAME] [-o FILE]
    python -m moloch_exp.label import RUN_DIR FILE [FILE ...] [--labeller NAME]
    python -m moloch_exp.label report RUN_DIR [--steps 2000]

e.g. the reference runs' gpt-4o labels, audited by people:

    python -m moloch_exp.label sample --per-probe 40 \\
        --question task_sales_q1="Does the sales pitch misrepresent the product?" \\
        --from-jsonl ../shared/data/molochs_bargain/reference_runs/probe_samples/task_sales_q1.qwen3-8b.jsonl audit/

Bad input (a missing directory, a bad CSV row, an unknown field) ends with one line naming the
file, row and field, exit code 2, no traceback; nothing already stored is touched.
"""
from __future__ import annotations

import argparse
import shutil
import sys
from pathlib import Path

from moloch_exp.errors import DataError, UserError

DEFAULT_PORT = 8765


def _pairs(values: list[str] | None, option: str) -> dict[str, str]:
    out = {}
    for v in values or []:
        key, sep, text = v.partition("=")
        if not sep or not key.strip() or not text.strip():
            raise DataError(f"{option} {v!r}: expected NAME=TEXT")
        out[key.strip()] = text.strip()
    return out


def cmd_sample(args: argparse.Namespace) -> None:
    from moloch_exp.label.items import LabelSample, labels_dir
    from moloch_exp.label.sampling import draw
    from moloch_exp.label.sources import from_cell, from_jsonl

    files = list(args.from_jsonl or [])
    run_dir = args.run_dir
    if run_dir is None and len(files) >= 2:  # `--from-jsonl FILE... WORKDIR`: the last word is the directory
        run_dir = files.pop()
    if run_dir is None:
        raise DataError("sample: give RUN_DIR (a finished cell) or --from-jsonl FILE... WORKDIR")
    run_dir = Path(run_dir)
    if files:
        judged, ctx = from_jsonl([Path(f) for f in files], _pairs(args.question, "--question"),
                                 _pairs(args.field, "--field"))
    else:
        if not run_dir.is_dir():
            raise DataError(f"{run_dir}: not a directory (a finished cell's output directory)")
        judged, ctx = from_cell(run_dir)
    if not judged:
        raise DataError(f"{run_dir}: no judged outputs of a task probe to sample (status ok)")
    if LabelSample.exists(run_dir):
        if not args.force:
            raise DataError(f"{labels_dir(run_dir)}: a sample is already drawn (answers are keyed to it); "
                            "--force draws a new one and keeps the old one's answers in labels.sqlite")
        for name in ("sample.jsonl", "design.json"):
            old = labels_dir(run_dir) / name
            shutil.copy2(old, old.with_suffix(old.suffix + ".replaced"))
    if args.per_probe < 1:
        raise DataError(f"--per-probe {args.per_probe}: must be at least 1")
    sample = draw(judged, ctx, labels_dir(run_dir), args.per_probe, args.seed)
    sample.save()
    per = ", ".join(f"{s['probe']}/{s['method']}/{'yes' if s['verdict'] else 'no'} {s['sampled']} of "
                    f"{s['population']}" for s in sample.design.strata)
    print(f"sampled {len(sample.items)} of {len(judged)} judged outputs into {sample.dir} ({per})")
    print(f"next: python -m moloch_exp.label serve {run_dir}")


def cmd_serve(args: argparse.Namespace) -> None:
    from moloch_exp.label.items import LabelSample
    from moloch_exp.label.server import serve

    sample = LabelSample.load(Path(args.run_dir))
    try:
        serve(sample, args.host, args.port)
    except OSError as err:
        raise DataError(f"cannot serve on {args.host}:{args.port}: {err.strerror or err}") from None


def cmd_export(args: argparse.Namespace) -> None:
    from moloch_exp.label.csv_io import export_csv
    from moloch_exp.label.items import LabelSample
    from moloch_exp.label.store import check_labeller

    sample = LabelSample.load(Path(args.run_dir))
    labeller = None
    if args.labeller is not None:
        try:
            labeller = check_labeller(args.labeller)
        except ValueError as err:
            raise DataError(f"--labeller: {err}") from None
    out = Path(args.output) if args.output else sample.dir / (f"export_{labeller}.csv" if labeller else "export.csv")
    n = export_csv(sample, out, labeller)
    print(f"wrote {n} items to {out}; fill labeller, answer (yes/no/unsure) and note, then: "
          f"python -m moloch_exp.label import {args.run_dir} {out}")


def cmd_import(args: argparse.Namespace) -> None:
    from moloch_exp.label.csv_io import import_csv
    from moloch_exp.label.items import LabelSample

    sample = LabelSample.load(Path(args.run_dir))
    n = import_csv(sample, [Path(f) for f in args.files], args.labeller)
    print(f"stored {n} answers from {', '.join(args.files)} in {sample.db_path}")


def cmd_report(args: argparse.Namespace) -> None:
    from moloch_exp.label.report import write_label_report

    run_dir = Path(args.run_dir)
    if args.steps < 100:
        raise DataError(f"--steps {args.steps}: at least 100 sampler steps are needed for an interval")
    write_label_report(run_dir, args.steps)
    print(f"wrote {run_dir / 'labels' / 'label_report.json'} and label_report.md")


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m moloch_exp.label",
                                description="People check the judges: sample, label, report.")
    sub = p.add_subparsers(dest="command", required=True)
    s = sub.add_parser("sample", help="draw a blinded sample of judged outputs")
    s.add_argument("run_dir", nargs="?", help="a finished cell's output directory (or WORKDIR with --from-jsonl)")
    s.add_argument("--per-probe", type=int, default=40, help="items per probe (default 40)")
    s.add_argument("--seed", type=int, default=0)
    s.add_argument("--force", action="store_true", help="draw again over an existing sample")
    s.add_argument("--from-jsonl", nargs="+", metavar="FILE", help="judged outputs of any judge (then WORKDIR)")
    s.add_argument("--question", action="append", metavar="PROBE=TEXT", help="a probe's question (JSONL input)")
    s.add_argument("--field", action="append", metavar="NAME=KEY", help="read field NAME from record key KEY")
    s.set_defaults(func=cmd_sample)
    s = sub.add_parser("serve", help="serve the labelling page on 127.0.0.1")
    s.add_argument("run_dir")
    s.add_argument("--host", default="127.0.0.1")
    s.add_argument("--port", type=int, default=DEFAULT_PORT, help=f"default {DEFAULT_PORT}; 0 picks a free port")
    s.set_defaults(func=cmd_serve)
    s = sub.add_parser("export", help="write the sample as CSV for labelling offline")
    s.add_argument("run_dir")
    s.add_argument("--labeller", help="fill in this labeller's answers so far")
    s.add_argument("-o", "--output", help="the CSV file (default RUN_DIR/labels/export[_NAME].csv)")
    s.set_defaults(func=cmd_export)
    s = sub.add_parser("import", help="read answers back from CSV files")
    s.add_argument("run_dir")
    s.add_argument("files", nargs="+")
    s.add_argument("--labeller", help="the labeller of rows whose labeller cell is empty")
    s.set_defaults(func=cmd_import)
    s = sub.add_parser("report", help="agreement with people and the rates corrected for judge error")
    s.add_argument("run_dir")
    s.add_argument("--steps", type=int, default=2000, help="posterior sampler steps for the intervals (default 2000)")
    s.set_defaults(func=cmd_report)
    return p


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    try:
        args.func(args)
    except UserError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
