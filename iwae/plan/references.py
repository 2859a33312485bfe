"""Published numbers the tables compare against (sources in each block's comment), and the
sources a table can name (`SOURCES`: the paper, seed 000, nbip/IWAE, pythae, Rainforth et
al.), each with where its numbers are published and how they were obtained.

Keys use this project's names: dataset, stochastic layers or architecture, objective spec, k.
Importing this module imports neither pandas nor PyTorch: the config checks read it.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from iwae.data import catalogue
from iwae.plan.architecture import Architecture

# Burda et al. (2016), Table 1: test NLL (k = 5000) and active units ("16+5": layer 1 + 2).
# MNIST values are also quoted identically by the re-implementation nbip/IWAE.
TABLE1 = {
    ("mnist", 1, "vae", 1): (86.76, "19"),
    ("mnist", 1, "vae", 5): (86.47, "20"),
    ("mnist", 1, "vae", 50): (86.35, "20"),
    ("mnist", 1, "iwae", 1): (86.76, "19"),
    ("mnist", 1, "iwae", 5): (85.54, "22"),
    ("mnist", 1, "iwae", 50): (84.78, "25"),
    ("mnist", 2, "vae", 1): (85.33, "16+5"),
    ("mnist", 2, "vae", 5): (85.01, "17+5"),
    ("mnist", 2, "vae", 50): (84.78, "17+5"),
    ("mnist", 2, "iwae", 1): (85.33, "16+5"),
    ("mnist", 2, "iwae", 5): (83.89, "21+5"),
    ("mnist", 2, "iwae", 50): (82.90, "26+7"),
    ("omniglot", 1, "vae", 1): (108.11, "28"),
    ("omniglot", 1, "vae", 5): (107.62, "28"),
    ("omniglot", 1, "vae", 50): (107.80, "28"),
    ("omniglot", 1, "iwae", 1): (108.11, "28"),
    ("omniglot", 1, "iwae", 5): (106.12, "34"),
    ("omniglot", 1, "iwae", 50): (104.67, "41"),
    ("omniglot", 2, "vae", 1): (107.58, "28+4"),
    ("omniglot", 2, "vae", 5): (106.31, "30+5"),
    ("omniglot", 2, "vae", 50): (106.30, "30+5"),
    ("omniglot", 2, "iwae", 1): (107.56, "30+5"),
    ("omniglot", 2, "iwae", 5): (104.79, "38+6"),
    ("omniglot", 2, "iwae", 50): (103.38, "44+7"),
}

# Burda et al. (2016), Table 2: (first objective, first k, second objective, second k) ->
# (first-stage NLL, active units, second-stage NLL, active units); MNIST, 1 layer.
TABLE2 = {
    ("vae", 1, "iwae", 50): (86.76, "19", 84.88, "22"),
    ("iwae", 50, "vae", 1): (84.78, "25", 86.02, "23"),
}

# Appendix, fixed binarisation of MNIST (Larochelle & Murray), 1-layer IWAE, test NLL; as
# quoted by nbip/IWAE and the pythae model card. No VAE values are published.
FIXED_BINARIZATION = {
    ("mnist-fixed", 1, "iwae", 1): (88.71, None),
    ("mnist-fixed", 1, "iwae", 5): (87.63, None),
    ("mnist-fixed", 1, "iwae", 50): (87.10, None),
}

# The official code's README ("Remarks", f6e1a69, 2015-09-08): trained on the 50,000 images of
# the fixed binarisation, "the models overfit significantly more (about 3.5 nats difference
# between train and test log-likelihoods)".
FIXED_BINARIZATION_GAP = 3.5

# Rainforth et al. (2018), "Tighter variational bounds are not necessarily better", 1-layer
# MNIST, budget M x K = 64: (IWAE-64, log p(x) with k = 5000, -KL(Q||P)).
RAINFORTH = {
    "iwae": (-86.11, -84.52, -1.59),
    "piwae-m4": (-85.68, -84.40, -1.27),
    "piwae-m8": (-85.74, -84.46, -1.28),
    "miwae-m4": (-85.60, -84.56, -1.04),
    "miwae-m8": (-85.69, -84.97, -0.72),
    "ciwae-b0.05": (-85.91, -84.57, -1.34),
    "ciwae-b0.5": (-86.08, -85.24, -0.84),
    "vae": (-86.69, -86.21, -0.47),
}


# Hernandez-Lobato et al. (seed 001), Table 1: test log-likelihood (L_2000, weights sampled
# too), mean of 5 trials, with its "+-" (undefined there). Keyed by `random`.
SEED001 = {
    "mnist": {"none": (-95.182, 0.022), "both": (-94.346, 0.025), "encoder": (-94.709, 0.025)},
    "omniglot": {"none": (-118.771, 0.035), "both": (-118.540, 0.049), "encoder": (-118.647, 0.031)},
}


# nbip/IWAE (seed 004), MNIST test log-likelihoods with k = 5000. Keyed by (architecture spec,
# objective, k, model): "unconditional", or "label prior" for the conditional IWAE (task04,
# a log p(x | y)). nbip's "1 stochastic layer" has 100 latent units (784-200-200-100);
# its 2-layer model is the paper's.
NBIP = {
    **{("200-200-100", "iwae", k, "unconditional"): v for k, v in zip((1, 5, 50), (-86.35, -85.18, -84.59))},
    **{("200-200-100", "vae", k, "unconditional"): v for k, v in zip((1, 5, 50), (-86.35, -86.10, -86.06))},
    **{("200-200-100", "dreg", k, "unconditional"): v for k, v in zip((1, 5, 50), (-86.08, -84.90, -84.32))},
    **{("200-200-100", "iwae", k, "label prior"): v for k, v in zip((1, 5, 50), (-82.32, -81.41, -80.78))},
    **{("200-200-100/100-100-50", "iwae", k, "unconditional"): v for k, v in zip((1, 5, 50), (-84.83, -83.48, -82.82))},
    **{("200-200-100/100-100-50", "vae", k, "unconditional"): v for k, v in zip((1, 5, 50), (-84.83, -84.08, -83.89))},
}


def nbip_reference(architecture: str, objective: str, k: int, condition: str, prior: str) -> float | None:
    """nbip's published test log-likelihood for a run like this one (None: none published)."""
    model = "unconditional" if condition == "none" else ("label prior" if prior == "label" else "standard prior")
    return NBIP.get((architecture, objective, k, model))


def reference_dataset(dataset: str) -> tuple[str, bool]:
    """The paper's dataset this dataset's published values belong to, and whether it is the
    same data (the catalogue's entry says)."""
    entry = catalogue.CATALOGUE.get(dataset)
    return (entry.reference, entry.caveat is None) if entry else (dataset, True)


def nll_reference(dataset: str, layers: int, objective: str, k: int) -> tuple[float | None, str | None, bool]:
    """(NLL, active units, same dataset?) from Table 1 or the fixed-binarisation appendix,
    for the paper's dataset that the catalogue names as this dataset's reference."""
    ref_dataset, same = reference_dataset(dataset)
    key = (ref_dataset, layers, objective, k)
    nll, units = TABLE1.get(key) or FIXED_BINARIZATION.get(key) or (None, None)
    return nll, units, same


# --------------------------------------------------------------------------- sources
# Every published value a table can set beside ours, by source. A cell is (the paper's
# dataset, architecture spec, objective, k, model): model is "unconditional", or for a
# model given the label "label prior" / "standard prior" (then the value is -log p(x | y)).
# An experiment names the source it reproduces (`reference:`, default "paper"); every
# other source with a value for the same cell is shown beside it.


@dataclass(frozen=True)
class Source:
    short: str  # how a table's column names it
    where: str  # where its numbers are published
    protocol: str  # how they were obtained, in one line
    epochs: int  # training epochs of its runs (the tables' notes compare ours with them)
    nll: dict = field(default_factory=dict)  # cell -> test NLL (k = 5000)
    units: dict = field(default_factory=dict)  # cell -> active units
    prose: str | None = None  # how a sentence names it, if not `short`
    version: str = ""  # the version its values were read from: arXiv version, commit, document date
    # the protocol of its cells of one (reference) dataset where it is not `protocol`
    protocols: dict = field(default_factory=dict)

    @property
    def name(self) -> str:
        return self.prose or self.short

    def line(self, datasets=()) -> str:
        """Its protocol (that of `datasets`' cells where they have their own), where its
        numbers are published and which version they were read from."""
        refs = sorted({reference_dataset(d)[0] for d in datasets})
        own = [self.protocols[d] for d in refs if d in self.protocols]
        protocol = "; ".join(own + ([self.protocol] if len(own) < len(refs) or not refs else []))
        return f"{self.short}: {protocol} ({self.where}; read from {self.version})"


def _arch(layers: int | str) -> str:
    return Architecture.parse(layers).spec()


SOURCES = {
    "paper": Source(
        "paper",
        "Burda et al., ICLR 2016, Table 1 and appendix (arXiv:1509.00519)",
        "batch 20, 3,280 epochs in 8 stages at 1e-3 x 10^(-i/7), Adam (0.9, 0.999, 1e-4), 59,600 MNIST "
        "training images (Omniglot 23,000), L_5000 on the whole test set",
        3280,
        {
            (d, _arch(layers), o, k, "unconditional"): v[0]
            for (d, layers, o, k), v in {**TABLE1, **FIXED_BINARIZATION}.items()
        },  # fmt: skip
        {(d, _arch(layers), o, k, "unconditional"): v[1] for (d, layers, o, k), v in TABLE1.items()},
        prose="the paper",
        version="the ICLR 2016 paper as transcribed in seed 003 (2021-09-16) and quoted identically by nbip/IWAE "
        "(README at 1f63690b); the official README (f6e1a69, 2015-09-08) says arXiv v1 used other code and later "
        "versions report the published code's numbers; which arXiv version was not checked (arXiv unreachable here)",
        protocols={
            "mnist-fixed": "batch 20, 3,280 epochs in 8 stages at 1e-3 x 10^(-i/7), Adam (0.9, 0.999, 1e-4), "
            "Larochelle & Murray's fixed binarisation of MNIST (50,000 training images), L_5000 on its test set "
            "(the paper's appendix)",
        },
    ),
    "seed000": Source(
        "seed 000",
        "Gutell, Derksen, Lindström & Skare, 'Large project 1.6 - Importance Weighted Autoencoders' (2024), Table 1",
        "batch 100, 364 epochs in 6 stages of 3^i at 1e-3 x 10^(-i/5), Adam (0.9, 0.999, 1e-4), Glorot init with "
        "zero biases, 60,000 MNIST training images (Omniglot 24,345), L_5000 on the test set; some of its 2-layer "
        "models used LeakyReLU instead of tanh",
        364,
        {
            (d, _arch(layers), o, k, "unconditional"): v
            for (d, layers, o), values in {
                ("mnist", 1, "vae"): (93.17, 97.33, 96.90),
                ("mnist", 1, "iwae"): (93.16, 87.02, 86.11),
                ("omniglot", 1, "vae"): (116.89, 116.37, 116.60),
                ("omniglot", 1, "iwae"): (116.94, 112.83, 109.66),
                ("mnist", 2, "vae"): (105.78, 102.42, 106.77),
                ("mnist", 2, "iwae"): (105.74, 93.90, 92.75),
                ("omniglot", 2, "vae"): (129.65, 127.80, 122.41),
                ("omniglot", 2, "iwae"): (122.70, 118.18, 112.78),
            }.items()
            for k, v in zip((1, 5, 50), values)
        },
        version="the report as it reached this project (seeds/000_8b0ec1dd8211023e.txt)",
    ),
    "nbip": Source(
        "nbip/IWAE",
        "github.com/nbip/IWAE, README (seed 004)",
        "the paper's schedule (batch 20, 3,280 epochs), all 60,000 MNIST training images, Keras' Adam with "
        "epsilon=1e-4 set in main.py and every task script, on minibatch-mean losses, 1-layer models with 100 "
        "latent units, L_5000 on the test set",
        3280,
        {("mnist", arch, o, k, model): -v for (arch, o, k, model), v in NBIP.items()},
        version="README at commit 1f63690b (2021-01-05; the conditional row since 805f8ffb, 2021-01-28), unchanged "
        "through 3a5e38b4 (2021-02-05); earlier commits showed other values (814ed57: IWAE 1-layer 86.35, 85.28, "
        "84.63)",
    ),
    "pythae": Source(
        "pythae",
        "github.com/clementchadebec/benchmark_VAE, examples/scripts/reproducibility (README and the "
        "huggingface.co/clementchadebec/reproduced_* model cards)",
        "batch 20, 3,280 epochs, Adam (eps 1e-4) with the rate cut by 10^(-1/7) after epochs 2, 5, 14, 28, 41, 122, "
        "365 and 1,094; IWAE on Larochelle's fixed binarisation (50,000 training images, its validation file as "
        "evaluation set); MIWAE, PIWAE and CIWAE on dynamically binarised MNIST, its train_data.npz and "
        "eval_data.npz together (their sizes are not stated; pythae's data-download.py writes MNIST's 60,000 "
        "training and 10,000 test images into them); its CIWAE script runs beta 0.5, its README says 0.05; "
        "L_5000 on the test set, mean of 5 evaluations",
        3280,
        {
            ("mnist-fixed", _arch(1), "iwae", 5, "unconditional"): 87.85,
            ("mnist-fixed", _arch(1), "iwae", 50, "unconditional"): 86.82,
            ("mnist", _arch(1), "miwae-m8", 64, "unconditional"): 85.09,
            ("mnist", _arch(1), "piwae-m8", 64, "unconditional"): 84.58,
            ("mnist", _arch(1), "ciwae-b0.05", 64, "unconditional"): 84.74,
        },
        version="examples/scripts/reproducibility/README.md at 2a782b9 (2022-09-07; IWAE k = 50 since 8d1a765, "
        "2022-08-20); IWAE k = 5 only in the Hugging Face card clementchadebec/reproduced_iwae at 15b2fa08 "
        "(2022-08-19)",
    ),
    "rainforth": Source(
        "Rainforth et al.",
        "Rainforth et al., 'Tighter variational bounds are not necessarily better', ICML 2018",
        "the paper's 1-layer MNIST model and schedule, a budget of 64 samples, log p(x) by L_5000",
        3280,
        {("mnist", _arch(1), o, 64, "unconditional"): -v[1] for o, v in RAINFORTH.items()},
        version="the ICML 2018 paper's table as transcribed in seed 003 (2021-09-16); which arXiv version "
        "(1802.04537) was not checked",
    ),
}


def model_of(condition: str, prior: str) -> str:
    """How a source names a run's model: "unconditional", or "label prior" / "standard prior"
    for a model given the label."""
    return "unconditional" if condition == "none" else ("label prior" if prior == "label" else "standard prior")


def published(
    source: str, dataset: str, architecture: str, objective: str, k: int, model: str = "unconditional"
) -> tuple[float | None, str | None, bool]:
    """(NLL, active units, same dataset?) that `source` publishes for a run like this one."""
    ref_dataset, same = reference_dataset(dataset)
    cell = (ref_dataset, architecture, objective, k, model)
    found = SOURCES[source]
    return found.nll.get(cell), found.units.get(cell), same


# Models a source publishes in place of the paper's, of the same family with another size: nbip's
# "one stochastic layer" has 100 latent units where the paper's has 50. A comparison table sets
# their values beside ours marked with their architecture, for orientation; they are never a
# reference, a difference or a finding's published size.
SIBLINGS = {"200-200-50": ("200-200-100",)}


def others(source: str, dataset: str, architecture: str, objective: str, k: int, model: str = "unconditional"):
    """[(source name, NLL)] of every other source with a value for this cell."""
    out = []
    for name in SOURCES:
        if name != source:
            nll = published(name, dataset, architecture, objective, k, model)[0]
            if nll is not None:
                out.append((name, nll))
    return out


def siblings(source: str, dataset: str, architecture: str, objective: str, k: int, model: str = "unconditional"):
    """[(source name, NLL, its architecture)] of every source other than `source` with no value for
    this cell but one for a sibling model (SIBLINGS)."""
    out = []
    for name in SOURCES:
        if name == source or published(name, dataset, architecture, objective, k, model)[0] is not None:
            continue
        for spec in SIBLINGS.get(architecture, ()):
            nll = published(name, dataset, spec, objective, k, model)[0]
            if nll is not None:
                out.append((name, nll, spec))
    return out
