"""Finished runs in Python: `iwae.load_run("results/quick/runs/table1/mnist-1l-iwae-k50-s1")`.

A finished run is its directory: model.pt (parameters and configuration), train.json (the
training record) and, once evaluated, eval.json. `load_run` reads them, refusing a corrupt
or foreign file with the one-line error the command line gives, and returns a `Run` whose
model answers in tensors:

    run = iwae.load_run("results/quick/runs/table1/mnist-1l-iwae-k50-s1", device="cpu")
    run.config["k"], run.eval["test"]["nll"]
    x = run.test_set()[:10]                  # the test set binarised as evaluation does
    run.log_likelihood(x, k=5000)            # L_5000 per point (float64)
    run.log_weights(x, k=50)                 # (50, 10) log importance weights
    run.sample(16), run.reconstruct(x), run.posterior_means(x)

A model conditioned on the label takes `condition=` (one-hot rows) in each of these.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from iwae.data import datasets
from iwae.errors import UserError
from iwae.estimators.likelihood import dataset_log_likelihood, default_chunk
from iwae.models.store import load_model_file, model_of
from iwae.plan.config import binarisation_seed


@dataclass
class Run:
    path: Path
    model: Any  # the model family's object (iwae.models)
    config: dict  # the training configuration (TrainConfig's keys)
    dataset: str
    train: dict = field(default_factory=dict)  # train.json
    eval: dict | None = None  # eval.json, once evaluated
    device: torch.device = torch.device("cpu")

    @property
    def name(self) -> str:
        return self.path.name

    def _given(self, condition: Tensor | None) -> dict:
        if condition is None:
            if getattr(self.model, "condition_dim", 0):
                raise UserError(f"run {self.name}: the model is conditioned on the label; pass condition=")
            return {}
        return {"condition": condition.to(self.device, self.model.dtype)}

    def _x(self, x: Tensor) -> Tensor:
        return torch.as_tensor(x).to(self.device, self.model.dtype)

    @torch.no_grad()
    def log_weights(self, x: Tensor, k: int, generator=None, condition: Tensor | None = None) -> Tensor:
        """(k, B) log importance weights log p(x, h) - log q(h | x) of k samples per row."""
        return self.model.log_weights(self._x(x), k, generator, **self._given(condition))

    def log_likelihood(self, x: Tensor, k: int = 5000, generator=None, condition: Tensor | None = None,
                       chunk: int | None = None) -> Tensor:  # fmt: skip
        """L_k per row of x (float64), the samples drawn in bounded chunks as evaluation does."""
        generator = generator or torch.Generator(device=self.device).manual_seed(0)
        x = self._x(x)
        c = self._given(condition).get("condition")
        return dataset_log_likelihood(self.model, x, k, generator, 20, chunk or default_chunk(self.device, 20),
                                      condition=c)  # fmt: skip

    def sample(self, n: int, generator=None, condition: Tensor | None = None) -> Tensor:
        """Means of p(x | h) for n draws of h from the prior (n rows of `condition`)."""
        return self.model.sample(n, generator, **self._given(condition))

    def reconstruct(self, x: Tensor, generator=None, condition: Tensor | None = None) -> Tensor:
        return self.model.reconstruct(self._x(x), generator, **self._given(condition))

    def posterior_means(self, x: Tensor, generator=None, condition: Tensor | None = None) -> list[Tensor]:
        """E_q[h_j | h_j-1] per stochastic layer (as the active-unit count takes them)."""
        return self.model.posterior_means(self._x(x), generator, **self._given(condition))

    def test_set(self, data: str | Path | None = None, seed: int | None = None) -> Tensor:
        """The run's test set, binarised once as its evaluation did (the seed its eval.json
        records; else the one it trained with, evaluation's default); from the prepared file
        it trained on, or `data`."""
        seed = binarisation_seed(self.config, self.eval) if seed is None else seed

        path = Path(data or self.config["data"])
        if not path.is_absolute() and not path.exists():
            # a workflow's path is relative to its working directory: the nearest one above
            # the run that holds it (results/<configuration>/runs/<exp>/<run> in a workflow)
            found = [d / path for d in self.path.resolve().parents if (d / path).exists()]
            if not found:
                raise UserError(f"run {self.name}: its dataset {path} is neither here nor above the run; pass data=")
            path = found[0]
        return datasets.load(path).binarized("test", seed, self.config.get("grey_levels", False)).to(self.device)


def load_run(path: str | Path, device: str | torch.device = "cpu") -> Run:
    """A finished run from its directory (or its model.pt), on `device` ('cpu', 'cuda', ...)."""
    path = Path(path)
    directory = path.parent if path.suffix == ".pt" else path
    if not directory.is_dir():
        raise UserError(f"{directory}: no such run directory")
    state = load_model_file(directory / "model.pt")
    device = torch.device(device)
    model = model_of(state, directory / "model.pt", device)
    records = {}
    for name in ("train", "eval"):
        file = directory / f"{name}.json"
        if file.exists():
            try:
                records[name] = json.loads(file.read_text())
            except (UnicodeDecodeError, json.JSONDecodeError) as e:
                raise UserError(f"{file}: not a readable JSON record ({e})") from None
            if not isinstance(records[name], dict):
                kind = {"train": "a training", "eval": "an evaluation"}[name]
                raise UserError(f"{file}: not {kind} record (a JSON {type(records[name]).__name__}, not an object)")
    return Run(directory, model, state["config"], state["dataset"], records.get("train", {}), records.get("eval"),
               device)  # fmt: skip
