# Configuration checks, the enumeration of runs, and the input functions of all rules.
import itertools
import os
import shlex
import shutil
import subprocess
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

from iwae.sources import RAW_FILES

validate(config, schema="../schemas/config.schema.yaml")

RAW = config["data"]["raw_dir"]
RESULTS = "results"
EXPERIMENTS = config["experiments"]
SELECTED = config["run_experiments"]


def config_error(key, message):
    raise WorkflowError(f"config: {key}: {message}")


for name in SELECTED:
    if name not in EXPERIMENTS:
        config_error("run_experiments", f"{name!r} is not declared under experiments")


# ---------------------------------------------------------------- runs


def layers_tag(layers):
    """1 -> '1l'; an explicit spec '200-200-50' -> 'L200x200x50'."""
    text = str(layers)
    if text.isdigit():
        return f"{text}l"
    return f"L{text.translate(str.maketrans('-/', 'x_'))}"


def check_objective(key, objective, k):
    if objective.startswith(("miwae-m", "piwae-m")):
        m = int(objective.split("-m")[1])
        if m < 1 or k % m:
            config_error(key, f"{objective} needs k divisible by M = {m}, got k = {k}")
    if objective.startswith("ciwae-b") and not 0 <= float(objective[7:]) <= 1:
        config_error(key, f"{objective}: beta must lie in [0, 1]")


def merged(name, exp, section):
    values = {**config[section], **exp.get(section, {})}
    return values


def enumerate_runs():
    """Every run of every declared experiment: (experiment, run id) -> its specification."""
    runs = {}
    for name, exp in EXPERIMENTS.items():
        protocol, evaluation = merged(name, exp, "protocol"), merged(
            name, exp, "evaluation"
        )
        if exp["type"] == "grid":
            grid = itertools.product(
                exp["datasets"],
                exp["layers"],
                exp["objectives"],
                exp["k"],
                exp["seeds"],
            )
            for dataset, layers, objective, k, seed in grid:
                check_objective(f"experiments.{name}.objectives", objective, k)
                run = f"{dataset}-{layers_tag(layers)}-{objective}-k{k}-s{seed}"
                runs[(name, run)] = dict(
                    experiment=name,
                    run=run,
                    dataset=dataset,
                    layers=layers,
                    objective=objective,
                    k=k,
                    seed=seed,
                    protocol=protocol,
                    evaluation=evaluation,
                    first_stage=None,
                )
        else:
            base = exp["first_stage"]
            if base not in EXPERIMENTS or EXPERIMENTS[base]["type"] != "grid":
                config_error(
                    f"experiments.{name}.first_stage",
                    f"{base!r} is not a grid experiment",
                )
            for pair, seed in itertools.product(exp["pairs"], exp["seeds"]):
                tag = layers_tag(pair["layers"])
                first = f"{pair['dataset']}-{tag}-{pair['first']}-k{pair['first_k']}-s{seed}"
                run = (
                    f"{pair['dataset']}-{tag}-{pair['first']}-k{pair['first_k']}"
                    f"-to-{pair['second']}-k{pair['second_k']}-s{seed}"
                )
                check_objective(
                    f"experiments.{name}.pairs", pair["second"], pair["second_k"]
                )
                runs[(name, run)] = dict(
                    experiment=name,
                    run=run,
                    dataset=pair["dataset"],
                    layers=pair["layers"],
                    objective=pair["second"],
                    k=pair["second_k"],
                    seed=seed,
                    protocol=protocol,
                    evaluation=evaluation,
                    first_stage=(base, first),
                )
    for (name, run), spec in runs.items():
        if spec["first_stage"] and spec["first_stage"] not in runs:
            config_error(
                f"experiments.{name}.pairs",
                f"first stage {spec['first_stage'][1]} is not a run of {spec['first_stage'][0]}",
            )
    return runs


RUNS = enumerate_runs()


wildcard_constraints:
    experiment="|".join(EXPERIMENTS),
    run="[^/]+",
    dataset="|".join(RAW_FILES),
    tag="[0-9]+l|L[0-9x_]+",


def spec(wildcards):
    key = (wildcards.experiment, wildcards.run)
    if key not in RUNS:
        raise WorkflowError(
            f"no run {wildcards.run} in experiment {wildcards.experiment}"
        )
    return RUNS[key]


def run_dir(experiment, run):
    return f"{RESULTS}/runs/{experiment}/{run}"


def run_file(experiment, run, name):
    return os.path.join(run_dir(experiment, run), name)


def runs_of(experiment):
    return [r for (e, r) in RUNS if e == experiment]


# ---------------------------------------------------------------- compute


def gpus_per_job():
    wanted = config["compute"]["gpus_per_job"]
    if wanted != "auto":
        return int(wanted)
    if (
        config["compute"]["device"] == "cpu"
        or os.environ.get("CUDA_VISIBLE_DEVICES") == ""
    ):
        return 0
    smi = shutil.which("nvidia-smi")
    try:  # CUDA visible where snakemake runs: a GPU workstation
        found = (
            smi
            and "GPU"
            in subprocess.run(
                [smi, "-L"], capture_output=True, text=True, timeout=20
            ).stdout
        )
    except (OSError, subprocess.SubprocessError):
        found = False
    return 1 if found else 0


GPUS = gpus_per_job()
THREADS = config["compute"]["threads"]


# ---------------------------------------------------------------- inputs and arguments


RAW_DATASET = {
    raw.name: dataset for dataset, files in RAW_FILES.items() for raw in files
}


def raw_inputs(wildcards):
    return [f"{RAW}/{raw.name}" for raw in RAW_FILES[wildcards.dataset]]


def data_file(dataset):
    return f"{RESULTS}/data/{dataset}.npz"


def mirror_arg(wildcards):
    mirror = config["data"].get("mirror")
    return f"--mirror {shlex.quote(mirror)}" if mirror else ""


def train_inputs(wildcards):
    s = spec(wildcards)
    inputs = {"data": data_file(s["dataset"])}
    if s["first_stage"]:
        inputs["init"] = run_file(*s["first_stage"], "model.pt")
    return inputs


def cli_args(pairs):
    out = []
    for flag, value in pairs:
        if value is None:
            continue
        if isinstance(value, bool):
            out.append(f"--{flag}" if value else f"--no-{flag}")
        elif isinstance(value, list):
            out += [f"--{flag}", ",".join(map(str, value))]
        else:
            out += [f"--{flag}", str(value)]
    return " ".join(shlex.quote(a) for a in out)


def train_args(wildcards):
    s = spec(wildcards)
    p = s["protocol"]
    pairs = [
        ("layers", s["layers"]),
        ("objective", s["objective"]),
        ("k", s["k"]),
        ("seed", s["seed"]),
    ]
    pairs += [(key.replace("_", "-"), p[key]) for key in sorted(p)]
    pairs.append(("device", config["compute"]["device"]))
    if s["first_stage"]:
        pairs.append(("init-from", run_file(*s["first_stage"], "model.pt")))
    return cli_args(pairs)


def eval_args(wildcards):
    e = spec(wildcards)["evaluation"]
    pairs = [
        (key.replace("_", "-"), e[key])
        for key in (
            "k",
            "test_points",
            "train_points",
            "active_points",
            "seed",
            "batch",
        )
    ]
    if e.get("extra_k"):
        pairs.append(("extra-k", e["extra_k"]))
    pairs.append(("device", config["compute"]["device"]))
    return cli_args(pairs)


def evals_of(experiment, **where):
    return [
        run_file(experiment, r, "eval.json")
        for r in runs_of(experiment)
        if all(
            str(RUNS[(experiment, r)][key]) == str(value)
            for key, value in where.items()
        )
    ]


def table_inputs(wildcards):
    inputs = {"evals": evals_of(wildcards.experiment)}
    firsts = {
        RUNS[(wildcards.experiment, r)]["first_stage"]
        for r in runs_of(wildcards.experiment)
    }
    firsts.discard(None)
    if firsts:
        inputs["first_stages"] = [run_file(*f, "eval.json") for f in sorted(firsts)]
    return inputs


def group_inputs(wildcards):
    """eval.json and train_log.csv of the runs of one dataset and architecture."""
    runs = [
        r
        for r in runs_of(wildcards.experiment)
        if RUNS[(wildcards.experiment, r)]["dataset"] == wildcards.dataset
        and layers_tag(RUNS[(wildcards.experiment, r)]["layers"]) == wildcards.tag
    ]
    if not runs:
        raise WorkflowError(
            f"no runs of {wildcards.dataset} with layers {wildcards.tag} in {wildcards.experiment}"
        )
    return {
        "evals": [run_file(wildcards.experiment, r, "eval.json") for r in runs],
        "logs": [run_file(wildcards.experiment, r, "train_log.csv") for r in runs],
    }


def samples_inputs(wildcards):
    s = spec(wildcards)
    return {
        "model": run_file(s["experiment"], s["run"], "model.pt"),
        "data": data_file(s["dataset"]),
    }


# ---------------------------------------------------------------- targets


def experiment_figures(name):
    exp = EXPERIMENTS[name]
    runs = [RUNS[(name, r)] for r in runs_of(name)]
    groups = dict.fromkeys((s["dataset"], layers_tag(s["layers"])) for s in runs)
    stems = [
        f"{kind}_{d}_{tag}" for d, tag in groups for kind in ("curves", "variances")
    ]
    if exp["type"] == "grid" and len(exp["k"]) > 1:
        stems.append("nll_vs_k")
    if merged(name, exp, "evaluation").get("samples_figure", True):
        stems += [f"samples/{s['run']}" for s in runs]
    return [
        f"{RESULTS}/figures/{name}/{stem}.{ext}"
        for stem in stems
        for ext in ("pdf", "png")
    ]


def experiment_tables(name):
    return [
        f"{RESULTS}/tables/{name}{suffix}.{ext}"
        for suffix in ("", "_vs_paper")
        for ext in ("tex", "md")
    ]


def report_outputs():
    """report.tex, and its PDF when a LaTeX engine is on PATH."""
    engine = shutil.which("tectonic") or shutil.which("pdflatex")
    outputs = [f"{RESULTS}/report.tex"]
    if engine:
        outputs.append(f"{RESULTS}/report.pdf")
    return outputs


def stem(output):
    """An output path without its extension, for commands that write .pdf and .png."""
    return os.path.splitext(str(output))[0]


def final_outputs():
    out = [
        f"{RESULTS}/tables/summary.csv",
        f"{RESULTS}/tables/summary.md",
        *report_outputs(),
    ]
    for name in SELECTED:
        out += experiment_tables(name) + experiment_figures(name)
    return out
