"""What happens as a run trains, besides the protocol itself: each a callback the trainer calls
at fixed moments, in the order it holds them (minGPT's trainer callbacks are the model).

    TrainingLog    the epoch log: checkpoints/train_log.csv as the run goes, train_log.csv at its end
    Validation     L_k on validation points every `valid_every` epochs, in the log's valid_bound
    StageSnapshots the parameters at the start and after every stage (`snapshot_stages`)
    ProgressReport the progress bar, or a line per stage
The learning curve against samples seen is one too (`iwae.training.curves.LearningCurve`).
Checkpoints and stop requests are not callbacks: they are the protocol's (`iwae.training.loop`).

The contract is small. A callback is made from the built run (`iwae.training.run`), taking
what it reads; each call then gets a `View` of where the run is, never the trainer. A
callback may keep state that a checkpoint carries (`state`, `restore`), and may name the steps
after which it must see the run (`pauses`: graphed steps pause there for the host).
"""

from __future__ import annotations

import csv
import io
import math
import time
from dataclasses import dataclass
from pathlib import Path

import torch

from iwae.data.datasets import subset
from iwae.estimators.likelihood import dataset_log_likelihood, default_chunk
from iwae.system.files import write_text
from iwae.system.progress import Progress

LOG_SECONDS = 5.0  # the log so far is written at most this often (and at every checkpoint and the end)
# load: the machine's 1-minute load average at the epoch's end, which its seconds are read against
LOG_COLUMNS = ["stage", "epoch", "stage_epoch", "lr", "objective", "seconds", "points_per_s", "load", "valid_bound"]


@dataclass(frozen=True)
class View:
    """What a callback sees of a run in progress."""

    stage: int  # the stage, from 0
    epoch: int  # the epoch within the stage, from 0
    step: int  # steps done in this epoch
    epochs_done: int  # epochs finished over the run
    steps_done: int  # steps taken over the run
    log: list[dict]  # train_log.csv's rows so far (to read, not to change)


class Callback:
    pauses: tuple[int, ...] = ()  # steps of the run after which `after_steps` must see the run

    def start(self, resumed: bool) -> None:
        """The run starts, from a checkpoint (`resumed`) or from its initialisation."""

    def after_steps(self, view: View) -> None:
        """After a step, or a replay of a graph of steps."""

    def log_row(self, view: View, row: dict) -> None:
        """An epoch's row of train_log.csv is being made; a callback may fill its columns."""

    def after_epoch(self, view: View, last_of_stage: bool) -> None:
        """After an epoch and its log row."""

    def after_stage(self, view: View) -> None:
        pass

    def after_checkpoint(self, view: View) -> None:
        pass

    def finish(self, view: View, record: dict) -> None:
        """The run has finished: write what is left; `record` is train.json's."""

    def state(self) -> dict:
        """What a checkpoint keeps of this callback."""
        return {}

    def restore(self, kept: dict) -> None:
        """Take back what `state` gave a checkpoint (`kept`: every callback's entries)."""

    def close(self) -> None:
        """The run is over, finished or not."""


class TrainingLog(Callback):
    """The run's log, one row per epoch, rewritten whole: as the run goes, to `progress` (beside
    the checkpoints, which a workflow manager neither deletes nor restores, so that a killed
    job's log shows how far it got), and once the run has finished, to `path` (a job's
    output: Snakemake gives a failed retrain's previous log back with its model)."""

    def __init__(self, path: Path, progress: Path, total_epochs: int):
        self.path, self.progress, self.total_epochs = path, progress, total_epochs

    def start(self, resumed):
        self.written = -math.inf

    def after_epoch(self, view, last_of_stage):
        if time.monotonic() - self.written > LOG_SECONDS or view.epochs_done == self.total_epochs:
            self.write(self.progress, view.log)  # not after every short epoch

    def after_checkpoint(self, view):
        self.write(self.progress, view.log)

    def finish(self, view, record):
        self.write(self.progress, view.log)
        self.write(self.path, view.log)

    def write(self, path: Path, log: list[dict]) -> None:
        buf = io.StringIO()
        writer = csv.DictWriter(buf, LOG_COLUMNS)
        writer.writeheader()
        writer.writerows(log)
        write_text(path, buf.getvalue())
        self.written = time.monotonic()


class Validation(Callback):
    """The mean L_k (`valid_k`) over validation points, every `valid_every` epochs and at the
    end: the log's valid_bound. The points have the bits evaluation gives them
    (`Data.binarized`, its seed `eval_seed`), a random subset if asked; each estimate
    draws from a stream of its own (seeded by the run and the epoch), so that neither training
    nor resumption sees it."""

    def __init__(self, run):
        cfg = self.cfg = run.cfg
        x = run.data.binarized("valid", cfg.eval_seed, not run.binarize)
        chosen = subset(x.shape[0], cfg.valid_points).to(run.device)
        self.x = x[chosen]
        self.condition = run.data.one_hot_labels("valid")[chosen] if run.c is not None else None
        self.backend, self.device = run.backend, run.device

    def log_row(self, view, row):
        cfg, done = self.cfg, view.epochs_done
        if done % cfg.valid_every == 0 or done == cfg.total_epochs:
            gen = torch.Generator(device=self.device).manual_seed(cfg.seed * 100_003 + done)
            ll = dataset_log_likelihood(
                self.backend, self.x, cfg.valid_k, gen, 20, default_chunk(self.device, 20), condition=self.condition
            )
            row["valid_bound"] = ll.mean().item()


class StageSnapshots(Callback):
    """The parameters at the start and after every stage (for the figure of prior samples as
    training goes), kept in the checkpoints and the model file."""

    def __init__(self, params: torch.Tensor):
        self.params = params

    def start(self, resumed):
        if not resumed:
            self.snapshots = [self.snapshot(0)]

    def after_epoch(self, view, last_of_stage):
        if last_of_stage:
            self.snapshots.append(self.snapshot(view.epochs_done))

    def snapshot(self, epoch: int) -> dict:
        return {"epoch": epoch, "params": self.params.cpu().clone()}

    def state(self):
        return {"snapshots": self.snapshots}

    def restore(self, kept):
        self.snapshots = kept.get("snapshots")


class ProgressReport(Callback):
    """A progress bar over epochs where one is shown, else a line per stage."""

    def __init__(self, name: str, epochs_per_stage: list[int], say, enabled: bool | None):
        self.name, self.stages, self.say = name, len(epochs_per_stage), say
        self.bar = Progress(sum(epochs_per_stage), name, enabled=enabled)

    def after_epoch(self, view, last_of_stage):
        self.bar.update(
            view.epochs_done, f"stage {view.stage + 1}/{self.stages} objective {view.log[-1]['objective']:.2f}"
        )

    def after_stage(self, view):
        if not self.bar.enabled:
            self.say(
                f"{self.name}: stage {view.stage + 1}/{self.stages} done, objective {view.log[-1]['objective']:.3f}"
            )

    def close(self) -> None:
        self.bar.close()
