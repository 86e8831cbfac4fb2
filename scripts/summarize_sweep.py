"""Write the sweep summary (tables and the paper's two views) for a finished sweep directory.

    python scripts/summarize_sweep.py multirun/2026-11-24/10-00-00
"""
import sys

from moloch_exp.report.sweep import summarize_sweep

if __name__ == "__main__":
    if len(sys.argv) != 2:
        sys.exit(__doc__)
    summarize_sweep(sys.argv[1])
