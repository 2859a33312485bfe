"""Checkpoints and model files: what a run leaves on disk, and reading it back safely.

    checkpoints/ckpt-<epoch>-<step>.pt   the newest two checkpoints of a run in progress;
                                         a corrupt newest one falls back to the older one
    model.pt                             a finished run: model state, optimizer state,
                                         training configuration and dataset name (and
                                         the parameters' snapshots, if training kept any)

Both carry a format number; a checkpoint also carries the fingerprint of the configuration
that wrote it (`TrainConfig.fingerprint`), so that it only resumes the same trajectory.
"""

from __future__ import annotations

from pathlib import Path

import torch

from iwae.errors import UserError
from iwae.files import write_torch

CHECKPOINT_FORMAT = 1
KEEP_CHECKPOINTS = 2


class CheckpointStore:
    def __init__(self, directory: Path, fingerprint: str):
        self.directory = Path(directory)
        self.fingerprint = fingerprint

    def paths(self) -> list[Path]:
        return sorted(self.directory.glob("ckpt-*.pt"), reverse=True)

    def save(self, state: dict, global_epoch: int, step: int) -> Path:
        path = self.directory / f"ckpt-{global_epoch:06d}-{step:07d}.pt"
        write_torch(path, {"format": CHECKPOINT_FORMAT, "fingerprint": self.fingerprint, **state})
        for old in self.paths()[KEEP_CHECKPOINTS:]:
            old.unlink(missing_ok=True)
        return path

    def latest(self, say) -> dict | None:
        """The newest checkpoint that loads and belongs to this configuration."""
        for path in self.paths():
            try:
                state = torch.load(path, map_location="cpu", weights_only=True)
            except Exception as e:  # a damaged file: say so and try the previous one
                say(f"checkpoint {path} is unreadable ({type(e).__name__}); trying an older one")
                continue
            if state.get("format") != CHECKPOINT_FORMAT or state.get("fingerprint") != self.fingerprint:
                raise UserError(
                    f"{path}: a checkpoint of another configuration (its options, dataset or first stage differ); "
                    f"start over with --restart, or delete {self.directory.parent}"
                )
            state["path"] = path
            return state
        return None


def save_model_file(
    path: Path, model, optimizer_state: dict, config: dict, dataset: str, snapshots: list | None = None
) -> None:
    """`snapshots`: the parameters at earlier points of training ({"epoch", "params"}), kept
    in the model file for figures of training's course."""
    state = {
        "format": CHECKPOINT_FORMAT,
        "model": model.state(),
        "optimizer": on_cpu(optimizer_state),
        "config": config,
        "dataset": dataset,
        **({"snapshots": snapshots} if snapshots is not None else {}),
    }
    write_torch(path, state)


def load_model_file(path: Path) -> dict:
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except FileNotFoundError:
        raise UserError(f"{path}: no such model file") from None
    except Exception as e:
        raise UserError(f"{path}: not a model file ({type(e).__name__})") from None
    if (
        not isinstance(state, dict)
        or state.get("format") != CHECKPOINT_FORMAT
        or not isinstance(state.get("model"), dict)
    ):
        raise UserError(f"{path}: not a model file written by this version")
    params = state["model"].get("params")
    if not torch.is_tensor(params) or not bool(torch.isfinite(params).all()):
        raise UserError(f"{path}: its parameters are missing or not finite (NaN or infinite); not a usable model")
    if not isinstance(state.get("config"), dict):
        raise UserError(f"{path}: not a model file written by this version (no training configuration)")
    return state


def load_model(path: Path, device="cpu"):
    """The model of a model file (any family), on `device`."""
    return model_of(load_model_file(Path(path)), path, device)


def model_of(state: dict, path: Path, device="cpu"):
    """The model of a loaded model file's state; a state that does not fit its own
    architecture (a parameter vector of the wrong size) is a one-line error naming `path`."""
    from iwae import models

    try:
        return models.from_state(state["model"], device)
    except (KeyError, RuntimeError, ValueError, TypeError) as e:
        why = str(e).splitlines()[0] if str(e) else type(e).__name__
        raise UserError(f"{path}: not a model file written by this version ({why})") from None


def on_cpu(state: dict) -> dict:
    return {k: v.cpu() if torch.is_tensor(v) else v for k, v in state.items()}
