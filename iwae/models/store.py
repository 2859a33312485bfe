"""Model files: what a finished run leaves (model.pt), written and read back safely.

    model.pt   model state, optimizer state, training configuration and dataset name (and
               the parameters' snapshots, if training kept any)

A model file carries a format number (checkpoints share it); a damaged or foreign file, or
one whose parameters are not finite or do not fit their architecture, is a one-line error.
"""

from __future__ import annotations

from pathlib import Path

import torch

from iwae.errors import UserError
from iwae.models import from_state
from iwae.system.files import write_torch

FILE_FORMAT = 1  # of model files and checkpoints


def save_model_file(
    path: Path, model, optimizer_state: dict, config: dict, dataset: str, snapshots: list | None = None
) -> None:
    """`snapshots`: the parameters at earlier points of training ({"epoch", "params"}), kept
    in the model file for figures of training's course."""
    state = {
        "format": FILE_FORMAT,
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
    if not isinstance(state, dict) or state.get("format") != FILE_FORMAT or not isinstance(state.get("model"), dict):
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
    try:
        return from_state(state["model"], device)
    except (KeyError, RuntimeError, ValueError, TypeError) as e:
        why = str(e).splitlines()[0] if str(e) else type(e).__name__
        raise UserError(f"{path}: not a model file written by this version ({why})") from None


def on_cpu(state: dict) -> dict:
    return {k: v.cpu() if torch.is_tensor(v) else v for k, v in state.items()}
