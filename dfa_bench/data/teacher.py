"""A generated click-through-rate data set whose labels come from a fixed random teacher (not real data).

Its purpose: a recommender test where the deep part of a model matters by construction. The labels depend
on third-order feature interactions, which neither the first-order (linear) term nor the pairwise
factorization-machine term of a CTR model can express; only a deep part can learn them. How much data
a training method needs to learn them is then a question the runs can answer.

The file is in Criteo's format (label, 13 integer and 26 categorical tab-separated fields) and goes through
the normal Criteo preprocessing (`dfa_bench.data.ctr`), like a real train.txt. Rows are generated in
blocks of 100,000 from the seed and the block number, so the data set of N rows is the first N rows of any
larger one with the same seed.

The teacher, drawn once from the seed:
- Integer fields I1-I13: geometric values (10% missing), no effect on the label (distractors).
- Categorical fields C1-C8, the "sign fields": uniform over an even number of categories (8 to 24); each
  category carries a fixed random sign s, half of them +1, so that every sign has mean 0 and the signs of
  different fields are independent.
- Categorical fields C9-C14: Zipf-distributed over 20 to 2,000 categories, each category with a fixed
  N(0, 1) main effect.
- Categorical fields C15-C26: Zipf-distributed over up to 10,000 categories, no effect (distractors).
- logit = b + 0.8 L / sd(L) + 0.6 P / sd(P) + 1.5 T / sd(T), where L is the sum of the C9-C14 main
  effects (first order), P the sum of 4 random pairs of sign products s_a s_b with random weights (second
  order), and T the sum of 4 random triples s_a s_b s_c with random weights (third order); b sets the
  click rate near 25%; label ~ Bernoulli(sigmoid(logit)). Under the independence and zero means above, L,
  P and T are uncorrelated, and no function of single fields and pairs of fields correlates with T.

Beside the text file: `logits.npy` (the teacher's logit per row, float32) and `order2_logits.npy` (its
logit without T: the most that first-order and pairwise terms can express), from which a run computes
the AUC of the true probabilities on its own test rows (the ceiling) and of the order-2 part; and
`teacher.json` (the teacher's parameters' summary, the click rate, the variance of each part).
"""
from __future__ import annotations

import logging
import shutil
from pathlib import Path

import numpy as np
import pandas as pd

from dfa_bench import files

log = logging.getLogger("dfa_bench")

VERSION = 1
BLOCK = 100_000
INT_FIELDS, SIGN_FIELDS, MAIN_FIELDS, NOISE_FIELDS = 13, 8, 6, 12
WEIGHTS = {"order1": 0.8, "order2": 0.6, "order3": 1.5}
CLICK_RATE = 0.25


class Teacher:
    """The random teacher of one seed: vocabularies, signs, main effects, pairs and triples."""

    def __init__(self, seed: int) -> None:
        rng = np.random.default_rng([seed, 0])
        self.sign_vocab = 2 * rng.integers(4, 13, SIGN_FIELDS)  # even sizes 8..24
        self.signs = []
        for v in self.sign_vocab:
            s = np.repeat([1.0, -1.0], v // 2)
            rng.shuffle(s)
            self.signs.append(s)
        self.main_vocab = np.round(np.exp(rng.uniform(np.log(20), np.log(2000), MAIN_FIELDS))).astype(int)
        self.main_effects = [rng.standard_normal(v) for v in self.main_vocab]
        self.noise_vocab = np.round(np.exp(rng.uniform(np.log(10), np.log(10_000), NOISE_FIELDS))).astype(int)
        self.pairs = [rng.choice(SIGN_FIELDS, 2, replace=False) for _ in range(4)]
        self.triples = [rng.choice(SIGN_FIELDS, 3, replace=False) for _ in range(4)]
        self.pair_weights = rng.uniform(0.5, 1.5, 4) * rng.choice([-1, 1], 4)
        self.triple_weights = rng.uniform(0.5, 1.5, 4) * rng.choice([-1, 1], 4)
        # category k of categorical field j is written as this hex token
        self.tokens = np.array([f"{(j * 2654435761 + k * 40503 + seed) & 0xFFFFFFFF:08x}"
                                for j in range(26) for k in range(10_000)], dtype=object).reshape(26, 10_000)
        self.scale = self._calibrate(rng)

    def parts(self, cats: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Order-1, order-2 and order-3 parts of the logit (unscaled) for categorical indices (n, 26)."""
        s = np.stack([self.signs[j][cats[:, j]] for j in range(SIGN_FIELDS)], axis=1)
        order1 = sum(self.main_effects[i][cats[:, SIGN_FIELDS + i]] for i in range(MAIN_FIELDS))
        order2 = sum(w * s[:, a] * s[:, b] for w, (a, b) in zip(self.pair_weights, self.pairs))
        order3 = sum(w * s[:, a] * s[:, b] * s[:, c] for w, (a, b, c) in zip(self.triple_weights, self.triples))
        return order1, order2, order3

    def _calibrate(self, rng) -> dict:
        """Each part's standard deviation and the bias for the click rate, measured on 200,000 draws."""
        parts = self.parts(self.categories(rng, 200_000))
        scale = {name: float(np.std(p)) for name, p in zip(WEIGHTS, parts)}
        logit = sum(WEIGHTS[k] * p / scale[k] for k, p in zip(WEIGHTS, parts))
        lo, hi = -10.0, 10.0
        for _ in range(60):  # bias b with mean sigmoid(logit + b) = CLICK_RATE
            mid = (lo + hi) / 2
            lo, hi = (mid, hi) if np.mean(1 / (1 + np.exp(-(logit + mid)))) < CLICK_RATE else (lo, mid)
        return {**scale, "bias": (lo + hi) / 2}

    def categories(self, rng, n: int) -> np.ndarray:
        """(n, 26) categorical indices: uniform for the sign fields, Zipf-like for the others."""
        cols = [rng.integers(0, v, n) for v in self.sign_vocab]
        for v in [*self.main_vocab, *self.noise_vocab]:
            p = 1.0 / np.arange(1, v + 1) ** 1.1
            cols.append(rng.choice(v, n, p=p / p.sum()))
        return np.stack(cols, axis=1)

    def logits(self, cats: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """The teacher's logit, and its order-1 + order-2 part (with the bias)."""
        o1, o2, o3 = self.parts(cats)
        w, sd = WEIGHTS, self.scale
        low = sd["bias"] + w["order1"] * o1 / sd["order1"] + w["order2"] * o2 / sd["order2"]
        return low + w["order3"] * o3 / sd["order3"], low


def _block(teacher: Teacher, seed: int, index: int, n: int) -> tuple[pd.DataFrame, np.ndarray, np.ndarray]:
    """The first n rows of block `index` (always drawn whole, so that a shorter file is a prefix)."""
    rng = np.random.default_rng([seed, 1, index])
    cats = teacher.categories(rng, BLOCK)
    logit, low = teacher.logits(cats)
    labels = (rng.random(BLOCK) < 1 / (1 + np.exp(-logit))).astype(np.int64)
    ints = rng.geometric(0.1, size=(BLOCK, INT_FIELDS)) - 1
    missing = rng.random((BLOCK, INT_FIELDS)) < 0.1
    ints = pd.DataFrame(ints[:n]).astype("Int64").mask(missing[:n])
    tokens = pd.DataFrame({j: teacher.tokens[j][cats[:n, j]] for j in range(26)})
    frame = pd.concat([pd.Series(labels[:n]), ints, tokens], axis=1, ignore_index=True)
    return frame, logit[:n].astype(np.float32), low[:n].astype(np.float32)


def generate(folder: Path, rows: int, seed: int) -> None:
    """Write train.txt, logits.npy, order2_logits.npy and teacher.json of `rows` rows into `folder`."""
    teacher = Teacher(seed)
    tmp = folder.with_name(folder.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    logits = np.lib.format.open_memmap(tmp / "logits.npy", mode="w+", dtype=np.float32, shape=(rows,))
    low = np.lib.format.open_memmap(tmp / "order2_logits.npy", mode="w+", dtype=np.float32, shape=(rows,))
    clicks = 0
    with open(tmp / "train.txt", "w") as f:
        for index, start in enumerate(range(0, rows, BLOCK)):
            n = min(BLOCK, rows - start)
            frame, logits[start : start + n], low[start : start + n] = _block(teacher, seed, index, n)
            clicks += int(frame[0].sum())
            frame.to_csv(f, sep="\t", header=False, index=False, na_rep="")
    logits.flush(), low.flush()
    del logits, low
    files.write_json(tmp / "teacher.json", {
        "generated": "teacher", "version": VERSION, "rows": rows, "seed": seed, "click_rate": clicks / rows,
        "weights": WEIGHTS, "scale": teacher.scale, "sign_vocabularies": teacher.sign_vocab.tolist(),
        "main_vocabularies": teacher.main_vocab.tolist(), "noise_vocabularies": teacher.noise_vocab.tolist(),
        "pairs": [p.tolist() for p in teacher.pairs], "triples": [t.tolist() for t in teacher.triples],
    })
    shutil.rmtree(folder, ignore_errors=True)
    tmp.rename(folder)


def teacher_data(cache_root: Path, rows: int, seed: int) -> Path:
    """The folder of the generated data set (rows, seed), generated once under the cache root."""
    folder = Path(cache_root) / "generated" / f"ctr_teacher-v{VERSION}-seed{seed}-{rows}"
    if not (folder / "teacher.json").is_file():
        with files.build_lock(folder):
            if not (folder / "teacher.json").is_file():
                log.info("generating %d rows of teacher CTR data (seed %d) into %s", rows, seed, folder)
                generate(folder, rows, seed)
    return folder
