"""dfa-bench: train modern deep networks with Direct Feedback Alignment, backprop, or a shallow baseline."""
import os
import sys
from pathlib import Path

from omegaconf import OmegaConf

__version__ = "0.1.0"

# `make install` records the data root here (inside the virtual environment), so that `dfa-bench` finds
# the data after the set-up command without an exported DFA_BENCH_DATA.
DATA_ROOT_FILE = Path(sys.prefix) / "dfa-bench-data-root"


def default_data_root() -> str:
    """The config's `data_root`: DFA_BENCH_DATA, else the root `make install` recorded, else ./data."""
    if os.environ.get("DFA_BENCH_DATA"):
        return os.environ["DFA_BENCH_DATA"]
    if DATA_ROOT_FILE.is_file() and DATA_ROOT_FILE.read_text().strip():
        return DATA_ROOT_FILE.read_text().strip()
    return "data"


OmegaConf.register_new_resolver("dfa_bench_data_root", default_data_root, replace=True)
