"""Where the workflow's files go, each path stated once: the rules read them here (through
`iwae.plan.jobs`), and so do publishing and verification.

    results/data/<dataset>.npz              prepared datasets, shared by every configuration
    <results>/runs/<experiment>/<run>/      one run: model.pt, train.json, train_log.csv,
                                            curve.csv, checkpoints/, eval.json
    <results>/packs/<experiment>/<pack>.json  a pack's runs and their flags
    <results>/tables/  figures/<experiment>/  report.tex  logs/  benchmarks/
    results/published/<name>/               a finished configuration, published

A published folder keeps its runs where a results directory does. Given no experiment, run
or pack, a path holds the workflow's wildcards of that name. Importing this module imports
nothing.
"""

from __future__ import annotations

RESULTS = "results/paper"  # the default configuration's directory (config.yaml's `results:`)
DATA = "results/data"
PUBLISHED = "results/published"
RUNS = "runs"  # the runs' folder in a results directory or a published folder


def data_file(dataset: str = "{dataset}") -> str:
    return f"{DATA}/{dataset}.npz"


def run_dir(results: str, experiment: str = "{experiment}", run: str = "{run}") -> str:
    return f"{results}/{RUNS}/{experiment}/{run}"


def pack_file(results: str, experiment: str = "{experiment}", pack: str = "{pack}") -> str:
    return f"{results}/packs/{experiment}/{pack}.json"


def tables(results: str = RESULTS) -> str:
    return f"{results}/tables"


def report(results: str = RESULTS, suffix: str = ".tex") -> str:
    return f"{results}/report{suffix}"


def published(name: str) -> str:
    return f"{PUBLISHED}/{name}"
