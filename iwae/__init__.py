"""Importance Weighted Autoencoders (Burda, Grosse & Salakhutdinov, ICLR 2016), reproduced.

The package is plain Python + PyTorch: datasets (`iwae.datasets`, `iwae.sources`), the
models (`iwae.model`), the estimators (`iwae.objectives`), the training protocol
(`iwae.train`), evaluation (`iwae.evaluate`) and reporting (`iwae.report`). Its command line,
`python -m iwae <verb>`, is what the Snakemake workflow calls.
"""

__version__ = "0.1.0"
