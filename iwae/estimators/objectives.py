"""Training objectives as estimators: functions of the (k, batch) log importance weights.

Each estimator returns the value of the bound it optimises (per data point, for the logs)
and the per-sample coefficients that define its gradient:

    grad = sum_i decoder_i * d/dtheta log w_i                       (generative network)
         + sum_i path_i  * [d log w_i / dh_i] dh_i/dphi             (recognition, through samples)
         + sum_i score_i * d/dphi log w_i |_(h_i fixed)             (recognition, score term)

With score = path this is the full reparameterised gradient of sum_i path_i log w_i; STL and
DReG drop the score term (score = None). A backend (`iwae.backends`) turns the coefficients
into gradients, so every estimator is written once, for any model.

    vae    mean_i log w_i (no analytic KL, as in the paper)        decoder = path = score = 1/k
    iwae   log (1/k) sum_i w_i                                      decoder = path = score = w~_i
    miwae  mean over M groups of IWAE bounds with K = k/M samples   w~ within each group / M
    ciwae  beta * ELBO + (1 - beta) * IWAE bound                    beta/k + (1 - beta) w~_i
    piwae  decoder: IWAE with all k = M*K samples; encoder: MIWAE(M, K)
    stl    IWAE decoder; encoder through the samples only, weights w~ (Roeder et al. 2017)
    dreg   IWAE decoder; encoder through the samples only, weights w~^2 (Tucker et al. 2019)
    sgvb   Kingma & Welling's estimator B: mean_i log p(x | h_i) - KL(q(h|x) || p(h)), the KL
           analytic; its gradient comes from those two terms, which the model returns
           (`terms`: log_lik 1/k each, kl -1), not from the log weights

With one sample IWAE is the VAE, value and gradient (`with_one_sample`): the workflow trains
such cells once (`Objective.trains_as`). w~ are the normalised weights, treated as constants. Coefficients are divided by the batch
size, so gradients are those of the batch mean. An objective is named by a short spec:
"iwae", "vae", "miwae-m8", "piwae-m4", "ciwae-b0.05", "stl", "dreg".

This module is the registry of objectives: the config checks, the workflow, the command line
and the report read names, parameters, labels and constraints from `REGISTRY`. It does not
import PyTorch (the estimators use tensor methods only), so configuration checks start fast.
A new objective is one `@estimator(...)` function here and its test.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from iwae.errors import UserError

if TYPE_CHECKING:
    from torch import Tensor


@dataclass
class Coefficients:
    """Per-sample weights (k, batch) of the gradient terms; see the module docstring.

    `score is path` selects the full gradient; `score=None` drops the score term.
    """

    decoder: Tensor | None
    path: Tensor | None
    score: Tensor | None
    # coefficients of named terms of the model's forward pass (`LogWeights.terms`), for
    # estimators written in terms other than the log weights (then decoder = path = None)
    terms: dict[str, Tensor] | None = None

    def scaled(self, factor: float) -> Coefficients:
        """Every coefficient times `factor` (the gradient of the minibatch sum, not the mean:
        reduction 'sum'), keeping which of them are one tensor (`score is path`)."""
        done: dict[int, Tensor] = {}

        def scale(t):
            if t is None:
                return None
            if id(t) not in done:
                done[id(t)] = t * factor
            return done[id(t)]

        terms = None if self.terms is None else {name: scale(t) for name, t in self.terms.items()}
        return Coefficients(scale(self.decoder), scale(self.path), scale(self.score), terms)


@dataclass
class Estimate:
    bound: Tensor  # (B,) value of the objective per data point
    coefficients: Coefficients


@dataclass(frozen=True)
class Estimator:
    """One registered objective: its function and everything the rest of the project asks."""

    name: str
    function: Callable[..., Estimate]
    label: str  # how tables name it; "{}" stands for the parameter, e.g. "MIWAE(M={})"
    letter: str | None = None  # how a spec names the parameter: "miwae-m8"
    kind: type | None = None  # the parameter's type
    check: Callable[[Any], str | None] | None = None  # why a parameter value is invalid
    groups: bool = False  # splits the k samples into `param` groups (k divisible by it)
    # the encoder's gradient flows through the samples only: q's parameters are stopped
    # inside log q (the score term is dropped or reweighted)
    stops_q: bool = False
    # the terms of the forward pass it needs besides the log weights (a model family that
    # computes them, e.g. the analytic KL of the AEVB family)
    terms: tuple[str, ...] = ()
    # the objective it is with one sample, value and gradient alike (IWAE with k = 1 is the VAE)
    with_one_sample: str | None = None

    @property
    def spec(self) -> str:
        """How a spec names it, its parameter as in its label: 'iwae', 'miwae-m<M>'."""
        if self.letter is None:
            return self.name
        symbol = re.search(r"\(([^=()]+)=\{\}\)", self.label)
        return f"{self.name}-{self.letter}<{symbol.group(1) if symbol else self.letter}>"


REGISTRY: dict[str, Estimator] = {}


def specs() -> str:
    """Every objective's spec, for a help text: 'vae, iwae, miwae-m<M>, ... or sgvb'."""
    names = [e.spec for e in REGISTRY.values()]
    return f"{', '.join(names[:-1])} or {names[-1]}"


def estimator(name: str, label: str, *, param: tuple[str, type] | None = None, **options):
    """Register the decorated function as the objective `name`."""

    def register(fn: Callable[..., Estimate]) -> Callable[..., Estimate]:
        letter, kind = param or (None, None)
        REGISTRY[name] = Estimator(name, fn, label, letter, kind, **options)
        return fn

    return register


# --------------------------------------------------------------------------- estimators


def _normalised(log_w: Tensor, dim: int = 0) -> tuple[Tensor, Tensor]:
    """log mean exp and the normalised weights along `dim`."""
    k = log_w.shape[dim]
    return log_w.logsumexp(dim) - math.log(k), log_w.softmax(dim)


def _groups(log_w: Tensor, m: int) -> Tensor:
    k, batch = log_w.shape
    return log_w.view(m, k // m, batch)


def _positive(m) -> str | None:
    return None if m >= 1 else "M must be a positive integer"


@estimator("vae", "VAE")
def vae(log_w: Tensor) -> Estimate:
    k, batch = log_w.shape
    c = log_w.new_full(log_w.shape, 1.0 / (k * batch))
    return Estimate(log_w.mean(0), Coefficients(c, c, c))


@estimator("iwae", "IWAE", with_one_sample="vae")
def iwae(log_w: Tensor) -> Estimate:
    bound, w = _normalised(log_w)
    c = w / log_w.shape[1]
    return Estimate(bound, Coefficients(c, c, c))


@estimator("miwae", "MIWAE(M={})", param=("m", int), check=_positive, groups=True)
def miwae(log_w: Tensor, m: int) -> Estimate:
    bounds, w = _normalised(_groups(log_w, m), 1)
    c = (w / (m * log_w.shape[1])).view_as(log_w)
    return Estimate(bounds.mean(0), Coefficients(c, c, c))


@estimator(
    "ciwae", "CIWAE(β={})", param=("b", float), check=lambda b: None if 0 <= b <= 1 else "beta must lie in [0, 1]"
)
def ciwae(log_w: Tensor, beta: float) -> Estimate:
    k, batch = log_w.shape
    bound, w = _normalised(log_w)
    c = (beta / k + (1.0 - beta) * w) / batch
    return Estimate(beta * log_w.mean(0) + (1.0 - beta) * bound, Coefficients(c, c, c))


@estimator("piwae", "PIWAE(M={})", param=("m", int), check=_positive, groups=True)
def piwae(log_w: Tensor, m: int) -> Estimate:
    bound, w = _normalised(log_w)
    enc = miwae(log_w, m).coefficients.path
    return Estimate(bound, Coefficients(w / log_w.shape[1], enc, enc))


@estimator("stl", "STL", stops_q=True)
def stl(log_w: Tensor) -> Estimate:
    bound, w = _normalised(log_w)
    c = w / log_w.shape[1]
    return Estimate(bound, Coefficients(c, c, None))


@estimator("dreg", "DReG", stops_q=True)
def dreg(log_w: Tensor) -> Estimate:
    bound, w = _normalised(log_w)
    batch = log_w.shape[1]
    return Estimate(bound, Coefficients(w / batch, w * w / batch, None))


@estimator("sgvb", "SGVB (analytic KL)", terms=("log_lik", "kl"))
def sgvb(log_w: Tensor, terms: dict[str, Tensor]) -> Estimate:
    k, batch = log_w.shape
    log_lik, kl = terms["log_lik"], terms["kl"]
    coefficients = {
        "log_lik": log_lik.new_full(log_lik.shape, 1.0 / (k * batch)),
        "kl": kl.new_full(kl.shape, -1.0 / batch),
    }
    return Estimate(log_lik.mean(0) - kl, Coefficients(None, None, None, coefficients))


# --------------------------------------------------------------------------- specs


@dataclass(frozen=True)
class Objective:
    """A registered estimator with its parameter, e.g. Objective.parse("miwae-m8")."""

    name: str
    param: float | int | None = None

    @classmethod
    def parse(cls, spec: str) -> Objective:
        match = re.fullmatch(r"([a-z][a-z0-9_]*)(?:-([a-z])([0-9.e+-]+))?", str(spec))
        if not match or match.group(1) not in REGISTRY:
            with_params = ", ".join(f"{e.name} takes -{e.letter}<value>" for e in REGISTRY.values() if e.letter)
            raise UserError(
                f"objective {spec!r}: unknown; expected one of {', '.join(sorted(REGISTRY))}"
                + (f" ({with_params})" if with_params else "")
            )
        name, letter, value = match.groups()
        entry = REGISTRY[name]
        if entry.letter is None:
            if letter:
                raise UserError(f"objective {spec!r}: {name} takes no parameter")
            return cls(name)
        if letter != entry.letter:
            raise UserError(f"objective {spec!r}: {name} needs its parameter as -{entry.letter}<value>")
        try:
            param = entry.kind(value)
        except ValueError:
            raise UserError(f"objective {spec!r}: {value!r} is not a valid {entry.kind.__name__}") from None
        why = entry.check(param) if entry.check else None
        if why:
            raise UserError(f"objective {spec!r}: {why}")
        return cls(name, param)

    @property
    def entry(self) -> Estimator:
        return REGISTRY[self.name]

    @property
    def spec(self) -> str:
        if self.param is None:
            return self.name
        return f"{self.name}-{self.entry.letter}{self.param:g}"

    @property
    def label(self) -> str:
        return self.entry.label.format(f"{self.param:g}" if self.param is not None else "")

    @property
    def stops_q(self) -> bool:
        return self.entry.stops_q

    def check_samples(self, k: int) -> None:
        """MIWAE and PIWAE split the k samples into M groups of K = k / M."""
        if self.entry.groups and k % int(self.param) != 0:
            raise UserError(f"objective {self.spec}: k = {k} is not divisible by M = {self.param:g}")

    @property
    def terms(self) -> tuple[str, ...]:
        return self.entry.terms

    def trains_as(self, k: int) -> str:
        """The spec of the objective it is with k samples: runs of two objectives with the same
        `trains_as` (and the same protocol) are one run, e.g. IWAE and the VAE with k = 1."""
        if k == 1 and self.entry.with_one_sample:
            return self.entry.with_one_sample
        return self.spec

    def __call__(self, log_w: Tensor, terms: dict[str, Tensor] | None = None) -> Estimate:
        fn = self.entry.function
        args = (log_w,) if self.param is None else (log_w, self.param)
        if self.entry.terms:
            missing = [t for t in self.entry.terms if not terms or t not in terms]
            if missing:
                raise UserError(f"objective {self.spec}: the model gives no {', '.join(missing)}")
            return fn(*args, terms)
        return fn(*args)


def label(spec: str) -> str:
    """How tables and figures name an objective spec, e.g. "MIWAE(M=8)"."""
    return Objective.parse(spec).label
