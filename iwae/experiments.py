"""The experiment model: which runs a configuration declares, their ids and links, and which
tables and figures each experiment makes. The workflow reads it; nothing here knows Snakemake.

An experiment is either a grid (datasets x layers x objectives x k x seeds, and optionally
named variants of the protocol, e.g. IWAE and IWAE with random weights) or a second training
stage of another (grid) experiment's runs (`type: two-stage`, Table 2). Every run
gets a readable id naming all its wildcards, e.g. `mnist-2l-iwae-k50-s1`, or
`mnist-1l-vae-k1-to-iwae-k50-s1` for a second stage. The protocol and evaluation sections of
the config are the defaults each experiment may override key by key.

`Plan.from_config` checks every name against its registry (datasets in `iwae.catalogue`,
objectives in `iwae.objectives`, table layouts in `iwae.report.layouts`) and every option
against `TrainConfig` and `EvalConfig`, with errors naming the config key at fault. It does
not import PyTorch.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass, field
from typing import Any

from iwae import catalogue
from iwae.architecture import Architecture
from iwae.config import EvalConfig, TrainConfig
from iwae.errors import UserError
from iwae.objectives import Objective
from iwae.report import layouts

FIGURE_KINDS_PER_GROUP = ("curves", "variances")  # one figure per (dataset, architecture)


def default_title(experiment: str) -> str:
    """The title of an experiment whose config gives none (`title:`)."""
    return f"Experiment {experiment}"


def layers_tag(layers: int | str) -> str:
    """1 -> '1l'; a named architecture as its name; a spec '200-200-50' -> 'L200x200x50'."""
    from iwae.architecture import NAMED

    text = str(layers)
    if text.isdigit():
        return f"{text}l"
    if text in NAMED:
        return text
    return f"L{text.translate(str.maketrans('-/', 'x_'))}"


@dataclass(frozen=True)
class Run:
    experiment: str
    id: str
    dataset: str
    layers: int | str
    objective: str
    k: int
    seed: int
    protocol: dict = field(hash=False, compare=False)
    evaluation: dict = field(hash=False, compare=False)
    first_stage: tuple[str, str] | None = None  # (experiment, run id) this run continues
    variant: str | None = None  # the name of its protocol variant (a grid's `variants:`)

    @property
    def random_weights(self) -> bool:
        return self.protocol.get("random", "none") != "none"

    @property
    def group(self) -> tuple[str, str]:
        """(dataset, layers tag): the runs that share a curves and a variances figure."""
        return self.dataset, layers_tag(self.layers)

    def train_options(self) -> dict[str, Any]:
        """The `iwae train` options of this run (all but data, device, threads, init_from)."""
        return {"layers": self.layers, "objective": self.objective, "k": self.k, "seed": self.seed} | {
            key: self.protocol[key] for key in sorted(self.protocol)
        }

    def eval_options(self) -> dict[str, Any]:
        """The `iwae evaluate` options of this run (all but device and threads)."""
        names = [f.name for f in EvalConfig.option_fields()]
        return {key: self.evaluation[key] for key in names if key in self.evaluation}


@dataclass
class Experiment:
    name: str
    type: str  # "grid" or "two-stage"
    title: str
    layout: str
    runs: list[Run]
    ks: list[int]  # the k of its runs, in the order declared
    samples_figure: bool

    def tables(self) -> list[str]:
        """Table files (under the tables directory) this experiment writes."""
        return [f"{self.name}{suffix}.{ext}" for suffix in ("", "_vs_paper") for ext in ("tex", "md")]

    def groups(self) -> dict[tuple[str, str], list[Run]]:
        out: dict[tuple[str, str], list[Run]] = {}
        for run in self.runs:
            out.setdefault(run.group, []).append(run)
        return out

    def figures(self) -> list[str]:
        """Figure stems (under figures/<experiment>/, each as .pdf and .png)."""
        stems = [f"{kind}_{dataset}_{tag}" for dataset, tag in self.groups() for kind in FIGURE_KINDS_PER_GROUP]
        stems += [f"weights_{dataset}_{tag}" for (dataset, tag), runs in self.groups().items()
                  if any(r.random_weights for r in runs)]  # fmt: skip
        if self.type == "grid" and len(self.ks) > 1:
            stems.append("nll_vs_k")
        if self.samples_figure:
            stems += [f"samples/{run.id}" for run in self.runs]
        return stems

    def first_stages(self) -> list[tuple[str, str]]:
        return sorted({run.first_stage for run in self.runs if run.first_stage})


@dataclass
class Pack:
    """Runs of one experiment and dataset trained in one job (`iwae.packs`)."""

    experiment: str
    name: str  # the dataset, or "<dataset>-<i>" where a maximum pack size splits it
    runs: list[Run]


def check_pack_setting(value) -> None:
    ok = value in ("none", "dataset") or (isinstance(value, int) and not isinstance(value, bool) and value >= 1)
    if not ok:
        raise UserError(
            f"compute.pack: {value!r} must be 'none', 'dataset' or a maximum pack size (a positive integer)"
        )


@dataclass
class Plan:
    experiments: dict[str, Experiment]
    selected: list[str]

    @property
    def runs(self) -> dict[tuple[str, str], Run]:
        return {(run.experiment, run.id): run for exp in self.experiments.values() for run in exp.runs}

    def run(self, experiment: str, run_id: str) -> Run:
        found = self.runs.get((experiment, run_id))
        if found is None:
            raise UserError(f"no run {run_id} in experiment {experiment}")
        return found

    def packs(self, setting: str | int) -> list[Pack]:
        """The training jobs when runs are packed: per experiment and dataset, all its runs
        ('dataset') or chunks of at most `setting` runs; none for 'none'."""
        check_pack_setting(setting)
        if setting == "none":
            return []
        out = []
        for exp in self.experiments.values():
            by_dataset: dict[str, list[Run]] = {}
            for run in exp.runs:
                by_dataset.setdefault(run.dataset, []).append(run)
            for dataset, runs in by_dataset.items():
                size = len(runs) if setting == "dataset" else setting
                chunks = [runs[i : i + size] for i in range(0, len(runs), size)]
                for i, chunk in enumerate(chunks):
                    out.append(Pack(exp.name, dataset if len(chunks) == 1 else f"{dataset}-{i + 1}", chunk))
        return out

    @classmethod
    def from_config(cls, config: dict) -> Plan:
        declared = config.get("experiments") or {}
        for name in config.get("run_experiments", []):
            if name not in declared:
                raise UserError(f"run_experiments: {name!r} is not declared under experiments")
        check_pack_setting((config.get("compute") or {}).get("pack", "none"))
        _check_options(TrainConfig, config.get("protocol", {}), "protocol")
        _check_options(EvalConfig, config.get("evaluation", {}), "evaluation")
        experiments = {}
        for name, exp in declared.items():
            experiments[name] = _experiment(name, exp, config, declared)
        plan = cls(experiments, list(config.get("run_experiments", [])))
        runs = plan.runs
        for exp in experiments.values():
            for run in exp.runs:
                if run.first_stage and run.first_stage not in runs:
                    raise UserError(
                        f"experiments.{exp.name}.pairs: first stage {run.first_stage[1]} is not a run of "
                        f"{run.first_stage[0]}"
                    )
        return plan


# --------------------------------------------------------------------------- construction


def _check_options(kind, values: dict, where: str) -> None:
    """Check a protocol or evaluation section on its own (no dataset, no run)."""
    values = dict(values or {})
    if kind is TrainConfig:
        values.setdefault("data", "<the run's dataset>")
    kind.from_dict(values, where)


def _merged(config: dict, exp: dict, section: str, where: str) -> dict:
    own = exp.get(section) or {}
    kind = TrainConfig if section == "protocol" else EvalConfig
    _check_options(kind, own, f"{where}.{section}")
    return {**(config.get(section) or {}), **own}


def _check_names(where: str, values: list, check) -> None:
    for value in values:
        try:
            check(value)
        except UserError as e:
            raise UserError(f"{where}: {e}") from None


def _experiment(name: str, exp: dict, config: dict, declared: dict) -> Experiment:
    where = f"experiments.{name}"
    kind = exp.get("type")
    if kind not in ("grid", "two-stage"):
        raise UserError(f"{where}.type: {kind!r} must be 'grid' or 'two-stage'")
    protocol, evaluation = _merged(config, exp, "protocol", where), _merged(config, exp, "evaluation", where)
    layout = exp.get("table", layouts.DEFAULT[kind])
    try:
        layouts.check(layout, kind, evaluation)
    except UserError as e:
        raise UserError(f"{where}.table: {e}") from None
    title = exp.get("title") or default_title(name)
    samples = evaluation.get("samples_figure", EvalConfig.samples_figure)
    common = {"experiment": name, "protocol": protocol, "evaluation": evaluation}
    runs = []
    if kind == "grid":
        _check_names(f"{where}.datasets", exp["datasets"], catalogue.get)
        _check_names(f"{where}.layers", exp["layers"], Architecture.parse)
        _check_names(f"{where}.objectives", exp["objectives"], Objective.parse)
        variants = exp.get("variants") or {None: {}}  # name -> protocol overrides
        for name_, overrides in variants.items():
            if name_ is not None:
                _check_options(TrainConfig, {**overrides}, f"{where}.variants.{name_}")
        for dataset, layers, objective, k, (variant, overrides), seed in itertools.product(
            exp["datasets"], exp["layers"], exp["objectives"], exp["k"], variants.items(), exp["seeds"]
        ):
            run_protocol = {**protocol, **overrides}
            _check_run(f"{where}.objectives", objective, k, run_protocol)
            tag = f"{dataset}-{layers_tag(layers)}-{objective}-k{k}" + (f"-{variant}" if variant else "")
            runs.append(
                Run(id=f"{tag}-s{seed}", dataset=dataset, layers=layers, objective=objective, k=k, seed=seed,
                    **{**common, "protocol": run_protocol}, variant=variant)
            )  # fmt: skip
        ks = list(exp["k"])
    else:
        base = exp.get("first_stage")
        if base not in declared or declared[base].get("type") != "grid":
            raise UserError(f"{where}.first_stage: {base!r} is not a grid experiment")
        for pair, seed in itertools.product(exp["pairs"], exp["seeds"]):
            _check_names(f"{where}.pairs", [pair["dataset"]], catalogue.get)
            _check_names(f"{where}.pairs", [pair["layers"]], Architecture.parse)
            _check_names(f"{where}.pairs", [pair["first"], pair["second"]], Objective.parse)
            _check_run(f"{where}.pairs", pair["second"], pair["second_k"], protocol)
            tag = layers_tag(pair["layers"])
            first = f"{pair['dataset']}-{tag}-{pair['first']}-k{pair['first_k']}"
            run_id = f"{first}-to-{pair['second']}-k{pair['second_k']}-s{seed}"
            runs.append(
                Run(
                    id=run_id,
                    dataset=pair["dataset"],
                    layers=pair["layers"],
                    objective=pair["second"],
                    k=pair["second_k"],
                    seed=seed,
                    first_stage=(base, f"{first}-s{seed}"),
                    **common,
                )
            )
        ks = list(dict.fromkeys(run.k for run in runs))
    return Experiment(name, kind, title, layout, runs, ks, samples)


def _check_run(where: str, objective: str, k: int, protocol: dict) -> None:
    """The objective with this k, and the whole training configuration of the run."""
    try:
        Objective.parse(objective).check_samples(k)
    except UserError as e:
        raise UserError(f"{where}: {e}") from None
    TrainConfig.from_dict({"data": "<the run's dataset>", "objective": objective, "k": k, **protocol}, where)
