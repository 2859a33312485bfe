"""The configuration of one training run (`TrainConfig`) and of one evaluation (`EvalConfig`):
the paper's protocol by default, every deviation a named option. Values are validated here,
with errors that name the key at fault. Each field is a config key of the workflow (in
`protocol:` or `evaluation:`) and a command-line flag (`python -m iwae train|evaluate`).

Fields marked runtime (device, threads, checkpoint interval, backend, chunk) decide where and
how fast a run goes, not what it computes; they are left out of the fingerprint that guards
resumption, as are fields marked record (what the run's record says of it, e.g. the table
cells it fills). Fields marked workflow are read by the workflow only (which figures to draw).

Importing this module does not import PyTorch, so that configuration checks start fast.
"""

from __future__ import annotations

import argparse
import dataclasses
import hashlib
import json
import math
import typing
from dataclasses import dataclass, field
from typing import Any

import yaml

from iwae.errors import UserError
from iwae.estimators.objectives import Objective, specs
from iwae.plan.architecture import Architecture
from iwae.plan.vocabulary import BACKENDS, FAMILIES, LIKELIHOODS, PRIORS, RANDOM_WEIGHTS, choices

PAPER_EPOCHS = [3**i for i in range(8)]  # 1, 3, ..., 2187: 3,280 epochs in 8 stages
OPTIMIZERS = ("adam", "adam-official", "adagrad")
SAMPLING = ("epochs", "replacement")
TRAIN_SPLITS = ("train", "train+valid")
REDUCTIONS = ("mean", "sum")
# The seed of the one-off binarisation of the test (and validation) points: evaluation's
# `seed`, which the workflow also hands to training (`eval_seed`) for the learning-curve and
# validation estimates, and which a run's record keeps for whoever reads it later
# (`binarisation_seed`), so that every estimate of a run sees the same bits of a point.
BINARISATION_SEED = 123

# Where the official code (yburda/iwae) departs from the paper's text, each its own option;
# `official_code: true` selects them all at once (the paper's values stay the defaults).
OFFICIAL_CODE = {
    "optimizer": "adam-official",  # optimizers.py: moments start at 0 and 1, the step lags a gradient
    "adam_beta1": 0.99,  # optimizers.Adam's default; experiments.py passes only the learning rate
    "lr_rounding": "official",  # 1e-3, 7.2e-4, 5.2e-4, ...
    "reduction": "sum",  # iwae.py ascends the gradient of the minibatch sum
    "init": "official",  # every layer drawn from RandomState(123)
    "shuffle": False,  # one order of the training set for every epoch
}


def _opt(default, help: str, **kw):
    """A configuration field with its help text (shown by `python -m iwae <verb> --help`)."""
    if isinstance(default, list):
        return field(default_factory=lambda: list(default), metadata={"help": help, **kw})
    return field(default=default, metadata={"help": help, **kw})


class _Options:
    """What TrainConfig and EvalConfig share: construction from a mapping, checks, flags."""

    @classmethod
    def from_dict(cls, values: dict[str, Any], where: str = "") -> _Options:
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(values) - known)
        if unknown:
            raise UserError(
                f"{where + ': ' if where else ''}unknown {cls.KIND} option {unknown[0]!r} (known: {', '.join(sorted(known))})"
            )
        try:
            return cls(**values)
        except UserError as e:
            raise UserError(f"{where}: {e}" if where else str(e)) from None

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def _need(self, ok: bool, key: str, why: str) -> None:
        if not ok:
            raise UserError(f"{key}: {getattr(self, key)!r} {why}")

    def _positive_int(self, key: str, allow_none: bool = False) -> None:
        value = getattr(self, key)
        ok = (value is None and allow_none) or (isinstance(value, int) and not isinstance(value, bool) and value >= 1)
        self._need(ok, key, "must be a positive integer" + (" or null" if allow_none else ""))

    def _positive_number(self, key: str) -> None:
        value = getattr(self, key)
        ok = isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value) and value > 0
        self._need(ok, key, "must be a positive number")

    def _runtime_checks(self) -> None:
        self._need(self.backend in BACKENDS, "backend", f"must be one of {', '.join(BACKENDS)}")
        self._positive_int("threads", allow_none=True)
        self._need(
            self.device == "auto" or self.device == "cpu" or str(self.device).startswith("cuda"),
            "device",
            "must be 'auto', 'cpu', 'cuda' or 'cuda:N'",
        )

    @classmethod
    def option_fields(cls, *, workflow: bool = False) -> list[dataclasses.Field]:
        """The fields that are command-line options (and, with workflow=True, the others too)."""
        return [f for f in dataclasses.fields(cls) if workflow or not f.metadata.get("workflow")]

    @classmethod
    def defaults(cls) -> dict[str, Any]:
        return {
            f.name: f.default_factory() if f.default is dataclasses.MISSING else f.default
            for f in dataclasses.fields(cls)
            if f.default is not dataclasses.MISSING or f.default_factory is not dataclasses.MISSING
        }

    @classmethod
    def field_types(cls) -> dict[str, Any]:
        return typing.get_type_hints(cls)


@dataclass
class TrainConfig(_Options):
    KIND: typing.ClassVar[str] = "training"

    data: str = _opt("", "prepared dataset (.npz) written by `iwae prepare`")
    family: str = _opt("layered", f"model family: {choices(FAMILIES)}", fingerprint="unless-default")
    layers: str = _opt("1", "stochastic layers: 1 or 2 (the paper's), or a spec like '200-200-100/100-100-50'")
    condition: str = _opt(
        "none",
        "'label': encoder, decoder (and a 'label' prior) also take the one-hot class label, a conditional model "
        "of p(x | y) (nbip's conditional IWAE); 'none'",
        fingerprint="unless-default",
    )
    prior: str = _opt("standard", f"prior of the top layer: {choices(PRIORS)}", fingerprint="unless-default")
    likelihood: str = _opt(
        "auto",
        "observation model: 'auto' (the dataset's: Bernoulli for binary images, Gaussian with sigmoid means and "
        f"per-pixel log variance for continuous ones), {choices(LIKELIHOODS)}",
        fingerprint="unless-default",
    )
    objective: str = _opt("iwae", f"the objective (iwae.estimators.objectives): {specs()}")
    k: int = _opt(1, "samples per data point")
    seed: int = _opt(1, "seed of the run's random stream (initialisation, shuffling, binarisation, samples)")
    variant: str | None = _opt(
        None, "the name of the run's protocol variant in its experiment (a grid's `variants:`); recorded", record=True
    )
    shared_cells: list[str] = _opt(
        [],
        "the other objectives whose table cells this run also fills, being the same objective at its k (IWAE for "
        "a VAE run with k = 1); recorded in train.json, not part of what the run computes",
        record=True,
    )
    epochs_per_stage: list[int] = _opt(PAPER_EPOCHS, "epochs of each stage (paper: 1,3,...,2187)")
    lr: float = _opt(1e-3, "learning rate of the first stage")
    lr_decade_stages: float = _opt(7.0, "stage i uses lr * 10^(-i / this): tenfold decay over 7 stages")
    lr_rounding: str = _opt("none", "'official': round as the official code, 1e-4 * round(1e4 * lr, 1)")
    batch_size: int = _opt(20, "minibatch size")
    reduction: str = _opt(
        "mean",
        "'mean': each step ascends the gradient of the minibatch mean (the paper's text); 'sum': of the minibatch "
        "sum, batch_size times larger (the official code), which changes what Adam's eps weighs",
        fingerprint="unless-default",
    )
    sampling: str = _opt(
        "epochs",
        "'epochs': every point once per epoch (paper); 'replacement': each epoch's minibatches drawn uniformly "
        "with replacement (Kingma & Welling)",
        fingerprint="unless-default",
    )
    optimizer: str = _opt(
        "adam",
        "'adam' (paper), 'adam-official' (the official code's update) or 'adagrad' (Kingma & Welling); see iwae.training.optim",
    )
    adagrad_warmup: int = _opt(
        100,
        "adagrad: the first N steps only accumulate squared gradients (Kingma's code)",
        fingerprint="unless-default",
    )
    lr_pilot: list[float] = _opt(
        [],
        "learning rates to try first, each for pilot_steps steps from the same start; the run then uses the one with "
        "the best training objective (Kingma & Welling: 0.01, 0.02, 0.1); empty: lr",
        fingerprint="unless-default",
    )
    pilot_steps: int = _opt(500, "steps of each pilot run", fingerprint="unless-default")
    weight_prior: str = _opt(
        "none",
        "'normal': MAP training with a N(0, I) prior on the weight matrices (not the biases): the steps ascend "
        "Kingma & Welling's (N / M) sum_batch L + log p(theta), which adds -W / N to each step's minibatch-mean "
        "gradient; 'none' (paper)",
        fingerprint="unless-default",
    )
    grey_levels: bool = _opt(
        False,
        "train (and evaluate) on the grey levels instead of binarised images, with the Bernoulli cross-entropy, as "
        "seed 002 did: its numbers are then not likelihoods",
        fingerprint="unless-default",
    )
    official_code: bool = _opt(
        False,
        "every choice of the official code where it departs from the paper's text at once: "
        + ", ".join(f"{key} {value}" for key, value in OFFICIAL_CODE.items())
        + " (where those options hold the paper's values)",
        record=True,
    )
    adam_beta1: float = _opt(0.9, "Adam beta1 (paper 0.9; the official code ran with 0.99)")
    adam_beta2: float = _opt(0.999, "Adam beta2")
    adam_eps: float = _opt(1e-4, "Adam epsilon")
    shuffle: bool = _opt(True, "reshuffle the training set every epoch (the official code never did)")
    train_subset: int | None = _opt(None, "train on the first N training points only (smoke tests)")
    train_split: str = _opt(
        "train",
        "'train': the training split (paper: MNIST's 59,600, Omniglot's 23,000); 'train+valid': the training and "
        "validation splits together (MNIST's 60,000, Omniglot's 24,345), as seed 000 and nbip/IWAE trained",
        fingerprint="unless-default",
    )
    output_bias: str = _opt(
        "mean",
        "the decoder's output bias at the start: 'mean', logit of the clipped training mean (the official code); "
        "'zero', as every other bias (Glorot's scheme as seed 000 describes it)",
        fingerprint="unless-default",
    )
    init: str = _opt(
        "glorot",
        "'glorot' (paper) or 'official': every layer drawn from RandomState(123), as the official code; in family "
        "'aevb', 'glorot' is KW's N(0, 0.01^2) for every parameter and 'official' Kingma's code, whose encoder "
        "log-variance head and decoder output biases start at zero",
    )
    init_from: str | None = _opt(
        None, "a finished run's model.pt to continue from, parameters and optimizer state (two-stage runs)"
    )
    backend: str = _opt(
        "auto", f"how gradients are computed: {choices(BACKENDS)}; the same gradients either way", runtime=True
    )
    random: str = _opt(
        "none",
        f"random network weights, q(w) = N(m, exp(s)^2) per weight (seed 001): {choices(RANDOM_WEIGHTS)}",
        fingerprint="unless-default",
    )
    weight_log_sigma_init: float = _opt(
        -6.0, "initial log sigma of every random weight (ours; seed 001 gives none)", fingerprint="unless-default"
    )
    tf32: bool = _opt(
        False,
        "TF32 matrix products on a GPU: faster, less accurate (about 1e-3 relative per product); off as in "
        "the paper's float32",
        fingerprint="unless-default",
    )
    cuda_graphs: bool = _opt(
        True, "on a GPU, capture each step once as a CUDA graph and replay it (the same arithmetic)", runtime=True
    )
    valid_every: int = _opt(
        0,
        "every N epochs and at the end, L_k on the validation split, logged as valid_bound in train_log.csv "
        "(its own random stream: training is unchanged); 0: never",
        runtime=True,
    )
    valid_k: int = _opt(2000, "samples per point of that validation estimate", runtime=True)
    curve_per_decade: int = _opt(
        0,
        "the bound on the whole training and test sets at this many log-spaced numbers of training samples seen per "
        "decade, and at the end, in curve.csv (checkpoints/curve.csv as the run goes; own random stream); 0: never",
        runtime=True,
    )
    snapshot_stages: bool = _opt(
        False,
        "keep the parameters at the start and at the end of every stage in model.pt (the figure of samples from "
        "the prior as training goes, as nbip/IWAE shows)",
        runtime=True,
    )
    curve_ml_points: int = _opt(
        0,
        "at each curve point, also the HMC marginal likelihood (Kingma & Welling, appendix D) of N random training "
        "and N random test points; 0: never",
        runtime=True,
    )
    valid_points: int | None = _opt(None, "validation points drawn at random for it; none: all", runtime=True)
    eval_seed: int = _opt(
        BINARISATION_SEED,
        "seed of the one-off binarisation of the validation and test points that the validation and learning-curve "
        "estimates use: evaluation's seed (the workflow passes it)",
        runtime=True,
    )
    device: str = _opt("auto", "'auto' (CUDA when present), 'cpu', 'cuda' or 'cuda:N'", runtime=True)
    threads: int | None = _opt(None, "CPU threads; none: PyTorch's choice", runtime=True)
    checkpoint_minutes: float = _opt(10.0, "write a checkpoint at least this often inside long stages", runtime=True)

    def __post_init__(self):
        self.validate()

    def validate(self) -> None:
        need = self._need
        need(isinstance(self.official_code, bool), "official_code", "must be true or false")
        if self.official_code:
            self._select_official_code()
        need(isinstance(self.data, str) and bool(self.data), "data", "must name a prepared dataset (.npz)")
        self.layers = str(self.layers)
        Architecture.parse(self.layers)
        objective = Objective.parse(self.objective)
        self._positive_int("k")
        objective.check_samples(self.k)
        need(isinstance(self.shared_cells, list), "shared_cells", "must be a list of objectives")
        for other in self.shared_cells:
            same = Objective.parse(other).trains_as(self.k) == objective.trains_as(self.k)
            need(same and other != self.objective, "shared_cells", f"names {other}, not the same objective as "
                 f"{self.objective} with k = {self.k}")  # fmt: skip
        need(isinstance(self.seed, int) and self.seed >= 0, "seed", "must be a non-negative integer")
        need(isinstance(self.eval_seed, int) and self.eval_seed >= 0, "eval_seed", "must be a non-negative integer")
        need(
            isinstance(self.epochs_per_stage, list)
            and len(self.epochs_per_stage) > 0
            and all(isinstance(e, int) and e >= 1 for e in self.epochs_per_stage),
            "epochs_per_stage",
            "must be a non-empty list of positive integers",
        )
        for key in ("lr", "lr_decade_stages", "adam_eps", "checkpoint_minutes"):
            self._positive_number(key)
        need(self.lr_rounding in ("none", "official"), "lr_rounding", "must be 'none' or 'official'")
        self._positive_int("batch_size")
        need(self.optimizer in OPTIMIZERS, "optimizer", f"must be one of {', '.join(OPTIMIZERS)}")
        for key in ("adam_beta1", "adam_beta2"):
            value = getattr(self, key)
            need(isinstance(value, (int, float)) and 0 <= value < 1, key, "must lie in [0, 1)")
        for key in ("shuffle", "tf32", "cuda_graphs", "snapshot_stages"):
            need(isinstance(getattr(self, key), bool), key, "must be true or false")
        self._positive_int("train_subset", allow_none=True)
        need(isinstance(self.valid_every, int) and self.valid_every >= 0, "valid_every", "must be 0 or more")
        self._positive_int("valid_k")
        self._positive_int("valid_points", allow_none=True)
        need(self.init in ("glorot", "official"), "init", "must be 'glorot' or 'official'")
        need(self.train_split in TRAIN_SPLITS, "train_split", f"must be one of {', '.join(TRAIN_SPLITS)}")
        need(self.output_bias in ("mean", "zero"), "output_bias", "must be 'mean' or 'zero'")
        need(self.reduction in REDUCTIONS, "reduction", f"must be one of {', '.join(REDUCTIONS)}")
        if self.reduction == "sum":
            need(self.weight_prior == "none", "reduction", "is built for the paper's objective, not MAP training")
        need(self.family in FAMILIES, "family", f"must be one of {', '.join(FAMILIES)}")
        need(self.likelihood in ("auto", *LIKELIHOODS), "likelihood", f"must be one of auto, {', '.join(LIKELIHOODS)}")
        need(self.sampling in SAMPLING, "sampling", f"must be one of {', '.join(SAMPLING)}")
        need(self.weight_prior in ("none", "normal"), "weight_prior", "must be 'none' or 'normal'")
        need(isinstance(self.grey_levels, bool), "grey_levels", "must be true or false")
        need(isinstance(self.adagrad_warmup, int) and self.adagrad_warmup >= 0, "adagrad_warmup", "must be 0 or more")
        need(
            isinstance(self.lr_pilot, list)
            and all(isinstance(v, (int, float)) and not isinstance(v, bool) and v > 0 for v in self.lr_pilot),
            "lr_pilot",
            "must be a list of positive learning rates",
        )
        self._positive_int("pilot_steps")
        for key in ("curve_per_decade", "curve_ml_points"):
            need(isinstance(getattr(self, key), int) and getattr(self, key) >= 0, key, "must be 0 or more")
        need(self.condition in ("none", "label"), "condition", "must be 'none' or 'label'")
        need(self.prior in PRIORS, "prior", f"must be {' or '.join(map(repr, PRIORS))}")
        if self.prior == "label":
            need(self.condition == "label", "prior", "needs condition 'label'")
        if self.condition != "none":
            need(self.family == "layered" and self.random == "none", "condition", "is built for the layered family")
            need(self.curve_per_decade == 0, "curve_per_decade", "is not built for conditional models")
        if objective.terms and self.family != "aevb":
            need(False, "objective", f"needs the {' and '.join(objective.terms)} terms that only family 'aevb' gives")
        if self.family == "aevb":
            need(self.random == "none", "random", "must be 'none' in family 'aevb'")
            need(self.output_bias == "mean", "output_bias", "does not apply to family 'aevb' (see init)")
            spec = Architecture.parse(self.layers)
            need(
                spec.n_stochastic == 1 and len(spec.layers[0].hidden) == 1,
                "layers",
                "must be one hidden layer and one stochastic layer in family 'aevb', e.g. '500-20'",
            )
        need(self.random in RANDOM_WEIGHTS, "random", f"must be one of {', '.join(RANDOM_WEIGHTS)}")
        if self.random != "none":
            need(not objective.stops_q, "objective", "drops the score term, which random weights do not support")
            need(
                Architecture.parse(self.layers).n_stochastic == 1,
                "layers",
                "must have one stochastic layer with random weights",
            )
        need(
            isinstance(self.weight_log_sigma_init, (int, float)) and math.isfinite(self.weight_log_sigma_init),
            "weight_log_sigma_init",
            "must be a number",
        )
        self._runtime_checks()

    def _select_official_code(self) -> None:
        """official_code: each of its options takes the official code's value, unless it was
        set to a third value (neither the paper's nor the official code's), which is refused."""
        defaults = self.defaults()
        for key, value in OFFICIAL_CODE.items():
            given = getattr(self, key)
            if given != value and given != defaults[key]:
                raise UserError(f"official_code: sets {key} to {value!r}, but {key} is {given!r}")
            setattr(self, key, value)
        self._need(self.family == "layered", "official_code", "is built for the paper's model (family 'layered')")

    def learning_rate(self, stage: int, first: float | None = None) -> float:
        """The learning rate of a stage, from `first` (the first stage's; default lr)."""
        lr = (first or self.lr) * 10.0 ** (-stage / self.lr_decade_stages)
        if self.lr_rounding == "official":
            lr = 1e-4 * round(lr * 1e4, 1)
        return lr

    @property
    def total_epochs(self) -> int:
        return sum(self.epochs_per_stage)

    def trajectory(self) -> dict[str, Any]:
        """The options that decide what a run computes: all but the data path and the
        runtime options. Options added later count only away from their defaults, so that
        runs and checkpoints written before them still match."""
        left_out, defaults = {"data"}, self.defaults()
        for f in dataclasses.fields(self):
            at_default = f.metadata.get("fingerprint") == "unless-default" and getattr(self, f.name) == defaults[f.name]
            if f.metadata.get("runtime") or f.metadata.get("record") or at_default:
                left_out.add(f.name)
        return {k: v for k, v in self.to_dict().items() if k not in left_out}

    def fingerprint(self, data_sources: list | None = None) -> str:
        """Identifies the training trajectory: a checkpoint only resumes a run with the same."""
        values = self.trajectory()
        values["data_sources"] = data_sources
        if self.weight_prior != "none":  # checkpoints of the prior at batch / N (100 times too strong) never resume
            values["weight_prior_scale"] = "1/N"
        return hashlib.sha256(json.dumps(values, sort_keys=True).encode()).hexdigest()[:16]

    def differences(self, recorded: dict[str, Any]) -> list[str]:
        """'key: value there, value here' for each option of the trajectory in which a
        recorded configuration (a finished run's train.json) differs from this one."""
        known = {f.name for f in dataclasses.fields(self)}
        try:
            theirs = TrainConfig(**{k: v for k, v in recorded.items() if k in known}).trajectory()
        except (UserError, TypeError):  # a record this version cannot read: compare it as written
            theirs = {k: v for k, v in recorded.items() if k in known and k != "data"}
        ours, defaults = self.trajectory(), self.defaults()
        return [
            f"{key}: {theirs.get(key, defaults.get(key))} there, {ours.get(key, defaults.get(key))} here"
            for key in sorted(ours.keys() | theirs.keys())
            if ours.get(key) != theirs.get(key)
        ]


@dataclass
class EvalConfig(_Options):
    KIND: typing.ClassVar[str] = "evaluation"

    k: int = _opt(5000, "importance samples per point for the log-likelihood estimate L_k")
    test_points: int | None = _opt(None, "N test points drawn at random, the same for every run; none: all of them")
    extra_k: list[int] = _opt([], "also report L_k for these k, e.g. 64 (Rainforth et al.'s IWAE-64)")
    train_points: int = _opt(0, "also L_k on N random training points the run trained on (train-test gap)")
    valid_points: int = _opt(
        1000,
        "also L_k on N random points of the validation split (all of them when it has fewer): with train_points, "
        "overfitting (validation against training) and a test set's own shift (test against validation) apart; 0: none",
    )
    active_points: int = _opt(500, "training points for the active-unit count (official code: 500)")
    mixture_points: int = _opt(
        0,
        "for a label-conditional model, also log sum_y (1/C) p(x | y) (log p(x) of the label mixture) on N random "
        "test points, from L_k of every log p(x | y); 0: none",
    )
    posterior_points: int = _opt(
        0,
        "for a model with a 2-D latent space, also the posterior on a grid for N random test points: log p(x) by "
        "quadrature beside L_k and the ELBO, KL(q || p), the effective sample size; 0: none",
    )
    snis_samples: int = _opt(
        0,
        "also per stochastic layer the posterior means of the test points by self-normalised importance sampling "
        "with this many samples, their active units and 5-nearest-neighbour label accuracy; 0: none",
    )
    hmc_points: int = _opt(
        0,
        "also Kingma & Welling's HMC estimate of the marginal likelihood (appendix D) beside L_k, on N random "
        "training points the run trained on and N random test points; 0: none",
    )
    seed: int = _opt(BINARISATION_SEED, "seed of the test set's one-off binarisation and of the samples")
    batch: int = _opt(20, "test points per pass (the official code: 20)")
    chunk: int | None = _opt(None, "samples per point per pass; none: by device", runtime=True)
    backend: str = _opt("auto", f"the forward pass used: {choices(BACKENDS)}; the same values", runtime=True)
    device: str = _opt("auto", "'auto' (CUDA when present), 'cpu', 'cuda' or 'cuda:N'", runtime=True)
    threads: int | None = _opt(None, "CPU threads; none: PyTorch's choice", runtime=True)
    samples_figure: bool = _opt(True, "draw samples and reconstructions of every run", workflow=True)

    def __post_init__(self):
        self.validate()

    def validate(self) -> None:
        for key in ("k", "active_points", "batch"):
            self._positive_int(key)
        self._positive_int("test_points", allow_none=True)
        self._positive_int("chunk", allow_none=True)
        self._need(
            isinstance(self.extra_k, list) and all(isinstance(v, int) and v >= 1 for v in self.extra_k),
            "extra_k",
            "must be a list of positive integers",
        )
        for key in ("train_points", "valid_points", "hmc_points", "mixture_points", "posterior_points", "snis_samples"):
            self._need(isinstance(getattr(self, key), int) and getattr(self, key) >= 0, key, "must be 0 or more")
        self._need(isinstance(self.seed, int) and self.seed >= 0, "seed", "must be a non-negative integer")
        self._need(isinstance(self.samples_figure, bool), "samples_figure", "must be true or false")
        self._runtime_checks()


def binarisation_seed(config: dict, evaluation: dict | None = None) -> int:
    """The seed that binarised a run's test points: its evaluation record's, else the one its
    training configuration was given, else the default."""
    if evaluation and "eval_seed" in evaluation:
        return int(evaluation["eval_seed"])
    return int(config.get("eval_seed", BINARISATION_SEED))


def duplicate_keys(text: str) -> list[str]:
    """Keys a YAML document gives twice in one mapping ('line N: key'), which YAML readers
    accept silently, keeping the last value only."""
    found = []

    class Loader(yaml.SafeLoader):
        pass

    def mapping(loader, node, deep=False):
        seen = set()
        for key_node, _ in node.value:
            key = loader.construct_object(key_node, deep=True)
            if key in seen:
                found.append((key_node.start_mark.line + 1, key))
            seen.add(key)
        return loader.construct_mapping(node, deep)

    Loader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, mapping)
    try:
        yaml.load(text, Loader)
    except yaml.YAMLError:
        return []  # the reader that follows reports it
    return [f"line {line}: {key}" for line, key in sorted(found)]


# --------------------------------------------------------------------------- flags
# A run's options travel as command-line flags, whether one job trains it (`iwae train`) or a
# pack does (a pack file lists each run's flags): `flags` writes them, `add_flags` reads them.


def flags(values: dict[str, Any]) -> list[str]:
    """Command-line flags for option values: `{"batch_size": 20, "shuffle": False}` ->
    ["--batch-size", "20", "--no-shuffle"]. Unset values (None, []) are left out."""
    out = []
    for key, value in values.items():
        flag = "--" + key.replace("_", "-")
        if value is None or value == []:
            continue
        if isinstance(value, bool):
            out.append(flag if value else f"--no-{key.replace('_', '-')}")
        elif isinstance(value, list):
            out += [flag, ",".join(map(str, value))]
        else:
            out += [flag, str(value)]
    return out


def add_flags(p, kind) -> None:
    """One flag per option field of a TrainConfig or EvalConfig, with its help and default,
    on the argparse parser `p`."""
    hints = kind.field_types()
    for f in kind.option_fields():
        flag = "--" + f.name.replace("_", "-")
        hint = hints[f.name]
        default = f.default if f.default is not dataclasses.MISSING else f.default_factory()
        help_text = f"{f.metadata.get('help', '')} (default: {default})"
        if hint is bool:
            p.add_argument(flag, action=argparse.BooleanOptionalAction, default=argparse.SUPPRESS, help=help_text)
            continue
        args = typing.get_args(hint)
        if hint == list[int]:
            parse = int_list
        elif hint == list[str]:
            parse = _name_list
        elif hint == list[float]:
            parse = _float_list
        elif type(None) in args:
            parse = _optional(next(a for a in args if a is not type(None)))
        else:
            parse = hint
        p.add_argument(flag, dest=f.name, type=parse, default=argparse.SUPPRESS, help=help_text)


def flag_values(kind, args) -> dict[str, Any]:
    """The option values given as flags, from parsed arguments (`add_flags`)."""
    return {f.name: getattr(args, f.name) for f in kind.option_fields() if hasattr(args, f.name)}


def from_flags(kind, argv: list[str], where: str):
    """A TrainConfig or EvalConfig from its flags alone (a pack file's runs); a bad flag is a
    one-line error naming `where`."""

    class Parser(argparse.ArgumentParser):
        def error(self, message):
            raise UserError(f"{where}: {message}")

    parser = Parser(prog=where, add_help=False)
    add_flags(parser, kind)
    return kind.from_dict(flag_values(kind, parser.parse_args(argv)), where)


def int_list(text: str) -> list[int]:
    try:
        return [int(v) for v in text.split(",") if v.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a comma-separated list of integers") from None


def _name_list(text: str) -> list[str]:
    return [v.strip() for v in text.split(",") if v.strip()]


def _float_list(text: str) -> list[float]:
    try:
        return [float(v) for v in text.split(",") if v.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a comma-separated list of numbers") from None


def _optional(kind):
    def parse(text: str):
        return None if text.lower() in ("none", "null") else kind(text)

    parse.__name__ = kind.__name__
    return parse
