"""What the workflow's jobs are given, from the plan (`iwae.plan.experiments.Plan`): the runs a
configuration trains, each run's options and flags, the refusals before any job, the files a
configuration builds, a pack's file and resources, and what a published folder needs to
build its tables again. The rules (workflow/rules/*.smk) read them here, so that the workflow
holds no domain logic of its own; the paths themselves are `iwae.plan.paths`'.

Importing this module does not import PyTorch (the workflow calls it while planning).
"""

from __future__ import annotations

import json
import math
import os
import shutil
import subprocess

from iwae.errors import UserError
from iwae.plan import paths, rundirs
from iwae.plan.config import TrainConfig, flags
from iwae.plan.experiments import Experiment, Pack, Plan, PlannedRun

RUN_OUTPUTS = ("model.pt", "train.json", "train_log.csv")  # a training job's outputs


def run_file(plan: Plan, run: PlannedRun | tuple[str, str], name: str) -> str:
    """A file of a run (or of the run (experiment, id)) in the plan's results directory."""
    experiment, run_id = run if isinstance(run, tuple) else (run.experiment, run.id)
    return f"{paths.run_dir(plan.results, experiment, run_id)}/{name}"


def planned_runs(plan: Plan) -> list[PlannedRun]:
    """The runs of the selected experiments and the first stages they continue."""
    runs = {}
    for name in plan.selected:
        for run in plan.experiments[name].runs:
            runs[(run.experiment, run.id)] = run
            if run.first_stage:
                runs[run.first_stage] = plan.run(*run.first_stage)
    return list(runs.values())


def train_options(plan: Plan, run: PlannedRun) -> dict:
    """The `iwae train` options of a run's job (all but device and threads)."""
    options = run.train_options() | {"data": paths.data_file(run.dataset)}
    if run.first_stage:
        options["init_from"] = run_file(plan, run.first_stage, "model.pt")
    return options


def train_flags(plan: Plan, run: PlannedRun, device: str) -> list[str]:
    """A run's `iwae train` flags, the same for a job of its own and in a pack file."""
    return flags(train_options(plan, run) | {"device": device})


def eval_flags(run: PlannedRun, device: str) -> list[str]:
    return flags(run.eval_options() | {"device": device})


# --------------------------------------------------------------------------- refusals


def conflicts(plan: Plan) -> str | None:
    """Why this configuration may not start: a finished run in its results directory that it
    would train differently (one line naming the options), or None."""
    found = []
    for run in planned_runs(plan):
        try:
            why = rundirs.conflict(paths.run_dir(plan.results, run.experiment, run.id),
                                   TrainConfig.from_dict(train_options(plan, run)))  # fmt: skip
        except UserError as e:
            why = str(e)
        if why:
            found.append(why)
    if not found:
        return None
    more = f" (and {len(found) - 1} more runs)" if len(found) > 1 else ""
    return (
        f"{found[0]}{more}: give the --configfile that made them, delete those run directories to train "
        f"them again, or give this configuration its own `results:` directory"
    )


def unfinished(plan: Plan) -> str | None:
    """report_only: why not every planned run is trained and evaluated already, or None."""
    missing = [
        path
        for run in planned_runs(plan)
        for path in (run_file(plan, run, name) for name in ("model.pt", "eval.json"))
        if not os.path.exists(path)
    ]
    if not missing:
        return None
    return (
        f"report_only: {len(missing)} files of runs that are not finished and evaluated are missing "
        f"(e.g. {missing[0]}); run without report_only to train and evaluate them"
    )


# --------------------------------------------------------------------------- what a configuration builds


def tables(plan: Plan, exp: Experiment) -> list[str]:
    return [f"{paths.tables(plan.results)}/{name}" for name in exp.tables()]


def figures(plan: Plan, exp: Experiment) -> list[str]:
    return [f"{plan.results}/figures/{exp.name}/{stem}.{ext}" for stem in exp.figures() for ext in ("pdf", "png")]


def report_outputs(plan: Plan) -> list[str]:
    """report.tex, and its PDF when a LaTeX engine is on PATH."""
    engine = shutil.which("tectonic") or shutil.which("pdflatex")
    return [paths.report(plan.results)] + ([paths.report(plan.results, ".pdf")] if engine else [])


def final_outputs(plan: Plan) -> list[str]:
    """Everything a configuration builds: its tables, figures and report, and every model
    too (one missing, deleted or lost to a crash, is trained again even when the tables made
    from it are still there)."""
    out = [f"{paths.tables(plan.results)}/summary.{ext}" for ext in ("csv", "md")] + report_outputs(plan)
    for name in plan.selected:
        out += tables(plan, plan.experiments[name]) + figures(plan, plan.experiments[name])
    return out + [run_file(plan, run, "model.pt") for run in planned_runs(plan)]


def published(plan: Plan, name: str | None) -> str:
    """The published folder of this configuration: `publish.name`, else its results' name."""
    return paths.published(name or os.path.basename(plan.results))


def publish_spec(plan: Plan) -> str:
    """What a published folder needs to build its tables again: each selected experiment's
    title, layout, reference and runs (and first stages), in the workflow's order."""
    spec = {"experiments": {}, "summary": []}
    for exp in (plan.experiments[name] for name in plan.selected):
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


# --------------------------------------------------------------------------- compute and packs


def gpus_per_job(compute: dict) -> int:
    """compute.gpus_per_job; `auto`: 1 where CUDA is visible to Snakemake (a GPU workstation)."""
    wanted = compute["gpus_per_job"]
    if wanted != "auto":
        return int(wanted)
    if compute["device"] == "cpu" or os.environ.get("CUDA_VISIBLE_DEVICES") == "":
        return 0
    smi = shutil.which("nvidia-smi")
    if smi is None:
        return 0
    try:
        listed = subprocess.run([smi, "-L"], capture_output=True, text=True, timeout=20)
    except (OSError, subprocess.SubprocessError):
        return 0
    return 1 if "GPU" in listed.stdout else 0


def pack_spec(plan: Plan, pack: Pack, device: str) -> str:
    """The pack file's content: each run's directory and flags (iwae.training.packs)."""
    runs = [{"out": paths.run_dir(plan.results, r.experiment, r.id), "flags": train_flags(plan, r, device)}
            for r in pack.runs]  # fmt: skip
    return json.dumps({"name": f"{pack.experiment}-{pack.name}", "runs": runs})


def pack_rule_name(pack: Pack) -> str:
    return f"train_{pack.experiment}_{pack.name}".replace("-", "_")


def pack_first_stages(plan: Plan, pack: Pack) -> list[str]:
    return sorted({run_file(plan, r.first_stage, "model.pt") for r in pack.runs if r.first_stage})


def pack_resource(compute: dict, pack: Pack, key: str, gpus: int) -> int:
    """A run's runtime or memory, times the runs a pack's process trains one after another
    (CPU: one process per thread; GPU: one process, every run at once)."""
    processes = 1 if gpus else min(compute["threads"], len(pack.runs))
    if key == "train_mem_mb":
        return compute[key] * processes
    return compute[key] * pack_runtime_factor(len(pack.runs), len(pack.runs) if gpus else processes)


def pack_runtime_factor(runs: int, workers: int) -> int:
    """How many runs' worth of time a pack takes with `workers` runs progressing at once."""
    return math.ceil(runs / max(1, min(workers, runs)))
