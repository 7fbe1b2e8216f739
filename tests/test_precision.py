"""The bf16 code path, run here on the CPU (bf16 autocast), and the one place that sets precision.

On a GPU the LM runs under bf16 autocast by default and NeRF with `task.precision=bf16`; the CPU runs the
same autocast code when `task.precision=bf16` is asked for by name, so it is exercised without a GPU.
`make gpu-check` runs the same checks on CUDA.
"""
from __future__ import annotations

import pytest
import torch

from dfa_bench import session
from dfa_bench.gpu_check import update_cosines
from tests.conftest import require


def test_precision_is_decided_in_one_place(make_cfg):
    cpu, cuda = torch.device("cpu"), torch.device("cuda")
    assert session.precision(make_cfg("task=lm"), cpu) == "fp32"  # auto: autocast on a GPU only
    assert session.precision(make_cfg("task=lm"), cuda) == "bf16"
    assert session.precision(make_cfg("task=lm", "task.precision=bf16"), cpu) == "bf16"
    assert session.precision(make_cfg("task=nerf"), cuda) == "tf32"
    assert session.precision(make_cfg("task=gcn"), cuda) == session.DEFAULT_PRECISION == "tf32"
    assert session.precision(make_cfg("task=nerf", "deterministic=true"), cuda) == "fp32"


@pytest.mark.parametrize("preset", [
    ("experiment=lm_tiny", "dfa.placement=micro", "model.dropout=0.0"),
    ("experiment=nerf_tiny", "task.rays=64"),
])
def test_bf16_dfa_updates_keep_their_direction(make_cfg, preset):
    """One DFA step in bf16 autocast on the CPU: a finite loss, and every parameter's update within a
    small angle of the float32 update on the same batch and weights."""
    require("wikitext") if "lm" in preset[0] else require("nerf")
    cosines, loss = update_cosines(lambda precision: make_cfg(*preset, "method=dfa", f"task.precision={precision}"),
                                   torch.device("cpu"))
    assert torch.isfinite(torch.tensor(loss))
    assert len(cosines) > 4 and min(cosines.values()) > 0.95, cosines
