"""The configuration of one training run: the paper's protocol by default, every deviation
a named option. Values are validated here, with errors that name the key at fault.

Fields marked runtime (device, threads, checkpoint interval) decide where and how fast a run
goes, not what it computes; they are left out of the fingerprint that guards resumption.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import math
from dataclasses import dataclass, field
from typing import Any

from iwae.architecture import Architecture
from iwae.errors import UserError

PAPER_EPOCHS = [3**i for i in range(8)]  # 1, 3, ..., 2187: 3,280 epochs in 8 stages


def _opt(default, help: str, **kw):
    """A configuration field with its help text (shown by `python -m iwae train --help`)."""
    if isinstance(default, list):
        return field(default_factory=lambda: list(default), metadata={"help": help, **kw})
    return field(default=default, metadata={"help": help, **kw})


@dataclass
class TrainConfig:
    data: str = _opt("", "prepared dataset (.npz) written by `iwae prepare`")
    layers: str = _opt("1", "stochastic layers: 1 or 2 (the paper's), or a spec like '200-200-100/100-100-50'")
    objective: str = _opt("iwae", "vae, iwae, miwae-m<M>, piwae-m<M>, ciwae-b<beta>, stl or dreg")
    k: int = _opt(1, "samples per data point")
    seed: int = _opt(1, "seed of the run's random stream (initialisation, shuffling, binarisation, samples)")
    epochs_per_stage: list[int] = _opt(PAPER_EPOCHS, "epochs of each stage (paper: 1,3,...,2187)")
    lr: float = _opt(1e-3, "learning rate of the first stage")
    lr_decade_stages: float = _opt(7.0, "stage i uses lr * 10^(-i / this): tenfold decay over 7 stages")
    lr_rounding: str = _opt("none", "'official': round as the official code, 1e-4 * round(1e4 * lr, 1)")
    batch_size: int = _opt(20, "minibatch size")
    optimizer: str = _opt("adam", "'adam' (paper) or 'adam-official' (the official code's update, see iwae.optim)")
    adam_beta1: float = _opt(0.9, "Adam beta1 (paper 0.9; the official code ran with 0.99)")
    adam_beta2: float = _opt(0.999, "Adam beta2")
    adam_eps: float = _opt(1e-4, "Adam epsilon")
    shuffle: bool = _opt(True, "reshuffle the training set every epoch (the official code never did)")
    train_subset: int | None = _opt(None, "train on the first N training points only (smoke tests)")
    init: str = _opt("glorot", "'glorot' (paper) or 'official': every layer drawn from RandomState(123)")
    init_from: str | None = _opt(
        None, "a finished run's model.pt to continue from, parameters and optimizer state (two-stage runs)"
    )
    device: str = _opt("auto", "'auto' (CUDA when present), 'cpu', 'cuda' or 'cuda:N'", runtime=True)
    threads: int | None = _opt(None, "CPU threads (default: PyTorch's choice)", runtime=True)
    checkpoint_minutes: float = _opt(10.0, "write a checkpoint at least this often inside long stages", runtime=True)

    def __post_init__(self):
        self.validate()

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> TrainConfig:
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(values) - known)
        if unknown:
            raise UserError(f"unknown training option {unknown[0]!r} (known: {', '.join(sorted(known))})")
        return cls(**values)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def validate(self) -> None:
        from iwae.objectives import Objective  # imports PyTorch: only when a run is configured
        from iwae.optim import VARIANTS as OPTIMIZERS

        def need(ok: bool, key: str, why: str):
            if not ok:
                raise UserError(f"{key}: {getattr(self, key)!r} {why}")

        need(bool(self.data), "data", "must name a prepared dataset (.npz)")
        self.layers = str(self.layers)
        Architecture.parse(self.layers)
        objective = Objective.parse(self.objective)
        need(isinstance(self.k, int) and self.k >= 1, "k", "must be a positive integer")
        objective.check_samples(self.k)
        need(isinstance(self.seed, int) and self.seed >= 0, "seed", "must be a non-negative integer")
        need(
            isinstance(self.epochs_per_stage, list)
            and len(self.epochs_per_stage) > 0
            and all(isinstance(e, int) and e >= 1 for e in self.epochs_per_stage),
            "epochs_per_stage",
            "must be a non-empty list of positive integers",
        )
        for key in ("lr", "lr_decade_stages", "adam_eps", "checkpoint_minutes"):
            value = getattr(self, key)
            need(isinstance(value, (int, float)) and math.isfinite(value) and value > 0, key, "must be positive")
        need(self.lr_rounding in ("none", "official"), "lr_rounding", "must be 'none' or 'official'")
        need(isinstance(self.batch_size, int) and self.batch_size >= 1, "batch_size", "must be a positive integer")
        need(self.optimizer in OPTIMIZERS, "optimizer", f"must be one of {', '.join(OPTIMIZERS)}")
        for key in ("adam_beta1", "adam_beta2"):
            value = getattr(self, key)
            need(isinstance(value, (int, float)) and 0 <= value < 1, key, "must lie in [0, 1)")
        need(isinstance(self.shuffle, bool), "shuffle", "must be true or false")
        need(
            self.train_subset is None or (isinstance(self.train_subset, int) and self.train_subset >= 1),
            "train_subset",
            "must be a positive integer or null",
        )
        need(self.init in ("glorot", "official"), "init", "must be 'glorot' or 'official'")
        need(
            self.threads is None or (isinstance(self.threads, int) and self.threads >= 1),
            "threads",
            "must be a positive integer or null",
        )
        need(
            self.device == "auto" or self.device == "cpu" or str(self.device).startswith("cuda"),
            "device",
            "must be 'auto', 'cpu', 'cuda' or 'cuda:N'",
        )

    def learning_rate(self, stage: int) -> float:
        lr = self.lr * 10.0 ** (-stage / self.lr_decade_stages)
        if self.lr_rounding == "official":
            lr = 1e-4 * round(lr * 1e4, 1)
        return lr

    @property
    def total_epochs(self) -> int:
        return sum(self.epochs_per_stage)

    def fingerprint(self, data_sources: list | None = None) -> str:
        """Identifies the training trajectory: a checkpoint only resumes a run with the same."""
        runtime = {f.name for f in dataclasses.fields(self) if f.metadata.get("runtime")} | {"data"}
        values = {k: v for k, v in self.to_dict().items() if k not in runtime}
        values["data_sources"] = data_sources
        return hashlib.sha256(json.dumps(values, sort_keys=True).encode()).hexdigest()[:16]
