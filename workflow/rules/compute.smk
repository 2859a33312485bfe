# Where jobs run and how runs share them: the GPU probe behind every training and evaluation
# job's resources, and the packs of runs that train in one job (iwae.training.packs). Only
# functions here (rule files hold rules); train.smk and evaluate.smk use them.
import json
import subprocess

from iwae.training.packs import pack_runtime_factor

# ---------------------------------------------------------------- compute


def gpus_per_job():
    """compute.gpus_per_job; `auto`: 1 where CUDA is visible to Snakemake (a GPU workstation)."""
    wanted = config["compute"]["gpus_per_job"]
    if wanted != "auto":
        return int(wanted)
    if (
        config["compute"]["device"] == "cpu"
        or os.environ.get("CUDA_VISIBLE_DEVICES") == ""
    ):
        return 0
    smi = shutil.which("nvidia-smi")
    if smi is None:
        return 0
    try:
        listed = subprocess.run([smi, "-L"], capture_output=True, text=True, timeout=20)
    except (OSError, subprocess.SubprocessError):
        return 0
    return 1 if "GPU" in listed.stdout else 0


# what each training and evaluation job asks for
GPUS = gpus_per_job()
THREADS = config["compute"]["threads"]


# ---------------------------------------------------------------- packs

RUN_OUTPUTS = ("model.pt", "train.json", "train_log.csv")


def run_outputs(run):
    """A training job's outputs, flagged `update`: Snakemake neither deletes them before the
    job nor keeps a failed job's, it restores the previous ones. A failed retrain (a damaged
    dataset, a refused configuration) thus never loses a finished model."""
    return [update(run_file(run.experiment, run.id, name)) for name in RUN_OUTPUTS]


def pack_file(pack):
    return f"{RESULTS}/packs/{pack.experiment}/{pack.name}.json"


def pack_rule_name(pack):
    return f"train_{pack.experiment}_{pack.name}".replace("-", "_")


def pack_first_stages(pack):
    return sorted(
        {run_file(*r.first_stage, "model.pt") for r in pack.runs if r.first_stage}
    )


def pack_spec(experiment, name):
    """The pack file's content: each run's directory and flags (iwae.training.packs)."""
    pack = next(
        (p for p in PACKS if (p.experiment, p.name) == (experiment, name)), None
    )
    if pack is None:
        raise WorkflowError(f"no pack {name} in experiment {experiment}")
    runs = []
    for run in pack.runs:
        runs.append({"out": run_dir(run.experiment, run.id), "flags": run_flags(run)})
    return json.dumps({"name": f"{experiment}-{name}", "runs": runs})


def pack_resource(pack, key):
    """A run's runtime or memory, times the runs a pack's process trains one after another
    (CPU: one process per thread; GPU: one process, every run at once)."""
    processes = 1 if GPUS else min(THREADS, len(pack.runs))
    if key == "train_mem_mb":
        return config["compute"][key] * processes
    return config["compute"][key] * pack_runtime_factor(
        len(pack.runs), len(pack.runs) if GPUS else processes
    )
