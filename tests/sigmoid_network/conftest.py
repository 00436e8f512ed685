"""Make Sigmoid_network/sigmoid_net.py importable as `sigmoid_net` in these tests."""

import sys
from pathlib import Path

SIGMOID_DIR = Path(__file__).resolve().parents[2] / "Sigmoid_network"
if str(SIGMOID_DIR) not in sys.path:
    sys.path.insert(0, str(SIGMOID_DIR))
