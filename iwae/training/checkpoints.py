"""Checkpoints: a run in progress, on disk, so that it resumes where it stopped.

    checkpoints/ckpt-<epoch>-<step>.pt   the newest two checkpoints of a run in progress;
                                         a corrupt newest one falls back to the older one

A checkpoint is the run's tensors (parameters, optimizer, the generator's state) and one
`TrainState`: where the run is, its log, its time, and what its callbacks keep. `save` and
`restore` are the only writer and reader of that file. It also carries the file format of
model files and the fingerprint of the configuration that wrote it
(`TrainConfig.fingerprint`), so that it only resumes the same trajectory.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import torch

from iwae.errors import UserError
from iwae.models.store import FILE_FORMAT, on_cpu
from iwae.system.files import write_torch

KEEP_CHECKPOINTS = 2
# the file's own entries; any other entry is a callback's (the learning curve, stage snapshots)
_OWN = ("format", "fingerprint", "path", "position", "params", "optimizer", "generator", "log", "elapsed", "resumes",
        "first_lr", "pilot", "perm", "epoch_sum", "epoch_seconds")  # fmt: skip


@dataclass
class Position:
    """The next thing to do: step `step` of epoch `epoch` (within stage `stage`)."""

    stage: int = 0
    epoch: int = 0
    step: int = 0


@dataclass
class InsideEpoch:
    """A checkpoint taken inside an epoch: the epoch's order of the training points, its
    running sum of the objective and its seconds so far."""

    perm: torch.Tensor
    total: torch.Tensor
    seconds: float


@dataclass
class TrainState:
    """What a checkpoint saves besides the run's tensors."""

    position: Position = field(default_factory=Position)
    log: list[dict] = field(default_factory=list)  # train_log.csv's rows
    elapsed: float = 0.0  # seconds of training, over every session
    resumes: int = 0
    first_lr: float | None = None  # the first stage's learning rate (the step-size pilot's choice)
    pilot: dict | None = None  # the pilot's objective per learning rate
    kept: dict = field(default_factory=dict)  # what the callbacks keep (learning curve, stage snapshots)
    inside: InsideEpoch | None = None  # where the checkpoint falls inside an epoch

    def epochs_done(self, epochs_per_stage: list[int]) -> int:
        return sum(epochs_per_stage[: self.position.stage]) + self.position.epoch


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


def save(run, state: TrainState) -> Path:
    """Save `run` (an `iwae.training.run.Run`: its parameters, optimizer and generator) at
    `state`; the file's name sorts in training order."""
    saved = {
        "position": vars(state.position),
        "params": run.model.buffer.data.cpu().clone(),
        "optimizer": on_cpu(run.opt.state_dict()),
        "generator": run.gen.get_state(),
        "log": state.log,
        "elapsed": state.elapsed,
        "resumes": state.resumes,
        "first_lr": state.first_lr,
        "pilot": state.pilot,
        **state.kept,
    }
    if state.inside is not None:
        saved |= {"perm": state.inside.perm, "epoch_sum": state.inside.total, "epoch_seconds": state.inside.seconds}
    return run.store.save(saved, state.epochs_done(run.cfg.epochs_per_stage), state.position.step)


def restore(run) -> TrainState | None:
    """Load `run`'s newest valid checkpoint into its parameters, optimizer and generator, and
    return its state (one more resume); None where there is none."""
    found = run.store.latest(run.say)
    if found is None:
        return None
    run.model.buffer.data.copy_(found["params"])
    run.opt.load_state_dict(found["optimizer"])
    run.gen.set_state(found["generator"])
    state = TrainState(Position(**found["position"]), found["log"], found["elapsed"], found["resumes"] + 1,
                       found.get("first_lr", run.cfg.lr), found.get("pilot"),
                       kept={k: v for k, v in found.items() if k not in _OWN})  # fmt: skip
    if state.position.step > 0:  # only a checkpoint taken inside an epoch holds its order
        state.inside = InsideEpoch(found["perm"], found["epoch_sum"], found["epoch_seconds"])
    run.say(f"{run.name}: resuming from {found['path'].name} (stage {state.position.stage + 1}, "
            f"epoch {state.position.epoch + 1})")  # fmt: skip
    return state
