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

    def html(self, title: str = "") -> str:
        """A page of its own (Snakemake's report shows it): the same header groups, rows and
        notes as the LaTeX and Markdown renderings."""
        from html import escape

        head = []
        for group in self.groups:
            cells = "".join(
                f'<th colspan="{stop - start}">{escape(label)}</th>' for label, start, stop in _spans(group)
            )
            head.append(f"<tr>{cells}</tr>")
        head.append("<tr>" + "".join(f"<th>{escape(c)}</th>" for c in self.columns) + "</tr>")
        body = []
        for i, row in enumerate(self.rows):
            rule = ' class="rule"' if i in self.midrules and i > 0 else ""
            body.append(f"<tr{rule}>" + "".join(f"<td>{escape(str(c))}</td>" for c in row) + "</tr>")
        notes = "".join(f"<li>{escape(n)}</li>" for n in self.notes)
        style = ("body{font-family:sans-serif;font-size:13px;margin:1em} table{border-collapse:collapse}"
                 " th,td{padding:3px 8px;border-bottom:1px solid #ddd;text-align:right}"
                 " td:first-child,th:first-child{text-align:left} tr.rule td{border-top:2px solid #888}"
                 " th{background:#f3f3f3} ul{color:#444}")  # fmt: skip
        return (
            f'<!DOCTYPE html>\n<html><head><meta charset="utf-8"><title>{escape(title)}</title>'
            f"<style>{style}</style></head><body>\n<h3>{escape(title)}</h3>\n"
            f"<table>\n<thead>{''.join(head)}</thead>\n<tbody>{''.join(body)}</tbody>\n</table>\n"
            f"<ul>{notes}</ul>\n</body></html>\n"
        )

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
        write_text(Path(f"{stem}.html"), self.html(title))


def _spans(group: list[tuple[str, int]]):
    start = 0
    for label, span in group:
        yield label, start, start + span
        start += span


def _tex(text: str) -> str:
    text = re.sub(r"(−?)L_k", lambda m: f"${'-' if m.group(1) else ''}L_k$", str(text))
    for a, b in (("\\", r"\textbackslash{}"), ("&", r"\&"), ("%", r"\%"), ("_", r"\_"), ("#", r"\#"), ("^", r"\^{}")):
        text = text.replace(a, b)
    for a, b in (
        ("±", r"$\pm$"), ("—", "---"), ("–", "--"), ("→", r"$\to$"), ("β", r"$\beta$"), ("−", "$-$"),
        ("†", r"$^\dagger$"), ("‖", r"$\|$"), ("p̂", r"$\hat{p}$"), ("×", r"$\times$"), ("ö", r"\"{o}"),
    ):  # fmt: skip
        text = text.replace(a, b)
    if not text.isascii():
        raise ValueError(f"no LaTeX spelling for a character in {text!r}")
    return text


# --------------------------------------------------------------------------- layouts


def _protocol_notes(
    df: pd.DataFrame,
    paper_epochs: int = 3280,
    trained: str = "trained",
    caveats: bool = True,
    reference: str = "the paper",
    reference_k: int = 5000,
    quantity: str = "NLL = −L_k",
) -> list[str]:
    """What the numbers are and how they differ from the reference protocol's."""
    notes = []
    keys = [c for c in ("dataset", "layers", "architecture", "objective", "k", "random", "condition", "prior",
                        "trained_on") if c in df.columns]  # fmt: skip
    seeds = df.groupby(keys, dropna=False).size()
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
    paper = eval_k == [reference_k] and selection == "all"
    notes.append(
        f"{quantity} with k = {', '.join(map(str, eval_k))} on {where}"
        + ("" if paper else f" ({reference}: k = {reference_k} on the whole test set)")
    )
    epochs = sorted(set(df["epochs"]))
    subset = _training_subset(df)
    if epochs != [paper_epochs] or subset:
        length = f" for {_counted(epochs, 'epoch')}" if epochs != [paper_epochs] else ""
        theirs = f"{paper_epochs:,} epochs" if length else ""
        if subset:
            theirs += (" on " if theirs else "") + "the whole training set"
        notes.append(f"{trained}{length}{f' on {subset}' if subset else ''} ({reference}: {theirs})")
    if "train_split" in df.columns and (df["train_split"] == "train+valid").any():
        sizes = ", ".join(f"{n:,}" for n in sorted(set(df.loc[df["train_split"] == "train+valid", "trained_on"])))
        notes.append(f"trained on the training and validation splits together ({sizes} points; train_split: "
                     "train+valid)")  # fmt: skip
    for dataset in sorted(set(df["dataset"])) if caveats else []:
        entry = catalogue.CATALOGUE.get(dataset)
        if entry and entry.caveat:
            notes.append(f"{entry.label}: {entry.caveat}")
    return notes


def _counted(values: list, noun: str) -> str:
    """[12] -> '12 epochs', [1] -> '1 epoch', [3, 12] -> '3, 12 epochs'."""
    return f"{', '.join(f'{int(v):,}' for v in values)} {noun}{'' if list(values) == [1] else 's'}"


def _training_subset(df: pd.DataFrame) -> str:
    """'23,000 training points' where runs trained on fewer than their dataset's whole
    training split (train_subset), else ''."""
    if "trained_on" not in df.columns:
        return ""
    partial = set()
    for dataset, trained_on in zip(df["dataset"], df["trained_on"]):
        entry = catalogue.CATALOGUE.get(dataset)
        if entry is not None and not pd.isna(trained_on) and int(trained_on) < entry.splits[0]:
            partial.add(int(trained_on))
    return _counted(sorted(partial), "training point") if partial else ""


def _model_notes(df: pd.DataFrame) -> list[str]:
    """What a table's layer counts and objectives leave unsaid: architectures other than the
    paper's, and models given the label."""
    from iwae.architecture import ARCHITECTURES

    notes = []
    specs = df["architecture"] if "architecture" in df.columns else [ARCHITECTURES[n].spec() for n in df["layers"]]
    other = sorted({a for a, n in zip(specs, df["layers"]) if n not in ARCHITECTURES or a != ARCHITECTURES[n].spec()})
    if other:
        notes.append(f"architectures other than the paper's: {', '.join(other)} (hidden units, then latent units, "
                     "per stochastic layer)")  # fmt: skip
    if "condition" in df.columns and (df["condition"] != "none").any():
        notes.append("given the label: the NLL is −L_k of log p(x | y), not of log p(x)")
    return notes


def nll_au(df: pd.DataFrame, source: str = "paper") -> Table:
    """Burda et al.'s Table 1 layout for any grid of datasets, layers, objectives and k; its
    notes compare the protocol with that of `source` (`reference.SOURCES`)."""
    agg = aggregate(df, ["dataset", "layers", "objective", "k"])
    datasets = list(dict.fromkeys(df["dataset"]))
    objectives = list(dict.fromkeys(df["objective"]))
    with_train = bool((df["train_points"] > 0).any())
    with_valid = with_train and "valid_points" in df.columns and bool((df["valid_points"] > 0).any())
    sub = ["NLL", "active units"]
    if with_train:
        sub = ["NLL", "valid NLL", "train NLL", "overfit", "shift", "active units"] if with_valid else [
            "NLL", "train NLL", "gap", "active units"]  # fmt: skip
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
                    if with_valid:
                        row.append(number(c.valid_nll, c.valid_nll_sd, c.n))
                        row.append(number(c.train_nll, c.train_nll_sd, c.n))
                        row += [number(c.valid_nll - c.train_nll), number(c.nll - c.valid_nll)]
                    elif with_train:
                        row.append(number(c.train_nll, c.train_nll_sd, c.n))
                        row.append(number(c.nll - c.train_nll))
                    row.append(c.active_units)
            rows.append(row)
    main = reference.SOURCES[source]
    notes = _protocol_notes(df, main.epochs, reference=main.name) + _model_notes(df)
    if with_valid:
        points = int(df.loc[df["valid_points"] > 0, "valid_points"].min())
        notes.append(
            f"train NLL: L_k on training points the run trained on; valid NLL: on {points:,} or more random points "
            "of the validation split; overfit = valid − train NLL (the model's own overfitting); shift = test − "
            "valid NLL (how much harder the test set is than unseen points of the training distribution)"
        )
    elif with_train:
        notes.append("train NLL: L_k on training points the run trained on; gap = test − train NLL")
    return Table(["stoch. layers", "k", *sub * (len(datasets) * len(objectives))], rows, groups, midrules, notes,
                 align="cc" + "r" * (len(sub) * len(datasets) * len(objectives)))  # fmt: skip


def vs_paper(df: pd.DataFrame, source: str = "paper") -> Table:
    """Ours beside the published value of `source`, per cell, for the NLL / active-unit
    experiments; every other source with a value for the same cell in the last column, and
    one line per source in the notes: where its numbers are published and how obtained."""
    main = reference.SOURCES[source]
    keys = ["dataset", "layers", "architecture", "objective", "k", "condition", "prior"]
    agg = aggregate(df.assign(condition=df["condition"].fillna("none"), prior=df["prior"].fillna("standard")), keys)
    from iwae.architecture import ARCHITECTURES

    rows, any_proxy, cited = [], False, [source]
    for c in agg.itertuples():
        model = reference.model_of(c.condition, c.prior)
        ref, ref_units, same = reference.published(source, c.dataset, c.architecture, c.objective, c.k, model)
        mark = "" if same else "†"
        any_proxy |= bool(mark and ref)
        besides = reference.others(source, c.dataset, c.architecture, c.objective, c.k, model)
        cited += [name for name, _ in besides if name not in cited]
        paper_arch = c.layers in ARCHITECTURES and ARCHITECTURES[c.layers].spec() == c.architecture
        rows.append(
            [
                c.dataset_label, str(c.layers) if paper_arch else f"{c.layers} ({c.architecture})",
                objective_label(c.objective) + ("" if model == "unconditional" else f" given y ({model})"), str(c.k),
                number(c.nll, c.nll_sd, c.n), number(ref) + mark if ref else DASH,
                f"{c.nll - ref:+.2f}" if ref else DASH,
                c.active_units, (ref_units + mark) if ref_units else DASH,
                "; ".join(f"{reference.SOURCES[name].short} {nll:.2f}{mark}" for name, nll in besides) or DASH,
            ]
        )  # fmt: skip
    notes = [f"difference = ours − {main.name}: positive means a worse (higher) NLL"]
    notes += _protocol_notes(df, main.epochs, reference=main.name, caveats=any_proxy) + _model_notes(df)
    notes += [reference.SOURCES[name].line() for name in cited]
    cols = [
        "dataset",
        "layers",
        "objective",
        "k",
        "NLL (ours)",
        f"NLL ({main.short})",
        "difference",
        "active (ours)",
        f"active ({main.short})",
        "other published NLL",
    ]
    return Table(cols, rows, notes=notes, align="lcll" + "r" * 5 + "l")


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
    cmp_rows, cited = [], ["rainforth"]
    for c in agg.itertuples():
        s = stats.loc[c.objective]
        values = [(c.iwae64, c.iwae64_sd), (s.logpx, s.logpx_sd), (s.neg_kl, s.neg_kl_sd)]
        for row, (mean, sd) in zip(rows, values):
            row.append(number(mean, sd, c.n))
        ref = reference.RAINFORTH.get(c.objective)
        run = df[df["objective"] == c.objective].iloc[0]  # other sources' log p(x) of the same cell
        besides = reference.others("rainforth", run["dataset"], run["architecture"], c.objective, int(run["k"]))
        cited += [name for name, _ in besides if name not in cited]
        for name, (mean, _), published in zip(("IWAE-64", "log p̂(x)", "−KL(Q‖P)"), values, ref or (None,) * 3):
            shown = "; ".join(f"{reference.SOURCES[n].short} {-nll:.2f}" for n, nll in besides)
            cmp_rows.append(
                [objective_label(c.objective), name, number(mean),
                 number(published) if published is not None else DASH,
                 f"{mean - published:+.2f}" if published is not None else DASH,
                 shown if name == "log p̂(x)" and shown else DASH]
            )  # fmt: skip
    notes = _protocol_notes(df) + [
        "IWAE-64: the k = 64 bound on the test set; −KL(Q‖P) = IWAE-64 − log p̂(x) (Rainforth et al., 2018)"
    ]
    ours = Table(
        ["metric", *(objective_label(o) for o in objectives)], rows, notes=notes, align="l" + "r" * len(objectives)
    )
    cmp = Table(["objective", "metric", "ours", "Rainforth et al.", "difference", "other published"], cmp_rows,
                notes=["difference = ours − published"] + [reference.SOURCES[n].line() for n in cited],
                align="llrrrl")  # fmt: skip
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


def random_weights(df: pd.DataFrame) -> tuple[Table, Table]:
    """Seed 001's Table 1: test log-likelihood of IWAE, IWAER_rec and IWAER per dataset, ours
    beside theirs, and each method's difference to IWAE paired on the same test points (the
    runs of one seed against the IWAE run of that seed)."""
    import numpy as np

    from iwae.config import RANDOM_WEIGHTS
    from iwae.report.records import per_point

    rows, cmp_rows, any_proxy = [], [], False
    for dataset in dict.fromkeys(df["dataset"]):
        part = df[df["dataset"] == dataset]
        ref_dataset, same = reference.reference_dataset(dataset)
        published = reference.SEED001.get(ref_dataset, {})
        mark = "" if same else "†"
        any_proxy |= bool(mark and published)
        baseline = {r.seed: r for r in part[part["random"] == "none"].itertuples()}
        for i, random in enumerate(m for m in RANDOM_WEIGHTS if m in set(part["random"])):
            runs = part[part["random"] == random]
            ll = -runs["nll"].to_numpy()
            n = len(ll)
            sd = float(np.std(ll, ddof=1)) if n > 1 else math.nan
            se = sd / math.sqrt(n) if n > 1 else float(runs["nll_stderr"].iloc[0] or math.nan)
            diffs, point_se = [], []
            for r in runs.itertuples():
                if random == "none" or r.seed not in baseline:
                    continue
                ours, base = per_point(r.run_dir), per_point(baseline[r.seed].run_dir)
                if ours is None or base is None or len(ours) != len(base):
                    continue
                d = np.asarray(ours) - np.asarray(base)
                diffs.append(d.mean())
                point_se.append(d.std(ddof=1) / math.sqrt(len(d)))
            if diffs:
                diff = float(np.mean(diffs))
                diff_se = float(np.std(diffs, ddof=1) / math.sqrt(len(diffs))) if len(diffs) > 1 else point_se[0]
                difference = f"{diff:+.3f} ± {diff_se:.3f}"
            else:
                difference, diff = DASH, None
            ref = published.get(random)
            ref_diff = ref[0] - published["none"][0] if ref and "none" in published and random != "none" else None
            label = RANDOM_WEIGHTS[random]
            rows.append([
                part["dataset_label"].iloc[0] if i == 0 else "", label, str(n),
                f"{ll.mean():.3f}", number(sd, digits=3) if n > 1 else DASH, f"{se:.3f}",
                (f"{ref[0]:.3f} ± {ref[1]:.3f}" + mark) if ref else DASH, difference,
                f"{ref_diff:+.3f}" + mark if ref_diff is not None else DASH,
            ])  # fmt: skip
            cmp_rows.append([
                part["dataset_label"].iloc[0], label, f"{ll.mean():.3f}", f"{ref[0]:.3f}" + mark if ref else DASH,
                f"{ll.mean() - ref[0]:+.3f}" if ref else DASH,
                f"{diff:+.3f}" if diff is not None else DASH, f"{ref_diff:+.3f}" if ref_diff is not None else DASH,
            ])  # fmt: skip
    notes = _protocol_notes(df, 500, reference="seed 001", reference_k=2000, quantity="log-likelihood = L_k")
    notes += [
        "sd: over seeds; se: of the mean over seeds (with one seed: over test points)",
        "difference to IWAE: per seed, the mean over the same test points of the method's L_k minus the IWAE "
        "run's of that seed; ± its standard error (over seeds, or over points with one seed)",
        "seed 001 (Hernandez-Lobato et al.): mean of 5 trials; its ± is not defined there",
    ]
    columns = ["dataset", "method", "seeds", "test log-likelihood", "sd", "se", "seed 001",
               "difference to IWAE", "seed 001's difference"]  # fmt: skip
    ours = Table(columns, rows, notes=notes, align="ll" + "r" * 7)
    cmp_cols = ["dataset", "method", "ours", "seed 001", "ours − seed 001", "difference to IWAE (ours)",
                "(seed 001)"]  # fmt: skip
    cmp = Table(cmp_cols, cmp_rows, notes=["ours − seed 001: positive means a higher (better) log-likelihood"],
                align="ll" + "r" * 5)  # fmt: skip
    return ours, cmp


def aevb(df: pd.DataFrame) -> tuple[Table, Table]:
    """Kingma & Welling's experiments: per run its final bound on the training and test sets
    (the last point of its curve), L_k on test points, and where it was evaluated so the HMC
    marginal likelihood with L_k on the same points; and, since KW give figures and not
    numbers, their findings beside ours."""
    rows, midrules = [], []
    df = df.sort_values(["dataset", "hidden", "trained_on", "latent", "seed"], kind="stable")
    previous = None
    for i, r in enumerate(df.itertuples()):
        rec = load_record(Path(r.run_dir) / "eval.json")
        curve = rec["training"].get("curve") or [{}]
        ml = rec.get("marginal") or {}
        if i and (r.dataset, r.hidden) != previous:
            midrules.append(i)
        previous = (r.dataset, r.hidden)
        rows.append([
            r.dataset_label, str(r.hidden), str(r.latent), f"{r.trained_on:,}", f"{r.samples_seen:,}",
            number(curve[-1].get("train_bound", math.nan)), number(curve[-1].get("test_bound", math.nan)),
            number(-r.nll), _hmc_cell(ml.get("train")), _hmc_cell(ml.get("test")),
        ])  # fmt: skip
    columns = ["dataset", "hidden", "Nz", "N train", "samples seen", "train bound", "test bound",
               "test L_k", "HMC log p(x), train (L_k)", "HMC log p(x), test (L_k)"]  # fmt: skip
    notes = [
        "bound: the run's own objective (Kingma & Welling's estimator B: one sample of log p(x|z) minus the "
        "analytic KL) on the whole training and test sets, at the end of training",
        f"test L_k: log-likelihood estimate with k = {', '.join(map(str, sorted(set(df['eval_k']))))} "
        f"on {int(df['test_points'].min()):,} or more test points",
        "HMC: Kingma & Welling's appendix-D estimate on random training and test points, with L_k on the same "
        "points in brackets as a check",
    ]
    if df["grey_levels"].any():
        notes.append(
            "trained and evaluated on grey levels with the Bernoulli cross-entropy (seed 002's choice): these "
            "numbers are not log-likelihoods of any distribution over images"
        )
    ours = Table(columns, rows, midrules=midrules, notes=notes, align="lrrrr" + "r" * 5)
    return ours, aevb_findings(df)


def _hmc_cell(part: dict | None) -> str:
    """'HMC estimate (L_k on the same points)' of one split of eval.json's marginal record."""
    if not part:
        return DASH
    lk = next(v for key, v in part.items() if key.startswith("L_"))
    return f"{part['hmc']['log_likelihood']:.2f} ({lk['log_likelihood']:.2f})"


def aevb_findings(df: pd.DataFrame) -> Table:
    """Kingma & Welling's qualitative findings beside what our runs show."""
    final = {}
    for r in df.itertuples():
        curve = load_record(Path(r.run_dir) / "eval.json")["training"].get("curve") or []
        if curve:
            final.setdefault((r.dataset, r.hidden, r.trained_on), []).append((r.latent, curve[-1]))
    rows = []
    for (dataset, hidden, n), runs in sorted(final.items(), key=lambda kv: (kv[0][0], kv[0][1], kv[0][2] or 0)):
        label = catalogue.get(dataset).label if dataset in catalogue.CATALOGUE else dataset
        runs.sort(key=lambda t: t[0])
        if len(runs) > 1:
            test = [c["test_bound"] for _, c in runs]
            small = [t for t, (z, _) in zip(test, runs) if z <= 20]
            rising = all(b >= a - 0.5 for a, b in zip(small, small[1:]))
            rows.append([f"{label}, {hidden} hidden", "the bound improves with Nz (figure 2)",
                         ", ".join(f"Nz={z}: {c['test_bound']:.1f}" for z, c in runs),
                         "yes" if rising else "no"])  # fmt: skip
            big = [(z, c) for z, c in runs if z >= 100]
            if big:
                z, c = big[-1]
                gap = c["train_bound"] - c["test_bound"]
                ref = next((c2 for z2, c2 in reversed(runs) if z2 <= 20), None)
                ref_gap = ref["train_bound"] - ref["test_bound"] if ref else math.nan
                rows.append([f"{label}, {hidden} hidden", "superfluous latents do not overfit (figure 2)",
                             f"Nz={z}: train − test {gap:.2f} (Nz up to 20: {ref_gap:.2f}); test bound {c['test_bound']:.1f}",
                             "yes" if gap <= ref_gap + 1.0 and ref and c["test_bound"] >= ref["test_bound"] - 1.0
                             else "no"])  # fmt: skip
        for z, c in runs:
            if c.get("train_ml") not in (None, ""):
                small = n is not None and n <= 5000
                gap = c["train_bound"] - c["test_bound"]  # on the whole sets: the precise measure
                ml_gap = c["train_ml"] - c["test_ml"]  # on random points of each: noisier
                holds = gap > 2.0 if small else abs(gap) < 1.0
                rows.append([f"{label}, {hidden} hidden, Nz={z}",
                             f"with {n:,} training points the train-test gap "
                             + ("opens (figure 3)" if small else "stays small (figure 3)"),
                             f"bound: train {c['train_bound']:.2f}, test {c['test_bound']:.2f}, gap {gap:.2f}; "
                             f"HMC log p(x): train {c['train_ml']:.2f}, test {c['test_ml']:.2f}, gap {ml_gap:.2f}",
                             "yes" if holds else "no"])  # fmt: skip
    notes = [
        "Kingma & Welling (2014) give figures, not numbers: this is a qualitative comparison; 'yes' and 'no' "
        "apply our reading (rising within 0.5 nats; a gap at most 1 nat above that of the largest Nz up to 20)",
        "figure 3: KW show a gap that opens with 1,000 training points and none with 50,000; we read it from the "
        "bound on the whole training and test sets (a gap above 2 nats opens, below 1 nat stays small); the HMC "
        "estimates are on random points of each set and noisier",
    ]
    return Table(["runs", "Kingma & Welling's finding", "ours (final curve point)", "holds?"], rows, notes=notes,
                 align="llll")  # fmt: skip


def _mixture_gain(record: dict, run, df: pd.DataFrame) -> str:
    """The label mixture's log p(x) of a conditional run minus the test L_k of its unconditional
    twin (same dataset, architecture, objective, k and seed), paired on the mixture's test
    points, which are among the twin's whenever it was evaluated on at least as many, from
    the same test set, binarised with the same seed and with the same k."""
    import numpy as np

    from iwae.evaluate import subset

    twin = df[(df["condition"] == "none") & (df["dataset"] == run.dataset) & (df["architecture"] == run.architecture)
              & (df["objective"] == run.objective) & (df["k"] == run.k) & (df["seed"] == run.seed)]  # fmt: skip
    mixture = record["mixture"]
    if len(twin) != 1 or "per_point" not in mixture["log_p_x"]:
        return DASH
    other = load_record(Path(twin["run_dir"].iloc[0]) / "eval.json")
    test = other["test"]
    same_set = test.get("of") is not None and test.get("of") == record["test"].get("of")
    same_estimate = other.get("eval_seed") == record.get("eval_seed") and other.get("k") == mixture["k"]
    if not (same_set and same_estimate) or "per_point" not in test:
        return DASH
    position = {row: i for i, row in enumerate(subset(test["of"], test["points"]).tolist())}
    rows = subset(test["of"], mixture["points"]).tolist()
    if not all(row in position for row in rows):
        return DASH
    d = np.asarray(mixture["log_p_x"]["per_point"]) - np.asarray([test["per_point"][position[row]] for row in rows])
    return f"{d.mean():+.2f} ± {d.std(ddof=1) / math.sqrt(len(d)):.2f}" if len(d) > 1 else f"{d.mean():+.2f}"


def posterior(df: pd.DataFrame) -> tuple[Table, Table]:
    """nbip's tasks: per run its test L_k; for 2-D latent spaces the posterior on a grid
    (log p(x) by quadrature beside L_k and the ELBO, KL(q || p), ESS); for several layers
    each layer's 5-NN label accuracy; for conditional runs the log-likelihood of the label
    mixture. Beside it, nbip's published values where a run matches one of theirs."""
    rows, cmp_rows = [], []
    for r in df.sort_values(["layers", "architecture", "condition", "prior", "objective", "k", "seed"]).itertuples():
        rec = load_record(Path(r.run_dir) / "eval.json")
        grid = (rec.get("posterior") or {}).get("mean")
        layers = rec.get("layers")
        mixture = rec.get("mixture")
        conditional = r.condition != "none"
        model = f"{r.architecture}, {objective_label(r.objective)} k={r.k}"
        if conditional:
            model += f", given y ({'label' if r.prior == 'label' else 'standard'} prior; test L_k of log p(x given y))"
        rows.append([
            model, number(-r.nll),
            number(grid["grid_log_p_x"]) if grid else DASH, number(grid["lk"]) if grid else DASH,
            number(grid["elbo"]) if grid else DASH, number(grid["kl_q_p"]) if grid else DASH,
            f"{grid['ess']:.0f}" if grid else DASH,
            " / ".join(f"{layer['active']} of {layer['units']}" for layer in layers) if layers else DASH,
            " / ".join(f"{layer['knn5_accuracy']:.2f}" for layer in layers) if layers else DASH,
            number(mixture["log_p_x"]["log_likelihood"]) if mixture else DASH,
            _mixture_gain(rec, r, df) if mixture else DASH,
        ])  # fmt: skip
        ref = reference.nbip_reference(r.architecture, r.objective, r.k, r.condition, r.prior)
        if ref is not None:
            cmp_rows.append([model, number(-r.nll), number(ref), number(-r.nll - ref)])
    notes = _protocol_notes(df, quantity="test L_k") + [
        "for the runs given the label, test L_k is of log p(x | y), which is not log p(x): 'log p(x), label "
        "mixture' is log p(x) = log sum_y (1/10) p(x | y) on random test points",
        "grid: the true posterior of random test points on an adaptive grid (a wide coarse grid, then a fine one over "
        "the box holding its mass); log p(x) by quadrature, L_k and the ELBO on the same points; KL(q || p) on the "
        "grid; ESS of the k importance weights",
        "per layer: its active units and the 5-NN label accuracy of its posterior means (self-normalised importance "
        "sampling), a random half of the test points classifying the other",
        "label mixture − unconditional: the mixture's log p(x) minus L_k of the same architecture, objective and k "
        "trained without the label, paired on the same test points (mean ± standard error)",
    ]
    columns = ["model", "test L_k", "grid log p(x)", "L_k (grid points)", "ELBO", "KL(q‖p)", "ESS",
               "active units per layer", "5-NN accuracy per layer", "log p(x), label mixture",
               "label mixture − unconditional"]  # fmt: skip
    ours = Table(columns, rows, notes=notes, align="l" + "r" * 10)
    cmp = Table(["model", "ours", "nbip/IWAE", "ours − nbip"], cmp_rows, align="lrrr",
                notes=["nbip/IWAE (seed 004): MNIST, k = 5000 on the whole test set; its 1-layer model has 100 latent "
                       "units; its conditional IWAE (label prior) reports log p(x | y)"])  # fmt: skip
    return ours, cmp
