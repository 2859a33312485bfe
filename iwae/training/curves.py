"""Learning curves against training samples seen (Kingma & Welling's figures 2 and 3).

At log-spaced numbers of training samples evaluated (`curve_per_decade` per decade, the
first step and the last), the run's own bound (its objective's, e.g. KW's estimator B) on
its whole training set and on the whole test set, both binarised once (the test set exactly
as evaluation binarises it, with its seed `eval_seed`; the training set from a stream of that
seed too); with `curve_ml_points` also KW's HMC estimate of the
marginal likelihood (`iwae.estimators.marginal`) and L_k on that many random training and test points.
Each point has its own random stream, seeded by the run and the step, so training and
resumption are unchanged and a point computed again after a resume has the same value.
Rows go into the run's checkpoints, so a resumed run keeps them, to checkpoints/curve.csv as the
run goes and to curve.csv in the run directory at its end.
"""

from __future__ import annotations

import csv
import io
import math
import time

import torch

from iwae.data.datasets import subset
from iwae.estimators.likelihood import dataset_log_likelihood, default_chunk
from iwae.estimators.marginal import HMCConfig, log_marginal
from iwae.system.files import write_text
from iwae.training.callbacks import Callback

COLUMNS = ["samples", "step", "epoch", "train_bound", "test_bound", "train_ml", "test_ml", "train_lk", "test_lk",
           "ml_accept", "seconds"]  # fmt: skip
ML_CHECK_K = 5000  # L_k beside the HMC estimate, as a check


def curve_steps(total_steps: int, batch: int, per_decade: int) -> list[int]:
    """Steps after which a curve point is due: the first step at which the samples seen reach
    each 10^(j / per_decade), j = 0, 1, ..., and the last step."""
    steps, j = {total_steps}, 0
    while (samples := 10 ** (j / per_decade)) <= total_steps * batch:
        steps.add(max(1, math.ceil(samples / batch - 1e-9)))
        j += 1
    return sorted(steps)


class LearningCurve(Callback):
    """The curve's points, computed as the run passes them (`after_steps`; graphed steps pause
    there), kept in its checkpoints, written beside them as the run goes (checkpoints/curve.csv)
    and to curve.csv at its end (as the epoch log is, `iwae.training.callbacks.TrainingLog`)."""

    def __init__(self, run):
        cfg = self.cfg = run.cfg
        self.n_batches = run.n_batches
        self.due_steps = set(curve_steps(cfg.total_epochs * run.n_batches, cfg.batch_size, cfg.curve_per_decade))
        self.pauses = tuple(sorted(self.due_steps))
        # the run's training points (a prefix of its split) with the bits evaluation gives them
        self.x_train = run.data.binarized(cfg.train_split, cfg.eval_seed, not run.binarize, rows=run.x.shape[0])
        self.x_test = run.data.binarized("test", cfg.eval_seed, not run.binarize)
        n = cfg.curve_ml_points
        self.ml_train = self.x_train[subset(self.x_train.shape[0], n).to(run.device)] if n else None
        self.ml_test = self.x_test[subset(self.x_test.shape[0], n).to(run.device)] if n else None
        self.model, self.backend, self.objective, self.device = run.model, run.backend, run.objective, run.device
        self.rows: list[dict] = []
        self.path, self.progress = run.out_dir / "curve.csv", run.store.directory / "curve.csv"

    def after_steps(self, view):
        if view.steps_done in self.due_steps:
            self.point(view.steps_done, view.epochs_done + view.step / self.n_batches)

    def state(self):
        return {"curve": self.rows}

    def restore(self, kept):
        self.rows = list(kept.get("curve", []))

    def finish(self, view, record):
        write(self.progress, self.rows)
        write(self.path, self.rows)
        record["curve"] = self.rows

    @torch.no_grad()
    def bound(self, x: torch.Tensor, generator) -> float:
        """The run's objective's bound, averaged over the rows of x."""
        k, objective = self.cfg.k, self.objective
        batch = max(1, 20_000 // k)
        total = 0.0
        for i in range(0, x.shape[0], batch):
            fp = self.backend.forward(x[i : i + batch], k, generator)
            terms = {name: fp.terms[name] for name in objective.terms} if objective.terms else None
            total += objective(fp.log_w, terms).bound.double().sum().item()
        return total / max(1, x.shape[0])

    def point(self, step: int, epoch: float) -> None:
        cfg, started = self.cfg, time.monotonic()
        gen = torch.Generator(device=self.device).manual_seed(cfg.seed * 1_000_003 + step)
        row = {"samples": step * cfg.batch_size, "step": step, "epoch": round(epoch, 4),
               "train_bound": self.bound(self.x_train, gen), "test_bound": self.bound(self.x_test, gen)}  # fmt: skip
        if self.ml_train is not None:
            for split, x in (("train", self.ml_train), ("test", self.ml_test)):
                ml, stats = log_marginal(self.model, x, HMCConfig(), gen)
                row[f"{split}_ml"] = ml.mean().item()
                row["ml_accept"] = round(stats["accept_rate"].mean().item(), 3)
                lk = dataset_log_likelihood(self.backend, x, ML_CHECK_K, gen, 20, default_chunk(self.device, 20))
                row[f"{split}_lk"] = lk.mean().item()
        row["seconds"] = round(time.monotonic() - started, 2)
        self.rows = [r for r in self.rows if r["step"] < step] + [row]
        write(self.progress, self.rows)


def write(path, rows: list[dict]) -> None:
    buf = io.StringIO()
    writer = csv.DictWriter(buf, COLUMNS)
    writer.writeheader()
    writer.writerows(rows)
    write_text(path, buf.getvalue())
