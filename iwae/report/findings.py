"""Each finding of `iwae.plan.findings` judged from an experiment's run records.

The rule, written where the table is read (its notes): per group, the difference A - B of
the finding's statistic is taken run by run of the same seed. With one seed its 95 % interval
is the difference ± 1.96 standard errors over the test points it was computed on (the noise
of evaluation, not of training); with several seeds it is a t-interval over the seeds'
differences (the spread of training); against a published value of one run ('vs_published'),
the prediction interval of one more seed (t · sd · √(1 + 1/n)), and with one seed no verdict.
The finding **holds** where the difference has the
expected sign and the interval excludes zero, is **contradicted** where the difference has
the opposite sign and the interval excludes zero, and is **not resolved** otherwise (a
finding that expects a difference of either sign, '≠', holds where the interval excludes zero). Counts
(active units) and whole-set curve bounds carry no standard error: with one seed their
interval is the difference itself.

Test NLLs are paired on the same test points: every evaluation of an experiment draws the
same points (its seed and number of points), and a record without its points' values, or
of other points, is compared unpaired (standard errors added in quadrature) and says so.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from iwae.estimators.objectives import label as objective_label
from iwae.plan import findings as registry
from iwae.plan import references
from iwae.report import records
from iwae.report.records import cells, load_record, row
from iwae.report.render import DASH, Table

Z95 = 1.959963984540054


@dataclass
class Difference:
    """One seed's A - B: its value, standard error (None: exact) and whether paired."""

    value: float
    stderr: float | None
    paired: bool = True
    missing: str = ""  # what the records lack, where there is no value


@dataclass
class Verdict:
    finding: registry.Finding
    group: dict
    seeds: int
    mean: float | None = None
    low: float | None = None
    high: float | None = None
    published: float | None = None
    verdict: str = "not resolved"
    why: str = ""  # what is missing, where nothing could be judged
    paired: bool = True


def judge(finding: registry.Finding, df: pd.DataFrame, source: str = "paper") -> list[Verdict]:
    """The finding's verdict in every group of the runs in `df` (one row per table cell,
    `records.cells`; second-stage rows carry their first stage's row in `first_row`)."""
    if finding.statistic == "vs_published":
        df = df.assign(published_nll=[_published_nll(source, r) for r in df.itertuples()])
    groups = _groups(finding, df)
    if not groups:
        return [Verdict(finding, {}, 0, why=f"needs {_describe(finding.a)}"
                        + (f" and {_describe(finding.b)}" if finding.b else "") + ": no such runs here")]  # fmt: skip
    return [_judge_group(finding, df, group, source) for group in groups]


def _matches(df: pd.DataFrame, cell: dict) -> pd.Series:
    keep = pd.Series(True, index=df.index)
    for key, value in cell.items():
        if key == "first":
            keep &= df["first"].apply(lambda f, v=tuple(value): f == v)
        elif key != "second_stage_of":
            keep &= df[key] == value
    return keep


def _groups(finding: registry.Finding, df: pd.DataFrame) -> list[dict]:
    """The groups where A or B has a run."""
    either = _matches(df, finding.a) | (_matches(df, finding.b) if finding.b and "second_stage_of" not in finding.b
                                        else False)  # fmt: skip
    chosen = df[either]
    return [dict(zip(finding.per, values)) for values in dict.fromkeys(zip(*(chosen[p] for p in finding.per)))]


def _in_group(df: pd.DataFrame, group: dict) -> pd.DataFrame:
    keep = pd.Series(True, index=df.index)
    for key, value in group.items():
        keep &= df[key] == value
    return df[keep]


def _judge_group(finding: registry.Finding, df: pd.DataFrame, group: dict, source: str) -> Verdict:
    runs = _in_group(df, group)
    a = runs[_matches(runs, finding.a)]
    if "second_stage_of" in finding.b:
        b = {r.seed: r.first_row for r in a.itertuples()}
    elif finding.b:
        b = {r.seed: r._asdict() for r in runs[_matches(runs, finding.b)].itertuples()}
    else:
        b = {}
    shown = {**group, "architecture": (a if len(a) else runs)["architecture"].iloc[0]}
    published = finding.published(source, shown) if finding.published else None
    missing = [_describe(finding.a)] if a.empty else []
    if finding.b and not b:
        missing.append(_describe(finding.b))
    if missing:
        return Verdict(finding, group, 0, published=published, why=f"no run of {' or '.join(missing)} here")
    differences = []
    for r in a.itertuples():
        other = b.get(r.seed)
        if finding.b and other is None:
            continue
        differences.append(difference(finding.statistic, r._asdict(), other))
    if not differences:
        return Verdict(finding, group, 0, published=published, why="no seed has both runs")
    lacking = next((d.missing for d in differences if d.missing), None)
    if lacking:
        return Verdict(finding, group, 0, published=published, why=f"the records lack {lacking}")
    return _verdict(finding, group, differences, published)


def _verdict(finding, group, differences: list[Difference], published) -> Verdict:
    values = np.array([d.value for d in differences])
    mean, n = float(values.mean()), len(values)
    if finding.statistic == "vs_published" and n == 1:  # one run against one run: no spread to read it by
        return Verdict(finding, group, n, mean, published=published, why=ONE_SEED)
    if n == 1:
        se = differences[0].stderr
        half = 0.0 if se is None else Z95 * se
    else:
        from scipy import stats

        # a published single run is one more draw of training, not a mean: where one more of
        # our seeds would fall (the prediction interval), not where our mean lies
        widen = math.sqrt(1 + n) if finding.statistic == "vs_published" else 1.0
        half = float(stats.t.ppf(0.975, n - 1) * values.std(ddof=1) / math.sqrt(n) * widen)
    low, high = mean - half, mean + half
    sign = {"<": -1, ">": 1, "≠": 0}[finding.expect]
    if (low > 0 or high < 0) and (mean * sign > 0 or sign == 0):  # '≠': either sign
        verdict = "holds"
    elif low > 0 or high < 0:
        verdict = "contradicted"
    else:
        verdict = "not resolved"
    return Verdict(finding, group, n, mean, low, high, published, verdict, paired=all(d.paired for d in differences))


def difference(statistic: str, a: dict, b: dict | None) -> Difference:
    """A - B of one seed's runs (rows of `records.row`)."""
    ra, rb = a["record"], (b or {}).get("record")
    if statistic == "nll":
        return _paired(ra["test"], rb["test"], ra, rb, sign=-1)
    if statistic == "neg_kl":  # -KL = IWAE-64 - log p(x), per point
        return _paired_kl(ra, rb)
    if statistic == "units":
        return Difference(float(a["active_total"] - b["active_total"]), None)
    if statistic == "gap":
        test, train = ra["test"], ra.get("train") or {}
        if "nll" not in train:
            return Difference(math.nan, None, False, "an evaluation on training points (evaluation.train_points)")
        return Difference(test["nll"] - train["nll"], math.hypot(test["stderr"] or 0, train["stderr"] or 0), False)
    if statistic == "vs_published":
        if pd.isna(a.get("published_nll")):
            return Difference(math.nan, None, False, "a published value for this cell")
        return Difference(ra["test"]["nll"] - a["published_nll"], ra["test"].get("stderr"), False)
    if statistic in ("curve_nll", "curve_gap"):
        if not ra["training"].get("curve") or (rb is not None and not rb["training"].get("curve")):
            return Difference(math.nan, None, False, "a learning curve (curve_per_decade)")
        last_a = (ra["training"].get("curve") or [{}])[-1]
        if statistic == "curve_gap":
            return Difference(last_a.get("train_bound", math.nan) - last_a.get("test_bound", math.nan), None)
        last_b = (rb["training"].get("curve") or [{}])[-1]
        return Difference(-(last_a.get("test_bound", math.nan) - last_b.get("test_bound", math.nan)), None)
    raise ValueError(f"unknown statistic {statistic!r}")


def _published_nll(source: str, run) -> float | None:
    return references.published(source, run.dataset, run.architecture, run.objective, int(run.k))[0]


def _same_points(ra: dict, rb: dict, sa: dict, sb: dict) -> bool:
    """Whether two summaries are of the same test points: the same evaluation seed, number of
    points drawn and test set size, and a value per point in each."""
    return (
        "per_point" in sa and "per_point" in sb and len(sa["per_point"]) == len(sb["per_point"])
        and ra.get("eval_seed") == rb.get("eval_seed") and sa.get("of") == sb.get("of")
        and sa.get("points") == sb.get("points")
    )  # fmt: skip


def _paired(sa: dict, sb: dict, ra: dict, rb: dict, sign: int) -> Difference:
    """sign x (A - B) of log-likelihood summaries: per point where both are of the same points."""
    if _same_points(ra, rb, sa, sb):
        d = sign * (np.asarray(sa["per_point"], dtype=float) - np.asarray(sb["per_point"], dtype=float))
        return Difference(float(d.mean()), float(d.std(ddof=1) / math.sqrt(len(d))) if len(d) > 1 else None)
    value = sign * (sa["log_likelihood"] - sb["log_likelihood"])
    return Difference(value, math.hypot(sa.get("stderr") or 0, sb.get("stderr") or 0), paired=False)


def _paired_kl(ra: dict, rb: dict) -> Difference:
    def neg_kl(rec):
        bound = (rec.get("bounds") or {}).get("64")
        return None if bound is None else bound, rec["test"]

    (ba, ta), (bb, tb) = neg_kl(ra), neg_kl(rb)
    if ba is None or bb is None:
        return Difference(math.nan, None, False, "an evaluation with extra_k: [64]")
    arrays = [s.get("per_point") for s in (ba, ta, bb, tb)]
    if all(x is not None for x in arrays) and _same_points(ra, rb, ta, tb) and len({len(x) for x in arrays}) == 1:
        a64, la, b64, lb = (np.asarray(x, dtype=float) for x in arrays)
        d = (a64 - la) - (b64 - lb)
        return Difference(float(d.mean()), float(d.std(ddof=1) / math.sqrt(len(d))))
    value = (ba["log_likelihood"] - ta["log_likelihood"]) - (bb["log_likelihood"] - tb["log_likelihood"])
    se = math.sqrt(sum((s.get("stderr") or 0) ** 2 for s in (ba, ta, bb, tb)))
    return Difference(value, se, paired=False)


# --------------------------------------------------------------------------- the table


def _describe(cell: dict) -> str:
    parts = []
    if "first" in cell:
        first = cell["first"]
        parts.append(f"{objective_label(first[0])} (k={first[1]}) →")
    if "objective" in cell:
        parts.append(objective_label(cell["objective"]))
    if "k" in cell:
        parts.append(f"k = {cell['k']}")
    if "layers" in cell:
        parts.append(f"{cell['layers']} stochastic layer{'s' if cell['layers'] != 1 else ''}")
    if "random" in cell:
        parts.append({"none": "IWAE", "encoder": "IWAER_rec", "both": "IWAER"}[cell["random"]])
    if "variant" in cell:
        parts.append(str(cell["variant"]))
    if "latent" in cell:
        parts.append(f"Nz = {cell['latent']}")
    if "trained_on" in cell:
        parts.append(f"{cell['trained_on']:,} training points")
    if "second_stage_of" in cell:
        parts.append("its first stage")
    return " ".join(parts) or "the run"


def _group_label(group: dict, labels: dict) -> str:
    out = []
    for key, value in group.items():
        if key == "dataset":
            out.append(labels.get(value, value))
        elif key == "layers":
            out.append(f"{value} layer{'s' if value != 1 else ''}")
        elif key == "objective":
            out.append(objective_label(value))
        elif key == "k":
            out.append(f"k = {value}")
        elif key == "hidden":
            out.append(f"{value} hidden")
    return ", ".join(out)


def _number(value: float | None, digits: int = 2) -> str:
    return DASH if value is None or (isinstance(value, float) and math.isnan(value)) else f"{value:+.{digits}f}"


UNITS = {"nll": "nats of NLL", "units": "active units", "neg_kl": "nats of −KL(Q‖P)", "gap": "nats (test − train NLL)",
         "curve_nll": "nats of the whole test set's bound (as NLL)", "curve_gap": "nats (train − test bound)",
         "vs_published": "nats of NLL (ours − the published value)"}  # fmt: skip


ONE_SEED = "one seed: the seed-to-seed spread it is read against is unknown"

# the statistics that take one run's difference of two numbers, and which
SINGLE_RUN = {"gap": "test − training NLL", "curve_gap": "training − test bound"}


def table(df: pd.DataFrame, experiment: str, source: str = "paper") -> Table:
    """The findings of `experiment` judged on its runs: one row per finding and group."""
    labels = dict(zip(df["dataset"], df["dataset_label"]))
    rows = []
    for finding in registry.for_experiment(experiment):
        for v in judge(finding, df, source):
            compared = f"{_describe(finding.a)} − {_describe(finding.b)}" if finding.b else _describe(finding.a)
            if finding.statistic == "vs_published":
                compared += f" − {references.SOURCES[source].short}'s value"
            elif finding.statistic in SINGLE_RUN:  # one run's two numbers: say which
                compared += f": {SINGLE_RUN[finding.statistic]}"
            interval = DASH if v.low is None else f"[{v.low:+.2f}, {v.high:+.2f}]"
            rows.append([
                finding.statement, finding.source, _group_label(v.group, labels) or DASH, compared,
                str(v.seeds) if v.seeds else DASH, _number(v.mean) + ("" if v.paired else " ‡"), interval,
                _number(v.published), v.verdict if not v.why else f"not resolved: {v.why}",
            ])  # fmt: skip
    notes = [
        "difference: A − B of the statistic, run by run of the same seed; NLL differences are paired on the same "
        "test points (‡: unpaired, standard errors added in quadrature)",
        "95 % interval: with one seed, ± 1.96 standard errors over the test points (evaluation's noise, not "
        "training's); with several seeds, a t-interval over the seeds' differences; counts and whole-set curve "
        "bounds have no standard error",
        "holds: the expected sign and an interval that excludes zero; contradicted: the opposite sign and an interval "
        "that excludes zero; not resolved: otherwise, or where the runs are missing",
        "published: the same difference in the finding's source, where it gives numbers",
    ]
    if any(f.statistic == "vs_published" for f in registry.for_experiment(experiment)):
        notes.insert(2, "ours − a published value of one run: with several seeds, the 95 % interval is where one "
                     "more of our seeds would fall (t · sd · √(1 + 1/n)), the published run being one more draw of "
                     "training; with one seed, not resolved")  # fmt: skip
    units = sorted({UNITS[f.statistic] for f in registry.for_experiment(experiment)})
    notes.append("units: " + "; ".join(units))
    columns = ["finding", "source", "group", "A − B", "seeds", "difference", "95 % interval", "published",
               "verdict"]  # fmt: skip
    return Table(columns, rows, notes=notes, align="lllllrrrl")


def frame(evals: list[Path], experiment: str) -> pd.DataFrame:
    """The experiment's runs as table cells, second stages with their first stage's row."""
    return with_first_stages(cells(records.frame(evals, experiment)))


def with_first_stages(df: pd.DataFrame) -> pd.DataFrame:
    """Second-stage rows with their first stage's row (`first_row`) and cell (`first`)."""
    firsts, first_cells = [], []
    for r in df.itertuples():
        init = r.init_from
        if isinstance(init, str) and init:
            path = Path(init).parent / "eval.json"
            load_record(path)
            first = row(path)
            firsts.append(first)
            first_cells.append((first["objective"], int(first["k"])))
        else:
            firsts.append(None)
            first_cells.append(None)
    return df.assign(first_row=firsts, first=first_cells)
