"""Collect a sweep: summary.csv, summary.md and figures of mean and spread over seeds.

Run from this folder or anywhere:  python3 collect.py experiments/Runs/<sweep folder> [--out DIR]
See docs/sweeps.md; the work is done in sgtheory.sweeps.
"""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # the repository root

from sgtheory.sweeps import main  # noqa: E402

if __name__ == "__main__":
    sys.exit(main("spike_train_matching"))
