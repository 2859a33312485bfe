"""Training objectives as estimators: functions of the (k, batch) log importance weights.

Each estimator returns the value of the bound it optimises (per data point, for the logs)
and the per-sample coefficients that define its gradient (`iwae.model.Coefficients`):

    vae    mean_i log w_i (no analytic KL, as in the paper)        decoder = path = score = 1/k
    iwae   log (1/k) sum_i w_i                                      decoder = path = score = w~_i
    miwae  mean over M groups of IWAE bounds with K = k/M samples   w~ within each group / M
    ciwae  beta * ELBO + (1 - beta) * IWAE bound                    beta/k + (1 - beta) w~_i
    piwae  decoder: IWAE with all k = M*K samples; encoder: MIWAE(M, K)
    stl    IWAE decoder; encoder through the samples only, weights w~ (Roeder et al. 2017)
    dreg   IWAE decoder; encoder through the samples only, weights w~^2 (Tucker et al. 2019)

w~ are the normalised weights, treated as constants. Coefficients are divided by the batch
size, so gradients are those of the batch mean. An objective is named by a short spec:
"iwae", "vae", "miwae-m8", "piwae-m4", "ciwae-b0.05", "stl", "dreg".
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import Tensor

from iwae.errors import UserError
from iwae.model import Coefficients


@dataclass
class Estimate:
    bound: Tensor  # (B,) value of the objective per data point
    coefficients: Coefficients


def _normalised(log_w: Tensor, dim: int = 0) -> tuple[Tensor, Tensor]:
    """log mean exp and the normalised weights along `dim`."""
    k = log_w.shape[dim]
    return torch.logsumexp(log_w, dim) - math.log(k), torch.softmax(log_w, dim)


def _groups(log_w: Tensor, m: int) -> Tensor:
    k, batch = log_w.shape
    return log_w.view(m, k // m, batch)


def vae(log_w: Tensor) -> Estimate:
    k, batch = log_w.shape
    c = torch.full_like(log_w, 1.0 / (k * batch))
    return Estimate(log_w.mean(0), Coefficients(c, c, c))


def iwae(log_w: Tensor) -> Estimate:
    bound, w = _normalised(log_w)
    c = w / log_w.shape[1]
    return Estimate(bound, Coefficients(c, c, c))


def miwae(log_w: Tensor, m: int) -> Estimate:
    bounds, w = _normalised(_groups(log_w, m), 1)
    c = (w / (m * log_w.shape[1])).view_as(log_w)
    return Estimate(bounds.mean(0), Coefficients(c, c, c))


def ciwae(log_w: Tensor, beta: float) -> Estimate:
    k, batch = log_w.shape
    bound, w = _normalised(log_w)
    c = (beta / k + (1.0 - beta) * w) / batch
    return Estimate(beta * log_w.mean(0) + (1.0 - beta) * bound, Coefficients(c, c, c))


def piwae(log_w: Tensor, m: int) -> Estimate:
    bound, w = _normalised(log_w)
    enc = miwae(log_w, m).coefficients.path
    return Estimate(bound, Coefficients(w / log_w.shape[1], enc, enc))


def stl(log_w: Tensor) -> Estimate:
    bound, w = _normalised(log_w)
    c = w / log_w.shape[1]
    return Estimate(bound, Coefficients(c, c, None))


def dreg(log_w: Tensor) -> Estimate:
    bound, w = _normalised(log_w)
    batch = log_w.shape[1]
    return Estimate(bound, Coefficients(w / batch, w * w / batch, None))


# name -> (function, parameter letter, parameter type); the letter is how the spec names it
REGISTRY: dict[str, tuple[Callable[..., Estimate], str | None, type | None]] = {
    "vae": (vae, None, None),
    "iwae": (iwae, None, None),
    "miwae": (miwae, "m", int),
    "piwae": (piwae, "m", int),
    "ciwae": (ciwae, "b", float),
    "stl": (stl, None, None),
    "dreg": (dreg, None, None),
}


@dataclass(frozen=True)
class Objective:
    """A named estimator with its parameter, e.g. Objective.parse("miwae-m8")."""

    name: str
    param: float | int | None = None

    @classmethod
    def parse(cls, spec: str) -> Objective:
        match = re.fullmatch(r"([a-z]+)(?:-([a-z])([0-9.e+-]+))?", str(spec))
        if not match or match.group(1) not in REGISTRY:
            raise UserError(
                f"objective {spec!r}: unknown; expected one of {', '.join(sorted(REGISTRY))}"
                " (miwae and piwae take -m<M>, ciwae takes -b<beta>)"
            )
        name, letter, value = match.groups()
        _, want_letter, kind = REGISTRY[name]
        if want_letter is None:
            if letter:
                raise UserError(f"objective {spec!r}: {name} takes no parameter")
            return cls(name)
        if letter != want_letter:
            raise UserError(f"objective {spec!r}: {name} needs its parameter as -{want_letter}<value>")
        try:
            param = kind(value)
        except ValueError:
            raise UserError(f"objective {spec!r}: {value!r} is not a valid {kind.__name__}") from None
        if name == "ciwae" and not 0.0 <= param <= 1.0:
            raise UserError(f"objective {spec!r}: beta must lie in [0, 1]")
        if name in ("miwae", "piwae") and param < 1:
            raise UserError(f"objective {spec!r}: M must be a positive integer")
        return cls(name, param)

    @property
    def spec(self) -> str:
        if self.param is None:
            return self.name
        return f"{self.name}-{REGISTRY[self.name][1]}{self.param:g}"

    def check_samples(self, k: int) -> None:
        """MIWAE and PIWAE split the k samples into M groups of K = k / M."""
        if self.name in ("miwae", "piwae") and k % int(self.param) != 0:
            raise UserError(f"objective {self.spec}: k = {k} is not divisible by M = {self.param}")

    def __call__(self, log_w: Tensor) -> Estimate:
        fn = REGISTRY[self.name][0]
        return fn(log_w) if self.param is None else fn(log_w, self.param)
