"""The table layouts: how an experiment's runs become a paper-style table and its comparison
with the published values. An experiment names its layout in the config (`table:`); a new
table of an existing layout is a config entry only, a new layout one entry here (and its
builder in `iwae.report.build.TABLES`).

    nll-au     Burda et al.'s Table 1: NLL and active units per layers x k, columns datasets x
               objectives (grid experiments; the default); beside it the experiment's
               `reference:` source (the paper, seed 000, nbip/IWAE; `iwae.plan.references`)
               and every other source that publishes the same cell
    bounds     Rainforth et al.'s comparison: IWAE-64, log p(x) and -KL(Q||P) per objective
               (grid experiments evaluated with extra_k: [64])
    two-stage  Burda et al.'s Table 2: first and second stage side by side (two-stage
               experiments; their default)
    random-weights  seed 001's Table 1: IWAE, IWAER_rec and IWAER per dataset beside seed
               001's values, with differences to IWAE paired on the same test points
    aevb       Kingma & Welling's experiments: final train and test bounds, L_k and the HMC
               marginal likelihood per run; their (qualitative) findings beside ours
    posterior  nbip's tasks: per run L_k, the posterior on a grid (2-D latents), each layer's
               5-NN label accuracy, the label mixture's log p(x); nbip's values beside ours

Importing this module imports neither pandas nor PyTorch: the config checks read it.
"""

from __future__ import annotations

from dataclasses import dataclass

from iwae.errors import UserError


@dataclass(frozen=True)
class Layout:
    name: str
    kinds: tuple[str, ...]  # experiment types it renders
    needs_extra_k: tuple[int, ...] = ()  # bounds the runs must be evaluated with


LAYOUTS = {
    layout.name: layout
    for layout in (
        Layout("nll-au", ("grid",)),
        Layout("bounds", ("grid",), needs_extra_k=(64,)),
        Layout("two-stage", ("two-stage",)),
        Layout("random-weights", ("grid",)),
        Layout("aevb", ("grid",)),
        Layout("posterior", ("grid",)),
    )
}
DEFAULT = {"grid": "nll-au", "two-stage": "two-stage"}  # per experiment type


def get(name: str) -> Layout:
    if name not in LAYOUTS:
        raise UserError(f"table layout {name!r}: unknown; expected one of {', '.join(LAYOUTS)}")
    return LAYOUTS[name]


def check(name: str, kind: str, evaluation: dict) -> None:
    """That layout `name` can render an experiment of type `kind` evaluated as `evaluation`."""
    layout = get(name)
    if kind not in layout.kinds:
        raise UserError(f"layout {name!r} renders {' or '.join(layout.kinds)} experiments, not {kind}")
    missing = [k for k in layout.needs_extra_k if k not in (evaluation.get("extra_k") or [])]
    if missing:
        raise UserError(f"layout {name!r} needs the runs evaluated with extra_k including {missing}")
