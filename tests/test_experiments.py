"""The experiment model and the registries, without Snakemake: runs, ids, links, outputs,
config errors that name their key, and a new objective that needs no other change."""

from __future__ import annotations

import copy

import jsonschema
import pandas as pd
import pytest
import yaml

from iwae.errors import UserError
from iwae.estimators import objectives
from iwae.estimators.objectives import Coefficients, Estimate, Objective
from iwae.plan.config import TrainConfig
from iwae.plan.experiments import Plan, layers_tag
from iwae.report import tables

from conftest import ROOT

CONFIG = yaml.safe_load((ROOT / "config.yaml").read_text())
SCHEMA = yaml.safe_load((ROOT / "workflow/schemas/config.schema.yaml").read_text())


def validate(config: dict) -> None:
    """The workflow's schema check, with its reference to the generated options schema."""
    from referencing import Registry, Resource

    options = yaml.safe_load((ROOT / "workflow/schemas/options.schema.yaml").read_text())
    registry = Registry().with_resource("options.schema.yaml", Resource.from_contents(options))
    jsonschema.Draft202012Validator(SCHEMA, registry=registry).validate(config)


def with_changes(**experiments) -> dict:
    config = copy.deepcopy(CONFIG)
    for name, changes in experiments.items():
        config["experiments"][name] = {**config["experiments"].get(name, {}), **changes}
    return config


def test_default_config_is_table1_and_its_runs():
    plan = Plan.from_config(CONFIG)
    assert plan.selected == ["table1"]
    table1 = plan.experiments["table1"]
    ids = [r.id for r in table1.runs]
    # 24 cells, 20 runs: the VAE and IWAE cells with k = 1 share one run per dataset and depth
    assert len(ids) == 20 and ids[0] == "mnist-1l-vae-k1-s1" and "omniglot-2l-iwae-k50-s1" in ids
    assert "mnist-1l-iwae-k1-s1" not in ids and table1.shared["mnist-1l-iwae-k1-s1"] == "mnist-1l-vae-k1-s1"
    assert plan.run("table1", "mnist-1l-iwae-k1-s1").id == "mnist-1l-vae-k1-s1"
    run = plan.run("table1", "mnist-2l-iwae-k50-s1")
    assert (run.dataset, run.layers, run.objective, run.k, run.seed) == ("mnist", 2, "iwae", 50, 1)
    options = run.train_options()
    assert options["epochs_per_stage"] == [1, 3, 9, 27, 81, 243, 729, 2187] and options["lr"] == 1e-3
    assert run.eval_options()["k"] == 5000 and "samples_figure" not in run.eval_options()
    assert table1.title.startswith("Burda et al., Table 1") and table1.layout == "nll-au"
    with pytest.raises(UserError, match="no run"):
        plan.run("table1", "mnist-3l-iwae-k50-s1")


def test_outputs_of_each_experiment():
    plan = Plan.from_config(CONFIG)
    table1 = plan.experiments["table1"]
    assert table1.tables() == ["table1.tex", "table1.md", "table1.html", "table1_vs_paper.tex", "table1_vs_paper.md",
                              "table1_vs_paper.html", "table1_findings.tex", "table1_findings.md",
                              "table1_findings.html"]  # fmt: skip
    assert not plan.experiments["posterior"].has_findings  # no finding concerns it: no findings table
    figures = table1.figures()
    assert "nll_vs_k" in figures and "curves_mnist_1l" in figures and "variances_omniglot_2l" in figures
    assert sum(f.startswith("samples/") for f in figures) == 20
    assert len(figures) == 4 * 2 + 1 + 20
    single_k = plan.experiments["estimators"]
    assert "nll_vs_k" not in single_k.figures() and single_k.layout == "bounds"
    assert plan.experiments["table2"].layout == "two-stage"


def test_two_stage_runs_link_to_their_first_stage():
    plan = Plan.from_config(CONFIG)
    table2 = plan.experiments["table2"]
    assert [r.id for r in table2.runs] == ["mnist-1l-vae-k1-to-iwae-k50-s1", "mnist-1l-iwae-k50-to-vae-k1-s1"]
    assert table2.runs[0].first_stage == ("table1", "mnist-1l-vae-k1-s1")
    assert table2.first_stages() == [("table1", "mnist-1l-iwae-k50-s1"), ("table1", "mnist-1l-vae-k1-s1")]
    assert table2.runs[0].train_options()["lr"] == 1e-4 and table2.runs[0].train_options()["epochs_per_stage"] == [2187]


def test_seeds_and_explicit_architectures_multiply_runs():
    plan = Plan.from_config(with_changes(table1={"seeds": [1, 2, 3], "layers": [1, "200-200-2"]}))
    ids = [r.id for r in plan.experiments["table1"].runs]
    assert len(ids) == 60 and "mnist-L200x200x2-iwae-k50-s3" in ids
    assert layers_tag("200-200-100/100-100-50") == "L200x200x100_100x100x50"


def test_experiment_overrides_merge_key_by_key():
    config = with_changes(fixed={"type": "grid", "datasets": ["mnist-fixed"], "layers": [1], "objectives": ["iwae"],
                                 "k": [5], "seeds": [1], "protocol": {"lr": 3e-4}, "evaluation": {"k": 100}})  # fmt: skip
    run = Plan.from_config(config).experiments["fixed"].runs[0]
    assert run.train_options()["lr"] == 3e-4 and run.train_options()["batch_size"] == 20
    assert run.eval_options()["k"] == 100 and run.eval_options()["seed"] == 123


@pytest.mark.parametrize(
    "change,key",
    [
        ({"table1": {"datasets": ["cifar"]}}, "experiments.table1.datasets: dataset 'cifar'"),
        ({"table1": {"objectives": ["miwae-m3"]}}, "experiments.table1.objectives: objective miwae-m3: k = 1"),
        ({"table1": {"objectives": ["nope"]}}, "experiments.table1.objectives: objective 'nope'"),
        ({"table1": {"layers": ["9-x"]}}, "experiments.table1.layers"),
        ({"table1": {"table": "bounds"}}, "experiments.table1.table: layout 'bounds' needs"),
        ({"table1": {"table": "pie"}}, "experiments.table1.table: table layout 'pie'"),
        ({"table2": {"table": "nll-au"}}, "experiments.table2.table: layout 'nll-au' renders grid"),
        ({"table1": {"protocol": {"lrr": 1}}}, "experiments.table1.protocol: unknown training option 'lrr'"),
        ({"table1": {"protocol": {"backend": "jax"}}}, "experiments.table1.protocol: backend: 'jax'"),
        ({"table1": {"evaluation": {"k": 0}}}, "experiments.table1.evaluation: k: 0 must be a positive integer"),
        ({"table2": {"first_stage": "table9"}}, "experiments.table2.first_stage"),
        ({"table2": {"seeds": [2]}}, "experiments.table2.pairs: first stage mnist-1l-vae-k1-s2 is not a run"),
    ],
)
def test_config_errors_name_the_key(change, key):
    config = with_changes(**change)
    config["run_experiments"] = ["table1", "table2"]
    with pytest.raises(UserError) as err:
        Plan.from_config(config)
    assert key in str(err.value), str(err.value)


def test_section_and_selection_errors_name_the_key():
    for section, values, key in (
        ("protocol", {"batch_size": "twenty"}, "protocol: batch_size: 'twenty'"),
        ("evaluation", {"extra_k": [0]}, "evaluation: extra_k"),
        ("run_experiments", ["table9"], "run_experiments: 'table9'"),
    ):
        config = copy.deepcopy(CONFIG)
        config[section] = {**config[section], **values} if isinstance(values, dict) else values
        with pytest.raises(UserError, match=key):
            Plan.from_config(config)


@pytest.fixture
def new_objective():
    """An objective added the way the registry asks: one decorated function."""

    @objectives.estimator("halfiwae", "Half-IWAE(a={})", param=("a", float))
    def halfiwae(log_w, a):
        bound, w = log_w.logsumexp(0) - log_w.new_tensor(log_w.shape[0]).log(), log_w.softmax(0)
        c = a * w / log_w.shape[1]
        return Estimate(a * bound, Coefficients(c, c, c))

    yield "halfiwae-a0.5"
    del objectives.REGISTRY["halfiwae"]


def test_a_new_objective_needs_only_its_registry_entry(new_objective, tmp_path):
    assert Objective.parse(new_objective).label == "Half-IWAE(a=0.5)"
    config = with_changes(table1={"objectives": ["vae", "iwae", new_objective]})
    validate(config)  # the schema does not restate the vocabulary
    plan = Plan.from_config(config)
    assert "mnist-1l-halfiwae-a0.5-k50-s1" in [r.id for r in plan.experiments["table1"].runs]
    # the report labels it from the registry
    frame = pd.DataFrame(
        [{"dataset": "mnist", "dataset_label": "MNIST", "layers": 1, "objective": o, "k": 5, "seed": 1,
          "nll": 90.0, "nll_stderr": 0.5, "test_points": 500, "test_selection": "random", "eval_k": 5000,
          "active_units": "20", "active_total": 20, "iwae64": float("nan"), "train_nll": float("nan"),
          "train_points": 0, "epochs": 3, "random": "none"}
         for o in ("iwae", new_objective)]
    )  # fmt: skip
    header = tables.nll_au(frame).markdown()
    assert "Half-IWAE(a=0.5) NLL" in header and "IWAE NLL" in header


def test_packs_group_an_experiments_runs_by_dataset():
    plan = Plan.from_config(CONFIG)
    assert plan.packs("none") == []
    packs = [p for p in plan.packs("dataset") if p.experiment == "table1"]
    assert [(p.name, len(p.runs)) for p in packs] == [("mnist", 10), ("omniglot", 10)]
    assert {r.dataset for r in packs[0].runs} == {"mnist"}
    small = [p for p in plan.packs(5) if p.experiment == "table1"]
    assert [(p.name, len(p.runs)) for p in small] == [
        ("mnist-1", 5), ("mnist-2", 5), ("omniglot-1", 5), ("omniglot-2", 5)
    ]  # fmt: skip
    second = [p for p in plan.packs("dataset") if p.experiment == "table2"]
    assert len(second) == 1 and all(r.first_stage for r in second[0].runs)  # second stages pack among themselves
    for bad in ("all", 0, True):
        with pytest.raises(UserError, match="compute.pack"):
            plan.packs(bad)
    config = copy.deepcopy(CONFIG)
    config["compute"]["pack"] = "runs"
    with pytest.raises(UserError, match="compute.pack: 'runs'"):
        Plan.from_config(config)


def test_cells_of_one_objective_share_a_run_unless_asked_for_both():
    """VAE and IWAE with k = 1 are one objective: one run, which says so in its options (and
    so in train.json), fills both cells; a second stage of the shared cell continues that run."""
    plan = Plan.from_config(with_changes(table2={"pairs": [
        {"dataset": "mnist", "layers": 1, "first": "iwae", "first_k": 1, "second": "iwae", "second_k": 5}]}))  # fmt: skip
    run = plan.run("table1", "mnist-1l-vae-k1-s1")
    assert run.train_options()["shared_cells"] == ["iwae"]
    assert "shared_cells" not in plan.run("table1", "mnist-1l-iwae-k5-s1").train_options()
    assert plan.experiments["table2"].runs[0].first_stage == ("table1", "mnist-1l-vae-k1-s1")
    both = Plan.from_config(with_changes(table1={"share_runs": False})).experiments["table1"]
    assert len(both.runs) == 24 and both.shared == {}
    # other protocols, variants or objectives that differ at k = 1 never share
    estimators = Plan.from_config(with_changes(estimators={"k": [1], "objectives": ["iwae", "stl", "dreg"]}))
    assert len(estimators.experiments["estimators"].runs) == 3
    with pytest.raises(UserError, match="names stl, not the same objective as vae with k = 1"):
        TrainConfig.from_dict({"data": "x.npz", "objective": "vae", "k": 1, "shared_cells": ["stl"]})
    with pytest.raises(UserError, match="names iwae, not the same objective as vae with k = 5"):
        TrainConfig.from_dict({"data": "x.npz", "objective": "vae", "k": 5, "shared_cells": ["iwae"]})
    # recorded, not a different run: a checkpoint written without it resumes with it
    plain = TrainConfig.from_dict({"data": "x.npz", "objective": "vae", "k": 1})
    shared = TrainConfig.from_dict({"data": "x.npz", "objective": "vae", "k": 1, "shared_cells": ["iwae"]})
    assert plain.fingerprint() == shared.fingerprint() and shared.differences(plain.to_dict()) == []


def test_variants_are_runs_of_their_own():
    plan = Plan.from_config(CONFIG)
    iwaer = plan.experiments["iwaer"]
    ids = [r.id for r in iwaer.runs]
    assert len(ids) == 2 * 3 * 5 and "mnist-seed001-iwae-k25-iwaer_rec-s3" in ids
    run = plan.run("iwaer", "omniglot-seed001-iwae-k25-iwaer-s1")
    options = run.train_options()
    assert run.variant == "iwaer" and options["random"] == "both" and options["layers"] == "seed001"
    assert options["batch_size"] == 100 and options["adam_eps"] == 1e-8 and options["epochs_per_stage"] == [500]
    assert plan.run("iwaer", "mnist-seed001-iwae-k25-iwae-s1").train_options()["random"] == "none"
    assert iwaer.layout == "random-weights" and run.eval_options()["k"] == 2000
    figures = iwaer.figures()
    assert "weights_mnist_seed001" in figures and "curves_omniglot_seed001" in figures
    assert "weights_mnist_1l" not in plan.experiments["table1"].figures()
    bad = with_changes(iwaer={"variants": {"x": {"random": "all"}}})
    with pytest.raises(UserError, match="experiments.iwaer.variants.x: random: 'all'"):
        Plan.from_config(bad)


def test_parts_make_one_experiment_of_several_grids():
    """Kingma & Welling's experiment: three grids (MNIST, Frey Face, the marginal-likelihood
    runs) in one experiment, each part overriding the protocol; its figures by part and run."""
    plan = Plan.from_config(CONFIG)
    aevb = plan.experiments["aevb"]
    ids = [r.id for r in aevb.runs]
    assert len(ids) == 6 + 4 + 2 and "freyface-L200x20-sgvb-k1-s1" in ids and "mnist-L100x3-sgvb-k1-n1000-s1" in ids
    mnist = plan.run("aevb", "mnist-L500x200-sgvb-k1-s1").train_options()
    assert mnist["train_subset"] == 50000 and mnist["epochs_per_stage"] == [2000] and mnist["family"] == "aevb"
    assert mnist["optimizer"] == "adagrad" and mnist["lr_pilot"] == [0.01, 0.02, 0.1] and mnist["batch_size"] == 100
    small = plan.run("aevb", "mnist-L100x3-sgvb-k1-n1000-s1")
    assert small.train_options()["train_subset"] == 1000 and small.eval_options()["hmc_points"] == 1000
    assert "hmc_points" not in plan.run("aevb", "freyface-L200x2-sgvb-k1-s1").eval_options()
    figures = aevb.figures()
    assert {"bound_vs_samples_mnist", "bound_vs_samples_freyface", "ml_vs_samples_marginal"} <= set(figures)
    assert [f for f in figures if f.startswith(("manifold/", "latents/"))] == [
        "manifold/mnist-L500x2-sgvb-k1-s1", "manifold/freyface-L200x2-sgvb-k1-s1", "latents/mnist-L500x2-sgvb-k1-s1"
    ]  # fmt: skip
    assert not any(f.startswith(("curves_", "variances_")) for f in figures)  # not among its figures
    # KW's figure 5 and seed 002's figure 3 per part of several latent sizes (not the marginal part's Nz = 3 twice)
    by_size = [f for f in figures if f.startswith(("reconstructions_", "samples_by_latent_"))]
    assert sorted(by_size) == ["reconstructions_freyface", "reconstructions_mnist", "samples_by_latent_freyface",
                               "samples_by_latent_mnist"]  # fmt: skip
    assert "latents/mnist-L500x2-sgvb-k1-s1" in plan.experiments["aevb-seed002"].figures()
    assert "weight_prior" not in plan.run("aevb-seed002", "mnist-L500x20-sgvb-k1-s1").train_options()  # Keras' Adam
    validate(CONFIG)


def test_every_seed_table_is_an_experiment_with_its_source():
    """Seed 000's Table 1 under its protocol, nbip's tables (IWAE, VAE, DReG; the conditional
    IWAE) under theirs: each an experiment whose table sets the seed's values beside ours."""
    plan = Plan.from_config(CONFIG)
    seed000 = plan.experiments["seed000"]
    assert len(seed000.runs) == 20 and seed000.reference == "seed000" and seed000.layout == "nll-au"
    run = plan.run("seed000", "omniglot-2l-iwae-k50-s1").train_options()
    assert run["epochs_per_stage"] == [1, 3, 9, 27, 81, 243] and run["lr_decade_stages"] == 5
    assert run["batch_size"] == 100 and run["train_split"] == "train+valid" and run["output_bias"] == "zero"
    nbip = plan.experiments["nbip"]
    assert sorted(r.id for r in nbip.runs if r.objective == "dreg") == [
        f"mnist-L200x200x100-dreg-k{k}-s1" for k in (1, 5, 50)
    ]  # fmt: skip
    assert len(nbip.runs) == 5 + 5 + 3 and nbip.reference == "nbip"
    assert all(r.train_options()["train_split"] == "train+valid" for r in nbip.runs)
    # nbip's scripts set Keras' Adam epsilon to 1e-4, the paper's, on minibatch-mean losses
    for run in nbip.runs + plan.experiments["nbip-conditional"].runs:
        assert run.train_options()["adam_eps"] == 1e-4 and run.train_options().get("reduction", "mean") == "mean"
    assert "training_samples/mnist-2l-iwae-k50-s1" in nbip.figures()
    given = plan.experiments["nbip-conditional"]
    assert len(given.runs) == 3 and all(r.conditional for r in given.runs) and given.reference == "nbip"
    with pytest.raises(UserError, match="experiments.seed000.reference: 'seed999': unknown"):
        Plan.from_config(with_changes(seed000={"reference": "seed999"}))


@pytest.mark.parametrize(
    "changes,key",
    [
        ({"figures": ["curvez"]}, "experiments.aevb.figures: figure 'curvez'"),
        ({"parts": {"mnist": {"datasets": ["mnist"], "layers": ["2"]}}}, "experiments.aevb.parts.mnist: .*layers"),
        ({"parts": {"a": {"datasets": ["mnist"], "layers": ["500-2"]}, "b": {"datasets": ["mnist"], "layers": ["500-2"]}}},
         "experiments.aevb.parts: two parts declare the same run"),
    ],
)  # fmt: skip
def test_bad_parts_and_figures_name_their_key(changes, key):
    config = copy.deepcopy(CONFIG)
    config["experiments"]["aevb"].update(changes)
    with pytest.raises(UserError, match=key):
        Plan.from_config(config)


def test_posterior_experiment_runs_and_figures():
    """nbip's tasks: a 2-D part, a 2-layer part, conditional runs named by their prior, and
    the unconditional baseline; each figure drawn for the runs it applies to."""
    plan = Plan.from_config(CONFIG)
    exp = plan.experiments["posterior"]
    assert len(exp.runs) == 2 + 2 + 6 + 3
    given = plan.run("posterior", "mnist-L200x200x100-iwae-k50-label_prior-s1")
    assert given.conditional and given.train_options()["prior"] == "label"
    assert given.eval_options()["mixture_points"] == 1000
    assert not plan.run("posterior", "mnist-L200x200x100-iwae-k50-s1").conditional
    figures = exp.figures()
    assert [f for f in figures if f.startswith("posterior/")] == [
        "posterior/mnist-L200x200x2-iwae-k50-s1", "posterior/mnist-L200x200x2-vae-k50-s1"]  # fmt: skip
    assert sum(f.startswith("pca/") for f in figures) == 2 and sum(f.startswith("by_label/") for f in figures) == 6
    bad = with_changes(posterior={"parts": {"x": {"layers": ["200-200-2"], "objectives": ["iwae"], "k": [5],
                                                 "variants": {"p": {"prior": "label"}}}}})  # fmt: skip
    with pytest.raises(
        UserError, match="experiments.posterior.parts.x.variants.p: prior: 'label' needs condition 'label'"
    ):
        Plan.from_config(bad)


def _described(node: dict, schema: dict, options: dict) -> bool:
    """Whether a schema node (following its $ref) carries a description."""
    while "description" not in node and "$ref" in node:
        ref = node["$ref"]
        source = options if ref.startswith("options.schema.yaml") else schema
        for part in ref.split("#/")[1].split("/"):
            source = source[part]
        node = source
    return "description" in node


def test_every_documented_config_key_is_described_in_the_schema():
    """Every key config.yaml (and a preset) uses carries its meaning in the schema, so a
    validation error points at it; protocol and evaluation keys come from the config
    classes' help texts (workflow/schemas/options.schema.yaml, generated)."""
    from iwae.plan import schema as options_schema

    options = yaml.safe_load((ROOT / "workflow/schemas/options.schema.yaml").read_text())
    assert (ROOT / "workflow/schemas/options.schema.yaml").read_text() == options_schema.render()
    defs = SCHEMA["definitions"]
    for key, value in CONFIG.items():
        assert _described(SCHEMA["properties"][key], SCHEMA, options), key
        if key in ("data", "compute"):
            for sub in value:
                assert _described(SCHEMA["properties"][key]["properties"][sub], SCHEMA, options), f"{key}.{sub}"
    for section in ("protocol", "evaluation"):
        for field in options["definitions"][section]["properties"].values():
            assert field["description"]
        assert set(CONFIG[section]) <= set(options["definitions"][section]["properties"]), section
    for name, exp in CONFIG["experiments"].items():
        kind = "grid_experiment" if exp["type"] == "grid" else "two_stage_experiment"
        for key in exp:
            assert _described(defs[kind]["properties"][key], SCHEMA, options), f"experiments.{name}.{key}"
        for part in (exp.get("parts") or {}).values():
            for key in part:
                assert _described(defs["grid_part"]["properties"][key], SCHEMA, options), f"parts.{key}"
