"""The paper's tables (the layouts' names are in `iwae.plan.layouts`):
    nll_au       Burda et al.'s Table 1: rows stochastic layers x k; columns datasets x
                 objectives, each with test NLL and active units ("16+5"), plus train NLL
                 and the train-test gap when the runs were evaluated on training points
    vs_paper     one row per cell: ours, the published value, the difference
    two_stage    Table 2: first stage and second stage, NLL and active units
    bounds       Rainforth et al.'s comparison: objectives as columns; IWAE-64, log p(x)
                 and -KL(Q||P) as rows
    summary      one row per run
    cost         one row per run: where it ran, seconds per epoch, hours, evaluation minutes, load
The follow-up papers' tables are in `iwae.report.followups`; every table is a `Table`
(`iwae.report.render`).
"""

from __future__ import annotations

import csv
import math
import statistics
from pathlib import Path

import pandas as pd

from iwae.data import catalogue
from iwae.errors import UserError
from iwae.estimators.objectives import label as objective_label
from iwae.plan import references
from iwae.plan.architecture import ARCHITECTURES
from iwae.report.records import aggregate, load_record
from iwae.report.records import row as record_row
from iwae.report.render import DASH, Table, number


def protocol_notes(
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
    notes += shared_notes(df)
    for dataset in sorted(set(df["dataset"])) if caveats else []:
        entry = catalogue.CATALOGUE.get(dataset)
        if entry and entry.caveat:
            notes.append(f"{entry.label}: {entry.caveat}")
    return notes


def shared_notes(df: pd.DataFrame) -> list[str]:
    """Which cells one run fills (`records.cells`): the same objective, trained once."""
    if "filled_by" not in df.columns:
        return []
    notes = []
    for (trained, k), rows in df[df["filled_by"] != ""].groupby(["filled_by", "k"], sort=False):
        others = " and ".join(objective_label(o) for o in dict.fromkeys(rows["objective"]))
        runs = ", ".join(sorted(set(rows["run"])))
        notes.append(f"{others} with k = {k} {'is' if ' and ' not in others else 'are'} the same objective as the "
                     f"{objective_label(trained)}: one run fills both cells ({runs})")  # fmt: skip
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
    notes = []
    specs = df["architecture"] if "architecture" in df.columns else [ARCHITECTURES[n].spec() for n in df["layers"]]
    other = sorted({a for a, n in zip(specs, df["layers"]) if n not in ARCHITECTURES or a != ARCHITECTURES[n].spec()})
    if other:
        notes.append(f"architectures other than the paper's: {', '.join(other)} (hidden units, then latent units, "
                     "per stochastic layer)")  # fmt: skip
    if "condition" in df.columns and (df["condition"] != "none").any():
        notes.append("given the label: the NLL is −L_k of log p(x | y), not of log p(x)")
    return notes


def _by_variant(df: pd.DataFrame) -> pd.DataFrame:
    """Runs of several protocol variants (a grid's `variants:`) as objectives of their own,
    "iwae@official", so that a table sets them side by side."""
    if "variant" not in df.columns or df["variant"].fillna("").nunique() < 2:
        return df
    return df.assign(objective=df["objective"] + "@" + df["variant"].fillna(""))


def _label(objective: str) -> str:
    """How a column names an objective, with its variant: 'IWAE (official)'."""
    spec, _, variant = objective.partition("@")
    return objective_label(spec) + (f" ({variant})" if variant else "")


def nll_au(df: pd.DataFrame, source: str = "paper") -> Table:
    """Burda et al.'s Table 1 layout for any grid of datasets, layers, objectives and k (and
    variants, side by side); its notes compare the protocol with that of `source`
    (`references.SOURCES`)."""
    df = _by_variant(df)
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
        [("", 2)] + [(_label(o), len(sub)) for _ in datasets for o in objectives],
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
    main = references.SOURCES[source]
    notes = protocol_notes(df, main.epochs, reference=main.name) + _model_notes(df)
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
    main = references.SOURCES[source]
    df = _by_variant(df)
    keys = ["dataset", "layers", "architecture", "objective", "k", "condition", "prior"]
    agg = aggregate(df.assign(condition=df["condition"].fillna("none"), prior=df["prior"].fillna("standard")), keys)

    rows, any_proxy, cited, sibling_specs = [], False, [source], set()
    for c in agg.itertuples():
        model = references.model_of(c.condition, c.prior)
        ref, ref_units, same = references.published(source, c.dataset, c.architecture, c.objective, c.k, model)
        mark = "" if same else "†"
        any_proxy |= bool(mark and ref)
        besides = references.others(source, c.dataset, c.architecture, c.objective, c.k, model)
        near = references.siblings(source, c.dataset, c.architecture, c.objective, c.k, model)
        cited += [name for name, *_ in besides + near if name not in cited]
        sibling_specs |= {spec for *_, spec in near}
        paper_arch = c.layers in ARCHITECTURES and ARCHITECTURES[c.layers].spec() == c.architecture
        rows.append(
            [
                c.dataset_label, str(c.layers) if paper_arch else f"{c.layers} ({c.architecture})",
                _label(c.objective) + ("" if model == "unconditional" else f" given y ({model})"), str(c.k),
                number(c.nll, c.nll_sd, c.n), number(ref) + mark if ref else DASH,
                f"{c.nll - ref:+.2f}" if ref else DASH,
                c.active_units, (ref_units + mark) if ref_units else DASH,
                "; ".join([*(f"{references.SOURCES[name].short} {nll:.2f}{mark}" for name, nll in besides),
                           *(f"{references.SOURCES[name].short} {nll:.2f}{mark} ({spec})" for name, nll, spec in near)])
                or DASH,
            ]
        )  # fmt: skip
    notes = [f"difference = ours − {main.name}: positive means a worse (higher) NLL"]
    if sibling_specs:
        notes.append(f"other published NLL with an architecture ({', '.join(sorted(sibling_specs))}): that source's "
                     "model in place of this cell's, the same family with another latent size; for orientation, "
                     "not a difference")  # fmt: skip
    notes += protocol_notes(df, main.epochs, reference=main.name, caveats=any_proxy) + _model_notes(df)
    notes += [references.SOURCES[name].line(set(df["dataset"])) for name in cited]
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
        ref = references.TABLE2.get((first["objective"], first["k"], r.objective, r.k))
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
    notes = protocol_notes(df_second, paper_epochs=3**7, trained="second stage trained")
    ours = Table(
        ["experiment", "NLL", "active units", "NLL", "active units", "seed"], rows, groups, notes=notes, align="lrrrrr"
    )
    cols = ["experiment", "stage", "NLL (ours)", "NLL (paper)", "difference", "active (ours)", "active (paper)"]
    notes = ["difference = ours − paper", references.SOURCES["paper"].line(set(df_second["dataset"]))]
    return ours, Table(cols, cmp_rows, notes=notes, align="llrrrrr")


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
        ref = references.RAINFORTH.get(c.objective)
        run = df[df["objective"] == c.objective].iloc[0]  # other sources' log p(x) of the same cell
        besides = references.others("rainforth", run["dataset"], run["architecture"], c.objective, int(run["k"]))
        cited += [name for name, _ in besides if name not in cited]
        for name, (mean, _), published in zip(("IWAE-64", "log p̂(x)", "−KL(Q‖P)"), values, ref or (None,) * 3):
            shown = "; ".join(f"{references.SOURCES[n].short} {-nll:.2f}" for n, nll in besides)
            cmp_rows.append(
                [objective_label(c.objective), name, number(mean),
                 number(published) if published is not None else DASH,
                 f"{mean - published:+.2f}" if published is not None else DASH,
                 shown if name == "log p̂(x)" and shown else DASH]
            )  # fmt: skip
    notes = protocol_notes(df) + [
        "IWAE-64: the k = 64 bound on the test set; −KL(Q‖P) = IWAE-64 − log p̂(x) (Rainforth et al., 2018)"
    ]
    ours = Table(
        ["metric", *(objective_label(o) for o in objectives)], rows, notes=notes, align="l" + "r" * len(objectives)
    )
    cmp = Table(["objective", "metric", "ours", "Rainforth et al.", "difference", "other published"], cmp_rows,
                notes=["difference = ours − published"] + [references.SOURCES[n].line(set(df["dataset"])) for n in cited],
                align="llrrrl")  # fmt: skip
    return ours, cmp


def first_stage_rows(df_second: pd.DataFrame) -> dict[str, dict]:
    """The eval record of each second-stage run's first stage, found through init_from."""
    out = {}
    for r in df_second.itertuples():
        path = Path(r.init_from).parent / "eval.json"
        load_record(path)  # a clear error if the first stage was never evaluated
        out[r.run] = record_row(path)
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


def cost(df: pd.DataFrame) -> Table:
    """What each run cost where it ran, from its records: the median seconds of its epochs
    and the median 1-minute load average at their ends (its train_log.csv, where the records
    have one), the hours of training and minutes of evaluation its train.json and eval.json
    measured, and the machine (logical CPUs) and threads. The last row sums the hours."""
    cols = ["experiment", "run", "device", "threads", "epochs", "s / epoch", "training (h)", "evaluation (min)",
            "load"]  # fmt: skip
    rows = []
    for r in df.itertuples():
        env = r.record["training"].get("environment") or r.record["environment"]
        seconds, load = _epoch_medians(Path(r.run_dir) / "train_log.csv")
        rows.append([r.experiment, r.run, str(r.device), str(env.get("threads", DASH)), str(r.epochs),
                     number(seconds), f"{r.train_seconds / 3600:.3f}", f"{r.eval_seconds / 60:.1f}",
                     number(load)])  # fmt: skip
    rows.append(["all runs", f"{len(df)} runs", "", "", "", "", f"{df['train_seconds'].sum() / 3600:.3f}",
                 f"{df['eval_seconds'].sum() / 60:.1f}", ""])  # fmt: skip
    notes = [
        "s / epoch: the median of the run's epochs (train_log.csv); training (h): train.json's train_seconds, "
        "every resumption's epochs included; evaluation (min): eval.json's eval_seconds",
        "load: the median over epochs of the 1-minute load average at an epoch's end, this run included: "
        "read it against the device's logical CPUs (a load above them means runs shared the cores); "
        f"{DASH} where the log predates the column",
    ]
    return Table(cols, rows, midrules=[len(rows) - 1], notes=notes)


def _epoch_medians(log: Path) -> tuple[float, float]:
    """The median seconds per epoch and the median load of a run's epoch log (NaN where absent)."""
    if not log.is_file():
        return math.nan, math.nan
    with open(log, newline="") as f:
        rows = list(csv.DictReader(f))

    def median(column: str) -> float:
        values = [float(r[column]) for r in rows if r.get(column)]
        return statistics.median(values) if values else math.nan

    return median("seconds"), median("load")
