"""People check the judges (issue 22): a blinded sample of judged outputs, a labelling page, and the
probe rates corrected for the judge's errors.

    python -m moloch_exp.label sample RUN_DIR [--per-probe 40] [--seed 0]     # draw the blinded sample
    python -m moloch_exp.label sample --from-jsonl FILE... WORKDIR [--question PROBE=TEXT]   # any judge's labels
    python -m moloch_exp.label serve RUN_DIR [--port 8765]                    # the labelling page on 127.0.0.1
    python -m moloch_exp.label export RUN_DIR [--labeller NAME] [-o FILE]     # CSV for labelling offline
    python -m moloch_exp.label import RUN_DIR FILE... [--labeller NAME]       # their answers back
    python -m moloch_exp.label report RUN_DIR                                 # agreement and corrected rates

One concern per module: ``items`` (the sample and its design), ``sources`` (a cell's or a JSONL's
judged outputs), ``sampling`` (the stratified draw), ``store`` (SQLite answers), ``server`` and
``page`` (the labelling page), ``csv_io`` (export/import), ``stats`` (agreement, Rogan–Gladen),
``report`` (the ``labels`` block of results.json, put together; it is shown by
moloch_exp/report/labels.py, as every result is shown by moloch_exp/report/), ``__main__`` (the command line).
"""
