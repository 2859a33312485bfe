"""`python -m iwae verify DIR`: check published results (or a results root) without training.

Three checks, each where DIR holds what it needs:

1. the manifest: every file SHA256SUMS lists has its digest, and nothing else is there;
2. the tables: each experiment's tables and findings built again from the run records
   (`iwae.report.publish.rebuild`) are byte for byte the published ones;
3. the numbers: each run whose model is there is evaluated again on the first `points` of the
   test points its eval.json records, in the order and with the seed and the random draws of
   that evaluation (the first points need no draws of the others), and every point's L_k is
   compared with the recorded one; and its active units are counted again on the training
   points and with the seed its eval.json records, every unit's variance compared with the
   recorded one (records written before the count had random streams of its own, whose
   bits hung on the estimates drawn before it, are said to be not recounted).

Tolerance: on the same CPU model, thread count and PyTorch version as the evaluation, a value
must equal the record's to its rounding (4 decimals: 1e-4); elsewhere floating-point sums
may round differently, and a point may differ by at most 0.01 nats. The verdict per run and
in all: exit 0 where everything matches, 2 where a digest, a table or a number does not (one
line on stderr names the first mismatch). A unit's variance of posterior means must equal the
record's to 1e-8 on the same machine and 1e-4 elsewhere, and the count must be the recorded one.
"""

from __future__ import annotations

import json
import math
import sys
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

from iwae.data.sources import file_digest
from iwae.errors import UserError
from iwae.plan.paths import RUNS
from iwae.report import publish
from iwae.report.publish import MANIFEST

SAME_MACHINE_TOL = 1e-4 + 1e-9  # the record's rounding (4 decimals)
OTHER_MACHINE_TOL = 1e-2  # nats per point: other kernels, other sums
UNITS_TOL = {True: 1e-8, False: 1e-4}  # a unit's variance, on the same machine or another


@dataclass
class Outcome:
    lines: list[str] = field(default_factory=list)
    failed: list[str] = field(default_factory=list)

    def say(self, line: str) -> None:
        self.lines.append(line)
        print(line, flush=True)

    def fail(self, line: str) -> None:
        self.failed.append(line)
        self.say(f"mismatch: {line}")


def read_manifest(path: Path) -> dict[str, str]:
    """{relative path: sha256} from a `sha256sum` file; a line it cannot read is refused."""
    out = {}
    for number, line in enumerate(path.read_text(encoding="utf-8", errors="replace").splitlines(), 1):
        if not line.strip():
            continue
        digest, sep, name = line.partition("  ")
        if not sep or len(digest) != 64 or any(c not in "0123456789abcdef" for c in digest):
            raise UserError(f"{path}, line {number}: not a sha256sum line ('<64 hex digits>  <path>')")
        out[name] = digest
    return out


def check_manifest(root: Path, outcome: Outcome) -> None:
    manifest = root / MANIFEST
    if not manifest.is_file():
        outcome.say(f"manifest: no {MANIFEST} in {root} (a results root has none): skipped")
        return
    listed = read_manifest(manifest)
    present = {str(p.relative_to(root)) for p in root.rglob("*") if p.is_file() and p.name != MANIFEST}
    for name in sorted(set(listed) - present):
        outcome.fail(f"{name}: listed in {MANIFEST}, missing")
    for name in sorted(present - set(listed)):
        outcome.fail(f"{name}: not listed in {MANIFEST}")
    bad = [name for name in sorted(set(listed) & present) if file_digest(root / name, "sha256") != listed[name]]
    for name in bad:
        outcome.fail(f"{name}: its sha256 is not the one {MANIFEST} lists")
    outcome.say(f"manifest: {len(listed)} files, {len(bad)} with another digest")


def check_tables(root: Path, outcome: Outcome) -> None:
    if not (root / publish.EXPERIMENTS).is_file():
        outcome.say(f"tables: no {publish.EXPERIMENTS} in {root}: not rebuilt")
        return
    with tempfile.TemporaryDirectory() as tmp:
        built = publish.rebuild(root, Path(tmp))
        for path in built:
            name = path.relative_to(tmp)
            theirs = root / name
            if not theirs.is_file():
                outcome.fail(f"{name}: rebuilt from the records but not published")
            elif theirs.read_bytes() != path.read_bytes():
                outcome.fail(f"{name}: the table rebuilt from the records differs from the published one")
        outcome.say(f"tables: {len(built)} files rebuilt from the run records")


def runs_in(root: Path) -> list[Path]:
    return sorted(p.parent for p in root.glob(f"{RUNS}/*/*/eval.json"))


def check_numbers(root: Path, outcome: Outcome, points: int, data_dir: Path, device: str, threads: int | None) -> None:
    runs = [r for r in runs_in(root) if (r / "model.pt").is_file()]
    if not runs:
        outcome.say("numbers: no run with its model.pt here: nothing to evaluate again")
        return
    for i, run in enumerate(runs, 1):
        outcome.say(f"[{i}/{len(runs)}] {run.relative_to(root)}")
        _check_run(run, outcome, points, data_dir, device, threads)


def _check_run(run: Path, outcome: Outcome, points: int, data_dir: Path, device: str, threads: int | None) -> None:
    import torch

    from iwae import backends
    from iwae.data import datasets
    from iwae.data.datasets import subset
    from iwae.estimators.likelihood import dataset_log_likelihood
    from iwae.models.store import load_model_file, model_of
    from iwae.plan.config import EvalConfig
    from iwae.system import runtime
    from iwae.system.progress import Progress
    from iwae.system.provenance import device_name, resolve_device

    record_path = run / "eval.json"
    try:
        record = json.loads(record_path.read_text())
        options = record["evaluation"]
        recorded = record["test"]["per_point"]
        seed = int(record["eval_seed"])
    except (OSError, UnicodeDecodeError, json.JSONDecodeError, KeyError, TypeError) as e:
        raise UserError(f"{record_path}: not an evaluation record with per-point values ({type(e).__name__})") from None
    names = {f.name for f in EvalConfig.option_fields()}
    cfg = EvalConfig.from_dict({k: v for k, v in options.items() if k in names}, str(record_path))
    dev = resolve_device(device)
    runtime.setup(dev, threads)
    state = load_model_file(run / "model.pt")
    model = model_of(state, run / "model.pt", dev)
    dataset = state["dataset"]
    data_path = data_dir / f"{dataset}.npz"
    if not data_path.is_file():
        raise UserError(
            f"{data_path}: the prepared dataset of {run.name} is not here; make it with "
            f"`python -m iwae fetch {dataset} && python -m iwae prepare {dataset}` or pass --data"
        )
    data = datasets.load(data_path, dev)
    sources = record.get("training", {}).get("data", {}).get("sources")
    if sources is not None and data.meta["sources"] != sources:
        raise UserError(f"{data_path}: made from other raw files than the dataset {run.name} was evaluated on")
    grey = bool(state["config"].get("grey_levels", False))
    rows = subset(data.test.shape[0], cfg.test_points).to(dev)
    x = data.binarized("test", seed, grey)[rows]
    condition = data.one_hot_labels("test")[rows].to(dev) if getattr(model, "condition_dim", 0) else None
    # whole batches: the first n points see exactly the draws they saw in the evaluation
    n = min(len(recorded), math.ceil(points / cfg.batch) * cfg.batch)
    backend = backends.select(model, options.get("backend", "auto"))
    gen = torch.Generator(device=dev).manual_seed(seed)
    bar = Progress(n, f"{run.name} L_{cfg.k}")
    ll = dataset_log_likelihood(backend, x[:n], cfg.k, gen, cfg.batch, options["chunk"], bar,
                                condition=None if condition is None else condition[:n])  # fmt: skip
    bar.close()
    env = record.get("environment", {})
    here = (device_name(dev), torch.get_num_threads(), torch.__version__)
    same = (env.get("device_name"), env.get("threads"), env.get("torch")) == here
    tol = SAME_MACHINE_TOL if same else OTHER_MACHINE_TOL
    worst = max(abs(a - b) for a, b in zip(ll.tolist(), recorded[:n]))
    where = "the same CPU, threads and PyTorch" if same else "another machine"
    line = f"{run.name}: {n} points, largest difference {worst:.2e} nats (tolerance {tol:.0e}, {where})"
    if worst <= tol:
        outcome.say(f"ok {line}")
    else:
        outcome.fail(line)
    _check_units(run, record.get("active_units"), model, data, grey, same, outcome)


def _check_units(run: Path, units: dict | None, model, data, grey: bool, same: bool, outcome: Outcome) -> None:
    """The active units counted again by evaluation's own count (`iwae.evaluation.evaluate`)."""
    from iwae.evaluation.evaluate import active_units

    if not units:
        return
    if "seed" not in units:
        outcome.say(f"{run.name}: active units not recounted (counted before the count had streams of its own)")
        return
    again = active_units(model, data, units["seed"], units["points"], grey, getattr(model, "condition_dim", 0) > 0)
    counts = again["per_layer"]
    worst = max(abs(a - b) for v, r in zip(again["variances"], units["variances"]) for a, b in zip(v, r))
    tol = UNITS_TOL[same]
    line = (f"{run.name}: active units {'+'.join(map(str, counts))} on {units['points']} training points "
            f"(recorded {'+'.join(map(str, units['per_layer']))}), largest difference in a unit's variance "
            f"{worst:.1e} (tolerance {tol:.0e})")  # fmt: skip
    if counts == units["per_layer"] and worst <= tol:
        outcome.say(f"ok {line}")
    else:
        outcome.fail(line)


def verify(root: Path, points: int = 200, data_dir: Path | None = None, device: str = "cpu",
           threads: int | None = None) -> Outcome:  # fmt: skip
    root = Path(root)
    if not root.is_dir():
        raise UserError(f"{root}: no such directory")
    if not runs_in(root) and not (root / MANIFEST).is_file():
        raise UserError(f"{root}: neither published results ({MANIFEST}) nor a results root (runs/*/*/eval.json)")
    outcome = Outcome()
    check_manifest(root, outcome)
    check_tables(root, outcome)
    check_numbers(root, outcome, points, Path(data_dir or "results/data"), device, threads)
    if not outcome.failed:
        outcome.say(f"{root}: verified")
    sys.stdout.flush()
    return outcome
