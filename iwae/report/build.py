"""The `python -m iwae report ...` verbs: each reads finished run records, writes one kind
of output. The workflow calls them; they can also be run by hand on finished runs."""

from __future__ import annotations

from pathlib import Path

from iwae.errors import UserError
from iwae.files import write_text
from iwae.report import document, figures, records, tables


def table(experiment: str, kind: str, layout: str, evals: list[Path], out_dir: Path) -> None:
    df = records.frame(evals, experiment)
    out_dir = Path(out_dir)
    if kind == "two-stage":
        ours, cmp = tables.two_stage(df, tables.first_stage_rows(df))
    elif layout == "bounds":
        if df["iwae64"].isna().all():
            raise UserError(f"{experiment}: the bounds layout needs runs evaluated with extra_k: [64]")
        ours, cmp = tables.bounds(df)
    else:
        ours, cmp = tables.nll_au(df), tables.vs_paper(df)
    ours.write(out_dir / experiment, document.title(experiment) + " (this pipeline)")
    cmp.write(out_dir / f"{experiment}_vs_paper", document.title(experiment) + ": ours beside the published values")


FIGURES = {"curves": figures.curves, "variances": figures.variances, "nll-vs-k": figures.nll_vs_k}


def figure(kind: str, evals: list[Path], out_stem: Path) -> None:
    FIGURES[kind](records.frame(evals), Path(out_stem))


def summary(evals: list[Path], out_csv: Path, out_md: Path) -> None:
    from iwae.files import atomic_path

    df = records.frame(evals)
    with atomic_path(out_csv, suffix=".csv") as tmp:
        df.to_csv(tmp, index=False)
    write_text(out_md, tables.summary(df).markdown("All runs"))


def report_document(tables_: list[Path], figures_: list[Path], out: Path) -> None:
    document.build(tables_, figures_, out)
