# Configuration checks and the input functions of all rules. Which runs, tables and figures
# an experiment makes is the package's to say (iwae.plan.experiments), read here, never restated.
import os
import shlex
import shutil
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
from iwae.plan import rundirs
from iwae.plan.config import TrainConfig, duplicate_keys, flags
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
DATA = "results/data"  # prepared datasets, shared by every configuration
RESULTS = PLAN.results  # this configuration's runs, tables, figures and logs
# report_only: tables and figures from finished runs only
REPORT_ONLY = config.get("report_only", False)
SELECTED = [PLAN.experiments[name] for name in PLAN.selected]
PACKS = PLAN.packs(config["compute"].get("pack", "none"))


wildcard_constraints:
    experiment="|".join(PLAN.experiments),
    run="[^/]+",
    dataset="|".join(catalogue.CATALOGUE),
    tag="[0-9]+l|L[0-9x_]+|[a-z][a-z0-9]*",


# ---------------------------------------------------------------- runs and their files


def run_of(wildcards):
    try:
        return PLAN.run(wildcards.experiment, wildcards.run)
    except UserError as e:
        raise WorkflowError(str(e))


def run_dir(experiment, run_id):
    return f"{RESULTS}/runs/{experiment}/{run_id}"


def run_file(experiment, run_id, name):
    return f"{run_dir(experiment, run_id)}/{name}"


def data_file(dataset):
    return f"{DATA}/{dataset}.npz"


def evals_of(experiment):
    return [
        run_file(experiment, r.id, "eval.json")
        for r in PLAN.experiments[experiment].runs
    ]


def planned_runs():
    """The runs of the selected experiments and the first stages they continue."""
    runs = {}
    for exp in SELECTED:
        for run in exp.runs:
            runs[(run.experiment, run.id)] = run
            if run.first_stage:
                runs[run.first_stage] = PLAN.run(*run.first_stage)
    return list(runs.values())


def run_options(run):
    """The `iwae train` options of a run's job (all but device and threads)."""
    options = run.train_options() | {"data": data_file(run.dataset)}
    if run.first_stage:
        options["init_from"] = run_file(*run.first_stage, "model.pt")
    return options


def refuse_runs_of_another_configuration():
    """Before any job: a finished run in this results directory that this configuration
    would train differently is never trained over (one line naming the options)."""
    conflicts = []
    for run in planned_runs():
        try:
            why = rundirs.conflict(
                run_dir(run.experiment, run.id), TrainConfig.from_dict(run_options(run))
            )
        except UserError as e:
            why = str(e)
        if why:
            conflicts.append(why)
    if conflicts:
        more = f" (and {len(conflicts) - 1} more runs)" if len(conflicts) > 1 else ""
        raise WorkflowError(
            f"{conflicts[0]}{more}: give the --configfile that made them, delete those run directories to train "
            f"them again, or give this configuration its own `results:` directory"
        )


def refuse_unfinished_runs():
    """report_only: every planned run must be trained and evaluated already."""
    missing = [
        path
        for run in planned_runs()
        for path in (
            run_file(run.experiment, run.id, f) for f in ("model.pt", "eval.json")
        )
        if not os.path.exists(path)
    ]
    if missing:
        raise WorkflowError(
            f"report_only: {len(missing)} files of runs that are not finished and evaluated are missing "
            f"(e.g. {missing[0]}); run without report_only to train and evaluate them"
        )


refuse_runs_of_another_configuration()
if REPORT_ONLY:
    refuse_unfinished_runs()


# ---------------------------------------------------------------- inputs and arguments


RAW_DATASET = catalogue.raw_file_owners()


def raw_inputs(wildcards):
    return [f"{RAW}/{raw.name}" for raw in catalogue.get(wildcards.dataset).raw_files]


def mirror_arg(wildcards):
    mirror = config["data"].get("mirror")
    return f"--mirror {shlex.quote(mirror)}" if mirror else ""


def cli_args(options):
    return " ".join(shlex.quote(a) for a in flags(options))


def train_inputs(wildcards):
    run = run_of(wildcards)
    inputs = {"data": data_file(run.dataset)}
    if run.first_stage:
        inputs["init"] = run_file(*run.first_stage, "model.pt")
    return inputs


def run_flags(run):
    """A run's `iwae train` flags, the same for a job of its own and in a pack file."""
    return flags(run_options(run) | {"device": config["compute"]["device"]})


def train_args(wildcards):
    return " ".join(shlex.quote(a) for a in run_flags(run_of(wildcards)))


def eval_args(wildcards):
    return cli_args(
        run_of(wildcards).eval_options() | {"device": config["compute"]["device"]}
    )


def table_inputs(wildcards):
    exp = PLAN.experiments[wildcards.experiment]
    inputs = {"evals": evals_of(exp.name)}
    if exp.first_stages():
        inputs["first_stages"] = [run_file(*f, "eval.json") for f in exp.first_stages()]
    return inputs


def group_inputs(wildcards):
    """eval.json and train_log.csv of the runs of one dataset and architecture."""
    exp = PLAN.experiments[wildcards.experiment]
    runs = exp.groups().get((wildcards.dataset, wildcards.tag))
    if not runs:
        raise WorkflowError(
            f"no runs of {wildcards.dataset} with layers {wildcards.tag} in {exp.name}"
        )
    return {
        "evals": [run_file(exp.name, r.id, "eval.json") for r in runs],
        "logs": [run_file(exp.name, r.id, "train_log.csv") for r in runs],
    }


def weights_inputs(wildcards):
    """model.pt of the runs with random weights of one dataset and architecture."""
    exp = PLAN.experiments[wildcards.experiment]
    runs = exp.groups().get((wildcards.dataset, wildcards.tag)) or []
    return [run_file(exp.name, r.id, "model.pt") for r in runs if r.random_weights]


def section_inputs(wildcards):
    """eval.json of the runs with curves of one part (or dataset) of an experiment."""
    exp = PLAN.experiments[wildcards.experiment]
    runs = exp.curve_sections(wildcards.kind).get(wildcards.section)
    if not runs:
        raise WorkflowError(
            f"no runs for {wildcards.kind} in {wildcards.section} of {exp.name}"
        )
    return [run_file(exp.name, r.id, "eval.json") for r in runs]


def latent_inputs(wildcards):
    """model.pt of the runs of one part whose latent sizes a figure sets side by side, and
    their dataset."""
    exp = PLAN.experiments[wildcards.experiment]
    runs = exp.latent_sections().get(wildcards.section)
    if not runs:
        raise WorkflowError(
            f"no runs of several latent sizes in {wildcards.section} of {exp.name}"
        )
    return {
        "models": [run_file(exp.name, r.id, "model.pt") for r in runs],
        "data": data_file(runs[0].dataset),
    }


def run_figure_inputs(wildcards):
    run = run_of(wildcards)
    return {
        "model": run_file(run.experiment, run.id, "model.pt"),
        "data": data_file(run.dataset),
    }


# ---------------------------------------------------------------- Snakemake's report


def experiment_category(wildcards):
    """An experiment's section of the report: its title."""
    return PLAN.experiments[wildcards.experiment].title


def figure_subcategory(wildcards):
    return FIGURE_KINDS.get(wildcards.kind).title


def figure_kinds(per, reads):
    """The kinds of figure one rule draws, as a wildcard constraint."""
    return "|".join(FIGURE_KINDS.names(per, reads))


def group_labels(wildcards):
    return {"dataset": wildcards.dataset, "layers": wildcards.tag}


def section_labels(wildcards):
    return {"part": wildcards.section}


def run_labels(wildcards):
    return {"run": wildcards.run}


# ---------------------------------------------------------------- targets


def experiment_tables(exp):
    return [f"{RESULTS}/tables/{name}" for name in exp.tables()]


def experiment_figures(exp):
    return [
        f"{RESULTS}/figures/{exp.name}/{stem}.{ext}"
        for stem in exp.figures()
        for ext in ("pdf", "png")
    ]


def report_outputs():
    """report.tex, and its PDF when a LaTeX engine is on PATH."""
    engine = shutil.which("tectonic") or shutil.which("pdflatex")
    return [f"{RESULTS}/report.tex"] + ([f"{RESULTS}/report.pdf"] if engine else [])


def stem(output):
    """An output path without its extension, for commands that write .pdf and .png."""
    return os.path.splitext(str(output))[0]


# ---------------------------------------------------------------- publishing

PUBLISHED = f"results/published/{config.get('publish', {}).get('name') or os.path.basename(RESULTS)}"


def publish_spec():
    """What a published folder needs to build its tables again: each selected experiment's
    title, layout, reference and runs (and first stages), in the workflow's order."""
    import json

    spec = {"experiments": {}, "summary": []}
    for exp in SELECTED:
        spec["experiments"][exp.name] = {
            "title": exp.title,
            "layout": exp.layout,
            "reference": exp.reference,
            "findings": exp.has_findings,
            "runs": [r.id for r in exp.runs],
            "first_stages": [list(f) for f in exp.first_stages()],
        }
        spec["summary"] += [[exp.name, r.id] for r in exp.runs]
    return json.dumps(spec, indent=1, sort_keys=True)


def final_outputs():
    out = [f"{RESULTS}/tables/summary.csv", f"{RESULTS}/tables/summary.md"]
    out += report_outputs()
    for exp in SELECTED:
        out += experiment_tables(exp) + experiment_figures(exp)
    # every model too: one missing (deleted, or lost to a crash) is trained again even when
    # the tables made from it are still there
    out += [run_file(run.experiment, run.id, "model.pt") for run in planned_runs()]
    return out
