"""The findings of the paper and of the seeds: what each claims in one line, which two cells
of an experiment's runs it compares, by which statistic, which sign it expects, and the size
its source published. The report judges each from the run records (`iwae.report.findings`):
holds, contradicted, or not resolved at this budget. Nothing here is a result.

A finding compares cell A with cell B within one group of runs (`per`: e.g. one dataset and
number of layers), run by run of the same seed:

    nll     A's test NLL minus B's, paired on the same test points
    units   A's active units minus B's
    neg_kl  A's -KL(Q||P) = IWAE-64 - log p(x) minus B's (Rainforth et al.), paired
    gap     A's test NLL minus its NLL on training points it trained on (B unused)
    curve_nll  minus A's bound on the whole test set at its learning curve's last point,
            minus B's (Kingma & Welling's figures; no standard error: the sets are whole)
    curve_gap  A's bound on the whole training set minus on the whole test set at the
            curve's last point (B unused)
    vs_published  A's test NLL minus the experiment's source's value for that cell (B unused):
            with several seeds, whether a published single number lies outside our spread

A cell is a few fields a run must match (objective, k, layers, random weights, the first stage
a second stage continues). `expect` is the sign the source reports: '<' (A below B), '>', or '≠'
(a difference of either sign, for a measurement that expects one but no direction).
The published size comes from the source's own values (`iwae.plan.references`), never typed
here. A new finding is one entry of `FINDINGS` (and a test that it flips with its records).

Importing this module imports neither pandas nor PyTorch.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

from iwae.plan import references

STATISTICS = ("nll", "units", "neg_kl", "gap", "curve_nll", "curve_gap", "vs_published")


@dataclass(frozen=True)
class Finding:
    id: str
    source: str  # whose finding: Burda et al., Rainforth et al., seed 000, 001, 002, 004
    statement: str  # in one line; "{...}" fields are filled from the group (e.g. {dataset})
    experiments: tuple[str, ...]  # the experiments (by name) whose runs it is judged on
    statistic: str
    a: dict
    b: dict = field(default_factory=dict)
    expect: str = "<"
    per: tuple[str, ...] = ("dataset", "layers")
    # the size its source published for a group: fn(source of the experiment, group) -> float | None
    published: Callable[[str, dict], float | None] | None = None


def _units(text: str | None) -> int | None:
    return None if text is None else sum(int(u) for u in str(text).split("+"))


def _cells(statistic: str, a: dict, b: dict):
    """The published difference A - B of the experiment's reference source, for a group."""

    def size(source: str, group: dict) -> float | None:
        def value(cell: dict):
            found = references.published(source, group["dataset"], group["architecture"], cell["objective"],
                                         cell["k"])  # fmt: skip
            return found[0] if statistic == "nll" else _units(found[1])

        va, vb = value({**group, **a}), value({**group, **b})
        return None if va is None or vb is None else round(va - vb, 4)

    return size


def _table2(a: tuple, b_is: str):
    """Table 2: the second stage's NLL (or units) minus its first stage's, as the paper gives it."""

    def size(source: str, group: dict) -> float | None:
        ref = references.TABLE2.get(a)
        if ref is None:
            return None
        first_nll, first_units, second_nll, second_units = ref
        return round(second_nll - first_nll, 4) if b_is == "nll" else _units(second_units) - _units(first_units)

    return size


def _rainforth(statistic: str, a: str, b: str):
    def size(source: str, group: dict) -> float | None:
        ra, rb = references.RAINFORTH.get(a), references.RAINFORTH.get(b)
        if ra is None or rb is None:
            return None
        # (IWAE-64, log p(x), -KL): NLL = -log p(x)
        return round(-(ra[1] - rb[1]), 4) if statistic == "nll" else round(ra[2] - rb[2], 4)

    return size


def _seed001(a: str, b: str):
    def size(source: str, group: dict) -> float | None:
        values = references.SEED001.get(references.reference_dataset(group["dataset"])[0], {})
        if a not in values or b not in values:
            return None
        return round(-(values[a][0] - values[b][0]), 4)  # NLL: minus the log-likelihood

    return size


def _fixed_gap(source: str, group: dict) -> float | None:
    return references.FIXED_BINARIZATION_GAP


TABLE1_LIKE = ("table1", "seed000", "nbip")


def _table1() -> list[Finding]:
    out = []
    for k in (5, 50):
        out.append(Finding(
            f"iwae-below-vae-k{k}", "Burda et al.", f"IWAE's test NLL is below the VAE's at k = {k}", TABLE1_LIKE,
            "nll", {"objective": "iwae", "k": k}, {"objective": "vae", "k": k}, "<",
            published=_cells("nll", {"objective": "iwae", "k": k}, {"objective": "vae", "k": k})))  # fmt: skip
        out.append(Finding(
            f"iwae-more-units-k{k}", "Burda et al.", f"IWAE keeps more active units than the VAE at k = {k}",
            ("table1", "nbip"), "units", {"objective": "iwae", "k": k}, {"objective": "vae", "k": k}, ">",
            published=_cells("units", {"objective": "iwae", "k": k}, {"objective": "vae", "k": k})))  # fmt: skip
    for small, large in ((1, 5), (5, 50)):
        out.append(Finding(
            f"iwae-falls-k{small}-to-k{large}", "Burda et al.",
            f"IWAE's test NLL falls from k = {small} to k = {large}", TABLE1_LIKE, "nll",
            {"objective": "iwae", "k": large}, {"objective": "iwae", "k": small}, "<",
            published=_cells("nll", {"objective": "iwae", "k": large}, {"objective": "iwae", "k": small})))  # fmt: skip
    out.append(Finding(
        "two-layers-below-one", "Burda et al.", "two stochastic layers give a lower test NLL than one",
        ("table1", "nbip"), "nll", {"layers": 2}, {"layers": 1}, "<", per=("dataset", "objective", "k"),
        published=_two_layers))  # fmt: skip
    return out


def _two_layers(source: str, group: dict) -> float | None:
    one = references.published(source, group["dataset"], references._arch(1), group["objective"], group["k"])[0]
    two = references.published(source, group["dataset"], references._arch(2), group["objective"], group["k"])[0]
    return None if one is None or two is None else round(two - one, 4)


FINDINGS: dict[str, Finding] = {f.id: f for f in [
    *_table1(),
    # Table 2: a second stage of training with the other objective (paper, section 5.2)
    Finding("vae-then-iwae-below-vae", "Burda et al.",
            "VAE (k = 1) then IWAE (k = 50) ends below the VAE alone", ("table2",), "nll",
            {"first": ("vae", 1), "objective": "iwae", "k": 50}, {"second_stage_of": "a"}, "<", per=("dataset",),
            published=_table2(("vae", 1, "iwae", 50), "nll")),
    Finding("iwae-then-vae-above-iwae", "Burda et al.",
            "IWAE (k = 50) then VAE (k = 1) ends above IWAE alone", ("table2",), "nll",
            {"first": ("iwae", 50), "objective": "vae", "k": 1}, {"second_stage_of": "a"}, ">", per=("dataset",),
            published=_table2(("iwae", 50, "vae", 1), "nll")),
    Finding("vae-then-iwae-gains-units", "Burda et al.",
            "VAE then IWAE gains active units (19 to 22)", ("table2",), "units",
            {"first": ("vae", 1), "objective": "iwae", "k": 50}, {"second_stage_of": "a"}, ">", per=("dataset",),
            published=_table2(("vae", 1, "iwae", 50), "units")),
    Finding("iwae-then-vae-loses-units", "Burda et al.",
            "IWAE then VAE loses active units (25 to 23)", ("table2",), "units",
            {"first": ("iwae", 50), "objective": "vae", "k": 1}, {"second_stage_of": "a"}, "<", per=("dataset",),
            published=_table2(("iwae", 50, "vae", 1), "units")),
    # Rainforth et al. (2018), at a budget of 64 samples: tighter bounds train the generative
    # network better and the inference network worse
    Finding("rainforth-iwae-below-vae", "Rainforth et al.",
            "IWAE's log p(x) beats the VAE's: test NLL below", ("estimators",), "nll",
            {"objective": "iwae"}, {"objective": "vae"}, "<", per=("dataset",),
            published=_rainforth("nll", "iwae", "vae")),
    Finding("rainforth-vae-inference-closer", "Rainforth et al.",
            "the VAE's inference network is closer to its posterior than IWAE's: −KL(Q‖P) higher",
            ("estimators",), "neg_kl", {"objective": "vae"}, {"objective": "iwae"}, ">", per=("dataset",),
            published=_rainforth("neg_kl", "vae", "iwae")),
    *[Finding(f"rainforth-{o}-inference-closer", "Rainforth et al.",
              f"{label} tightens the inference network against IWAE: −KL(Q‖P) higher", ("estimators",), "neg_kl",
              {"objective": o}, {"objective": "iwae"}, ">", per=("dataset",), published=_rainforth("neg_kl", o, "iwae"))
      for o, label in (("miwae-m8", "MIWAE(8,8)"), ("ciwae-b0.5", "CIWAE(β = 0.5)"), ("piwae-m8", "PIWAE(8,8)"))],
    Finding("rainforth-piwae-keeps-log-px", "Rainforth et al.",
            "PIWAE(4,16) keeps IWAE's log p(x) (a test NLL no higher)", ("estimators",), "nll",
            {"objective": "piwae-m4"}, {"objective": "iwae"}, "<", per=("dataset",),
            published=_rainforth("nll", "piwae-m4", "iwae")),
    # the official code's README: on the fixed binarisation the models overfit
    Finding("fixed-binarization-overfits", "Burda et al. (official code)",
            "on the fixed binarisation, test NLL lies above the NLL on training points (about 3.5 nats)",
            ("fixed-binarization",), "gap", {"objective": "iwae"}, {}, ">", per=("dataset", "k"),
            published=_fixed_gap),
    # seed 001: random network weights
    *[Finding(f"seed001-{variant}-above-iwae", "seed 001",
              f"{references_label} reaches a higher test log-likelihood than IWAE: NLL below", ("iwaer",), "nll",
              {"random": variant}, {"random": "none"}, "<", per=("dataset",), published=_seed001(variant, "none"))
      for variant, references_label in (("both", "IWAER"), ("encoder", "IWAER_rec"))],
    # seed 000's single numbers against our seeds under its protocol
    *[Finding(f"seed000-gap-{o}-k{k}", "seed 000",
              f"our {label} with k = {k} ends at another NLL than seed 000's, beyond our seed-to-seed spread",
              ("seed000",), "vs_published", {"objective": o, "k": k}, {}, "≠")
      for o, k, label in (("iwae", 1, "IWAE (= VAE)"), ("iwae", 5, "IWAE"))],
    # seed 000's own reading of its Table 1 (364 epochs, batches of 100)
    Finding("seed000-two-layers-above-one", "seed 000",
            "at 364 epochs, two stochastic layers end above one (not converged)", ("seed000",), "nll",
            {"layers": 2}, {"layers": 1}, ">", per=("dataset", "objective", "k"), published=_two_layers),
    # Kingma & Welling's figures as seed 002 reproduced them (figures, no published numbers)
    Finding("aevb-bound-improves-with-latents", "seed 002 (Kingma & Welling, figure 2)",
            "more latent variables (Nz = 20 against 2) give a better test bound", ("aevb", "aevb-seed002"),
            "curve_nll", {"latent": 20}, {"latent": 2}, "<", per=("dataset",)),
    Finding("aevb-few-points-overfit", "seed 002 (Kingma & Welling, figure 3)",
            "trained on 1,000 points, the bound on the training set ends above the test set's", ("aevb",),
            "curve_gap", {"latent": 3, "trained_on": 1000}, {}, ">", per=("dataset",)),
    # the official code's arithmetic against the paper's text: a measurement, expected to differ
    Finding("official-code-differs", "the official code (yburda/iwae)",
            "its arithmetic (minibatch sum, its Adam with beta1 0.99, rounded rates, its initialisation, one order) "
            "ends at another test NLL than the paper's text", ("official-code",), "nll",
            {"variant": "official"}, {"variant": "paper"}, "≠", per=("dataset",)),
    # nbip/IWAE (seed 004): DReG against IWAE
    *[Finding(f"nbip-dreg-below-iwae-k{k}", "seed 004 (nbip/IWAE)",
              f"DReG's test NLL is below IWAE's at k = {k}", ("nbip",), "nll",
              {"objective": "dreg", "k": k}, {"objective": "iwae", "k": k}, "<",
              published=_cells("nll", {"objective": "dreg", "k": k}, {"objective": "iwae", "k": k}))
      for k in (5, 50)],
]}  # fmt: skip


def for_experiment(name: str) -> list[Finding]:
    """The findings judged on an experiment's runs, in the registry's order."""
    return [f for f in FINDINGS.values() if name in f.experiments]
