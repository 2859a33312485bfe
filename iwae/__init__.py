"""Importance Weighted Autoencoders (Burda, Grosse & Salakhutdinov, ICLR 2016), reproduced.

The package is plain Python + PyTorch, one folder per stage of the data flow, each importing
only the stages listed before it:

    system/       files written atomically, provenance, the process's runtime, progress, GPUs
    data/         the dataset catalogue, fetching and verifying, file formats, prepared splits
    estimators/   the objectives' registry, L_k, the HMC marginal likelihood, the posterior
    plan/         configuration, architectures, the experiment model, figure kinds, table
                  layouts, published references (no PyTorch)
    models/       model families defined by their forward pass; likelihoods, priors, model files
    backends/     two ways to differentiate them: autograd, and the paper's model by hand
    training/     the protocol's loop, its steps (eager or CUDA graphs), callbacks, packs
    evaluation/   L_5000 and active units of a finished run; `load_run`
    report/       tables, figures and the report document, from finished runs
    bench/        speed, and the prepared check of Table 1's cost on a GPU

Its command line, `python -m iwae <verb>`, is what the Snakemake workflow calls, and
`iwae.load_run(directory)` opens a finished run in Python (`iwae.evaluation.runs`).
CONTRIBUTING.md says which module each kind of change touches.
"""

from iwae.system.provenance import VERSION as __version__

__all__ = ["__version__", "load_run"]


def load_run(path, device="cpu"):
    """A finished run (its model, configuration and records) from its directory; see iwae.evaluation.runs."""
    from iwae.evaluation.runs import load_run as load  # PyTorch only when asked: config checks import iwae

    return load(path, device)
