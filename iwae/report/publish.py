"""A configuration's results as a published folder that anyone can check without training.

`publish` copies from a results root into results/published/<name>/:

    tables/            every table, its comparison with the published values and its findings
                       (.md, .tex, .html), summary.csv|md|html, cost.md|tex|html
    figures/           every figure as PNG, as under the results root
    runs/<experiment>/<run>/   eval.json, train.json, train_log.csv, curve.csv (and model.pt
                       where the configuration publishes its models)
    experiments.json   each experiment's title, layout, reference and runs, in the workflow's
                       order: what `rebuild` needs to build the tables again from the records
    SHA256SUMS         the digest of every other file, as `sha256sum -c` reads it (last)

The folder is built beside its place and then swapped in whole, so a reader never sees half
of it. `rebuild` builds every table and findings table again from the records alone: the
workflow's tables come out byte for byte (`iwae verify` checks it).
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

from iwae.data.sources import file_digest
from iwae.errors import UserError
from iwae.plan.paths import run_dir
from iwae.report import build
from iwae.system.files import write_text

EXPERIMENTS = "experiments.json"
MANIFEST = "SHA256SUMS"
RECORDS = ("eval.json", "train.json", "train_log.csv", "curve.csv")


def write_manifest(folder: Path) -> Path:
    """SHA256SUMS over every file of `folder` (but itself), sorted, as `sha256sum` writes it."""
    folder = Path(folder)
    names = sorted(str(p.relative_to(folder)) for p in folder.rglob("*") if p.is_file() and p.name != MANIFEST)
    text = "".join(f"{file_digest(folder / name, 'sha256')}  {name}\n" for name in names)
    write_text(folder / MANIFEST, text)
    return folder / MANIFEST


def publish(results: Path, out: Path, spec: dict, models: bool = False) -> Path:
    """Copy the results root's tables, figures and run records named by `spec` (the
    workflow's experiments.json) into `out`, replacing it whole; return its manifest."""
    results, out = Path(results), Path(out)
    staging = out.with_name(f".{out.name}.publishing")
    shutil.rmtree(staging, ignore_errors=True)
    try:
        for path in sorted((results / "tables").glob("*")):
            if path.suffix in (".md", ".tex", ".html", ".csv"):
                _copy(path, staging / "tables" / path.name)
        for path in sorted((results / "figures").rglob("*.png")):
            _copy(path, staging / "figures" / path.relative_to(results / "figures"))
        for experiment, run in _runs(spec):
            source = Path(run_dir(str(results), experiment, run))
            for name in RECORDS + (("model.pt",) if models else ()):
                if (source / name).is_file():
                    _copy(source / name, Path(run_dir(str(staging), experiment, run), name))
            if not (source / "eval.json").is_file():
                raise UserError(f"{source}: no eval.json; publish after the workflow has evaluated every run")
        write_text(staging / EXPERIMENTS, json.dumps(spec, indent=1, sort_keys=True) + "\n")
        write_manifest(staging)
        if out.exists():
            old = out.with_name(f".{out.name}.replaced")
            shutil.rmtree(old, ignore_errors=True)
            out.rename(old)
            staging.rename(out)
            shutil.rmtree(old)
        else:
            staging.rename(out)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return out / MANIFEST


def _copy(source: Path, target: Path) -> None:
    target.parent.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(source, target)


def _runs(spec: dict) -> list[tuple[str, str]]:
    runs = []
    for name, exp in spec["experiments"].items():
        runs += [(name, run) for run in exp["runs"]]
        runs += [tuple(first) for first in exp.get("first_stages", [])]
    return list(dict.fromkeys(runs))


def rebuild(root: Path, out: Path) -> list[Path]:
    """Every table, comparison, findings table and the summary of a published folder, built
    again from its run records into `out`/tables; returns the files written."""
    root, out = Path(root), Path(out)
    try:
        spec = json.loads((root / EXPERIMENTS).read_text())
        experiments = spec["experiments"]
    except (OSError, json.JSONDecodeError, KeyError, TypeError) as e:
        raise UserError(f"{root / EXPERIMENTS}: not a published folder's list of experiments ({e})") from None
    tables = out / "tables"
    before = set(tables.rglob("*")) if tables.exists() else set()
    for name, exp in experiments.items():
        evals = [Path(run_dir(str(root), name, run), "eval.json") for run in exp["runs"]]
        build.table(name, exp["layout"], evals, tables, exp["title"], exp["reference"], root=root)
        if exp.get("findings"):
            build.findings(name, evals, tables, exp["title"], exp["reference"], root=root)
    summary = [Path(run_dir(str(root), e, r), "eval.json") for e, r in spec.get("summary", [])]
    if summary:
        build.summary(summary, tables / "summary.csv", tables / "summary.md")
    return sorted(p for p in tables.rglob("*") if p.is_file() and p not in before)
