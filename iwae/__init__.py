"""Importance Weighted Autoencoders (Burda, Grosse & Salakhutdinov, ICLR 2016), reproduced.

The package is plain Python + PyTorch: the dataset catalogue and data (`iwae.catalogue`,
`iwae.sources`, `iwae.parsers`, `iwae.datasets`), model families defined by their forward
pass (`iwae.models`) with their likelihoods and priors, two ways to differentiate them
(`iwae.backends`: autograd, and the fused hand-written pass of the paper's model), the
estimators (`iwae.objectives`), the training protocol (`iwae.train`), evaluation
(`iwae.evaluate`), the experiment model (`iwae.experiments`) and reporting (`iwae.report`).
Its command line, `python -m iwae <verb>`, is what the Snakemake workflow calls, and
`iwae.load_run(directory)` opens a finished run in Python (`iwae.runs`).
CONTRIBUTING.md says which module each kind of change touches.
"""

__version__ = "0.1.0"


def load_run(path, device="cpu"):
    """A finished run (its model, configuration and records) from its directory; see iwae.runs."""
    from iwae.runs import load_run as load  # PyTorch only when asked: config checks import iwae

    return load(path, device)
