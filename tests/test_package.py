"""The package's house: each folder one stage of the data flow, importing only the stages below
it; one registry per vocabulary; and files written before the house moved still work."""

from __future__ import annotations

import ast
import shutil
import subprocess
import sys

import torch

import iwae
from iwae.models.store import load_model
from iwae.plan.config import TrainConfig
from iwae.training.loop import train

from conftest import ROOT

# the house's floors, bottom to top: a module imports its own stage and the stages on the floors
# below it, never a stage beside it on its own floor or above it
FLOORS = [("errors",), ("system",), ("data", "estimators"), ("plan",), ("models",), ("backends",), ("training",),
          ("evaluation", "bench"), ("report",), ("cli",)]  # fmt: skip
FLOOR = {stage: i for i, stages in enumerate(FLOORS) for stage in stages}
PREVIOUS = ROOT / "tests/data/previous-version"  # written at the revision before the move


def _stage(module: str) -> str:
    parts = module.split(".")
    if len(parts) == 1 or parts[1] in ("__init__", "__main__", "cli"):
        return "cli"  # the package's face: `iwae.load_run`, the command line
    return parts[1].removesuffix(".py")


def _imports() -> dict[str, set[str]]:
    """Every iwae module and the iwae modules it imports, at the top or inside a function."""
    trees = {}
    for path in (ROOT / "iwae").rglob("*.py"):
        module = ".".join(path.relative_to(ROOT).with_suffix("").parts).removesuffix(".__init__")
        trees[module] = ast.parse(path.read_text())
    out = {}
    for module, tree in trees.items():
        found = set()
        for node in ast.walk(tree):
            if isinstance(node, ast.Import):
                found |= {a.name for a in node.names if a.name in trees}
            elif isinstance(node, ast.ImportFrom) and node.module in trees:
                names = [f"{node.module}.{a.name}" for a in node.names]  # a module, or a name in one
                found |= {n if n in trees else node.module for n in names}
        out[module] = found - {module}
    return out


def test_every_import_runs_down_the_floors_and_none_closes_a_circle():
    edges = _imports()
    assert {_stage(m) for m in edges} == set(FLOOR)  # every stage has its floor
    upward = [(m, i) for m, found in edges.items() for i in found
              if _stage(i) != _stage(m) and FLOOR[_stage(i)] >= FLOOR[_stage(m)]]  # fmt: skip
    assert not upward, upward
    circles = []
    for start in edges:  # a module that reaches itself
        seen, todo = set(), list(edges[start])
        while todo:
            module = todo.pop()
            if module == start:
                circles.append(start)
                break
            if module not in seen:
                seen.add(module)
                todo += edges[module]
    assert not circles, circles


def test_the_plan_imports_without_torch_or_pandas():
    plan = sorted(p.stem for p in (ROOT / "iwae/plan").glob("*.py") if p.stem != "__init__")
    code = f"import sys; import {', '.join(f'iwae.plan.{m}' for m in plan)}; print('torch' in sys.modules, 'pandas' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, check=True)
    assert out.stdout.split() == ["False", "False"], out.stderr


def test_each_figure_kind_and_table_layout_has_its_drawer_and_builder():
    from iwae.plan import figures, layouts
    from iwae.report import build

    assert all(callable(build.drawer(kind)) for kind in figures.KINDS.values())
    assert set(build.TABLES) == set(layouts.LAYOUTS)
    assert all(k.per in figures.PER and k.reads in figures.READS for k in figures.KINDS.values())
    assert all((k.drawn_for is not None) == (k.per == "run") for k in figures.KINDS.values())


def test_files_of_the_previous_version_load_and_resume(prepared, tmp_path):
    """A model file and a checkpoint taken inside an epoch, both written before the move:
    the model answers, and the interrupted run resumes to the very parameters that the
    previous version's uninterrupted run ended with."""
    finished = torch.load(PREVIOUS / "model.pt", weights_only=True)
    model = load_model(PREVIOUS / "model.pt")
    x = iwae.load_run(PREVIOUS, device="cpu").test_set(prepared["mnist"])[:5]
    assert model.log_weights(x, 3, torch.Generator().manual_seed(0)).shape == (3, 5)
    shutil.copytree(PREVIOUS / "checkpoints", tmp_path / "run" / "checkpoints")
    cfg = TrainConfig(data=str(prepared["mnist"]), layers="4-2", k=3, epochs_per_stage=[1, 1], train_subset=100,
                      threads=1)  # fmt: skip
    record = train(cfg, tmp_path / "run", quiet=True)
    assert record["resumes"] == 1 and record["epochs"] == 2
    assert torch.equal(torch.load(tmp_path / "run/model.pt", weights_only=True)["model"]["params"],
                       finished["model"]["params"])  # fmt: skip


def test_each_model_vocabulary_is_declared_once_and_built_and_helped_by_name():
    """iwae.plan.vocabulary declares the model-side names: every one has its builder, the
    builders build nothing else, and every option's help text (schema, --help) names them all."""
    import dataclasses

    from iwae import backends, models
    from iwae.estimators.objectives import REGISTRY
    from iwae.models import LayeredModel, likelihoods, priors
    from iwae.plan import vocabulary
    from iwae.plan.architecture import Architecture
    from iwae.plan.config import EvalConfig

    assert set(models.FAMILIES) == set(vocabulary.FAMILIES)
    assert set(models.FILE_FAMILIES) == {*vocabulary.FAMILIES, vocabulary.RANDOM_WEIGHTS_FAMILY}
    assert all(cls.family == name for name, cls in models.FILE_FAMILIES.items())
    assert set(likelihoods.LIKELIHOODS) == set(vocabulary.LIKELIHOODS)
    assert set(priors.PRIORS) == set(vocabulary.PRIORS)
    model = LayeredModel(Architecture.parse("1"), 784)
    assert {backends.select(model, name).name for name in vocabulary.BACKENDS} == {"fused", "autograd"}
    helps = {f.name: f.metadata["help"] for f in dataclasses.fields(TrainConfig)}
    named = {"family": vocabulary.FAMILIES, "likelihood": vocabulary.LIKELIHOODS, "prior": vocabulary.PRIORS,
             "backend": vocabulary.BACKENDS, "random": vocabulary.RANDOM_WEIGHTS}  # fmt: skip
    for key, names in named.items():
        assert all(f"'{name}'" in helps[key] for name in names), key
    evaluation = {f.name: f.metadata["help"] for f in dataclasses.fields(EvalConfig)}
    assert all(f"'{name}'" in evaluation["backend"] for name in vocabulary.BACKENDS)
    assert all(e.spec in helps["objective"] for e in REGISTRY.values()) and "sgvb" in helps["objective"]
