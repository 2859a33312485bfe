"""Checkpoints: a run in progress, on disk, so that it resumes where it stopped.

    checkpoints/ckpt-<epoch>-<step>.pt   the newest two checkpoints of a run in progress;
                                         a corrupt newest one falls back to the older one

A checkpoint carries the file format of model files and the fingerprint of the configuration
that wrote it (`TrainConfig.fingerprint`), so that it only resumes the same trajectory.
"""

from __future__ import annotations

from pathlib import Path

import torch

from iwae.errors import UserError
from iwae.models.store import FILE_FORMAT
from iwae.system.files import write_torch

KEEP_CHECKPOINTS = 2


class CheckpointStore:
    def __init__(self, directory: Path, fingerprint: str):
        self.directory = Path(directory)
        self.fingerprint = fingerprint

    def paths(self) -> list[Path]:
        return sorted(self.directory.glob("ckpt-*.pt"), reverse=True)

    def save(self, state: dict, global_epoch: int, step: int) -> Path:
        path = self.directory / f"ckpt-{global_epoch:06d}-{step:07d}.pt"
        write_torch(path, {"format": FILE_FORMAT, "fingerprint": self.fingerprint, **state})
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
            if state.get("format") != FILE_FORMAT or state.get("fingerprint") != self.fingerprint:
                raise UserError(
                    f"{path}: a checkpoint of another configuration (its options, dataset or first stage differ); "
                    f"start over with --restart, or delete {self.directory.parent}"
                )
            state["path"] = path
            return state
        return None
