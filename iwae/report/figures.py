"""Figures, each written as PDF and PNG.

weights     per dataset and architecture, for runs with random weights: histograms of each
            random layer's sigma and |m| / sigma (do the weights collapse to point values?)
samples     per run: 64 draws from the prior and test images beside their reconstructions
curves      per dataset and architecture: the training objective against epochs (log x)
nll_vs_k    per experiment: test NLL against k, VAE and IWAE lines, the paper's values as
            open markers, error bars over seeds
variances   per dataset and architecture: histograms of log10 Cov_x(E_q[u|x]) per layer,
            with the active-unit threshold
"""

from __future__ import annotations

import csv
import math
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402

from iwae.errors import UserError  # noqa: E402
from iwae.files import atomic_path  # noqa: E402
from iwae.objectives import label as objective_label  # noqa: E402
from iwae.report import reference  # noqa: E402
from iwae.report.records import aggregate, load_record  # noqa: E402

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


def _tile(images: np.ndarray, cols: int) -> np.ndarray:
    n = images.shape[0]
    rows = math.ceil(n / cols)
    grid = np.ones((rows * 29 + 1, cols * 29 + 1))
    for i, img in enumerate(images):
        r, c = divmod(i, cols)
        grid[1 + 29 * r : 29 * (r + 1), 1 + 29 * c : 29 * (c + 1)] = 1.0 - img.reshape(28, 28)
    return grid


def samples(model_path: Path, data_path: Path, stem: Path, seed: int = 0) -> list[Path]:
    import torch

    from iwae import datasets
    from iwae.checkpoints import load_model
    from iwae.evaluate import subset

    model = load_model(Path(model_path))
    data = datasets.load(Path(data_path))
    g = torch.Generator().manual_seed(seed)
    drawn = model.sample(64, g).numpy()
    x = data.test[subset(data.test.shape[0], 32)]  # test files can be sorted by class
    x = datasets.binarize(x, g) if data.dynamic else x
    rec = model.reconstruct(x, g).numpy()
    pairs = np.stack([x.numpy(), rec], 1).reshape(64, 784)  # original, reconstruction, ...
    fig, axes = plt.subplots(1, 2, figsize=(9, 4.8))
    axes[0].imshow(_tile(drawn, 8), cmap="gray", vmin=0, vmax=1)
    axes[0].set_title("samples from the prior (Bernoulli means)")
    axes[1].imshow(_tile(pairs, 8), cmap="gray", vmin=0, vmax=1)
    axes[1].set_title("test images (left) and reconstructions (right)")
    for ax in axes:
        ax.axis("off")
    fig.suptitle(Path(model_path).parent.name)
    return save(fig, stem)


def _read_log(path: Path) -> tuple[list[int], list[float], list[tuple[int, float]]]:
    """Epochs, the training objective, and (epoch, validation bound) where one was logged."""
    with open(path) as f:
        rows = list(csv.DictReader(f))
    valid = [(int(r["epoch"]), float(r["valid_bound"])) for r in rows if r.get("valid_bound")]
    return [int(r["epoch"]) for r in rows], [float(r["objective"]) for r in rows], valid


def _method(r) -> str:
    """How a run is named in a legend: its objective, and its random weights if any."""
    from iwae.config import RANDOM_WEIGHTS

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
    agg = aggregate(df, ["dataset", "layers", "objective", "k"])
    panels = list(dict.fromkeys(zip(agg["dataset"], agg["layers"])))
    fig, axes = plt.subplots(1, len(panels), figsize=(4.2 * len(panels), 3.8), squeeze=False)
    for ax, (dataset, layers) in zip(axes[0], panels):
        part = agg[(agg["dataset"] == dataset) & (agg["layers"] == layers)]
        for objective, lines in part.groupby("objective", sort=False):
            lines = lines.sort_values("k")
            color = COLORS.get(objective)
            ax.errorbar(lines["k"], lines["nll"], yerr=lines["nll_sd"].fillna(0), marker="o", color=color,
                        capsize=3, label=f"{objective_label(objective)} (ours)")  # fmt: skip
            ref = [reference.nll_reference(dataset, layers, objective, k) for k in lines["k"]]
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
            for j, v in enumerate(load_record(Path(r.run_dir) / "eval.json")["active_units"]["variances"]):
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


def weights(model_paths: list[Path], stem: Path) -> list[Path]:
    """Per random layer, histograms of log10 sigma and of log10 |m| / sigma, one colour per
    run's method (seed 001's IWAER and IWAER_rec)."""
    from iwae.checkpoints import load_model
    from iwae.config import RANDOM_WEIGHTS

    runs = []
    for path in model_paths:
        model = load_model(Path(path))
        if getattr(model, "random", "none") == "none":
            continue
        runs.append((Path(path).parent.name, RANDOM_WEIGHTS[model.random], model.scales()))
    if not runs:
        raise UserError("weights figure: none of the runs has random weights")
    layers = list(dict.fromkeys(name for _, _, scales in runs for name in scales))
    fig, axes = plt.subplots(len(layers), 2, figsize=(8.5, 2.2 * len(layers)), squeeze=False)
    colors = {}
    for row, layer in zip(axes, layers):
        for run, method, scales in runs:
            if layer not in scales:
                continue
            sigma, ratio = (t.detach().double().flatten().numpy() for t in scales[layer])
            color = colors.setdefault(method, f"C{len(colors)}")
            first = run == next(r for r, m, s in runs if m == method and layer in s)
            row[0].hist(np.log10(sigma), bins=40, histtype="step", color=color, label=method if first else None)
            row[1].hist(np.log10(np.clip(ratio, 1e-6, None)), bins=40, histtype="step", color=color)
        row[0].set_ylabel(layer.replace("encoder.q0", "encoder").replace("decoder.p0", "decoder"), fontsize=8)
        for ax in row:
            ax.locator_params(axis="x", nbins=5)
            ax.ticklabel_format(axis="x", useOffset=False)
    axes[0][0].set_title("log10 sigma", fontsize=9)
    axes[0][1].set_title("log10 |m| / sigma (large: nearly a point value)", fontsize=9)
    axes[0][0].legend(fontsize=7)
    fig.tight_layout()
    return save(fig, stem)
