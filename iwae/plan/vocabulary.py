"""The model-side vocabularies, each declared once: the names a configuration may give a run's
model family, random weights, observation model, prior and gradient backend, and what each
means. The config checks and the help texts of `iwae.plan.config` read them here (and so do
the schema and the command line, generated from those help texts); the builders in
`iwae.models` and `iwae.backends` key their implementations by these names, and
`tests/test_package.py` checks that every name has one and nothing else does.

Importing this module imports nothing.
"""

from __future__ import annotations

FAMILIES = {  # the `family` option
    "layered": "Burda et al.'s: stacked Gaussian layers with tanh networks",
    "aevb": "Kingma & Welling's: log-variance heads, N(0, 0.01^2) initialisation, one hidden layer, e.g. layers "
    "'500-20'",
}
RANDOM_WEIGHTS = {  # the `random` option, each with seed 001's name of the method
    "none": "IWAE",
    "encoder": "IWAER_rec",
    "both": "IWAER",
}
RANDOM_WEIGHTS_FAMILY = "random-weights"  # the family of a model with random weights (model files name it)
LIKELIHOODS = {  # the `likelihood` option, besides 'auto' (the dataset's)
    "bernoulli": "Bernoulli on logits, for binary images",
    "gaussian": "Gaussian with per-pixel log sigma",
    "gaussian-sigmoid": "Gaussian with sigmoid means and per-pixel log variance, Kingma & Welling's Frey Face decoder",
}
PRIORS = {  # the `prior` option: the top layer's prior
    "standard": "N(0, I), the paper's",
    "label": "N(mu(y), sigma(y)^2) from a 10-200-200 network of the label; needs condition 'label'",
}
BACKENDS = {  # the `backend` option: how gradients (and, in evaluation, the forward pass) are computed
    "auto": "fused where it applies, autograd elsewhere",
    "fused": "hand-written, Burda et al.'s model only",
    "autograd": "any model",
}


def choices(names: dict[str, str], last: str = "or") -> str:
    """ "'a' (what a is), 'b' (what b is) or 'c' (...)": a help text's list of a vocabulary."""
    items = [f"'{name}' ({meaning})" for name, meaning in names.items()]
    return items[0] if len(items) == 1 else f"{', '.join(items[:-1])} {last} {items[-1]}"
