"""Packs: several runs in one job, each ending exactly as it would alone; killed packs resume;
a diverging run stops alone; GPU locks; the prepared GPU check and the pack benchmark."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from iwae.errors import UserError
from iwae.plan.config import flags
from iwae.system.devices import lock_free_device

from conftest import ROOT, run_cli

# a mix of layers, k, objectives and seeds, all on MNIST
RUNS = {
    "a": {"layers": "2", "objective": "iwae", "k": 5, "seed": 3},
    "b": {"layers": "1", "objective": "vae", "k": 1, "seed": 1},
    "c": {"layers": "1", "objective": "dreg", "k": 3, "seed": 4},
}
COMMON = {"epochs_per_stage": [2, 2], "train_subset": 300}


def pack_file(path: Path, data: Path, runs: dict, out: Path, **extra) -> Path:
    spec = {"name": "test", "runs": [{"out": str(out / n), "flags": flags({"data": str(data), **COMMON, **o, **extra})}
                                     for n, o in runs.items()]}  # fmt: skip
    path.write_text(json.dumps(spec))
    return path


def params(run: Path) -> torch.Tensor:
    return torch.load(run / "model.pt", weights_only=True)["model"]["params"]


@pytest.fixture(scope="module")
def alone(prepared, tmp_path_factory):
    """Each run trained alone, with one thread."""
    out = tmp_path_factory.mktemp("alone")
    for name, options in RUNS.items():
        flags = [f"--{k.replace('_', '-')}={','.join(map(str, v)) if isinstance(v, list) else v}"
                 for k, v in {**COMMON, **options}.items()]  # fmt: skip
        result = run_cli("train", "--out", out / name, "--data", prepared["mnist"], *flags, "--threads", "1", "--quiet")
        assert result.returncode == 0, result.stderr
    return out


@pytest.mark.parametrize("threads", [1, 2], ids=["one-process", "two-workers"])
def test_a_run_in_a_pack_ends_as_it_would_alone(prepared, tmp_path, alone, threads):
    spec = pack_file(tmp_path / "pack.json", prepared["mnist"], RUNS, tmp_path / "runs")
    result = run_cli("train", "--pack", spec, "--threads", threads, "--quiet")
    assert result.returncode == 0, result.stderr
    assert result.stdout.count("final objective") == 3  # reported once per run
    for name in RUNS:
        run = tmp_path / "runs" / name
        assert torch.equal(params(run), params(alone / name)), name
        assert (run / "train_log.csv").read_text().splitlines()[1:] and (run / "train.json").exists()
        record = json.loads((run / "train.json").read_text())
        assert record["pack"]["name"] == "test" and record["pack"]["runs"] == list(RUNS)
        assert name in record["pack"]["in_process"] and record["config"]["threads"] == 1
    shares = {tuple(json.loads((tmp_path / "runs" / n / "train.json").read_text())["pack"]["in_process"]) for n in RUNS}
    assert len(shares) == threads  # one process, or the runs split over two


def _kill_when_checkpointed(cmd: list, runs: Path, sig: int) -> subprocess.Popen:
    """Start a pack in a process group of its own; once its runs checkpoint, signal the whole
    group, as a terminal's Ctrl-C or a scheduler does (every worker gets it directly too)."""
    proc = subprocess.Popen(cmd, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            start_new_session=True)  # fmt: skip
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and proc.poll() is None:
        if all(list((runs / name / "checkpoints").glob("ckpt-*.pt")) for name in RUNS):  # every run under way
            break
        time.sleep(0.01)
    os.killpg(proc.pid, sig)
    proc.wait(timeout=120)
    return proc


@pytest.mark.parametrize("threads,sig", [(1, signal.SIGKILL), (2, signal.SIGTERM)], ids=["killed", "terminated"])
def test_a_stopped_pack_resumes_every_run_bit_identical(prepared, tmp_path, alone, threads, sig):
    spec = pack_file(tmp_path / "pack.json", prepared["mnist"], RUNS, tmp_path / "runs", checkpoint_minutes=0.0002)
    cmd = [sys.executable, "-m", "iwae", "train", "--pack", str(spec), "--threads", str(threads), "--quiet"]
    proc = _kill_when_checkpointed(cmd, tmp_path / "runs", sig)
    stderr = proc.stderr.read()
    assert proc.returncode == (-sig if sig == signal.SIGKILL else 128 + sig), stderr
    if sig == signal.SIGTERM:
        assert "checkpoint saved" in stderr and "Traceback" not in stderr
        assert "interrupted\n" not in stderr  # no worker was stopped without its checkpoint
    assert not all((tmp_path / "runs" / n / "model.pt").exists() for n in RUNS)
    result = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    for name in RUNS:
        assert torch.equal(params(tmp_path / "runs" / name), params(alone / name)), name


def test_a_rerun_pack_rewrites_the_outputs_a_scheduler_deleted(prepared, tmp_path, alone):
    """Snakemake deletes a job's outputs before it reruns it (and after it fails): the finished
    runs resume from their final checkpoints and write all three again."""
    spec = pack_file(tmp_path / "pack.json", prepared["mnist"], RUNS, tmp_path / "runs")
    assert run_cli("train", "--pack", spec, "--threads", "2", "--quiet").returncode == 0
    logs = {n: (tmp_path / "runs" / n / "train_log.csv").read_text() for n in RUNS}
    for name in RUNS:
        for output in ("model.pt", "train.json", "train_log.csv"):
            (tmp_path / "runs" / name / output).unlink()
    result = run_cli("train", "--pack", spec, "--threads", "2", "--quiet")
    assert result.returncode == 0, result.stderr
    for name in RUNS:
        assert (tmp_path / "runs" / name / "train_log.csv").read_text() == logs[name]
        assert torch.equal(params(tmp_path / "runs" / name), params(alone / name))


def test_a_diverging_run_stops_alone(prepared, tmp_path):
    runs = {**RUNS, "bad": {"layers": "1", "objective": "iwae", "k": 2, "lr": 1e30}}
    spec = pack_file(tmp_path / "pack.json", prepared["mnist"], runs, tmp_path / "runs")
    result = run_cli("train", "--pack", spec, "--threads", "1", "--quiet")
    assert result.returncode == 3 and "Traceback" not in result.stderr
    assert "run bad: non-finite objective at stage 1, epoch 1" in result.stderr
    assert all((tmp_path / "runs" / n / "model.pt").exists() for n in RUNS)
    assert not (tmp_path / "runs" / "bad" / "model.pt").exists()


def test_bad_pack_files_are_one_line_errors(prepared, tmp_path):
    mixed = pack_file(tmp_path / "mixed.json", prepared["mnist"], RUNS, tmp_path / "runs")
    spec = json.loads(mixed.read_text())
    spec["runs"][1]["flags"] += ["--data", str(prepared["mnist-fixed"])]  # the last value counts
    mixed.write_text(json.dumps(spec))
    for path, needle in ((mixed, "share one data"), (tmp_path / "missing.json", "not a pack file")):
        result = run_cli("train", "--pack", path)
        assert result.returncode == 2 and needle in result.stderr and result.stderr.count("\n") == 1, result.stderr
    result = run_cli("train", "--pack", mixed, "--k", "5")
    assert result.returncode == 2 and "holds every run's options" in result.stderr


def test_each_job_takes_a_gpu_of_its_own(tmp_path):
    """A lock per device: two claims in one process, and one in another, get three devices;
    with every device held, a claim that may not wait says so."""
    assert lock_free_device(3, str(tmp_path)) == 0
    assert lock_free_device(3, str(tmp_path)) == 1
    code = f"from iwae.system.devices import lock_free_device; print(lock_free_device(3, {str(tmp_path)!r}))"
    other = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT)
    assert other.stdout.strip() == "2", other.stderr
    assert lock_free_device(3, str(tmp_path)) == 2  # the other process ended: its lock is free
    with pytest.raises(UserError, match="all 3 GPUs are held"):
        lock_free_device(3, str(tmp_path), wait_minutes=0, poll_s=0.01, say=lambda m: None)


def test_prepared_gpu_check_runs_here(tmp_path):
    """The check written for an H200 runs end to end on a CPU, in its quick form, with one
    thread (as on a busy machine): every section, the steps graphs replay equal to eager ones
    for both backends, a resume inside an epoch, a pack equal to its runs trained alone, and a
    labelled prediction."""
    result = run_cli("bench", "--gpu-report", tmp_path / "report", "--threads", "1", env={"OMP_NUM_THREADS": "1"})
    assert result.returncode == 0, result.stderr
    report = json.loads((tmp_path / "report" / "report.json").read_text())
    assert (
        set(GPU_SECTIONS) <= set(report) and report["failed"] == [] and result.stdout.endswith("check:      passed\n")
    )
    for key in GPU_SECTIONS[:-3]:
        assert isinstance(report[key], dict) and not {"error", "skipped"} & set(report[key]), (key, report[key])
    assert report["versions"] == {"torch": torch.__version__, "torch_cuda": torch.version.cuda, "driver": None,
                                  "gpu": None, "lacking_cuda_apis": "not checked on CPU"}  # fmt: skip
    assert f"(cpu), torch {torch.__version__} (CUDA {torch.version.cuda}, driver None)" in result.stdout.splitlines()[0]
    assert report["quick"] and all(p["capturable"] and p["repeatable"] for p in report["probe"].values())
    check = report["correctness"]
    assert check["passed"] and not check["failed"] and check["graphed_vs_eager"]["1l_k5_dreg"]["backend"] == "autograd"
    assert check["graph_pools"] == {"measured": False, "note": "not measurable on CPU: graphs and their memory pools "
                                    "exist only on a GPU"}  # fmt: skip
    resumed = check["resumed_inside_an_epoch"]
    assert resumed["bitwise_equal"] and resumed["exercised"] and resumed["checkpoint"]["steps_left"] == 11
    assert len(check["pack_vs_alone"]["runs"]) == 3
    p = report["prediction"]
    assert p["hours"] > 0 and p["floor_hours"] > 0 and not p["missing"] and "prediction" in p["note"]
    assert p["band_hours"][0] <= p["hours"] <= p["band_hours"][1]
    assert any(line.startswith("prediction: Table 1 in") for line in result.stdout.splitlines())


GPU_SECTIONS = ("versions", "device_before", "probe", "correctness", "eager", "graphed", "packs", "epoch", "ceilings",
                "steady", "device_after", "prediction", "failed")  # fmt: skip


def test_a_failed_comparison_fails_the_gpu_check_after_every_section(tmp_path, monkeypatch, capsys):
    """`python -m iwae bench --gpu-report DIR` (its main, in this process) with one run of the
    pack differing from itself alone: every section is still run and written, report.json's
    `failed` names the comparison, stderr says so in one line, and the exit status is 1. The
    timings are stubbed (they fail nothing); the probe and the versions run for real."""
    from iwae import cli
    from iwae.bench import gpu_report as check

    for key, value in cli.CUDA_ENVIRONMENT.items():
        monkeypatch.setenv(key, value)  # what main would set, restored after the test
    monkeypatch.setattr(torch, "set_num_threads", lambda n: None)  # keep this process's threads
    scratch = tmp_path / "scratch"
    scratch.mkdir()
    monkeypatch.setattr(check, "_scratch", lambda: scratch)
    for timed in ("eager", "graph_rates", "pack_rates", "full_epoch", "steady", "ceilings"):
        monkeypatch.setattr(check, timed, lambda *args: {})
    equal = {"bitwise_equal": True, "max_abs_difference": 0.0}
    monkeypatch.setattr(check, "graphed_against_eager", lambda *args: {key: dict(equal) for key in check.CASES})
    monkeypatch.setattr(
        check, "resumed_inside_an_epoch", lambda *args: {"run": "2l_k5_iwae", "exercised": True, **equal}
    )
    runs = [
        {"run": "1l_k10_iwae", **equal},
        {"run": "1l_k10_vae", "bitwise_equal": False, "max_abs_difference": 2.5e-7},
    ]
    monkeypatch.setattr(check, "pack_against_alone", lambda *args: {"runs": runs, "bitwise_equal": False})

    code = cli.main(["bench", "--gpu-report", str(tmp_path / "report"), "--threads", "1"])
    captured = capsys.readouterr()
    report = json.loads((tmp_path / "report" / "report.json").read_text())
    assert code == 1 and set(GPU_SECTIONS) <= set(report)
    for key in ("versions", "device_before", "probe", "correctness", "eager", "graphed", "epoch", "steady"):
        assert isinstance(report[key], dict) and not {"error", "skipped"} & set(report[key]), (key, report[key])
    failed = "pack_vs_alone 1l_k10_vae not bitwise equal (max |difference| 2.5e-07)"
    assert report["failed"] == [failed] and report["correctness"]["passed"] is False
    errors = [line for line in captured.err.splitlines() if line.startswith("error:")]
    assert errors == [f"error: the GPU check failed: {failed} (see {tmp_path / 'report'}/report.json)"]
    assert captured.out.splitlines()[-1] == f"check:      FAILED: {failed}"


def test_what_fails_the_gpu_check():
    """A checking section that did not run, a step a graph cannot replay and a call the PyTorch
    lacks each fail the check, by name; measurements that failed do not."""
    from iwae.bench.gpu_report import failures

    probe = {"capturable": False, "repeatable": True, "host_reads": [], "off_device": [], "random_order": [],
             "foreign_random": ["rand"], "writes_elsewhere": []}  # fmt: skip
    data = {"versions": {"torch": "2.11.0", "lacking_cuda_apis": ["torch.cuda.memory._snapshot"]},
            "probe": {"fused": probe}, "correctness": {"error": "RuntimeError: CUDA error"},
            "packs": {"error": "RuntimeError: out of memory"}}  # fmt: skip
    assert failures(data) == [
        "correctness did not run (RuntimeError: CUDA error)",
        "torch 2.11.0 lacks torch.cuda.memory._snapshot",
        "probe fused: a graph cannot replay its step ({'foreign_random': ['rand']})",
    ]
    assert failures({"versions": {"lacking_cuda_apis": "not checked on CPU"}, "probe": {},
                     "correctness": {"failed": []}}) == []  # fmt: skip


def test_the_gpu_check_packs_table1_as_the_workflow_does():
    """The check's packs and its prediction are the workflow's: with `compute.pack: dataset`
    each dataset's Table 1 pack holds the runs TABLE1 names (VAE and IWAE with k = 1 share
    one run), and the first pack size measured is that pack's."""
    import yaml

    from iwae.bench.gpu_report import FULL, TABLE1
    from iwae.plan.experiments import Plan

    plan = Plan.from_config(yaml.safe_load((ROOT / "config.yaml").read_text()))
    packs = [p for p in plan.packs("dataset") if p.experiment == "table1"]
    assert [p.name for p in packs] == ["mnist", "omniglot"] and FULL.packs == (len(TABLE1), 2 * len(TABLE1))
    for pack in packs:
        assert sorted((int(r.layers), r.k, r.objective) for r in pack.runs) == sorted(TABLE1)


def test_a_failing_section_of_the_gpu_check_costs_only_itself(tmp_path):
    """A section that fails is recorded with its error and the next one still runs; one that
    the budget cannot hold is skipped; the prediction says what it lacks, or that it cannot
    be made."""
    from iwae.bench.gpu_report import Report, format_report, predict

    report = Report(tmp_path, torch.device("cpu"), budget_s=60)
    report.section("packs", lambda: {"2": {"seconds_per_pack_step": [0.01, 0.012], "median": 0.011,
                                           "host_seconds_per_pack_step": [0.01], "run_steps_per_s": 180.0}})  # fmt: skip
    report.section("epoch", lambda: 1 / 0)
    report.section("graphed", dict, need=120)
    report.put("quick", True)
    saved = json.loads((tmp_path / "report.json").read_text())
    assert saved["epoch"] == {"error": "ZeroDivisionError: division by zero"} and "skipped" in saved["graphed"]
    prediction = predict(saved, 2)
    assert prediction["hours"] > 0 and len(prediction["missing"]) == 4  # steady, epoch, eager, graphed
    assert any(m.startswith("epoch") for m in prediction["missing"])
    assert "missing: " in format_report({**saved, "prediction": prediction})
    assert predict({**saved, "packs": {"error": "RuntimeError: CUDA"}}, 2)["hours"] is None


def test_the_gpu_check_names_the_calls_a_pytorch_lacks():
    """On the device the check lists the calls of the CUDA path its PyTorch lacks (the machines
    lent run their own); the lookup walks dotted names and reports what is not there."""
    from iwae.bench.gpu_report import CUDA_APIS, _lacking

    names = ("torch.cuda.graph", "torch.cuda.memory._snapshot", "torch.no_such_call", "torch.cuda.nothing.deeper")
    assert _lacking(names) == ["torch.no_such_call", "torch.cuda.nothing.deeper"]
    assert "torch.cuda.CUDAGraph.register_generator_state" in CUDA_APIS and "torch.cuda.CUDAGraph.pool" in CUDA_APIS


MiB = 2**20


def _segment(pool: tuple, size: int, device: int = 0) -> dict:
    """A segment as torch.cuda.memory._snapshot() describes one (its Segment and Block), freed."""
    block = {"size": size, "requested_size": size, "address": 0, "state": "inactive", "frames": []}
    return {"device": device, "address": 0, "total_size": size, "allocated_size": 0, "active_size": 0,
            "requested_size": 0, "stream": 94000000, "segment_type": "large" if size > MiB else "small",
            "segment_pool_id": pool, "is_expandable": False, "frames": [], "blocks": [block]}  # fmt: skip


def test_each_graphs_own_workspace_is_read_from_a_memory_snapshot(monkeypatch):
    """The evidence the GPU check gathers on a device, read from snapshots shaped like
    torch.cuda.memory._snapshot()'s: graphs in pools of their own, each holding a segment of
    the 32 MiB workspace beside the 2 and 20 MiB ones of a step's tensors; and the failures it
    names: graphs sharing a pool, a pool without a workspace, a workspace too small to tell."""
    from iwae.bench.gpu_report import correctness_failures, pools_in_snapshot, workspace_bytes

    monkeypatch.setenv("CUBLAS_WORKSPACE_CONFIG", ":4096:8")  # as the command line sets it
    assert workspace_bytes(torch.device("cpu")) == 32 * MiB
    pools = {"run0, 1 steps": (0, 1), "run0, 10 steps": (0, 2), "run1, 1 steps": (0, 3)}
    steps = [_segment(pool, size) for pool in pools.values() for size in (2 * MiB, 20 * MiB)]
    workspaces = [_segment(pool, 32 * MiB) for pool in pools.values()]
    others = [_segment((0, 0), 64 * MiB), _segment((0, 3), 32 * MiB, device=1)]  # the default pool; another GPU
    found = pools_in_snapshot({"segments": steps + workspaces + others, "device_traces": []}, pools, 32 * MiB, 0)
    assert found["pools_distinct"] and found["each_has_its_workspace"]
    assert found["graphs"]["run1, 1 steps"] == {"pool": [0, 3], "segments": 3, "reserved_bytes": 54 * MiB,
                                                "workspace_segments": [32 * MiB]}  # fmt: skip
    checked = {"graphed_vs_eager": {}, "pack_vs_alone": {"runs": []},
               "resumed_inside_an_epoch": {"run": "r", "bitwise_equal": True, "exercised": True}}  # fmt: skip
    assert correctness_failures({**checked, "graph_pools": {"measured": True, **found}}) == []
    assert correctness_failures({**checked, "graph_pools": {"measured": False}}) == []  # on a CPU

    shared = pools_in_snapshot({"segments": steps + workspaces}, {**pools, "run2, 1 steps": (0, 1)}, 32 * MiB, 0)
    assert not shared["pools_distinct"] and shared["each_has_its_workspace"]
    assert correctness_failures({**checked, "graph_pools": {"measured": True, **shared}}) == [
        "graph_pools: graphs share a memory pool"
    ]
    lacking = pools_in_snapshot({"segments": steps + workspaces[:2]}, pools, 32 * MiB, 0)
    assert (
        "in the pools of run1, 1 steps"
        in correctness_failures({**checked, "graph_pools": {"measured": True, **lacking}})[0]
    )
    small = pools_in_snapshot({"segments": steps + workspaces}, pools, 8 * MiB, 0)  # a 20 MiB segment would pass
    assert not small["each_has_its_workspace"] and not small["workspace_distinguishable"]
    monkeypatch.setenv("CUBLAS_WORKSPACE_CONFIG", ":4096:2:16:8")
    assert workspace_bytes(torch.device("cpu")) == 8 * MiB + 128 * 1024


def test_pack_benchmark_compares_a_pack_with_separate_jobs():
    from iwae.bench.speed import bench_pack

    report = bench_pack(2, 2, ks=(1,), repeats=1, steps={1: 50})
    modes = {r["mode"]: r for r in report["pack"]}
    assert set(modes) == {"separate", "pack"}
    assert all(r["per_run_points_per_s"] > 0 and r["aggregate_points_per_s"] > 0 for r in modes.values())
