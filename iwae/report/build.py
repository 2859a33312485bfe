"""The `python -m iwae report ...` verbs: each reads finished run records, writes one kind
of output. The workflow calls them; they can also be run by hand on finished runs."""

from __future__ import annotations

from pathlib import Path

from iwae.experiments import default_title
from iwae.files import write_text
from iwae.report import document, figures, layouts, records, tables


def table(
    experiment: str, layout: str, evals: list[Path], out_dir: Path, title: str | None = None, source: str = "paper"
) -> None:
    """The experiment's table in `layout` and its comparison with the published values of
    `source` (and of every other source with the same cells)."""
    df = records.frame(evals, experiment)
    ours, cmp = layouts.get(layout).build(df, source)
    title = title or default_title(experiment)
    ours.write(Path(out_dir) / experiment, f"{title} (this pipeline)")
    cmp.write(Path(out_dir) / f"{experiment}_vs_paper", f"{title}: ours beside the published values")


FIGURES = {
    "curves": figures.curves,
    "variances": figures.variances,
    "nll-vs-k": figures.nll_vs_k,
    "bound-vs-samples": figures.bound_vs_samples,
    "ml-vs-samples": figures.ml_vs_samples,
}


def figure(kind: str, evals: list[Path], out_stem: Path) -> None:
    FIGURES[kind](records.frame(evals), Path(out_stem))


def summary(evals: list[Path], out_csv: Path, out_md: Path) -> None:
    from iwae.files import atomic_path

    df = records.frame(evals)
    with atomic_path(out_csv, suffix=".csv") as tmp:
        df.to_csv(tmp, index=False)
    table = tables.summary(df)
    write_text(out_md, table.markdown("All runs"))
    write_text(Path(out_md).with_suffix(".html"), table.html("All runs: one row per run, with its revisions"))


def report_document(tables_: list[Path], figures_: list[Path], out: Path, titles: dict[str, str] | None = None) -> None:
    document.build(tables_, figures_, out, titles)
