"""Figures drawn from trained models (model.pt and the prepared dataset), each written as
PDF and PNG.

samples     per run: 64 draws from the prior and test images beside their reconstructions
weights     per dataset and architecture, for runs with random weights: histograms of each
            random layer's sigma and |m| / sigma (do the weights collapse to point values?)
manifold    per run with a 2-D latent space: decoded means on KW's 20 x 20 grid of latent
            values, z = inverse normal CDF of (i + 1/2) / 20 (KW's figure 4)
latents     per run with a 2-D latent space on labelled data: posterior means of test points,
            coloured by label
posterior   per run with a 2-D latent space: for random test digits, the true posterior on an
            adaptive grid beside q's density, q samples and SIR samples, and the
            reconstructions of both (nbip's task 1)
pca         per run with several stochastic layers on labelled data: each layer's posterior
            means (self-normalised importance sampling) projected on its first two principal
            components, coloured by label (nbip's task 3)
by_label    per label-conditional run: samples of p(x | y) for every label y
training_samples  per run trained with snapshot_stages: samples from the prior at the start
            and after each stage, the same z in every row (nbip's figure of training)
reconstructions  per part with several latent sizes: the same test images reconstructed by
            each run, one row per size (seed 002's figure 3)
samples_by_latent  per part with several latent sizes: samples from each run's prior, one row
            per size (Kingma & Welling's figure 5)
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from iwae.errors import UserError  # noqa: E402
from iwae.plan.config import binarisation_seed  # noqa: E402  (test images as evaluation binarised them)
from iwae.plan.vocabulary import RANDOM_WEIGHTS  # noqa: E402
from iwae.report.figures import save  # noqa: E402


def _test_seed(model_path: Path, config: dict) -> int:
    """The seed that binarised the run's test points in its evaluation (eval.json beside the
    model, which the workflow draws these figures after), else its training's."""
    record = Path(model_path).with_name("eval.json")
    return binarisation_seed(config, json.loads(record.read_text()) if record.is_file() else None)


def _tile(images: np.ndarray, cols: int, shape: tuple[int, int] = (28, 28), invert: bool = True) -> np.ndarray:
    """Images (n, h * w) on a grid with one-pixel borders; ink dark where `invert`."""
    n, (h, w) = images.shape[0], shape
    rows = math.ceil(n / cols)
    grid = np.ones((rows * (h + 1) + 1, cols * (w + 1) + 1))
    for i, img in enumerate(images):
        r, c = divmod(i, cols)
        img = np.clip(img.reshape(h, w), 0, 1)
        grid[1 + (h + 1) * r : (h + 1) * (r + 1), 1 + (w + 1) * c : (w + 1) * (c + 1)] = 1.0 - img if invert else img
    return grid


def samples(model_path: Path, data_path: Path, stem: Path, seed: int = 0) -> list[Path]:
    import torch

    from iwae.data import datasets
    from iwae.data.datasets import subset
    from iwae.models import from_state
    from iwae.models.store import load_model_file

    state = load_model_file(Path(model_path))
    model = from_state(state["model"])
    data = datasets.load(Path(data_path))
    shape, grey = data.image_shape, state["config"].get("grey_levels", False)
    g = torch.Generator().manual_seed(seed)
    chosen = subset(data.test.shape[0], 32)  # test files can be sorted by class
    classes = getattr(model, "condition_dim", 0)
    given = {}  # a model of p(x | y): samples for every label in turn, reconstructions given the true one
    if classes:
        given = {"condition": torch.eye(classes)[torch.arange(64) % classes]}
    drawn = model.sample(64, g, **given).numpy()
    x = data.binarized("test", _test_seed(model_path, state["config"]), grey)[chosen]  # as evaluated
    if classes:
        given = {"condition": torch.eye(classes)[data.labels_of("test")[chosen]]}
    rec = model.reconstruct(x, g, **given).numpy()
    pairs = np.stack([x.numpy(), rec], 1).reshape(64, -1)  # original, reconstruction, ...
    invert = data.meta["binarization"] != "none"  # ink on paper; photographs as they are
    fig, axes = plt.subplots(1, 2, figsize=(9, 4.8 * shape[0] / 28 * 20 / shape[1] if shape[1] < 28 else 4.8))
    axes[0].imshow(_tile(drawn, 8, shape, invert), cmap="gray", vmin=0, vmax=1)
    axes[0].set_title(f"samples from the prior ({model.likelihood.name} means)", fontsize=10)
    axes[1].imshow(_tile(pairs, 8, shape, invert), cmap="gray", vmin=0, vmax=1)
    axes[1].set_title("test images (left) and reconstructions (right)", fontsize=10)
    for ax in axes:
        ax.axis("off")
    fig.suptitle(Path(model_path).parent.name)
    return save(fig, stem)


def manifold(model_path: Path, data_path: Path, stem: Path, size: int = 20) -> list[Path]:
    """Decoded means on Kingma & Welling's grid: z_i = Phi^-1((i + 1/2) / size) per axis."""
    import torch
    from scipy.stats import norm

    from iwae.data import datasets
    from iwae.models.store import load_model

    model = load_model(Path(model_path))
    if model.architecture.latent_sizes != [2] or model.architecture.n_stochastic != 1:
        raise UserError(f"{model_path}: the manifold figure needs one stochastic layer of 2 units")
    data = datasets.load(Path(data_path))
    axis = norm.ppf((np.arange(size) + 0.5) / size)
    z = np.stack(np.meshgrid(axis, axis[::-1], indexing="xy"), -1).reshape(-1, 2)  # rows top to bottom
    with torch.no_grad():
        means = model.likelihood.mean(model.net("decoder.p0", torch.from_numpy(z).float())).numpy()
    invert = data.meta["binarization"] != "none"
    h, w = data.image_shape
    fig, ax = plt.subplots(figsize=(7 * w / h if w < h else 7, 7))
    ax.imshow(_tile(means, size, (h, w), invert), cmap="gray", vmin=0, vmax=1)
    ax.set_title(f"{Path(model_path).parent.name}: decoded means on a {size}x{size} grid of z", fontsize=9)
    ax.axis("off")
    return save(fig, stem)


def latents(model_path: Path, data_path: Path, stem: Path, points: int = 5000) -> list[Path]:
    """Posterior means of random test points in a 2-D latent space, coloured by label."""
    import torch

    from iwae.data import datasets
    from iwae.data.datasets import subset
    from iwae.models import from_state
    from iwae.models.store import load_model_file

    state = load_model_file(Path(model_path))
    model = from_state(state["model"])
    if model.architecture.latent_sizes[-1] != 2:
        raise UserError(f"{model_path}: the latents figure needs a top layer of 2 units")
    data = datasets.load(Path(data_path))
    labels = data.labels_of("test")
    chosen = subset(data.test.shape[0], points)
    seed, grey = _test_seed(model_path, state["config"]), state["config"].get("grey_levels", False)
    x = data.binarized("test", seed, grey)[chosen]
    mu = model.posterior_means(x, torch.Generator().manual_seed(0))[-1].numpy()
    y = labels[chosen].numpy()
    fig, ax = plt.subplots(figsize=(6, 5.4))
    for digit in range(int(y.max()) + 1):
        ax.scatter(*mu[y == digit].T, s=3, alpha=0.6, color=plt.cm.tab10(digit % 10), label=str(digit))
    ax.legend(markerscale=4, fontsize=8, title="label", loc="best")
    ax.set_xlabel("E_q[z_1 | x]")
    ax.set_ylabel("E_q[z_2 | x]")
    ax.set_title(f"{Path(model_path).parent.name}: {len(y):,} test points", fontsize=9)
    return save(fig, stem)


def weights(model_paths: list[Path], stem: Path) -> list[Path]:
    """Per random layer, histograms of log10 sigma and of log10 |m| / sigma, one colour per
    run's method (seed 001's IWAER and IWAER_rec)."""
    from iwae.models.store import load_model

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


def _mass_levels(density, masses=(0.99, 0.86, 0.39)) -> list[float]:
    """Contour levels of a density on a grid that enclose the given masses (those of 3, 2 and
    1 standard deviations of a 2-D Gaussian). Levels spread over the density's range would
    also draw its zero level: the edge where a narrow q underflows, far from its mass."""
    values = np.sort(density.ravel())[::-1]
    cumulative = np.cumsum(values) / values.sum()
    levels = sorted({float(values[min(np.searchsorted(cumulative, m), len(values) - 1)]) for m in masses})
    return levels if len(levels) > 1 else [levels[0] * 0.5, levels[0]]


def posterior(model_path: Path, data_path: Path, stem: Path, digits: int = 4, samples: int = 5000,
              replacement: bool = True) -> list[Path]:  # fmt: skip
    """The true posterior of random test digits on a grid beside q, q samples and SIR
    samples from them, and reconstructions of both (nbip's task 1)."""
    import torch

    from iwae.data import datasets
    from iwae.data.datasets import subset
    from iwae.estimators.posterior import (
        effective_sample_size,
        gaussian_levels,
        grid_posterior,
        grid_with_q,
        importance_samples,
        q_moments,
        sir,
    )
    from iwae.models.store import load_model, load_model_file

    model = load_model(Path(model_path))
    if model.architecture.latent_sizes != [2] or model.architecture.n_stochastic != 1:
        raise UserError(f"{model_path}: the posterior figure needs one stochastic layer of 2 units")
    data = datasets.load(Path(data_path))
    test = data.binarized("test", _test_seed(model_path, load_model_file(Path(model_path))["config"]))
    chosen = subset(test.shape[0], digits).tolist()
    g = torch.Generator().manual_seed(0)
    shape = data.image_shape
    fig, axes = plt.subplots(digits, 5, figsize=(13, 2.7 * digits), squeeze=False,
                             gridspec_kw={"width_ratios": [0.6, 1, 1, 1, 1]})  # fmt: skip
    for row, i in zip(axes, chosen):
        x = test[i]
        grid = grid_posterior(model, x)
        extent = [grid.xs[0].item(), grid.xs[-1].item(), grid.ys[0].item(), grid.ys[-1].item()]
        p = grid.posterior.numpy()
        # q on a box that holds it (mean ± 3 sd) as well as the posterior, with the contours
        # of its 1, 2 and 3 sd: q is often far broader than the posterior's own box
        both = grid_with_q(model, x, grid, width=3.0)
        both_extent = [both.xs[0].item(), both.xs[-1].item(), both.ys[0].item(), both.ys[-1].item()]
        q_levels = gaussian_levels(q_moments(model, x)[1])
        layers, log_w = importance_samples(model, x[None], samples, g)
        z, w = layers[0][:, 0], log_w[:, 0]
        resampled = sir(z, w, 200, g, replacement)
        row[0].imshow(1 - x.view(shape).numpy(), cmap="gray", vmin=0, vmax=1)
        row[0].set_title(f"test digit {i}", fontsize=8)
        row[1].imshow(p, origin="lower", extent=extent, aspect="auto", cmap="Greys")
        row[1].contour(p, levels=_mass_levels(p), origin="lower", extent=extent, colors="0.4", linewidths=0.6)
        row[1].contour(both.log_q.double().exp().numpy(), levels=q_levels, origin="lower", extent=both_extent,
                       colors="tab:blue", linewidths=0.8)  # fmt: skip
        row[1].set_xlim(both_extent[:2])
        row[1].set_ylim(both_extent[2:])
        row[1].set_title(f"p(z|x) (grey), q(z|x) (blue; 1, 2, 3 sd)\nlog p(x) = {grid.log_p_x:.2f} by quadrature",
                         fontsize=8)  # fmt: skip
        row[2].contour(p, levels=_mass_levels(p), origin="lower", extent=extent, colors="0.6", linewidths=0.8)
        row[2].scatter(*z[:200].T.numpy(), s=3, color="tab:blue", label="q samples")
        row[2].scatter(*resampled.T.numpy(), s=3, color="tab:red", label="SIR samples")
        row[2].set_xlim(extent[:2])
        row[2].set_ylim(extent[2:])
        ess = effective_sample_size(w[:, None])[0].item()
        row[2].set_title(f"the posterior's box: SIR {'with' if replacement else 'without'} replacement,\n"
                         f"ESS {ess:.0f} of {samples}", fontsize=8)  # fmt: skip
        row[2].legend(fontsize=6, markerscale=3)
        for ax, zs, what in ((row[3], z[:8], "of q samples"), (row[4], resampled[:8], "of SIR samples")):
            with torch.no_grad():
                means = model.likelihood.mean(model.net("decoder.p0", zs)).numpy()
            ax.imshow(_tile(means, 4, shape), cmap="gray", vmin=0, vmax=1)
            ax.set_title(f"reconstructions {what}", fontsize=8)
        for ax in (row[0], row[3], row[4]):
            ax.axis("off")
    fig.suptitle(Path(model_path).parent.name, fontsize=10)
    fig.tight_layout()
    return save(fig, stem)


def pca(model_path: Path, data_path: Path, stem: Path, samples: int = 10, points: int = 5000) -> list[Path]:
    """Each stochastic layer's posterior means (self-normalised importance sampling) on its
    first two principal components, coloured by label (nbip's task 3)."""
    import torch

    from iwae.data import datasets
    from iwae.data.datasets import subset
    from iwae.estimators.posterior import knn_accuracy, snis_means
    from iwae.models.store import load_model, load_model_file

    model = load_model(Path(model_path))
    data = datasets.load(Path(data_path))
    chosen = subset(data.test.shape[0], points)
    x = data.binarized("test", _test_seed(model_path, load_model_file(Path(model_path))["config"]))[chosen]
    labels = data.labels_of("test")[chosen]
    layers = snis_means(model, x, samples, torch.Generator().manual_seed(0))
    fig, axes = plt.subplots(1, len(layers), figsize=(5.2 * len(layers), 4.6), squeeze=False)
    for j, (ax, mu) in enumerate(zip(axes[0], layers)):
        centred = mu - mu.mean(0)
        _, sv, v = torch.linalg.svd(centred, full_matrices=False)
        proj = (centred @ v[:2].T).numpy() if mu.shape[1] > 2 else centred.numpy()
        for digit in range(int(labels.max()) + 1):
            ax.scatter(*proj[labels.numpy() == digit].T, s=3, alpha=0.6, color=plt.cm.tab10(digit % 10),
                       label=str(digit))  # fmt: skip
        explained = (sv[:2].square().sum() / sv.square().sum()).item() if mu.shape[1] > 2 else 1.0
        ax.set_title(f"layer {j + 1} ({mu.shape[1]} units): {explained:.0%} of the variance; "
                     f"5-NN accuracy {knn_accuracy(mu, labels, subset(len(mu), len(mu) // 2), 5):.2f}", fontsize=8)  # fmt: skip
        ax.set_xlabel("first principal component" if mu.shape[1] > 2 else "z_1")
        ax.set_ylabel("second principal component" if mu.shape[1] > 2 else "z_2")
    axes[0][-1].legend(markerscale=4, fontsize=7, title="label")
    fig.suptitle(f"{Path(model_path).parent.name}: posterior means of {len(labels):,} test points "
                 f"({samples} importance samples each)", fontsize=9)  # fmt: skip
    fig.tight_layout()
    return save(fig, stem)


def by_label(model_path: Path, data_path: Path, stem: Path, per_label: int = 10) -> list[Path]:
    """Samples of p(x | y) of a label-conditional model, one row per label."""
    import torch

    from iwae.data import datasets
    from iwae.models.store import load_model

    model = load_model(Path(model_path))
    if not getattr(model, "condition_dim", 0):
        raise UserError(f"{model_path}: the by_label figure needs a model conditioned on the label")
    data = datasets.load(Path(data_path))
    classes = model.condition_dim
    c = torch.eye(classes).repeat_interleave(per_label, 0)
    drawn = model.sample(classes * per_label, torch.Generator().manual_seed(0), condition=c).numpy()
    fig, ax = plt.subplots(figsize=(0.6 * per_label, 0.6 * classes + 0.6))
    ax.imshow(_tile(drawn, per_label, data.image_shape), cmap="gray", vmin=0, vmax=1)
    ax.set_yticks([(data.image_shape[0] + 1) * (y + 0.5) for y in range(classes)], [str(y) for y in range(classes)])
    ax.set_xticks([])
    ax.set_ylabel("label y")
    ax.set_title(f"{Path(model_path).parent.name}: means of p(x | z, y), z ~ p(z | y)", fontsize=8)
    return save(fig, stem)


def _by_latent(model_paths: list[Path]):
    """(model file, latent size, model, configuration) of runs with one stochastic layer, by
    latent size."""
    from iwae.models import from_state
    from iwae.models.store import load_model_file

    out = []
    for path in model_paths:
        state = load_model_file(Path(path))
        model = from_state(state["model"])
        if model.architecture.n_stochastic != 1:
            raise UserError(f"{path}: the figures by latent size need one stochastic layer")
        out.append((Path(path), model.architecture.latent_sizes[0], model, state["config"]))
    return sorted(out, key=lambda t: t[1])


def reconstructions(model_paths: list[Path], data_path: Path, stem: Path, images: int = 10) -> list[Path]:
    """The same random test images reconstructed by each run, one row per latent size (seed
    002's figure 3)."""
    import torch

    from iwae.data import datasets
    from iwae.data.datasets import subset

    runs = _by_latent(model_paths)
    data = datasets.load(Path(data_path))
    test = data.binarized("test", _test_seed(runs[0][0], runs[0][3]), runs[0][3].get("grey_levels", False))
    x = test[subset(data.test.shape[0], images)]
    rows = [x.numpy()] + [model.reconstruct(x, torch.Generator().manual_seed(0)).numpy() for _, _, model, _ in runs]
    return _rows_figure(rows, ["test images"] + [f"Nz = {z}" for _, z, _, _ in runs], data,
                        f"reconstructions by latent size ({', '.join(path.parent.name for path, *_ in runs)})", stem)  # fmt: skip


def samples_by_latent(model_paths: list[Path], data_path: Path, stem: Path, images: int = 10) -> list[Path]:
    """Samples from each run's generative model (decoded means), one row per latent size
    (Kingma & Welling's figure 5)."""
    import torch

    from iwae.data import datasets

    runs = _by_latent(model_paths)
    data = datasets.load(Path(data_path))
    rows = [model.sample(images, torch.Generator().manual_seed(0)).numpy() for _, _, model, _ in runs]
    return _rows_figure(rows, [f"Nz = {z}" for _, z, _, _ in runs], data,
                        f"samples from the prior by latent size ({', '.join(path.parent.name for path, *_ in runs)})", stem)  # fmt: skip


def _rows_figure(rows: list[np.ndarray], labels: list[str], data, title: str, stem: Path) -> list[Path]:
    h, w = data.image_shape
    invert = data.meta["binarization"] != "none"
    cols = rows[0].shape[0]
    fig, ax = plt.subplots(figsize=(0.55 * cols * w / 28 + 1.2, 0.55 * len(rows) * h / 28 + 0.6))
    ax.imshow(_tile(np.concatenate(rows), cols, (h, w), invert), cmap="gray", vmin=0, vmax=1)
    ax.set_yticks([(h + 1) * (i + 0.5) for i in range(len(rows))], labels, fontsize=8)
    ax.set_xticks([])
    ax.set_title(title, fontsize=7)
    return save(fig, stem)


def training_samples(model_path: Path, data_path: Path, stem: Path, images: int = 10) -> list[Path]:
    """Samples from the prior decoded by the parameters at the start and after each stage
    (the run's snapshots), the same z in every row: binary draws left, their means right."""
    import torch

    from iwae.data import datasets
    from iwae.models import from_state
    from iwae.models.store import load_model_file

    state = load_model_file(Path(model_path))
    if not state.get("snapshots"):
        raise UserError(f"{model_path}: no snapshots; train the run with snapshot_stages: true")
    model = from_state(state["model"])
    data = datasets.load(Path(data_path))
    means, draws = [], []
    for snapshot in state["snapshots"]:
        model.buffer.data.copy_(snapshot["params"])
        g = torch.Generator().manual_seed(0)  # the same z (and the same uniforms for the draws) in every row
        mean = model.sample(images, g)
        binary = model.likelihood.name == "bernoulli"  # a continuous model's draws are its means plus noise
        draws.append((torch.rand(mean.shape, generator=g) < mean).double().numpy() if binary else mean.numpy())
        means.append(mean.numpy())
    labels = [f"epoch {s['epoch']:,}" for s in state["snapshots"]]
    h, w = data.image_shape
    fig, axes = plt.subplots(1, 2, figsize=(2 * (0.55 * images * w / 28) + 1.5, 0.55 * len(labels) * h / 28 + 0.8))
    for ax, rows, what in ((axes[0], draws, "samples of p(x | z)"), (axes[1], means, "their means")):
        ax.imshow(_tile(np.concatenate(rows), images, (h, w)), cmap="gray", vmin=0, vmax=1)
        ax.set_yticks([(h + 1) * (i + 0.5) for i in range(len(labels))], labels, fontsize=8)
        ax.set_xticks([])
        ax.set_title(what, fontsize=9)
    fig.suptitle(f"{Path(model_path).parent.name}: z ~ p(z), the same z in every row", fontsize=9)
    return save(fig, stem)
