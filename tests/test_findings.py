"""Findings judged from run records: the verdict follows the records, the paired standard
error is the hand computation, a finding without its runs says so, and every published
folder's manifest matches its files."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
from test_report import record

from iwae.plan import findings as registry
from iwae.report import findings, publish
from iwae.report.verify import Outcome, check_manifest, check_tables

from conftest import ROOT

RNG = np.random.default_rng(0)
BASE = RNG.normal(-86.0, 5.0, 400)


def _run(root: Path, objective: str, k: int, gain: float, seed: int = 1, units: int = 20, shared=None) -> Path:
    """A run whose per-point log-likelihoods are the common BASE raised by `gain` nats."""
    per_point = (BASE + gain + np.random.default_rng([seed, k, len(objective)]).normal(0, 0.2, BASE.size)).round(4)
    path = record(root, "table1", f"mnist-1l-{objective}-k{k}-s{seed}", objective=objective, k=k, seed=seed,
                  nll=float(-per_point.mean()), units=(units,), per_point=per_point.tolist())  # fmt: skip
    rec = json.loads(path.read_text())
    rec["eval_seed"] = 123
    if shared:
        rec["training"]["config"]["shared_cells"] = shared
    path.write_text(json.dumps(rec))
    return path


def _verdicts(paths: list[Path], finding: str = "iwae-below-vae-k5") -> list[findings.Verdict]:
    return findings.judge(registry.FINDINGS[finding], findings.frame(paths, "table1"))


def test_a_finding_flips_when_its_records_are_flipped(tmp_path):
    better = [_run(tmp_path / "a", "vae", 5, 0.0), _run(tmp_path / "a", "iwae", 5, 1.0)]
    (holds,) = _verdicts(better)
    assert holds.verdict == "holds" and holds.mean == pytest.approx(-1.0, abs=0.05) and holds.high < 0
    worse = [_run(tmp_path / "b", "vae", 5, 1.0), _run(tmp_path / "b", "iwae", 5, 0.0)]
    (contradicted,) = _verdicts(worse)
    assert contradicted.verdict == "contradicted" and contradicted.low > 0
    alike = [_run(tmp_path / "c", "vae", 5, 0.0), _run(tmp_path / "c", "iwae", 5, 0.005)]
    (unresolved,) = _verdicts(alike)
    assert unresolved.verdict == "not resolved" and unresolved.low < 0 < unresolved.high


def test_the_paired_standard_error_is_the_hand_computation(tmp_path):
    """Three test points: NLL differences per point, their mean and sd / sqrt(n)."""
    a = record(tmp_path, "table1", "mnist-1l-iwae-k5-s1", objective="iwae", k=5, per_point=[-80.0, -90.0, -85.5])
    b = record(tmp_path, "table1", "mnist-1l-vae-k5-s1", objective="vae", k=5, per_point=[-81.0, -90.5, -87.0])
    for path in (a, b):
        rec = json.loads(path.read_text())
        rec["eval_seed"], rec["test"]["points"] = 123, 3
        path.write_text(json.dumps(rec))
    (v,) = _verdicts([a, b])
    d = np.array([-1.0, -0.5, -1.5])  # NLL(a) - NLL(b) = -(ll_a - ll_b)
    se = d.std(ddof=1) / math.sqrt(3)
    assert v.mean == pytest.approx(d.mean()) and v.paired
    assert v.high == pytest.approx(d.mean() + findings.Z95 * se) and v.low == pytest.approx(
        d.mean() - findings.Z95 * se
    )


def test_several_seeds_give_a_t_interval_over_the_seeds(tmp_path):
    from scipy import stats

    paths, gaps = [], {1: 1.0, 2: 0.6, 3: 1.4}
    for seed, gap in gaps.items():
        paths += [_run(tmp_path, "vae", 5, 0.0, seed), _run(tmp_path, "iwae", 5, gap, seed)]
    (v,) = _verdicts(paths)
    per_seed = [findings.difference("nll", *rows).value for rows in _pairs(paths)]
    half = stats.t.ppf(0.975, 2) * np.std(per_seed, ddof=1) / math.sqrt(3)
    assert v.seeds == 3 and v.mean == pytest.approx(np.mean(per_seed)) and v.high == pytest.approx(v.mean + half)


def _pairs(paths):
    from iwae.report import records

    rows = [records.row(p) for p in paths]
    by = {(r["objective"], r["seed"]): r for r in rows}
    return [(by[("iwae", s)], by[("vae", s)]) for s in sorted({r["seed"] for r in rows})]


def test_a_finding_whose_runs_are_missing_says_so(tmp_path):
    paths = [_run(tmp_path, "vae", 5, 0.0), _run(tmp_path, "iwae", 5, 1.0)]
    (k50,) = _verdicts(paths, "iwae-below-vae-k50")
    assert k50.verdict == "not resolved" and "no such runs here" in k50.why
    (falls,) = _verdicts(paths, "iwae-falls-k5-to-k50")
    assert "no run of IWAE k = 50" in falls.why
    table = findings.table(findings.frame(paths, "table1"), "table1")
    assert any("not resolved: no run of IWAE k = 50 here" in row[-1] for row in table.rows)
    for name in {e for f in registry.FINDINGS.values() for e in f.experiments}:  # every statement spells in LaTeX
        assert "\\begin{tabular}" in findings.table(findings.frame(paths, "table1"), name).latex()


def test_a_shared_run_fills_the_cell_a_finding_compares(tmp_path):
    """IWAE with k = 1 is the VAE's run: IWAE's fall from k = 1 to 5 is judged against it."""
    paths = [_run(tmp_path, "vae", 1, 0.0, shared=["iwae"]), _run(tmp_path, "iwae", 5, 1.2)]
    (v,) = _verdicts(paths, "iwae-falls-k1-to-k5")
    assert v.verdict == "holds" and v.published == pytest.approx(85.54 - 86.76)


def test_a_published_single_number_is_read_against_our_seeds(tmp_path):
    """seed 000's IWAE k = 5 (87.02), one run, against three seeds of ours: a gap beyond where
    a fourth seed of ours would fall (t · sd · √(1 + 1/n)) holds; one inside it is not
    resolved, even where our mean's own interval excludes seed 000's value; with one seed of
    ours there is no spread to read it by."""
    from scipy import stats

    def runs(root, nlls):
        out = []
        for seed, nll in enumerate(nlls, 1):
            path = record(root, "seed000", f"mnist-1l-iwae-k5-s{seed}", objective="iwae", k=5, seed=seed, nll=nll)
            out.append(path)
        return out

    finding = registry.FINDINGS["seed000-gap-iwae-k5"]
    far = findings.judge(finding, findings.frame(runs(tmp_path / "far", [89.0, 88.9, 89.1]), "seed000"), "seed000")
    assert far[0].verdict == "holds" and far[0].mean == pytest.approx(89.0 - 87.02)
    half = stats.t.ppf(0.975, 2) * 0.1 * math.sqrt(1 + 1 / 3)
    assert far[0].low == pytest.approx(far[0].mean - half) and far[0].high == pytest.approx(far[0].mean + half)
    near = findings.judge(finding, findings.frame(runs(tmp_path / "near", [86.0, 88.0, 87.5]), "seed000"), "seed000")
    assert near[0].verdict == "not resolved" and near[0].low < 0 < near[0].high
    # 1.5 nats with sd 0.4: our mean is above 87.02 (t-interval [0.51, 2.49]), but a fourth seed
    # of ours could land at seed 000's value
    spread = runs(tmp_path / "spread", [88.12, 88.52, 88.92])
    (within,) = findings.judge(finding, findings.frame(spread, "seed000"), "seed000")
    assert within.verdict == "not resolved" and within.low < 0 < within.high
    (one,) = findings.judge(finding, findings.frame(spread[:1], "seed000"), "seed000")
    assert one.verdict == "not resolved" and "seed-to-seed spread" in one.why and one.mean == pytest.approx(1.1)
    table = findings.table(findings.frame(spread[:1], "seed000"), "seed000", "seed000")
    assert any("one more of our seeds" in note for note in table.notes)


def test_published_sizes_come_from_the_sources():
    vae_iwae = registry.FINDINGS["iwae-below-vae-k5"].published(
        "paper", {"dataset": "mnist", "architecture": "200-200-50"}
    )
    assert vae_iwae == pytest.approx(85.54 - 86.47)
    seed000 = registry.FINDINGS["iwae-below-vae-k5"].published(
        "seed000", {"dataset": "mnist", "architecture": "200-200-50"}
    )
    assert seed000 == pytest.approx(87.02 - 97.33)
    assert registry.FINDINGS["vae-then-iwae-below-vae"].published("paper", {"dataset": "mnist"}) == pytest.approx(
        84.88 - 86.76
    )
    assert registry.FINDINGS["fixed-binarization-overfits"].published("paper", {}) == 3.5
    assert all(f.statistic in registry.STATISTICS and f.expect in "<>≠" for f in registry.FINDINGS.values())


@pytest.mark.parametrize("folder", sorted(p.name for p in (ROOT / "results/published").iterdir() if p.is_dir()))
def test_every_published_folder_matches_its_manifest(folder):
    outcome = Outcome()
    check_manifest(ROOT / "results/published" / folder, outcome)
    assert (ROOT / "results/published" / folder / "SHA256SUMS").is_file() and not outcome.failed, outcome.failed


@pytest.mark.parametrize(
    "folder", sorted(p.parent.name for p in (ROOT / "results/published").glob(f"*/{publish.EXPERIMENTS}"))
)
def test_every_published_table_is_what_the_code_builds_from_its_records(folder):
    """A published folder with its run records: each of its tables, findings and cost tables
    is what this revision builds from them (`iwae verify`; republish with `report_only` when a
    change to the tables moves one)."""
    outcome = Outcome()
    check_tables(ROOT / "results/published" / folder, outcome)
    assert not outcome.failed, outcome.failed


def test_the_readme_quotes_published_tables_verbatim():
    """The README's findings and tables are the published files themselves (`iwae report
    quote` writes them), so they cannot drift from the numbers."""
    from iwae.report.document import QUOTE, quoted

    text = (ROOT / "README.md").read_text()
    assert QUOTE.findall(text)
    assert quoted(text, ROOT) == text, "run `python -m iwae report quote` after publishing"
