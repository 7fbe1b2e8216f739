"""Figures a run leaves beside its metrics: the alignment angles over training; the shared figure helpers."""
from __future__ import annotations

import json
from pathlib import Path


def pyplot():
    """matplotlib.pyplot on the file-only Agg backend (runs and sweeps have no display)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def save_figure(fig, path: Path) -> Path:
    """Lay out, write (creating the folder) and close a figure."""
    plt = pyplot()
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def plot_alignment(metrics_path: Path, out_path: Path, title: str = "") -> Path | None:
    """Angle (degrees) between the DFA update and the true gradient, per layer, against the step."""
    rows = [json.loads(line) for line in Path(metrics_path).read_text().splitlines() if line.strip()]
    rows = [r for r in rows if any(k.startswith("align/") for k in r)]
    if not rows:
        return None
    plt = pyplot()
    fig, axes = plt.subplots(1, 2, figsize=(12, 4.5), sharey=True)
    for ax, kind, label in ((axes[0], "align/param/", "parameters (DFA update vs BP gradient)"),
                            (axes[1], "align/point/", "feedback points (B_i e vs true gradient)")):
        keys = sorted({k for r in rows for k in r if k.startswith(kind) and not k.endswith(".bias")})
        for key in keys:
            points = [(r["step"], r[key]) for r in rows if r.get(key) is not None]
            if points:
                ax.plot(*zip(*points), label=key[len(kind):], linewidth=1.2)
        ax.axhline(90, color="grey", linestyle=":", linewidth=1)
        ax.set_title(label, fontsize=10)
        ax.set_xlabel("step")
        if keys:
            ax.legend(fontsize=7, loc="best")
    axes[0].set_ylabel("angle (degrees)")
    axes[0].set_ylim(0, 180)
    fig.suptitle(title or "alignment")
    return save_figure(fig, out_path)
