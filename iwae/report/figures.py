"""Figures drawn from run records (eval.json, train_log.csv), each written as PDF and PNG.

curves      per dataset and architecture: the training objective against epochs (log x)
nll_vs_k    per experiment: test NLL against k, VAE and IWAE lines, the paper's values as
            open markers, error bars over seeds
variances   per dataset and architecture: histograms of log10 Cov_x(E_q[u|x]) per layer,
            with the active-unit threshold
bound_vs_samples  per part of an experiment: the bound on the training and test sets against
            training samples seen, one colour per latent size (Kingma & Welling's figure 2)
ml_vs_samples  per part: the HMC marginal likelihood (and L_5000) of training and test points
            against samples seen, one panel per training-set size (KW's figure 3)

The figures drawn from trained models are in `iwae.report.model_figures`; the kinds, and
which runs get one, are `iwae.plan.figures`.
"""

from __future__ import annotations

import csv
import math
from pathlib import Path

import matplotlib

from iwae.plan.vocabulary import RANDOM_WEIGHTS

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402

from iwae.errors import UserError  # noqa: E402
from iwae.estimators.objectives import label as objective_label  # noqa: E402
from iwae.plan import references  # noqa: E402
from iwae.report.records import aggregate, cells  # noqa: E402
from iwae.system.files import atomic_path  # noqa: E402

COLORS = {"vae": "tab:blue", "iwae": "tab:red"}


def save(fig, stem: Path) -> list[Path]:
    stem = Path(stem)
    out = []
    for ext, kw in ((".pdf", {}), (".png", {"dpi": 130})):
        path = stem.with_name(stem.name + ext)
        with atomic_path(path, suffix=ext) as tmp:
            fig.savefig(tmp, format=ext[1:], bbox_inches="tight", **kw)
        out.append(path)
    plt.close(fig)
    return out


def _curve(run) -> list[dict]:
    curve = run.record["training"].get("curve")
    if not curve:
        raise UserError(f"{run.run_dir}: the run kept no curve (train it with curve_per_decade)")
    return curve


def bound_vs_samples(df: pd.DataFrame, stem: Path) -> list[Path]:
    """The bound on the whole training (solid) and test (dashed) sets against training
    samples seen, one colour per latent size: Kingma & Welling's figure 2."""
    fig, ax = plt.subplots(figsize=(6.5, 4.4))
    for r in df.sort_values(["latent", "seed"]).itertuples():
        rows = _curve(r)
        samples = [c["samples"] for c in rows]
        color = f"C{sorted(set(df['latent'])).index(r.latent)}"
        first = r.seed == df["seed"].min()
        ax.plot(samples, [c["train_bound"] for c in rows], "-", color=color, lw=1.3,
                label=f"Nz = {r.latent} (train)" if first else None)  # fmt: skip
        ax.plot(samples, [c["test_bound"] for c in rows], "--", color=color, lw=1.3,
                label=f"Nz = {r.latent} (test)" if first else None)  # fmt: skip
    ax.set_xscale("log")
    ax.set_xlabel("training samples evaluated")
    ax.set_ylabel(f"{objective_label(df['objective'].iloc[0])} bound per point (nats)")
    curves = [_curve(r) for r in df.itertuples()]
    last = max(c[-1]["samples"] for c in curves)
    start = _first_sample_shown(last)
    shown = [v for c in curves for p in c if p["samples"] >= start for v in (p["train_bound"], p["test_bound"])]
    low, high = min(shown), max(shown)
    ax.set_xlim(start, last * 1.2)
    ax.set_ylim(low - 0.05 * (high - low), high + 0.05 * (high - low))
    hidden = ", ".join(str(h) for h in sorted(set(df["hidden"])))
    ax.set_title(f"{df['dataset_label'].iloc[0]}, {hidden} hidden units: train (solid) and test (dashed)", fontsize=9)
    ax.legend(fontsize=7, ncol=2)
    ax.grid(alpha=0.3)
    return save(fig, stem)


def _first_sample_shown(last: float) -> float:
    """As KW's figures: from 10^5 samples on (from 2 % of the run for shorter runs), where the
    curves have left their starting values."""
    return 1e5 if last >= 1e7 else last / 50


def ml_vs_samples(df: pd.DataFrame, stem: Path) -> list[Path]:
    """The HMC marginal likelihood of training and test points against samples seen, one
    panel per training-set size, with L_5000 on the same points as a check (KW figure 3)."""
    sizes = sorted(set(df["trained_on"]))
    fig, axes = plt.subplots(1, len(sizes), figsize=(4.6 * len(sizes), 3.9), squeeze=False, sharey=True)
    points = [c for r in df.itertuples() for c in _curve(r) if c.get("train_ml") not in (None, "")]
    last = max(c["samples"] for c in points)
    start = _first_sample_shown(last)
    shown = [c[f"{s}_{q}"] for c in points if c["samples"] >= start for s in ("train", "test") for q in ("ml", "lk")]
    span = max(shown) - min(shown)
    for ax, n in zip(axes[0], sizes):
        ax.set_xlim(start, last * 1.3)
        ax.set_ylim(min(shown) - 0.05 * span, max(shown) + 0.05 * span)
        for r in df[df["trained_on"] == n].sort_values("seed").itertuples():
            rows = [c for c in _curve(r) if c.get("train_ml") not in (None, "")]
            samples = [c["samples"] for c in rows]
            first = r.seed == df["seed"].min()
            for split, color in (("train", "tab:blue"), ("test", "tab:red")):
                ax.plot(samples, [c[f"{split}_ml"] for c in rows], "-o", ms=3, color=color,
                        label=f"{split} (HMC estimate)" if first else None)  # fmt: skip
                ax.plot(samples, [c[f"{split}_lk"] for c in rows], ":", color=color,
                        label=f"{split} (L_5000)" if first else None)  # fmt: skip
        ax.set_xscale("log")
        ax.set_xlabel("training samples evaluated")
        ax.set_title(f"N_train = {n:,}", fontsize=10)
        ax.grid(alpha=0.3)
    axes[0][0].set_ylabel("marginal log-likelihood per point (nats)")
    axes[0][0].legend(fontsize=7)
    fig.suptitle(f"{df['dataset_label'].iloc[0]}, Nz = {', '.join(map(str, sorted(set(df['latent']))))}", fontsize=10)
    fig.tight_layout()
    return save(fig, stem)


def _read_log(path: Path) -> tuple[list[int], list[float], list[tuple[int, float]]]:
    """Epochs, the training objective, and (epoch, validation bound) where one was logged."""
    with open(path) as f:
        rows = list(csv.DictReader(f))
    valid = [(int(r["epoch"]), float(r["valid_bound"])) for r in rows if r.get("valid_bound")]
    return [int(r["epoch"]) for r in rows], [float(r["objective"]) for r in rows], valid


def _method(r) -> str:
    """How a run is named in a legend: its objective, and its random weights if any."""
    name = objective_label(r.objective)
    random = getattr(r, "random", "none")
    return RANDOM_WEIGHTS[random] if random != "none" else name


def _one_group(df: pd.DataFrame, what: str) -> tuple[str, int]:
    groups = list(dict.fromkeys(zip(df["dataset"], df["layers"])))
    if len(groups) != 1:
        raise UserError(f"{what}: expected runs of one dataset and architecture, got {groups}")
    return groups[0]


def curves(df: pd.DataFrame, stem: Path) -> list[Path]:
    """Training objective against epoch for runs of one dataset and architecture."""
    _, layers = _one_group(df, "curves")
    fig, ax = plt.subplots(figsize=(6.5, 4.2))
    styles = dict(zip(sorted(set(df["k"])), ["-", "--", ":", "-."] * 4))
    methods = list(dict.fromkeys(_method(r) for r in df.itertuples()))
    palette = {m: COLORS.get(m.lower(), f"C{i}") for i, m in enumerate(methods)}
    any_valid = False
    for r in df.sort_values(["objective", "random", "k", "seed"]).itertuples():
        epochs, objective, valid = _read_log(Path(r.run_dir) / "train_log.csv")
        first = r.seed == df["seed"].min()
        color = palette[_method(r)]
        label = f"{_method(r)} k={r.k}" if first else None
        ax.plot(epochs, objective, styles[r.k], color=color, label=label, lw=1.2)
        if valid:
            any_valid = True
            ax.plot(*zip(*valid), "o", color=color, ms=3.5, mfc="none",
                    label=f"{_method(r)} k={r.k}, validation L_{r.valid_k}" if first else None)  # fmt: skip
    ax.set_xscale("log")
    ax.set_xlabel("epoch")
    ax.set_ylabel("training objective (line), validation bound (circles), nats" if any_valid
                  else "training objective (its own bound, nats)")  # fmt: skip
    ax.set_title(f"{df['dataset_label'].iloc[0]}, {layers} stochastic layer{'s' if layers > 1 else ''}")
    ax.legend(fontsize=8, ncol=2)
    ax.grid(alpha=0.3)
    return save(fig, stem)


def nll_vs_k(df: pd.DataFrame, stem: Path) -> list[Path]:
    agg = aggregate(cells(df), ["dataset", "layers", "objective", "k"])  # a shared run on each line it fills
    panels = list(dict.fromkeys(zip(agg["dataset"], agg["layers"])))
    fig, axes = plt.subplots(1, len(panels), figsize=(4.2 * len(panels), 3.8), squeeze=False)
    for ax, (dataset, layers) in zip(axes[0], panels):
        part = agg[(agg["dataset"] == dataset) & (agg["layers"] == layers)]
        for objective, lines in part.groupby("objective", sort=False):
            lines = lines.sort_values("k")
            color = COLORS.get(objective)
            ax.errorbar(lines["k"], lines["nll"], yerr=lines["nll_sd"].fillna(0), marker="o", color=color,
                        capsize=3, label=f"{objective_label(objective)} (ours)")  # fmt: skip
            ref = [references.nll_reference(dataset, layers, objective, k) for k in lines["k"]]
            ks = [k for k, (nll, _, _) in zip(lines["k"], ref) if nll]
            if ks:
                same = ref[0][2]
                ax.plot(ks, [nll for nll, _, _ in ref if nll], marker="s", ls="none", mfc="none", color=color,
                        ms=8, label=f"{objective_label(objective)} (paper{'' if same else ', other data'})")  # fmt: skip
        ax.set_xscale("log")
        ax.set_xticks(sorted(set(part["k"])), [str(k) for k in sorted(set(part["k"]))])
        ax.set_xlabel("k (training samples)")
        ax.set_ylabel("test NLL (nats)")
        ax.set_title(f"{part['dataset_label'].iloc[0]}, {layers} layer{'s' if layers > 1 else ''}", fontsize=10)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
    fig.tight_layout()
    return save(fig, stem)


def variances(df: pd.DataFrame, stem: Path, threshold: float = 1e-2) -> list[Path]:
    """Histograms of the log posterior-mean variances, one panel per (objective, k)."""
    _, layers = _one_group(df, "variances")
    cells = list(dict.fromkeys(zip(df["objective"], df["k"])))
    cols = min(3, len(cells))
    rows = math.ceil(len(cells) / cols)
    fig, axes = plt.subplots(rows, cols, figsize=(3.6 * cols, 2.8 * rows), squeeze=False, sharex=True)
    bins = np.linspace(-8, 1, 37)
    for ax, (objective, k) in zip(axes.flat, cells):
        runs = df[(df["objective"] == objective) & (df["k"] == k)]
        per_layer = [[] for _ in range(layers)]
        for r in runs.itertuples():
            for j, v in enumerate(r.record["active_units"]["variances"]):
                per_layer[j] += v
        for j, values in enumerate(per_layer):
            active = (np.array(values) > threshold).sum() / len(runs)
            ax.hist(
                np.log10(np.clip(values, 1e-8, None)), bins=bins, alpha=0.6, label=f"layer {j + 1} ({active:g} active)"
            )
        ax.axvline(math.log10(threshold), color="k", ls="--", lw=1)
        ax.set_title(f"{objective_label(objective)}, k={k}", fontsize=9)
        ax.legend(fontsize=7)
    for ax in axes.flat[len(cells) :]:
        ax.axis("off")
    for ax in axes[-1]:
        ax.set_xlabel("log10 variance of posterior mean")
    fig.suptitle(
        f"{df['dataset_label'].iloc[0]}, {layers} layer{'s' if layers > 1 else ''}: "
        f"units right of the line (variance > {threshold}) are active",
        fontsize=10,
    )
    fig.tight_layout()
    return save(fig, stem)
