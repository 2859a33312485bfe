"""A run directory belongs to one training configuration.

A finished run is never trained over by another configuration unless the user asks for it
(`iwae train --restart`, or deleting the directory): the trainer and the workflow both ask
`conflict` first, and the refusal names the options that differ. Nothing is written or
deleted through a symbolic link that leads out of the run directory.

Importing this module does not import PyTorch (the workflow calls it while planning).
"""

from __future__ import annotations

import json
from pathlib import Path

from iwae.errors import UserError
from iwae.plan.config import TrainConfig

# what a run leaves in its directory: a new run of another configuration removes them all
RUN_FILES = ("model.pt", "train.json", "train_log.csv", "curve.csv", "eval.json")
CHECKPOINTS = "checkpoints"


def recorded_config(run_dir: Path) -> dict | None:
    """The training configuration of the finished run in `run_dir` (its train.json), if any."""
    path = Path(run_dir) / "train.json"
    if not path.is_file():
        return None
    try:
        record = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise UserError(f"{path}: not a readable training record ({type(e).__name__})") from None
    config = record.get("config") if isinstance(record, dict) else None
    if not isinstance(config, dict):
        raise UserError(f"{path}: not a training record (no configuration in it)")
    return config


def conflict(run_dir: Path, cfg: TrainConfig) -> str | None:
    """Why `run_dir` cannot take a run of `cfg`: it holds a finished run of another
    configuration (the differing options, listed), or None."""
    recorded = recorded_config(run_dir)
    if recorded is None:
        return None
    differences = cfg.differences(recorded)
    if not differences:
        return None
    shown = "; ".join(differences[:3]) + (f"; and {len(differences) - 3} more" if len(differences) > 3 else "")
    return f"{run_dir} holds a finished run of another configuration ({shown})"


def stray(run_dir: Path) -> str | None:
    """Why `run_dir` cannot take a new run: it holds a model or an evaluation but neither a
    training record nor checkpoints, so they are not a run that training could resume or
    finish (a file copied in, or left by another tool); None where it can."""
    run_dir = Path(run_dir)
    found = [name for name in ("model.pt", "eval.json") if (run_dir / name).exists()]
    if not found or (run_dir / "train.json").exists() or any((run_dir / CHECKPOINTS).glob("ckpt-*.pt")):
        return None
    return f"{run_dir} holds {' and '.join(found)} but no training record (train.json) or checkpoints of a run"


def check_contained(run_dir: Path) -> None:
    """Refuse a run directory whose checkpoints folder or run files are symbolic links that
    lead out of it: writing or deleting there would touch files elsewhere."""
    run_dir = Path(run_dir)
    if not run_dir.exists():
        return
    home = run_dir.resolve()
    for name in (CHECKPOINTS, *RUN_FILES):
        path = run_dir / name
        if path.is_symlink() and home not in path.resolve().parents:
            raise UserError(
                f"{path}: a symbolic link out of the run directory (to {path.resolve()}); refusing to write through it"
            )


def clear(run_dir: Path) -> list[Path]:
    """Remove what an earlier run left in `run_dir` (its files and checkpoints), so that no
    record of another model stays beside the new one; return what was removed."""
    run_dir = Path(run_dir)
    check_contained(run_dir)
    removed = []
    for name in RUN_FILES:
        path = run_dir / name
        if path.is_file() or path.is_symlink():
            path.unlink()
            removed.append(path)
    checkpoints = run_dir / CHECKPOINTS
    if checkpoints.is_dir():
        for path in checkpoints.glob("ckpt-*.pt"):
            path.unlink()
            removed.append(path)
    return removed
