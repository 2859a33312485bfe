"""The `python -m iwae report ...` verbs: each reads finished run records (or models), writes
one kind of output. The workflow calls them; they can also be run by hand on finished runs.

`TABLES` builds each table layout of `iwae.plan.layouts`; each kind of figure of
`iwae.plan.figures` is drawn by the function of its name (`drawer`). A test holds both to
their registries.
"""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from iwae.errors import UserError
from iwae.plan import figures as kinds
from iwae.plan import layouts, paths
from iwae.plan.experiments import default_title
from iwae.report import document, figures, followups, model_figures, records, tables
from iwae.report import findings as judged
from iwae.system.files import atomic_path, write_text

# layout -> (runs' frame, reference source) -> (our table, ours beside the published values)
TABLES = {
    "nll-au": lambda df, source: (tables.nll_au(df, source), tables.vs_paper(df, source)),
    "bounds": lambda df, source: tables.bounds(df),
    "two-stage": lambda df, source: tables.two_stage(df, tables.first_stage_rows(df)),
    "random-weights": lambda df, source: followups.random_weights(df),
    "aevb": lambda df, source: followups.aevb(df),
    "posterior": lambda df, source: followups.posterior(df),
}

# a kind of figure is drawn by the function of its name, in the module of what it reads
DRAWN_FROM = {"evals": figures, "model": model_figures, "models": model_figures, "models and data": model_figures}


def drawer(kind: kinds.FigureKind):
    """The function that draws figures of `kind`: `iwae.report.figures.<name>` for those
    drawn from records, `iwae.report.model_figures.<name>` for those drawn from models."""
    return getattr(DRAWN_FROM[kind.reads], kind.name)


def _runs(evals: list[Path], experiment: str, root: Path | None) -> pd.DataFrame:
    """The runs' records as table cells; with `root` (a published folder), the first stages
    that second stages name found under it."""
    df = records.cells(records.frame(evals, experiment))
    if root is not None:
        df["init_from"] = [str(records.relocated(p, root)) if isinstance(p, str) and p else p for p in df["init_from"]]
    return df


def table(experiment: str, layout: str, evals: list[Path], out_dir: Path, title: str | None = None,
          source: str = "paper", root: Path | None = None) -> None:  # fmt: skip
    """The experiment's table in `layout` and its comparison with the published values of
    `source` (and of every other source with the same cells)."""
    df = _runs(evals, experiment, root)
    ours, cmp = TABLES[layouts.get(layout).name](df, source)
    title = title or default_title(experiment)
    ours.write(Path(out_dir) / experiment, f"{title} (this pipeline)")
    cmp.write(Path(out_dir) / f"{experiment}_vs_paper", f"{title}: ours beside the published values")


def findings(experiment: str, evals: list[Path], out_dir: Path, title: str | None = None,
             source: str = "paper", root: Path | None = None) -> None:  # fmt: skip
    """The experiment's findings (`iwae.plan.findings`), each judged from its runs' records."""
    t = judged.table(judged.with_first_stages(_runs(evals, experiment, root)), experiment, source)
    t.write(Path(out_dir) / f"{experiment}_findings", f"{title or default_title(experiment)}: the findings, judged")


def figure(name: str, out_stem: Path, evals=None, model=None, models=None, data=None, seed: int = 0) -> None:
    """One figure of kind `name`, from what its kind reads: eval.json records, one model file
    and its dataset, or several model files (and their dataset)."""
    kind = kinds.get(name)
    given = {"evals": evals, "model": model and data, "models": models, "models and data": models and data}
    if not given[kind.reads]:
        needs = {"evals": "--evals", "model": "--model and --data", "models": "--models",
                 "models and data": "--models and --data"}[kind.reads]  # fmt: skip
        raise UserError(f"report figure {kind.cli_name}: {needs} required")
    draw, stem = drawer(kind), Path(out_stem)
    if kind.reads == "evals":
        draw(records.frame(evals), stem)
    elif kind.reads == "models":
        draw(models, stem)
    elif kind.reads == "models and data":
        draw(models, Path(data), stem)
    elif kind.name == "samples":
        draw(Path(model), Path(data), stem, seed)
    else:
        draw(Path(model), Path(data), stem)


def summary(evals: list[Path], out_csv: Path, out_md: Path) -> None:
    df = records.frame(evals)
    # the run's directory as its results root names it, wherever the records are read from
    rows = df[records.COLUMNS].assign(run_dir=[f"{paths.RUNS}/{e}/{r}" for e, r in zip(df["experiment"], df["run"])])
    with atomic_path(out_csv, suffix=".csv") as tmp:
        rows.to_csv(tmp, index=False)
    table = tables.summary(df)
    write_text(out_md, table.markdown("All runs"))
    write_text(Path(out_md).with_suffix(".html"), table.html("All runs: one row per run, with its revisions"))
    # beside it, what each run cost: on what machine, how long, how loaded
    tables.cost(df).write(Path(out_md).with_name("cost"), "What each run cost, where it ran")


def report_document(tables_: list[Path], figures_: list[Path], out: Path, titles: dict[str, str] | None = None) -> None:
    document.build(tables_, figures_, out, titles)
