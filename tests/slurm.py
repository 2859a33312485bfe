"""A throwaway single-node Slurm (munge + slurmctld + slurmd) started by hand, for the tests.

Needs root and Debian's slurm-wlm and munge. The node offers `cpus` job slots (more than the
machine's cores if asked: the test's jobs are short and mostly wait on process start-up and
on the executor's status polls), 90% of the memory and fake GPUs (device files such as
/dev/null), so jobs that ask for `--gpus=1` are scheduled as on a GPU cluster.

Known behaviour of Slurm 22.05 with snakemake-executor-plugin-slurm 2.8: the plugin's job
step strips SLURM_CONF, so the configuration must also be reachable at
/etc/slurm/slurm.conf; without slurmdbd the plugin must poll with squeue."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import tempfile
import time
from pathlib import Path

BINARIES = ("munged", "mungekey", "slurmctld", "slurmd", "sbatch", "squeue", "sinfo", "srun", "scontrol")
SYSTEM_CONF = Path("/etc/slurm/slurm.conf")


def missing_requirements() -> str | None:
    if os.geteuid() != 0:
        return "needs root (slurmd runs jobs as their user)"
    absent = [b for b in BINARIES if shutil.which(b) is None]
    if absent:
        return f"missing {', '.join(absent)} (apt-get install slurm-wlm munge)"
    if SYSTEM_CONF.exists() and not SYSTEM_CONF.is_symlink():
        return f"{SYSTEM_CONF} exists and belongs to a real installation"
    return None


class Cluster:
    def __init__(self, gpus: int = 2, cpus: int | None = None):
        if not 1 <= gpus <= 4:
            raise ValueError("between 1 and 4 fake GPUs")
        self.cpus = cpus or os.cpu_count() or 1
        self.root = Path(tempfile.mkdtemp(prefix="iwae-slurm-"))
        self.gpus = gpus
        self.munge = self.root / "munge"
        self.state = self.root / "slurm"
        self.conf = self.state / "slurm.conf"

    @property
    def env(self) -> dict[str, str]:
        return {"SLURM_CONF": str(self.conf)}

    def start(self) -> Cluster:
        os.chmod(self.root, 0o755)  # munged wants a world-searchable socket directory
        self.munge.mkdir(mode=0o755)
        for sub in ("ctld", "spool", "log", "run"):
            (self.state / sub).mkdir(parents=True)
        key = self.munge / "munge.key"
        subprocess.run(["mungekey", "--create", f"--keyfile={key}"], check=True, capture_output=True)
        key.chmod(0o600)
        socket = self.munge / "munge.socket"
        subprocess.run(
            ["munged", f"--key-file={key}", f"--socket={socket}", f"--pid-file={self.munge}/munged.pid",
             f"--log-file={self.munge}/munged.log", f"--seed-file={self.munge}/munged.seed"],
            check=True, capture_output=True,
        )  # fmt: skip
        memory = int(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**20 * 0.9)
        self.conf.write_text(
            f"""ClusterName=iwaetest
SlurmctldHost=localhost
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
CredType=cred/munge
AuthInfo=socket={socket}
StateSaveLocation={self.state}/ctld
SlurmdSpoolDir={self.state}/spool
SlurmctldPidFile={self.state}/run/slurmctld.pid
SlurmdPidFile={self.state}/run/slurmd.pid
SlurmctldLogFile={self.state}/log/slurmctld.log
SlurmdLogFile={self.state}/log/slurmd.log
ProctrackType=proctrack/linuxproc
TaskPlugin=task/affinity
SelectType=select/cons_tres
SelectTypeParameters=CR_Core_Memory
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/none
JobCompType=jobcomp/none
MpiDefault=none
MailProg=/bin/true
ReturnToService=2
SchedulerType=sched/backfill
SchedulerParameters=sched_interval=1,bf_interval=1
MinJobAge=600
KillWait=5
SlurmdParameters=config_overrides
GresTypes=gpu
NodeName=localhost CPUs={self.cpus} RealMemory={memory} Gres=gpu:{self.gpus} State=UNKNOWN
PartitionName=debug Nodes=ALL Default=YES MaxTime=INFINITE State=UP
"""
        )
        # fake GPUs: harmless device files stand in for /dev/nvidia*
        devices = ["/dev/null", "/dev/zero", "/dev/full", "/dev/random"][: self.gpus]
        (self.state / "gres.conf").write_text(
            "AutoDetect=off\n" + "".join(f"NodeName=localhost Name=gpu File={d}\n" for d in devices)
        )
        SYSTEM_CONF.parent.mkdir(parents=True, exist_ok=True)
        if SYSTEM_CONF.is_symlink():
            SYSTEM_CONF.unlink()
        SYSTEM_CONF.symlink_to(self.conf)
        env = {**os.environ, **self.env}
        subprocess.run(["slurmctld"], check=True, env=env, capture_output=True)
        subprocess.run(["slurmd", "-N", "localhost"], check=True, env=env, capture_output=True)
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            state = subprocess.run(
                ["sinfo", "-h", "-n", "localhost", "-o", "%T"], env=env, capture_output=True, text=True
            )
            if state.stdout.strip() == "idle":
                return self
            time.sleep(0.25)
        logs = "\n".join(p.read_text()[-2000:] for p in (self.state / "log").glob("*.log"))
        self.stop()
        raise RuntimeError(f"slurm node did not become idle:\n{logs}")

    def jobs(self) -> list[dict[str, str]]:
        """Jobs Slurm still remembers (MinJobAge), as `scontrol show job` key=value records
        (JobId, JobState, TresPerJob, Comment, ...)."""
        out = subprocess.run(
            ["scontrol", "show", "job", "-o"], env={**os.environ, **self.env}, capture_output=True, text=True
        ).stdout
        return [
            dict(item.split("=", 1) for item in line.split() if "=" in item)
            for line in out.splitlines()
            if line.startswith("JobId=")
        ]

    def stop(self) -> None:
        for pid_file in (
            self.state / "run/slurmd.pid",
            self.state / "run/slurmctld.pid",
            self.munge / "munged.pid",
        ):
            try:
                os.kill(int(pid_file.read_text().strip()), signal.SIGTERM)
            except (OSError, ValueError):
                continue
        time.sleep(1)
        if SYSTEM_CONF.is_symlink() and Path(os.readlink(SYSTEM_CONF)) == self.conf:
            SYSTEM_CONF.unlink()
        shutil.rmtree(self.root, ignore_errors=True)
