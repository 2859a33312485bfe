# Configuration checks and the input functions of the rules. Which runs, tables and figures an
# experiment makes, where their files go and what each job is given is the package's to say
# (iwae.plan: experiments, paths, jobs), read here, never restated.
import os
import shlex
import sys

from snakemake.exceptions import WorkflowError
from snakemake.settings.types import DeploymentMethod
from snakemake.utils import validate

# Jobs run `python -m iwae`: the package beside this workflow, also in a conda environment
# or a working directory elsewhere (--directory). Without conda, the environment running
# Snakemake runs the jobs too, so `.venv/bin/snakemake` works without activating .venv.
sys.path.insert(0, workflow.basedir)
_prefix = f"set -euo pipefail; export PYTHONPATH={shlex.quote(workflow.basedir)}; "
if DeploymentMethod.CONDA not in workflow.deployment_settings.deployment_method:
    _prefix += f'export PATH={shlex.quote(os.path.dirname(sys.executable))}:"$PATH"; '
shell.prefix(_prefix)

from iwae.data import catalogue
from iwae.errors import UserError
from iwae.plan import figures as FIGURE_KINDS
from iwae.plan import jobs, paths
from iwae.plan.config import duplicate_keys
from iwae.plan.experiments import Plan
from iwae.system.files import write_text

for path in workflow.configfiles:  # YAML keeps the last of a key given twice, silently
    for where in duplicate_keys(open(path).read()):
        print(
            f"warning: {path}, {where} given twice; the last value counts",
            file=sys.stderr,
        )
validate(config, schema="../schemas/config.schema.yaml")
try:  # names against their registries, options against the package's config classes
    PLAN = Plan.from_config(config)
except UserError as e:
    raise WorkflowError(f"config: {e}")

RAW = config["data"]["raw_dir"]
DATA = paths.DATA  # prepared datasets, shared by every configuration
RESULTS = PLAN.results  # this configuration's runs, tables, figures and logs
RUN = paths.run_dir(RESULTS)  # a run's directory: {experiment} and {run} as wildcards
REPORT_ONLY = config.get(
    "report_only", False
)  # tables and figures from finished runs only
SELECTED = [PLAN.experiments[name] for name in PLAN.selected]
PACKS = PLAN.packs(config["compute"].get("pack", "none"))
DEVICE, THREADS = config["compute"]["device"], config["compute"]["threads"]
GPUS = 0 if REPORT_ONLY else jobs.gpus_per_job(config["compute"])  # each job's GPUs
PUBLISHED = jobs.published(PLAN, config.get("publish", {}).get("name"))

for refusal in (jobs.conflicts(PLAN), jobs.unfinished(PLAN) if REPORT_ONLY else None):
    if (
        refusal
    ):  # before any job: never train over another configuration's finished runs
        raise WorkflowError(refusal)


wildcard_constraints:
    experiment="|".join(PLAN.experiments),
    run="[^/]+",
    dataset="|".join(catalogue.CATALOGUE),
    tag="[0-9]+l|L[0-9x_]+|[a-z][a-z0-9]*",


def run_of(wildcards):
    try:
        return PLAN.run(wildcards.experiment, wildcards.run)
    except UserError as e:
        raise WorkflowError(str(e))


def shell_args(args):
    return " ".join(shlex.quote(a) for a in args)


def evals_of(experiment):
    return [
        jobs.run_file(PLAN, r, "eval.json") for r in PLAN.experiments[experiment].runs
    ]


# ---------------------------------------------------------------- train.smk, evaluate.smk


def train_inputs(wildcards):
    run = run_of(wildcards)
    inputs = {"data": paths.data_file(run.dataset)}
    if run.first_stage:
        inputs["init"] = jobs.run_file(PLAN, run.first_stage, "model.pt")
    return inputs


def pack_spec(wildcards):
    """The pack file's content: each run's directory and flags (iwae.training.packs)."""
    named = (wildcards.experiment, wildcards.pack)
    pack = next((p for p in PACKS if (p.experiment, p.name) == named), None)
    if pack is None:
        raise WorkflowError(f"no pack {named[1]} in experiment {named[0]}")
    return jobs.pack_spec(PLAN, pack, DEVICE)


# ---------------------------------------------------------------- report.smk


def table_inputs(wildcards):
    exp = PLAN.experiments[wildcards.experiment]
    inputs = {"evals": evals_of(exp.name)}
    if exp.first_stages():
        inputs["first_stages"] = [
            jobs.run_file(PLAN, f, "eval.json") for f in exp.first_stages()
        ]
    return inputs


def runs_of(runs, why):
    if not runs:
        raise WorkflowError(why)
    return runs


def group_inputs(wildcards):
    """eval.json and train_log.csv of the runs of one dataset and architecture."""
    exp = PLAN.experiments[wildcards.experiment]
    group = (wildcards.dataset, wildcards.tag)
    runs = runs_of(
        exp.groups().get(group),
        f"no runs of {wildcards.dataset} with layers {wildcards.tag} in {exp.name}",
    )
    return {
        name: [jobs.run_file(PLAN, r, f) for r in runs]
        for name, f in (("evals", "eval.json"), ("logs", "train_log.csv"))
    }


def weights_inputs(wildcards):
    """model.pt of the runs with random weights of one dataset and architecture."""
    exp = PLAN.experiments[wildcards.experiment]
    runs = exp.groups().get((wildcards.dataset, wildcards.tag)) or []
    return [jobs.run_file(PLAN, r, "model.pt") for r in runs if r.random_weights]


def section_inputs(wildcards):
    """eval.json of the runs with curves of one part (or dataset) of an experiment."""
    exp = PLAN.experiments[wildcards.experiment]
    runs = runs_of(
        exp.curve_sections(wildcards.kind).get(wildcards.section),
        f"no runs for {wildcards.kind} in {wildcards.section} of {exp.name}",
    )
    return [jobs.run_file(PLAN, r, "eval.json") for r in runs]


def latent_inputs(wildcards):
    """model.pt of the runs of one part whose latent sizes a figure sets side by side, and
    their dataset."""
    exp = PLAN.experiments[wildcards.experiment]
    runs = runs_of(
        exp.latent_sections().get(wildcards.section),
        f"no runs of several latent sizes in {wildcards.section} of {exp.name}",
    )
    return {
        "models": [jobs.run_file(PLAN, r, "model.pt") for r in runs],
        "data": paths.data_file(runs[0].dataset),
        # the test points as the evaluations binarised them (their seed): drawn after them
        "evals": [jobs.run_file(PLAN, r, "eval.json") for r in runs],
    }


def run_figure_inputs(wildcards):
    run = run_of(wildcards)
    return {
        "model": jobs.run_file(PLAN, run, "model.pt"),
        "data": paths.data_file(run.dataset),
        # its test points as its evaluation binarised them (their seed): drawn after it
        "eval": jobs.run_file(PLAN, run, "eval.json"),
    }


def experiment_category(wildcards):
    """An experiment's section of Snakemake's report: its title."""
    return PLAN.experiments[wildcards.experiment].title


def figure_subcategory(wildcards):
    return FIGURE_KINDS.get(wildcards.kind).title
