"""The Transformer language model task on a tiny preset of real WikiText-2, on CPU."""
import json
import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from dfa_bench.models.transformer import TransformerLM
from dfa_bench.runner import run
from dfa_bench.tasks.lm import LanguageModelling, load_corpus, noam_factor, perplexity
from tests.conftest import data_root, require

WIKI = ("wikitext", "wikitext-2", "wiki.train.tokens")


def test_perplexity_is_exp_of_mean_token_cross_entropy():
    logits = torch.tensor([[2.0, 0.0, -1.0], [0.5, 0.5, 0.5], [0.0, 3.0, 0.0]])
    targets = torch.tensor([0, 2, 1])
    by_hand = [-math.log(math.exp(2) / (math.exp(2) + 1 + math.exp(-1))), -math.log(1 / 3),
               -math.log(math.exp(3) / (math.exp(3) + 2))]
    total = F.cross_entropy(logits, targets, reduction="sum").item()
    assert total == pytest.approx(sum(by_hand))
    assert perplexity(total, 3) == pytest.approx(math.exp(sum(by_hand) / 3))


def test_noam_schedule_peaks_at_warmup():
    values = [noam_factor(s, 512, 4000) for s in (1, 2000, 4000, 8000)]
    assert values[0] < values[1] < values[2] > values[3]
    assert values[2] == pytest.approx(512 ** -0.5 * 4000 ** -0.5)


def test_micro_places_three_feedback_points_per_block():
    from dfa_bench.marks import marks_of

    for placement, per_block in (("macro", 1), ("micro", 3)):
        model = TransformerLM(50, d_model=16, layers=2, heads=2, d_ff=32, context=8, placement=placement)
        points, errors = marks_of(model)
        assert len(points) == 2 * per_block and [e.mark_name for e in errors] == ["error"]


def test_bpe_cache_is_reused(tmp_path):
    require(*WIKI)
    folder = data_root() / "wikitext" / "wikitext-2"
    tok, ids = load_corpus(folder, tmp_path, 300, max_train_chars=50_000, max_eval_chars=10_000)
    stamp = tok.stat().st_mtime_ns
    tok2, ids2 = load_corpus(folder, tmp_path, 300, max_train_chars=50_000, max_eval_chars=10_000)
    assert tok2 == tok and tok.stat().st_mtime_ns == stamp
    assert np.array_equal(np.asarray(ids["valid"]), np.asarray(ids2["valid"]))
    assert int(np.asarray(ids["train"]).max()) < 300
    # lowercased as the paper does
    from tokenizers import Tokenizer

    assert Tokenizer.from_file(str(tok)).encode("The").ids == Tokenizer.from_file(str(tok)).encode("the").ids
    tok.write_text("{ not json")  # a corrupt cache is rebuilt
    tok3, _ = load_corpus(folder, tmp_path, 300, max_train_chars=50_000, max_eval_chars=10_000)
    assert Tokenizer.from_file(str(tok3)).get_vocab_size() == 300


@pytest.mark.parametrize("method,placement", [("bp", "macro"), ("dfa", "macro"), ("dfa", "micro")])
def test_loss_decreases(make_cfg, tmp_path, method, placement):
    require(*WIKI)
    cfg = make_cfg("experiment=lm_tiny", f"method={method}", f"dfa.placement={placement}", "task.epochs=1",
                   "dataset.max_train_chars=120000", "alignment.every=20")
    summary = run(cfg, tmp_path)
    assert summary["status"] == "completed"
    rows = [json.loads(line) for line in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    assert summary["metrics"]["val_ppl"] < 1000 * 0.5  # far below a uniform guess over 1,000 tokens
    assert summary["metrics"]["val_ppl"] == pytest.approx(math.exp(summary["metrics"]["val_loss"]))
    assert (tmp_path / "tokenizer.json").exists()
    if method == "dfa":
        angles = [r for r in rows if "align/point/blocks.1.out" in r]
        assert angles
        assert ("align/point/blocks.0.ff_hidden" in angles[0]) == (placement == "micro")


def test_training_loss_goes_down_under_dfa(make_cfg, tmp_path):
    require(*WIKI)
    cfg = make_cfg("experiment=lm_tiny", "method=dfa", "task.epochs=1", "alignment.every=0")
    task = LanguageModelling(cfg, torch.device("cpu"))
    torch.manual_seed(0)
    model = task.build_model()
    from dfa_bench.methods import build_method
    from dfa_bench.runner import training_step

    method = build_method(cfg.method, 0).attach(model)
    opt = task.optimizer(model)
    losses = [training_step(method, opt, lambda: task.loss(model, b), False, task.grad_clip)[0].item()
              for _, b in zip(range(40), task.train_batches())]
    assert np.mean(losses[-5:]) < np.mean(losses[:5]) - 0.5


def test_sample_mode_continues_a_prompt(cli_env, tmp_path):
    require(*WIKI)
    import subprocess
    import sys
    from pathlib import Path

    bin_dir = Path(sys.executable).parent
    out = tmp_path / "run"
    p = subprocess.run([str(bin_dir / "dfa-bench"), "experiment=lm_tiny", "method=dfa", "task.epochs=1",
                        "dataset.max_train_chars=60000", f"hydra.run.dir={out}"],
                       env=cli_env, cwd=tmp_path, capture_output=True, text=True, timeout=600)
    assert p.returncode == 0, p.stderr
    s = subprocess.run([str(bin_dir / "dfa-bench"), "task=lm", "mode=sample", f"checkpoint={out}",
                        "sample.prompt=the game", "sample.tokens=12", f"hydra.run.dir={tmp_path / 'sample'}"],
                       env=cli_env, cwd=tmp_path, capture_output=True, text=True, timeout=600)
    assert s.returncode == 0, s.stderr
    assert s.stdout.strip().startswith("the game") and len(s.stdout.strip()) > len("the game")
    assert (tmp_path / "sample" / "sample.txt").read_text().startswith("the game")
