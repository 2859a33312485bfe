"""The experiment model: which runs a configuration declares, their ids and links, and which
tables and figures each experiment makes. The workflow reads it; nothing here knows Snakemake.

An experiment is either a grid (datasets x layers x objectives x k x seeds, and optionally
named variants of the protocol, e.g. IWAE and IWAE with random weights; or the union of
several such grids, its `parts`, each overriding what it names) or a second training stage
of another (grid) experiment's runs (`type: two-stage`, Table 2). Every run
gets a readable id naming all its wildcards, e.g. `mnist-2l-iwae-k50-s1`, or
`mnist-1l-vae-k1-to-iwae-k50-s1` for a second stage. The protocol and evaluation sections of
the config are the defaults each experiment may override key by key.

`Plan.from_config` checks every name against its registry (datasets in `iwae.data.catalogue`,
objectives in `iwae.estimators.objectives`, table layouts in `iwae.plan.layouts`, the sources of
published values in `iwae.plan.references`) and every option
against `TrainConfig` and `EvalConfig`, with errors naming the config key at fault. It does
not import PyTorch.
"""

from __future__ import annotations

import dataclasses
import itertools
import json
import posixpath
from dataclasses import dataclass, field
from typing import Any

from iwae.data import catalogue
from iwae.errors import UserError
from iwae.estimators.objectives import Objective
from iwae.plan import figures, findings, layouts, paths
from iwae.plan.architecture import NAMED, Architecture
from iwae.plan.config import BINARISATION_SEED, EvalConfig, TrainConfig
from iwae.plan.references import SOURCES


def default_title(experiment: str) -> str:
    """The title of an experiment whose config gives none (`title:`)."""
    return f"Experiment {experiment}"


def layers_tag(layers: int | str) -> str:
    """1 -> '1l'; a named architecture as its name; a spec '200-200-50' -> 'L200x200x50'."""
    text = str(layers)
    if text.isdigit():
        return f"{text}l"
    if text in NAMED:
        return text
    return f"L{text.translate(str.maketrans('-/', 'x_'))}"


@dataclass(frozen=True)
class PlannedRun:
    """A run the configuration declares, before it is trained (a finished one, read back
    from its directory, is `iwae.evaluation.runs.Run`)."""

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
    part: str | None = None  # the part of its experiment (a grid's `parts:`)

    @property
    def random_weights(self) -> bool:
        return self.protocol.get("random", "none") != "none"

    @property
    def curve(self) -> bool:
        return bool(self.protocol.get("curve_per_decade"))

    @property
    def ml_curve(self) -> bool:
        return self.curve and bool(self.protocol.get("curve_ml_points"))

    @property
    def latent_2d(self) -> bool:
        """One stochastic layer of two units: the latent space can be drawn."""
        spec = Architecture.parse(self.layers)
        return spec.n_stochastic == 1 and spec.latent_sizes == [2]

    @property
    def n_stochastic(self) -> int:
        return Architecture.parse(self.layers).n_stochastic

    @property
    def labelled(self) -> bool:
        """Its dataset has class labels (figures by label)."""
        return catalogue.get(self.dataset).labelled

    @property
    def conditional(self) -> bool:
        return self.protocol.get("condition", "none") != "none"

    @property
    def section(self) -> str:
        """Its part, or its dataset where the experiment has no parts (per-part figures)."""
        return self.part or self.dataset

    @property
    def group(self) -> tuple[str, str]:
        """(dataset, layers tag): the runs that share a curves and a variances figure."""
        return self.dataset, layers_tag(self.layers)

    def train_options(self) -> dict[str, Any]:
        """The `iwae train` options of this run (all but data, device, threads, init_from);
        evaluation's binarisation seed where it is not the default and the run makes estimates
        of its own on held-out points (learning curve, validation), so that they binarise the
        points as its evaluation will (elsewhere the seed would retrain, for nothing, a run
        whose evaluation alone changes); its variant's name."""
        seed = self.evaluation.get("seed", BINARISATION_SEED)
        estimates = self.protocol.get("curve_per_decade") or self.protocol.get("valid_every")
        return (
            {"layers": self.layers, "objective": self.objective, "k": self.k, "seed": self.seed}
            | {key: self.protocol[key] for key in sorted(self.protocol)}
            | ({"eval_seed": seed} if seed != BINARISATION_SEED and estimates else {})
            | ({"variant": self.variant} if self.variant else {})
        )

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
    runs: list[PlannedRun]
    ks: list[int]  # the k of its runs, in the order declared
    samples_figure: bool
    figure_kinds: tuple[str, ...] = figures.DEFAULT
    reference: str = "paper"  # whose published values its table compares with (iwae.plan.references)
    # cells that another run fills, being the same objective (IWAE with k = 1 is the VAE):
    # the cell's id -> the id of the run that trains it (see `share_runs`)
    shared: dict[str, str] = field(default_factory=dict)

    def tables(self) -> list[str]:
        """Table files (under the tables directory) this experiment writes: its table, beside
        the published values, and its findings judged where the registry has any."""
        suffixes = ("", "_vs_paper") + (("_findings",) if self.has_findings else ())
        return [f"{self.name}{suffix}.{ext}" for suffix in suffixes for ext in ("tex", "md", "html")]

    @property
    def has_findings(self) -> bool:
        return bool(findings.for_experiment(self.name))

    def groups(self) -> dict[tuple[str, str], list[PlannedRun]]:
        out: dict[tuple[str, str], list[PlannedRun]] = {}
        for run in self.runs:
            out.setdefault(run.group, []).append(run)
        return out

    def sections(self, which) -> dict[str, list[PlannedRun]]:
        """Runs for which `which(run)` holds, by part (or dataset)."""
        out: dict[str, list[PlannedRun]] = {}
        for run in self.runs:
            if which(run):
                out.setdefault(run.section, []).append(run)
        return out

    def curve_sections(self, kind: str) -> dict[str, list[PlannedRun]]:
        """The runs a figure of learning curves draws, by part (or dataset): those with HMC
        marginal-likelihood curves for ml_vs_samples, the others with curves for bound_vs_samples."""
        with_ml = kind == "ml_vs_samples"
        return self.sections(lambda r: r.curve and r.ml_curve == with_ml)

    def latent_sections(self) -> dict[str, list[PlannedRun]]:
        """Parts (or datasets) of one dataset whose runs have one stochastic layer of several
        sizes, each size once: the figures that set latent sizes side by side."""
        out = {}
        for section, runs in self.sections(lambda r: Architecture.parse(r.layers).n_stochastic == 1).items():
            sizes = [Architecture.parse(r.layers).latent_sizes[0] for r in runs]
            if len(set(sizes)) > 1 and len(set(sizes)) == len(sizes) and len({r.dataset for r in runs}) == 1:
                out[section] = runs
        return out

    def figures(self) -> list[str]:
        """Figure stems (under figures/<experiment>/, each as .pdf and .png), as each kind of
        figure it names covers its runs (`iwae.plan.figures`), in the registry's order."""
        kinds = [kind for kind in figures.KINDS.values() if kind.name in self.figure_kinds]
        stems = []
        for (dataset, tag), runs in self.groups().items():
            stems += [f"{k.name}_{dataset}_{tag}" for k in kinds if k.per == "group"
                      and (k.name != "weights" or any(r.random_weights for r in runs))]  # fmt: skip
        for k in kinds:
            if k.per == "experiment" and self.type == "grid" and len(self.ks) > 1:  # nll_vs_k
                stems.append(k.name)
            elif k.per == "section":
                stems += [f"{k.name}_{section}" for section in self.curve_sections(k.name)]
            elif k.per == "latent section":
                stems += [f"{k.name}_{section}" for section in self.latent_sections()]
            elif k.per == "run" and (k.name != "samples" or self.samples_figure):
                stems += [f"{k.name}/{run.id}" for run in self.runs if k.drawn_for(run)]
        return stems

    def first_stages(self) -> list[tuple[str, str]]:
        return sorted({run.first_stage for run in self.runs if run.first_stage})


@dataclass
class Pack:
    """Runs of one experiment and dataset trained in one job (`iwae.training.packs`)."""

    experiment: str
    name: str  # the dataset, or "<dataset>-<i>" where a maximum pack size splits it
    runs: list[PlannedRun]


def check_pack_setting(value) -> None:
    ok = value in ("none", "dataset") or (isinstance(value, int) and not isinstance(value, bool) and value >= 1)
    if not ok:
        raise UserError(
            f"compute.pack: {value!r} must be 'none', 'dataset' or a maximum pack size (a positive integer)"
        )


RESERVED_DIRS = (paths.DATA, paths.PUBLISHED)  # prepared datasets; the README's published results


def check_results_dir(value) -> str:
    """`results:`, the directory of one configuration's runs, tables, figures and logs."""
    if not isinstance(value, str) or not value.strip() or any(c in value for c in "{}*?[]"):
        raise UserError(f"results: {value!r} must be a directory path (no braces or wildcards)")
    normal = posixpath.normpath(value)
    if any(normal == d or normal.startswith(d + "/") for d in RESERVED_DIRS) or normal in (".", ".."):
        raise UserError(f"results: {value!r} is reserved (prepared data, published results or the working directory)")
    return normal


@dataclass
class Plan:
    experiments: dict[str, Experiment]
    selected: list[str]
    results: str = paths.RESULTS  # where this configuration's runs, tables and figures go

    @property
    def runs(self) -> dict[tuple[str, str], PlannedRun]:
        return {(run.experiment, run.id): run for exp in self.experiments.values() for run in exp.runs}

    def run(self, experiment: str, run_id: str) -> PlannedRun:
        """A run by its id, or the run that fills a shared cell of that id."""
        exp = self.experiments.get(experiment)
        run_id = exp.shared.get(run_id, run_id) if exp else run_id
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
            by_dataset: dict[str, list[PlannedRun]] = {}
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
        plan = cls(
            experiments,
            list(config.get("run_experiments", [])),
            check_results_dir(config.get("results", paths.RESULTS)),
        )
        for exp in experiments.values():  # a second stage continues the run that fills a shared cell
            exp.runs = [_continuing(run, experiments) for run in exp.runs]
        runs = plan.runs
        # a preset may narrow a grid that an unselected second stage continues: only the
        # experiments this configuration builds must find their first stages
        for exp in (experiments[name] for name in plan.selected):
            for run in exp.runs:
                if run.first_stage and run.first_stage not in runs:
                    raise UserError(
                        f"experiments.{exp.name}.pairs: first stage {run.first_stage[1]} is not a run of "
                        f"{run.first_stage[0]}"
                    )
        return plan


# --------------------------------------------------------------------------- construction


def _continuing(run: PlannedRun, experiments: dict[str, Experiment]) -> PlannedRun:
    """`run`, its first stage named by the run that trains it where that cell is shared."""
    if not run.first_stage or run.first_stage[0] not in experiments:
        return run
    base, first = run.first_stage
    trained = experiments[base].shared.get(first, first)
    return run if trained == first else dataclasses.replace(run, first_stage=(base, trained))


def _share(runs: list[PlannedRun]) -> tuple[list[PlannedRun], dict[str, str]]:
    """Train once what several cells would train alike: runs whose objectives are the same
    at their k (IWAE and the VAE with k = 1) and whose protocols are equal become the first
    of them, which records the others' objectives in `shared_cells`. Returns the runs left
    and {shared cell's id: id of the run that fills it}."""
    kept: dict[tuple, PlannedRun] = {}
    shared: dict[str, str] = {}
    for run in runs:
        same = Objective.parse(run.objective).trains_as(run.k)
        key = (run.dataset, str(run.layers), same, run.k, run.seed, run.variant, run.part,
               json.dumps(run.protocol, sort_keys=True), json.dumps(run.evaluation, sort_keys=True))  # fmt: skip
        first = kept.get(key)
        if first is None:
            kept[key] = run
            continue
        cells = [*first.protocol.get("shared_cells", []), run.objective]
        kept[key] = dataclasses.replace(first, protocol={**first.protocol, "shared_cells": cells})
        shared[run.id] = first.id
    return list(kept.values()), shared


def _check_options(kind, values: dict, where: str) -> None:
    """Check a protocol or evaluation section on its own (no dataset, no run)."""
    values = dict(values or {})
    if kind is TrainConfig:
        values.setdefault("data", "<the run's dataset>")
        values.setdefault("layers", "1-1")  # the grid gives each run's; this one suits every family
        if "objective" not in values and values.get("family") == "aevb":
            values["objective"] = "sgvb"
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
    source = exp.get("reference", "paper")
    if source not in SOURCES:
        raise UserError(f"{where}.reference: {source!r}: unknown; expected one of {', '.join(SOURCES)}")
    samples = evaluation.get("samples_figure", EvalConfig.samples_figure)
    figure_kinds = tuple(exp.get("figures", figures.DEFAULT))
    _check_names(f"{where}.figures", list(figure_kinds), figures.get)
    common = {"experiment": name, "protocol": protocol, "evaluation": evaluation}
    runs, shared = [], {}
    if kind == "grid":
        parts = exp.get("parts") or {None: {}}
        for part, overrides in parts.items():
            runs += _grid_runs(f"{where}.parts.{part}" if part else where, {**exp, **overrides}, part, common)
        if len({r.id for r in runs}) != len(runs):
            raise UserError(f"{where}.parts: two parts declare the same run")
        if exp.get("share_runs", True):
            runs, shared = _share(runs)
        ks = list(dict.fromkeys(run.k for run in runs))
    else:
        base = exp.get("first_stage")
        if base not in declared or declared[base].get("type") != "grid":
            raise UserError(f"{where}.first_stage: {base!r} is not a grid experiment")
        for pair, seed in itertools.product(exp["pairs"], exp["seeds"]):
            _check_names(f"{where}.pairs", [pair["dataset"]], catalogue.get)
            _check_names(f"{where}.pairs", [pair["layers"]], Architecture.parse)
            _check_names(f"{where}.pairs", [pair["first"], pair["second"]], Objective.parse)
            _check_run(where, "pairs", pair["second"], pair["second_k"], protocol, pair["layers"])
            tag = layers_tag(pair["layers"])
            first = f"{pair['dataset']}-{tag}-{pair['first']}-k{pair['first_k']}"
            run_id = f"{first}-to-{pair['second']}-k{pair['second_k']}-s{seed}"
            runs.append(
                PlannedRun(
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
    return Experiment(name, kind, title, layout, runs, ks, samples, figure_kinds, source, shared)


def _grid_runs(where: str, grid: dict, part: str | None, common: dict) -> list[PlannedRun]:
    """The runs of one grid: datasets x layers x objectives x k x variants x seeds; a part's
    protocol and evaluation override the experiment's key by key."""
    for key in ("datasets", "layers", "objectives", "k", "seeds"):
        if key not in grid:
            raise UserError(f"{where}: no {key}")
    protocol, evaluation = dict(common["protocol"]), dict(common["evaluation"])
    if part is not None:
        _check_options(TrainConfig, grid.get("protocol") or {}, f"{where}.protocol")
        _check_options(EvalConfig, grid.get("evaluation") or {}, f"{where}.evaluation")
        protocol |= grid.get("protocol") or {}
        evaluation |= grid.get("evaluation") or {}
    _check_names(f"{where}.datasets", grid["datasets"], catalogue.get)
    _check_names(f"{where}.layers", grid["layers"], Architecture.parse)
    _check_names(f"{where}.objectives", grid["objectives"], Objective.parse)
    variants = grid.get("variants") or {None: {}}  # name -> protocol overrides
    for name, overrides in variants.items():
        if name is not None:
            _check_options(TrainConfig, {**overrides}, f"{where}.variants.{name}")
    runs = []
    for dataset, layers, objective, k, (variant, overrides), seed in itertools.product(
        grid["datasets"], grid["layers"], grid["objectives"], grid["k"], variants.items(), grid["seeds"]
    ):
        run_protocol = {**protocol, **overrides}
        _check_run(where, "objectives", objective, k, run_protocol, layers)
        tag = f"{dataset}-{layers_tag(layers)}-{objective}-k{k}" + (f"-{variant}" if variant else "")
        runs.append(
            PlannedRun(id=f"{tag}-s{seed}", dataset=dataset, layers=layers, objective=objective, k=k, seed=seed,
                experiment=common["experiment"], protocol=run_protocol, evaluation=evaluation, variant=variant,
                part=part)
        )  # fmt: skip
    return runs


def _check_run(where: str, key: str, objective: str, k: int, protocol: dict, layers=None) -> None:
    """The objective with this k (an error names `where.key`), and the whole training
    configuration of the run (an error names `where`)."""
    try:
        Objective.parse(objective).check_samples(k)
    except UserError as e:
        raise UserError(f"{where}.{key}: {e}") from None
    layers = {} if layers is None else {"layers": str(layers)}
    TrainConfig.from_dict({"data": "<the run's dataset>", "objective": objective, "k": k, **protocol, **layers}, where)
