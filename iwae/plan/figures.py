"""The kinds of figure an experiment can make (`figures:` in its config): one registry that the
experiment model, the command line, the report document and the workflow all read.

Each kind says what it shows, its heading in Snakemake's report, what one figure covers
(`per`), what it is drawn from (`reads`), and for per-run kinds which runs get one. Each is
drawn by the function of its name in `iwae.report.figures` (records) or
`iwae.report.model_figures` (models).

Importing this module imports neither pandas nor PyTorch: the config checks read it.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from iwae.errors import UserError

PER = ("group", "experiment", "section", "latent section", "run")  # one figure per ...
READS = ("evals", "model", "models", "models and data")  # drawn from eval.json records or model files


@dataclass(frozen=True)
class FigureKind:
    name: str  # as configs and figure files spell it; the command line spells "_" as "-"
    shows: str  # what it shows
    title: str  # its heading in Snakemake's report
    per: str  # "group": per dataset and architecture; "section": per part (or dataset); ...
    reads: str  # "evals": eval.json records; "model": one model file and its dataset; ...
    drawn_for: Callable | None = None  # per run: whether a run gets one (planned run -> bool)
    wide: bool = False  # at full width in the LaTeX report

    @property
    def cli_name(self) -> str:
        return self.name.replace("_", "-")


def _all(run) -> bool:
    return True


# in the order their figures are listed (and appear in the report)
KINDS = {
    kind.name: kind
    for kind in (
        FigureKind("curves", "the training objective against epochs", "Training curves", "group", "evals"),
        FigureKind("variances", "the variance of each latent unit's posterior mean",
                   "Posterior-mean variances (active units)", "group", "evals"),
        FigureKind("weights", "runs with random weights: sigma and |m| / sigma",
                   "Random weights: sigma and |m| / sigma", "group", "models"),
        FigureKind("nll_vs_k", "test NLL against k, for an experiment with several k", "NLL against k",
                   "experiment", "evals"),
        FigureKind("bound_vs_samples", "runs with curves: train and test bound against samples seen",
                   "Bound against samples seen", "section", "evals"),
        FigureKind("ml_vs_samples", "runs with marginal-likelihood curves: HMC log p(x) against samples seen",
                   "Marginal likelihood against samples seen", "section", "evals"),
        FigureKind("reconstructions", "several latent sizes: the same test images reconstructed by each",
                   "Reconstructions by latent size", "latent section", "models and data"),
        FigureKind("samples_by_latent", "several latent sizes: samples from the prior of each",
                   "Samples by latent size", "latent section", "models and data"),
        FigureKind("manifold", "a 2-D latent space: decoded means on a grid of latent values", "Learned manifolds",
                   "run", "model", lambda r: r.latent_2d),
        FigureKind("latents", "a 2-D latent space on labelled data: test points' posterior means by label",
                   "Latent spaces", "run", "model", lambda r: r.latent_2d and r.labelled),
        FigureKind("posterior", "a 2-D latent space: the true posterior on a grid, q, SIR samples, reconstructions",
                   "True and variational posteriors", "run", "model", lambda r: r.latent_2d and not r.conditional,
                   wide=True),
        FigureKind("pca", "several stochastic layers on labelled data: each layer's posterior means, by label",
                   "Latent layers (PCA)", "run", "model", lambda r: r.n_stochastic > 1 and r.labelled, wide=True),
        FigureKind("by_label", "a label-conditional run: samples of p(x | y) for every label", "Samples per label",
                   "run", "model", lambda r: r.conditional),
        FigureKind("training_samples", "a run trained with snapshot_stages: samples from the prior at the start "
                   "and after each stage", "Samples from the prior as training goes", "run", "model",
                   lambda r: bool(r.protocol.get("snapshot_stages"))),
        FigureKind("samples", "samples from the prior, test images and their reconstructions",
                   "Samples and reconstructions", "run", "model", _all),
    )
}  # fmt: skip
DEFAULT = ("curves", "variances", "weights", "nll_vs_k", "samples")  # an experiment's, unless it names its own


def get(name: str) -> FigureKind:
    """A kind by its name, spelled as in a config ("nll_vs_k") or on the command line ("nll-vs-k")."""
    kind = KINDS.get(name.replace("-", "_"))
    if kind is None:
        raise UserError(f"figure {name!r}: unknown; expected one of {', '.join(KINDS)}")
    return kind


def names(per: str | None = None, reads: str | None = None) -> list[str]:
    """The kinds with one figure `per` ... and drawn from `reads` (each if None)."""
    return [k.name for k in KINDS.values() if per in (None, k.per) and reads in (None, k.reads)]
