"""Model architectures: the stochastic layers and the deterministic units between them.

Kept free of PyTorch so that configuration checks and reporting start fast.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from iwae.errors import UserError


@dataclass(frozen=True)
class StochasticLayer:
    hidden: tuple[int, ...]  # tanh units of the network that maps the layer below to this one
    latent: int  # Gaussian units


@dataclass(frozen=True)
class Architecture:
    """Stochastic layers from the data upwards; decoders mirror the encoders."""

    layers: tuple[StochasticLayer, ...]

    @classmethod
    def parse(cls, spec: str | int) -> Architecture:
        """`1` or `2` (the paper's), a name of NAMED (e.g. "seed001"), or e.g.
        "200-200-100/100-100-50": per stochastic layer, its hidden tanh units then its
        latent units, layers separated by "/"."""
        if str(spec) in NAMED:
            return cls.parse(NAMED[str(spec)])
        if isinstance(spec, int) or str(spec).isdigit():
            if int(spec) not in ARCHITECTURES:
                raise UserError(
                    f"layers: {spec} is not one of the paper's architectures "
                    f"{sorted(ARCHITECTURES)}; give an explicit spec such as '200-200-50'"
                )
            return ARCHITECTURES[int(spec)]
        if not re.fullmatch(r"\d+(-\d+)*(/\d+(-\d+)*)*", str(spec)):
            raise UserError(
                f"architecture {spec!r}: expected sizes like '200-200-100/100-100-50' "
                "(hidden units then latent units per stochastic layer, '/' between layers)"
                f" or one of {', '.join(NAMED)}"
            )
        layers = []
        for part in str(spec).split("/"):
            sizes = [int(s) for s in part.split("-")]
            if min(sizes) < 1:
                raise UserError(f"architecture {spec!r}: layer sizes must be positive")
            layers.append(StochasticLayer(tuple(sizes[:-1]), sizes[-1]))
        return cls(tuple(layers))

    def spec(self) -> str:
        return "/".join("-".join(map(str, (*layer.hidden, layer.latent))) for layer in self.layers)

    @property
    def n_stochastic(self) -> int:
        return len(self.layers)

    @property
    def latent_sizes(self) -> list[int]:
        return [layer.latent for layer in self.layers]


ARCHITECTURES = {
    1: Architecture((StochasticLayer((200, 200), 50),)),  # 784-200-200-50
    2: Architecture(  # 784-200-200-100-100-100-50
        (StochasticLayer((200, 200), 100), StochasticLayer((100, 100), 50))
    ),
}

# named architectures of the other systems the pipeline reproduces
NAMED = {
    "seed001": "400-20",  # Hernandez-Lobato et al.: 784-400-20, one tanh hidden layer each way
}
