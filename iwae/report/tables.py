"""Paper-style tables: LaTeX (booktabs, a standalone document) and Markdown.

Layouts (the config's names for them are in `iwae.report.layouts`):
    nll_au       Burda et al.'s Table 1: rows stochastic layers x k; columns datasets x
                 objectives, each with test NLL and active units ("16+5"), plus train NLL
                 and the train-test gap when the runs were evaluated on training points
    two_stage    Table 2: first stage and second stage, NLL and active units
    bounds       Rainforth et al.'s comparison: objectives as columns; IWAE-64, log p(x)
                 and -KL(Q||P) as rows
    vs_paper     one row per cell: ours, the published value, the difference
With several seeds a cell reads "mean ± sd" and the notes give n.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd
from tabulate import tabulate

from iwae import catalogue
from iwae.errors import UserError
from iwae.objectives import label as objective_label
from iwae.report import reference
from iwae.report.records import aggregate, load_record

TABLE_BEGIN = "% --- table begins ---"
TABLE_END = "% --- table ends ---"
DASH = "—"


def number(mean: float, sd: float = math.nan, n: int = 1, digits: int = 2) -> str:
    if mean is None or (isinstance(mean, float) and math.isnan(mean)):
        return DASH
    if n > 1 and not math.isnan(sd):
        return f"{mean:.{digits}f} ± {sd:.{digits}f}"
    return f"{mean:.{digits}f}"


@dataclass
class Table:
    columns: list[str]
    rows: list[list[str]]
    groups: list[list[tuple[str, int]]] = field(default_factory=list)  # spanning headers
    midrules: list[int] = field(default_factory=list)  # row indices preceded by \midrule
    notes: list[str] = field(default_factory=list)
    align: str = ""

    def markdown(self, title: str = "") -> str:
        names = []
        for i, col in enumerate(self.columns):
            parts = [label for group in self.groups for label, start, stop in _spans(group) if start <= i < stop]
            names.append(" ".join([*parts, col]).strip())
        body = tabulate(self.rows, headers=names, tablefmt="pipe", disable_numparse=True)
        out = (f"**{title}**\n\n" if title else "") + body + "\n"
        if self.notes:
            out += "\n" + "\n".join(f"- {n}" for n in self.notes) + "\n"
        return out

    def latex(self) -> str:
        """A document that compiles on its own (base LaTeX, booktabs, geometry, graphicx);
        the block between the BEGIN/END markers is what the report inlines."""
        align = self.align or "l" * len(self.columns)
        lines = [r"\begin{tabular}{" + align + "}", r"\toprule"]
        for group in self.groups:
            cells, rules = [], []
            for label, start, stop in _spans(group):
                span = stop - start
                cells.append(rf"\multicolumn{{{span}}}{{c}}{{{_tex(label)}}}" if span > 1 else _tex(label))
                if label:
                    rules.append(rf"\cmidrule(lr){{{start + 1}-{stop}}}")
            lines.append(" & ".join(cells) + r" \\")
            lines.append(" ".join(rules))
        lines.append(" & ".join(_tex(c) for c in self.columns) + r" \\")
        lines.append(r"\midrule")
        for i, row in enumerate(self.rows):
            if i in self.midrules and i > 0:
                lines.append(r"\midrule")
            lines.append(" & ".join(_tex(c) for c in row) + r" \\")
        lines += [r"\bottomrule", r"\end{tabular}"]
        block = [
            TABLE_BEGIN,
            r"\begin{center}",
            r"\resizebox{\ifdim\width>\linewidth\linewidth\else\width\fi}{!}{%",
            *lines,
            r"}",
            r"\end{center}",
        ]
        if self.notes:
            block += [r"{\footnotesize\setlength{\parindent}{0pt}"] + [_tex(n) + r"\par" for n in self.notes] + ["}"]
        block.append(TABLE_END)
        preamble = [
            r"\documentclass{article}",
            r"\usepackage[landscape,margin=1.5cm]{geometry}",
            r"\usepackage{booktabs,amsmath,graphicx}",
            r"\pagestyle{empty}",
            r"\begin{document}",
        ]
        return "\n".join(preamble + block + [r"\end{document}", ""])

    def write(self, stem: Path, title: str = "") -> None:
        from iwae.files import write_text

        write_text(Path(f"{stem}.tex"), self.latex())
        write_text(Path(f"{stem}.md"), self.markdown(title))


def _spans(group: list[tuple[str, int]]):
    start = 0
    for label, span in group:
        yield label, start, start + span
        start += span


def _tex(text: str) -> str:
    text = re.sub(r"(−?)L_k", lambda m: f"${'-' if m.group(1) else ''}L_k$", str(text))
    for a, b in (("\\", r"\textbackslash{}"), ("&", r"\&"), ("%", r"\%"), ("_", r"\_"), ("#", r"\#")):
        text = text.replace(a, b)
    for a, b in (
        ("±", r"$\pm$"), ("—", "---"), ("–", "--"), ("→", r"$\to$"), ("β", r"$\beta$"), ("−", "$-$"),
        ("†", r"$^\dagger$"), ("‖", r"$\|$"), ("p̂", r"$\hat{p}$"), ("×", r"$\times$"),
    ):  # fmt: skip
        text = text.replace(a, b)
    if not text.isascii():
        raise ValueError(f"no LaTeX spelling for a character in {text!r}")
    return text


# --------------------------------------------------------------------------- layouts


def _protocol_notes(
    df: pd.DataFrame, paper_epochs: int = 3280, trained: str = "trained", caveats: bool = True
) -> list[str]:
    notes = []
    seeds = df.groupby(["dataset", "layers", "objective", "k"]).size()
    if seeds.max() > 1:
        notes.append(f"mean ± sd over n = {seeds.min()}{'' if seeds.min() == seeds.max() else f'–{seeds.max()}'} seeds")
    eval_k, points = sorted(set(df["eval_k"])), int(df["test_points"].min())
    selections = set(df["test_selection"])
    selection = selections.pop() if len(selections) == 1 else "mixed"
    where = {
        "all": f"the whole test set ({points:,} points)",
        "random": f"{points:,} test points drawn at random (the same for every run)",
        "first": f"the first {points:,} test points",
    }.get(selection, f"{points:,} or more test points")
    paper = eval_k == [5000] and selection == "all"
    notes.append(
        f"NLL = −L_k with k = {', '.join(map(str, eval_k))} on {where}"
        + ("" if paper else " (the paper: k = 5000 on the whole test set)")
    )
    epochs = sorted(set(df["epochs"]))
    if epochs != [paper_epochs]:
        notes.append(f"{trained} for {', '.join(map(str, epochs))} epochs (the paper: {paper_epochs:,})")
    for dataset in sorted(set(df["dataset"])) if caveats else []:
        entry = catalogue.CATALOGUE.get(dataset)
        if entry and entry.caveat:
            notes.append(f"{entry.label}: {entry.caveat}")
    return notes


def nll_au(df: pd.DataFrame) -> Table:
    """Burda et al.'s Table 1 layout for any grid of datasets, layers, objectives and k."""
    agg = aggregate(df, ["dataset", "layers", "objective", "k"])
    datasets = list(dict.fromkeys(df["dataset"]))
    objectives = list(dict.fromkeys(df["objective"]))
    with_train = bool((df["train_points"] > 0).any())
    sub = ["NLL", "train NLL", "gap", "active units"] if with_train else ["NLL", "active units"]
    labels = dict(zip(df["dataset"], df["dataset_label"]))
    groups = [
        [("", 2)] + [(labels[d], len(objectives) * len(sub)) for d in datasets],
        [("", 2)] + [(objective_label(o), len(sub)) for _ in datasets for o in objectives],
    ]
    cells = {(r.dataset, r.layers, r.objective, r.k): r for r in agg.itertuples()}
    rows, midrules = [], []
    for layers in sorted(set(df["layers"])):
        midrules.append(len(rows))
        for i, k in enumerate(sorted(set(df["k"]))):
            row = [str(layers) if i == 0 else "", str(k)]
            for d in datasets:
                for o in objectives:
                    c = cells.get((d, layers, o, k))
                    if c is None:
                        row += [DASH] * len(sub)
                        continue
                    row.append(number(c.nll, c.nll_sd, c.n))
                    if with_train:
                        row.append(number(c.train_nll, c.train_nll_sd, c.n))
                        row.append(number(c.nll - c.train_nll))
                    row.append(c.active_units)
            rows.append(row)
    notes = _protocol_notes(df)
    if with_train:
        notes.append("train NLL: L_k on training points the run trained on; gap = test − train NLL")
    return Table(["stoch. layers", "k", *sub * (len(datasets) * len(objectives))], rows, groups, midrules, notes,
                 align="cc" + "r" * (len(sub) * len(datasets) * len(objectives)))  # fmt: skip


def vs_paper(df: pd.DataFrame) -> Table:
    """Ours beside the published value, per cell, for the NLL / active-unit experiments."""
    agg = aggregate(df, ["dataset", "layers", "objective", "k"])
    rows, any_proxy = [], False
    for c in agg.itertuples():
        ref, ref_units, same = reference.nll_reference(c.dataset, c.layers, c.objective, c.k)
        mark = "" if same or ref is None else "†"
        any_proxy |= bool(mark)
        rows.append(
            [
                c.dataset_label, str(c.layers), objective_label(c.objective), str(c.k),
                number(c.nll, c.nll_sd, c.n), number(ref) + mark if ref else DASH,
                f"{c.nll - ref:+.2f}" if ref else DASH,
                c.active_units, (ref_units + mark) if ref_units else DASH,
            ]
        )  # fmt: skip
    notes = ["difference = ours − paper: positive means a worse (higher) NLL"] + _protocol_notes(df, caveats=any_proxy)
    cols = [
        "dataset",
        "layers",
        "objective",
        "k",
        "NLL (ours)",
        "NLL (paper)",
        "difference",
        "active (ours)",
        "active (paper)",
    ]
    return Table(cols, rows, notes=notes, align="lcll" + "r" * 5)


def two_stage(df_second: pd.DataFrame, first_of: dict[str, dict]) -> tuple[Table, Table]:
    """Burda et al.'s Table 2 (ours) and its comparison with the paper.

    `first_of` maps a second-stage run to its first stage's row.
    """
    rows, cmp_rows = [], []
    for r in df_second.itertuples():
        first = first_of[r.run]
        name = f"{objective_label(first['objective'])} (k={first['k']}) → {objective_label(r.objective)} (k={r.k})"
        rows.append([name, f"{first['nll']:.2f}", first["active_units"], f"{r.nll:.2f}", r.active_units, str(r.seed)])
        ref = reference.TABLE2.get((first["objective"], first["k"], r.objective, r.k))
        if ref:
            cmp_rows.append(
                [
                    name,
                    "first stage",
                    f"{first['nll']:.2f}",
                    f"{ref[0]:.2f}",
                    f"{first['nll'] - ref[0]:+.2f}",
                    first["active_units"],
                    ref[1],
                ]
            )
            cmp_rows.append(
                [
                    name,
                    "second stage",
                    f"{r.nll:.2f}",
                    f"{ref[2]:.2f}",
                    f"{r.nll - ref[2]:+.2f}",
                    r.active_units,
                    ref[3],
                ]
            )
    groups = [[("", 1), ("first stage", 2), ("second stage", 2), ("", 1)]]
    notes = _protocol_notes(df_second, paper_epochs=3**7, trained="second stage trained")
    ours = Table(
        ["experiment", "NLL", "active units", "NLL", "active units", "seed"], rows, groups, notes=notes, align="lrrrrr"
    )
    cols = ["experiment", "stage", "NLL (ours)", "NLL (paper)", "difference", "active (ours)", "active (paper)"]
    return ours, Table(cols, cmp_rows, notes=["difference = ours − paper"], align="llrrrrr")


def bounds(df: pd.DataFrame) -> tuple[Table, Table]:
    """Rainforth et al.'s layout: IWAE-64, log p(x) and -KL(Q||P) per objective."""
    if df["iwae64"].isna().all():
        raise UserError(f"{df['experiment'].iloc[0]}: the bounds layout needs runs evaluated with extra_k: [64]")
    agg = aggregate(df, ["objective"])
    df = df.assign(neg_kl=df["iwae64"] + df["nll"], logpx=-df["nll"])
    stats = df.groupby("objective", sort=False).agg(
        logpx=("logpx", "mean"), logpx_sd=("logpx", "std"), neg_kl=("neg_kl", "mean"), neg_kl_sd=("neg_kl", "std")
    )
    objectives = list(agg["objective"])
    rows = [["IWAE-64"], ["log p̂(x)"], ["−KL(Q‖P)"]]
    cmp_rows = []
    for c in agg.itertuples():
        s = stats.loc[c.objective]
        values = [(c.iwae64, c.iwae64_sd), (s.logpx, s.logpx_sd), (s.neg_kl, s.neg_kl_sd)]
        for row, (mean, sd) in zip(rows, values):
            row.append(number(mean, sd, c.n))
        ref = reference.RAINFORTH.get(c.objective)
        for name, (mean, _), published in zip(("IWAE-64", "log p̂(x)", "−KL(Q‖P)"), values, ref or (None,) * 3):
            cmp_rows.append(
                [objective_label(c.objective), name, number(mean),
                 number(published) if published is not None else DASH,
                 f"{mean - published:+.2f}" if published is not None else DASH]
            )  # fmt: skip
    notes = _protocol_notes(df) + [
        "IWAE-64: the k = 64 bound on the test set; −KL(Q‖P) = IWAE-64 − log p̂(x) (Rainforth et al., 2018)"
    ]
    ours = Table(
        ["metric", *(objective_label(o) for o in objectives)], rows, notes=notes, align="l" + "r" * len(objectives)
    )
    cmp = Table(["objective", "metric", "ours", "Rainforth et al.", "difference"], cmp_rows,
                notes=["difference = ours − published"], align="llrrr")  # fmt: skip
    return ours, cmp


def first_stage_rows(df_second: pd.DataFrame) -> dict[str, dict]:
    """The eval record of each second-stage run's first stage, found through init_from."""
    from iwae.report.records import row

    out = {}
    for r in df_second.itertuples():
        path = Path(r.init_from).parent / "eval.json"
        load_record(path)  # a clear error if the first stage was never evaluated
        out[r.run] = row(path)
    return out


def summary(df: pd.DataFrame) -> Table:
    cols = ["experiment", "run", "dataset", "layers", "objective", "k", "seed", "nll", "nll_stderr",
            "active_units", "epochs", "train_seconds", "eval_seconds", "device", "git_revision",
            "eval_git_revision"]  # fmt: skip
    rows = [
        [str(v) if not isinstance(v, float) else (f"{v:.3f}" if not math.isnan(v) else DASH) for v in r]
        for r in df[cols].itertuples(index=False)
    ]
    return Table(cols, rows)
