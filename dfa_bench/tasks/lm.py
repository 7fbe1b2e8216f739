"""Transformer language modelling on WikiText (the paper's Table 5): perplexity, DFA macro and micro.

Text is lowercased and tokenized by a byte-level BPE (Hugging Face `tokenizers`) trained on the training
split, as the paper trains its 32k BPE; the tokenizer and the token ids are cached under
<cache_root>/lm/. The corpus is cut into `batch_size` parallel streams and trained in contiguous chunks
of `context` tokens (the paper: 64 x 128). Perplexity = exp(mean token cross-entropy) over a whole split.
Optimizers (model settings per method): `noam` (Adam, eps 1e-9, Vaswani warm-up schedule), `adam`
(constant lr) or `schedule` (Adam + ReduceLROnPlateau on the validation loss, factor 0.2, patience 1);
gradient-norm clipping and early stopping as the paper's code.
"""
from __future__ import annotations

import json
import logging
import math
import shutil
import sys
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from omegaconf import DictConfig, OmegaConf
from torch import nn

from dfa_bench import files
from dfa_bench.data import dataset_path, source_fingerprint
from dfa_bench import session
from dfa_bench.errors import ConfigError, DataError
from dfa_bench.tasks import method_settings

log = logging.getLogger("dfa_bench")
SPLITS = ("train", "valid", "test")
CACHE_VERSION = 1


# -- tokenizer and token cache ------------------------------------------------------------------------
def _read_split(folder: Path, split: str, max_chars: int | None) -> str:
    path = folder / f"wiki.{split}.tokens"
    if not path.is_file():
        raise DataError(f"{path} not found")
    text = path.read_text(encoding="utf-8")
    if not text.strip():
        raise DataError(f"{path} is empty")
    return text[:max_chars] if max_chars else text


def train_tokenizer(text: str, vocab_size: int):
    from tokenizers import Tokenizer, decoders, models, normalizers, pre_tokenizers, trainers

    tok = Tokenizer(models.BPE())
    tok.normalizer = normalizers.Lowercase()
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
                                  show_progress=False)
    tok.train_from_iterator(text.splitlines(keepends=True), trainer)
    return tok


def encode(tok, text: str) -> np.ndarray:
    lines = text.splitlines(keepends=True)
    ids = [e.ids for e in tok.encode_batch(lines)]
    return np.fromiter((i for line in ids for i in line), dtype=np.int32)


def load_corpus(folder: Path, cache_root: Path, vocab_size: int, max_train_chars: int | None = None,
                max_eval_chars: int | None = None) -> tuple[Path, dict[str, np.ndarray]]:
    """(tokenizer.json path, token ids per split), from the cache when it matches the source files."""
    sources = [folder / f"wiki.{s}.tokens" for s in SPLITS]
    for path in sources:
        if not path.is_file():
            raise DataError(f"{path} not found. WikiText (v1, tokens) folders hold wiki.train.tokens, "
                            "wiki.valid.tokens and wiki.test.tokens.")
    key = source_fingerprint(sources, vocab=vocab_size, train_chars=max_train_chars, eval_chars=max_eval_chars,
                             version=CACHE_VERSION)
    target = Path(cache_root) / "lm" / f"{folder.name}-bpe{vocab_size}-{key[:12]}"
    cached = _open_tokens(target)
    if cached is not None:
        return cached
    with files.build_lock(target):
        cached = _open_tokens(target)  # another process may have built it meanwhile
        if cached is not None:
            return cached
        _build_tokens(folder, target, vocab_size, max_train_chars, max_eval_chars)
    return target / "tokenizer.json", {s: np.load(target / f"{s}.npy", mmap_mode="r") for s in SPLITS}


def _open_tokens(target: Path) -> tuple[Path, dict[str, np.ndarray]] | None:
    try:
        from tokenizers import Tokenizer

        ids = {s: np.load(target / f"{s}.npy", mmap_mode="r") for s in SPLITS}
        json.loads((target / "meta.json").read_text())
        Tokenizer.from_file(str(target / "tokenizer.json"))
        return target / "tokenizer.json", ids
    except FileNotFoundError:
        return None
    except Exception as err:  # noqa: BLE001 - any unreadable file means: rebuild
        log.warning("the token cache %s is unreadable (%s); rebuilding it", target, err)
        return None


def _build_tokens(folder: Path, target: Path, vocab_size: int, max_train_chars: int | None,
                  max_eval_chars: int | None) -> None:
    log.info("training a %d-token BPE on %s and encoding the splits into %s", vocab_size, folder, target)
    tmp = target.with_name(target.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    train_text = _read_split(folder, "train", max_train_chars)
    tok = train_tokenizer(train_text, vocab_size)
    tok.save(str(tmp / "tokenizer.json"))
    counts = {}
    for split in SPLITS:
        text = train_text if split == "train" else _read_split(folder, split, max_eval_chars)
        ids = encode(tok, text)
        np.save(tmp / f"{split}.npy", ids)
        counts[split] = int(len(ids))
    files.write_json(tmp / "meta.json", {"tokens": counts, "vocab": tok.get_vocab_size(), "source": str(folder)})
    shutil.rmtree(target, ignore_errors=True)
    tmp.rename(target)


def streams(ids: np.ndarray, n: int) -> torch.Tensor:
    """Cut a token sequence into n parallel streams (n x length), dropping the remainder."""
    length = len(ids) // n
    if length < 2:
        raise DataError(f"{len(ids)} tokens are too few for {n} streams")
    return torch.from_numpy(np.asarray(ids[: n * length], dtype=np.int64).reshape(n, length))


def perplexity(total_nll: float, tokens: int) -> float:
    return math.exp(total_nll / tokens) if tokens else float("nan")


# -- optimizers ---------------------------------------------------------------------------------------
def noam_factor(step: int, d_model: int, warmup: int) -> float:
    step = max(step, 1)
    return d_model ** -0.5 * min(step ** -0.5, step * warmup ** -1.5)


def _sample_run_dir(given: str) -> Path:
    """The run directory that `checkpoint=<given>` names: the directory itself, or the folder of its
    checkpoint.pt; a DataError naming `given` when it is neither, or lacks a finished run's files."""
    path = Path(given)
    expected = "a finished task=lm run directory (holding checkpoint.pt, config.yaml, tokenizer.json) or its checkpoint.pt"
    if path.is_dir():
        run_dir = path
    elif path.is_file() and path.name == "checkpoint.pt":
        run_dir = path.parent
    elif path.exists():
        raise DataError(f"checkpoint={given} is neither a directory nor a file named checkpoint.pt; expected {expected}")
    else:
        raise DataError(f"checkpoint={given} does not exist; expected {expected}")
    missing = [name for name in ("checkpoint.pt", "config.yaml", "tokenizer.json") if not (run_dir / name).is_file()]
    if missing:
        raise DataError(f"checkpoint={given}: {', '.join(missing)} not found in {run_dir}; expected {expected}")
    return run_dir


class LanguageModelling:
    selection_mode = "min"

    def __init__(self, cfg: DictConfig, device: torch.device) -> None:
        self.cfg, self.device = cfg, device
        self.settings = method_settings(cfg)
        folder = dataset_path(cfg.data_root, cfg.dataset.folder)
        if not folder.is_dir():
            raise DataError(f"{cfg.dataset.name}: {folder} not found. {cfg.dataset.get('hint', '')}".strip())
        self.tokenizer_path, ids = load_corpus(folder, Path(cfg.cache_root), int(cfg.model.vocab_size),
                                               cfg.dataset.get("max_train_chars"), cfg.dataset.get("max_eval_chars"))
        from tokenizers import Tokenizer

        self.vocab = Tokenizer.from_file(str(self.tokenizer_path)).get_vocab_size()
        self.context = int(cfg.task.context)
        self.train = streams(ids["train"], int(cfg.task.batch_size)).to(device)
        self.valid = streams(ids["valid"], int(cfg.task.eval_batch_size)).to(device)
        self.test = streams(ids["test"], int(cfg.task.eval_batch_size)).to(device)
        self.epochs, self.patience = int(cfg.task.epochs), cfg.task.get("patience")
        self.grad_clip = cfg.model.get("grad_clip")
        self.bf16 = session.precision(cfg, device) == "bf16"  # bf16 autocast; tf32/fp32: none
        s = self.settings
        parts = [cfg.model.placement] if cfg.method.name == "dfa" else []
        parts.append(s.optimizer if s.optimizer == "noam" else f"{s.optimizer} lr={float(s.lr):g}")
        parts.append(f"b2={float(s.beta2):g}")
        self.variant = " ".join(parts)
        self.step_scheduler = self.epoch_scheduler = None

    def shard(self, rank: int, world: int) -> None:
        """Several processes: each trains on every world-th token stream."""
        self.train = self.train[rank::world]

    def build_model(self) -> nn.Module:
        from dfa_bench.models.transformer import TransformerLM

        m = self.cfg.model
        return TransformerLM(self.vocab, int(m.d_model), int(m.layers), int(m.heads), int(m.d_ff),
                             float(m.dropout), self.context, str(m.placement), bool(m.error_after_vocab))

    def optimizer(self, model: nn.Module) -> torch.optim.Optimizer:
        s = self.settings
        fused = {"fused": True} if self.device.type == "cuda" else {}
        betas = (0.9, float(s.beta2))
        if s.optimizer == "noam":
            opt = torch.optim.Adam(model.parameters(), lr=1.0, betas=betas, eps=1e-9, **fused)
            d, warmup = int(self.cfg.model.d_model), int(s.warmup)
            self.step_scheduler = torch.optim.lr_scheduler.LambdaLR(opt, lambda i: noam_factor(i + 1, d, warmup))
        elif s.optimizer in ("adam", "schedule"):
            opt = torch.optim.Adam(model.parameters(), lr=float(s.lr), betas=betas, **fused)
            if s.optimizer == "schedule":
                self.epoch_scheduler = torch.optim.lr_scheduler.ReduceLROnPlateau(opt, factor=0.2, patience=1)
        else:
            raise ConfigError(f"unknown optimizer {s.optimizer!r}: choose noam, adam or schedule")
        return opt

    def train_batches(self):
        length = self.train.shape[1]
        for i in range(0, length - 1, self.context):
            n = min(self.context, length - 1 - i)
            yield self.train[:, i : i + n], self.train[:, i + 1 : i + 1 + n]

    def batch_items(self, batch) -> tuple[int, str]:
        return int(batch[0].numel()), "tokens"

    def _logits(self, model: nn.Module, x: torch.Tensor) -> torch.Tensor:
        with torch.autocast(self.device.type, dtype=torch.bfloat16, enabled=self.bf16):
            return model(x)

    def loss(self, model: nn.Module, batch) -> torch.Tensor:
        x, y = batch
        logits = self._logits(model, x)
        return F.cross_entropy(logits.float().reshape(-1, logits.shape[-1]), y.reshape(-1))

    @torch.no_grad()
    def split_nll(self, model: nn.Module, data: torch.Tensor) -> tuple[float, int]:
        """Summed token cross-entropy and token count over a whole split."""
        model.eval()
        total, count = 0.0, 0
        for i in range(0, data.shape[1] - 1, self.context):
            n = min(self.context, data.shape[1] - 1 - i)
            x, y = data[:, i : i + n], data[:, i + 1 : i + 1 + n]
            logits = self._logits(model, x).float()
            total += F.cross_entropy(logits.reshape(-1, logits.shape[-1]), y.reshape(-1), reduction="sum").item()
            count += y.numel()
        model.train()
        return total, count

    def evaluate(self, model: nn.Module) -> dict[str, float]:
        out = {}
        for split, data in (("val", self.valid), ("test", self.test)):
            total, count = self.split_nll(model, data)
            out[f"{split}_loss"], out[f"{split}_ppl"] = total / count, perplexity(total, count)
        return out

    def save_artifacts(self, out_dir: Path) -> None:
        """The tokenizer travels with the run, so `mode=sample` needs nothing else."""
        shutil.copyfile(self.tokenizer_path, out_dir / "tokenizer.json")

    @staticmethod
    def sample(cfg: DictConfig) -> str:
        """Print a continuation of `sample.prompt` from the checkpoint of a finished run."""
        from tokenizers import Tokenizer

        from dfa_bench.models.transformer import TransformerLM
        from dfa_bench.session import resolve_device

        if not cfg.get("checkpoint"):
            raise ConfigError("mode=sample needs checkpoint=<run directory or its checkpoint.pt>")
        run_dir = _sample_run_dir(str(cfg.checkpoint))
        run_cfg = OmegaConf.load(run_dir / "config.yaml")
        tok = Tokenizer.from_file(str(run_dir / "tokenizer.json"))
        m = run_cfg.model
        model = TransformerLM(tok.get_vocab_size(), int(m.d_model), int(m.layers), int(m.heads), int(m.d_ff),
                              0.0, int(run_cfg.task.context), str(m.placement), bool(m.error_after_vocab))
        device = resolve_device(str(cfg.device))
        state = torch.load(run_dir / "checkpoint.pt", map_location="cpu", weights_only=False)
        model.load_state_dict(state["model"])
        model.to(device).eval()
        s = cfg.sample
        ids = tok.encode(str(s.prompt)).ids or [0]
        gen = torch.Generator(device=device).manual_seed(int(cfg.seed))
        out = model.generate(torch.tensor([ids], device=device), int(s.tokens), float(s.temperature),
                             int(s.top_k) if s.top_k else None, generator=gen)
        text = tok.decode(out[0].tolist())
        sys.stdout.write(text + "\n")
        try:
            from hydra.core.hydra_config import HydraConfig

            files.write_text(Path(HydraConfig.get().runtime.output_dir) / "sample.txt", text + "\n")
        except ValueError:  # not under Hydra (the Python API)
            pass
        return text
