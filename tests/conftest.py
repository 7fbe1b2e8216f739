"""Shared fixtures: the real data root (../shared/data through DFA_BENCH_DATA) and composed configs."""
from __future__ import annotations

import os
from pathlib import Path

import pytest
from hydra import compose, initialize_config_dir

from dfa_bench.cli import CONF_DIR

os.environ.setdefault("WANDB_MODE", "disabled")
os.environ.setdefault("WANDB_SILENT", "true")


def data_root() -> Path:
    env = os.environ.get("DFA_BENCH_DATA")
    if env:
        return Path(env)
    return Path(__file__).resolve().parents[2] / "shared" / "data"


def require(*parts: str) -> Path:
    """A path under the data root, or skip the test saying which dataset is absent."""
    path = data_root().joinpath(*parts)
    if not path.exists():
        pytest.skip(f"dataset not available: {path} (set DFA_BENCH_DATA to the data root)")
    return path


@pytest.fixture(scope="session")
def cache_root(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("cache")


@pytest.fixture
def make_cfg(cache_root):
    """compose the run config as `dfa-bench` would, with overrides."""

    def _make(*overrides: str):
        with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
            return compose(
                config_name="config",
                overrides=[f"data_root={data_root()}", f"cache_root={cache_root}", "progress=false", *overrides],
            )

    return _make


@pytest.fixture
def cli_env(cache_root) -> dict[str, str]:
    env = dict(os.environ)
    env.update(DFA_BENCH_DATA=str(data_root()), DFA_BENCH_CACHE=str(cache_root), WANDB_MODE="disabled")
    return env
