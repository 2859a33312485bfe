"""Run records (eval.json) as one pandas row per run, and their aggregation over seeds."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pandas as pd

from iwae.errors import UserError
from iwae.plan.architecture import Architecture
from iwae.plan.paths import RUNS

COLUMNS = [
    "experiment", "run", "dataset", "dataset_label", "layers", "architecture", "objective", "k", "seed",
    "nll", "nll_stderr", "test_points", "test_selection", "eval_k", "active_units", "active_total", "iwae64",
    "train_nll", "train_points", "valid_nll", "valid_points", "epochs", "train_seconds", "eval_seconds", "device", "torch", "git_revision",
    "eval_git_revision", "init_from", "random", "valid_k", "family", "latent", "hidden", "trained_on",
    "samples_seen", "grey_levels", "condition", "prior", "train_split", "run_dir", "shared_cells", "variant",
    "official_code",
]  # fmt: skip


def _selection(summary: dict) -> str:
    """How the evaluated points were chosen: 'all', 'random' or (older records) 'first'."""
    if "of" not in summary:
        return "first"
    return "all" if summary["points"] >= summary["of"] else "random"


def load_record(path: Path) -> dict:
    try:
        return json.loads(Path(path).read_text())
    except (OSError, json.JSONDecodeError) as e:
        raise UserError(f"{path}: not a readable evaluation record ({e})") from None


def row(path: Path, experiment: str | None = None) -> dict:
    """The flat summary of one run's eval.json (experiment: its folder by default)."""
    path = Path(path)
    rec = load_record(path)
    try:
        cfg = rec["training"]["config"]
        arch = Architecture.parse(cfg["layers"])
        train = rec.get("train") or {}
        bound64 = rec.get("bounds", {}).get("64")
        env = rec["training"].get("environment", rec["environment"])
        return {
            "experiment": experiment or path.parent.parent.name,
            "run": path.parent.name,
            "dataset": rec["training"]["data"]["dataset"],
            "dataset_label": rec["training"]["data"]["label"],
            "layers": arch.n_stochastic,
            "architecture": arch.spec(),
            "objective": cfg["objective"],
            "k": cfg["k"],
            "seed": cfg["seed"],
            "nll": rec["test"]["nll"],
            "nll_stderr": rec["test"]["stderr"],
            "test_points": rec["test"]["points"],
            "test_selection": _selection(rec["test"]),
            "eval_k": rec["k"],
            "active_units": "+".join(map(str, rec["active_units"]["per_layer"])),
            "active_total": sum(rec["active_units"]["per_layer"]),
            "iwae64": bound64["log_likelihood"] if bound64 else math.nan,
            "train_nll": train.get("nll", math.nan),
            "train_points": train.get("points", 0),
            "valid_nll": (rec.get("valid") or {}).get("nll", math.nan),
            "valid_points": (rec.get("valid") or {}).get("points", 0),
            "epochs": rec["training"]["epochs"],
            "train_seconds": rec["training"]["train_seconds"],
            "eval_seconds": rec["eval_seconds"],
            "device": env.get("device_name", env.get("device")),
            "torch": env.get("torch"),
            "git_revision": (env.get("git") or {}).get("revision"),  # of the training
            "eval_git_revision": (rec["environment"].get("git") or {}).get("revision"),
            "init_from": cfg.get("init_from"),
            "random": cfg.get("random", "none"),
            "valid_k": cfg.get("valid_k", 2000),
            "family": cfg.get("family", "layered"),
            "latent": arch.latent_sizes[-1],
            "hidden": (arch.layers[0].hidden or (0,))[0],
            "trained_on": rec["training"].get("train_points"),
            "samples_seen": (rec["training"].get("steps") or 0) * cfg.get("batch_size", 20),
            "grey_levels": bool(cfg.get("grey_levels", False)),
            "condition": cfg.get("condition", "none"),
            "prior": cfg.get("prior", "standard"),
            "train_split": cfg.get("train_split", "train"),
            "run_dir": str(path.parent),
            "shared_cells": "+".join(cfg.get("shared_cells") or []),  # the other objectives it stands for
            "variant": cfg.get("variant") or "",  # its protocol variant's name in its experiment
            "official_code": bool(cfg.get("official_code", False)),
            "record": rec,  # the whole record, for the tables and figures that need more of it
        }
    except (KeyError, TypeError) as e:
        raise UserError(f"{path}: evaluation record lacks {e}") from None


def frame(paths: list[Path], experiment: str | None = None) -> pd.DataFrame:
    """One row per run: the COLUMNS of summary.csv, and its whole eval.json as `record`."""
    if not paths:
        raise UserError("no evaluation records given")
    return pd.DataFrame([row(p, experiment) for p in paths], columns=[*COLUMNS, "record"])


def cells(df: pd.DataFrame) -> pd.DataFrame:
    """One row per table cell: a run that also fills the cells of other objectives (being the
    same objective at its k, e.g. IWAE and the VAE with k = 1; `shared_cells`) appears again
    under each of them, `filled_by` naming the objective it trained."""
    rows = df.assign(filled_by="").to_dict("records")
    for run in [r for r in rows if r["shared_cells"]]:
        for objective in run["shared_cells"].split("+"):
            cell = {**run, "objective": objective, "filled_by": run["objective"]}
            # where the grid has it: before the same objective's larger k, else at the end
            later = [i for i, r in enumerate(rows) if r["objective"] == objective and r["k"] > cell["k"]
                     and (r["dataset"], r["architecture"]) == (cell["dataset"], cell["architecture"])]  # fmt: skip
            rows.insert(later[0] if later else len(rows), cell)
    return pd.DataFrame(rows, columns=[*df.columns, "filled_by"])


def aggregate(df: pd.DataFrame, keys: list[str]) -> pd.DataFrame:
    """Mean, standard deviation and count over seeds for each group of `keys`.

    Active units are averaged per layer ("16.5+5.0"), or shown as integers for one seed.
    """

    def units(series: pd.Series) -> str:
        per_layer = pd.DataFrame([list(map(int, s.split("+"))) for s in series])
        means = per_layer.mean()
        if len(series) == 1:
            return "+".join(str(int(v)) for v in means)
        return "+".join(f"{v:.1f}" for v in means)

    if "valid_nll" not in df.columns:  # frames built before the column existed
        df = df.assign(valid_nll=math.nan)
    out = (
        df.groupby(keys, sort=False)
        .agg(
            nll=("nll", "mean"),
            nll_sd=("nll", "std"),
            nll_stderr=("nll_stderr", "mean"),
            n=("nll", "size"),
            active_units=("active_units", units),
            active_total=("active_total", "mean"),
            active_total_sd=("active_total", "std"),
            iwae64=("iwae64", "mean"),
            iwae64_sd=("iwae64", "std"),
            train_nll=("train_nll", "mean"),
            train_nll_sd=("train_nll", "std"),
            valid_nll=("valid_nll", "mean"),
            valid_nll_sd=("valid_nll", "std"),
            dataset_label=("dataset_label", "first"),
            test_points=("test_points", "min"),
            test_selection=("test_selection", "first"),
            eval_k=("eval_k", "first"),
        )
        .reset_index()
    )
    return out


def relocated(path: str | Path, root: Path) -> Path:
    """A run file named as the workflow wrote it (`results/<config>/runs/<experiment>/<run>/
    model.pt`), in a published folder or results root `root` where it is not where it was."""
    path = Path(path)
    if path.exists():
        return path
    parts = path.parts
    if RUNS in parts:
        i = len(parts) - 1 - parts[::-1].index(RUNS)
        moved = Path(root, *parts[i:])
        if moved.exists() or moved.with_name("eval.json").exists():
            return moved
    return path
