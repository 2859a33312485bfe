"""Model families: each is defined by its forward pass (k samples h ~ q(h|x), their (k, batch)
log importance weights) and trained by any backend (`iwae.backends`).

    layered         Burda et al.'s stacked Gaussian layers with tanh networks
                    (`iwae.models.layered`): any number of stochastic layers, any likelihood
                    and prior, an optional condition
    aevb            Kingma & Welling's VAE: one hidden layer, log-variance heads, N(0, 0.01^2)
                    initialisation, the terms of their estimator B (`iwae.models.aevb`)
    random-weights  the same with random network weights, q(w) = N(m, exp(s)^2) (seed 001's
                    IWAER and IWAER_rec; `iwae.models.random_weights`), TrainConfig.random

A new family is a module here with the same methods as `LayeredModel` (forward, log_weights,
parameter_groups, initialize, posterior_means, sample, reconstruct, state, from_state), its
class in FAMILIES and its name in `iwae.plan.vocabulary.FAMILIES`, which the configuration reads;
the autograd backend trains it without further code.
"""

from __future__ import annotations

from iwae.errors import UserError
from iwae.models.aevb import AEVBModel
from iwae.models.layered import LayeredModel, LogWeights  # noqa: F401 (re-exported)
from iwae.models.random_weights import RandomWeightsModel
from iwae.plan.architecture import Architecture

# the classes of the `family` option's names (iwae.plan.vocabulary.FAMILIES), each by its own name
FAMILIES = {cls.family: cls for cls in (LayeredModel, AEVBModel)}
# every family a model file may name: random weights are chosen by `random`, not `family`
FILE_FAMILIES = {**FAMILIES, RandomWeightsModel.family: RandomWeightsModel}


def build(config, input_dim: int, device="cpu", likelihood: str = "bernoulli", classes: int = 0):
    """The model a training configuration (`iwae.plan.config.TrainConfig`) describes, with the
    observation model `likelihood` (the configuration's, or its dataset's for 'auto') and,
    for a model conditioned on the label, the number of classes."""
    architecture = Architecture.parse(config.layers)
    if config.random != "none":
        if likelihood != "bernoulli":
            raise UserError(f"random network weights are built for binary images, not likelihood {likelihood!r}")
        return RandomWeightsModel(architecture, input_dim, device, random=config.random,
                                  log_sigma_init=config.weight_log_sigma_init)  # fmt: skip
    family = FAMILIES[config.family]
    if config.condition == "label":
        return family(architecture, input_dim, device, likelihood=likelihood, prior=config.prior, condition_dim=classes)
    return family(architecture, input_dim, device, likelihood=likelihood)


def from_state(state: dict, device="cpu"):
    """A model from its saved state (`model.state()`, as in model.pt)."""
    family = state.get("family", "layered")  # model files written before families existed
    if family not in FILE_FAMILIES:
        raise UserError(f"model family {family!r}: unknown; expected one of {', '.join(FILE_FAMILIES)}")
    return FILE_FAMILIES[family].from_state(state, device)
