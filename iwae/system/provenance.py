"""What produced a number: library versions, device, git revision, how loaded the machine
was. Stored in every record."""

from __future__ import annotations

import os
import platform
import subprocess
from pathlib import Path

VERSION = "0.1.0"  # the package's (pyproject.toml gives the same)


def git_revision() -> dict:
    """The revision of the checkout the package runs from (or $IWAE_GIT_REVISION)."""
    if os.environ.get("IWAE_GIT_REVISION"):
        return {"revision": os.environ["IWAE_GIT_REVISION"], "dirty": None}
    root = Path(__file__).resolve().parents[2]  # the checkout: iwae/system/provenance.py
    try:
        rev = subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=root, capture_output=True, text=True, timeout=10, check=True
        ).stdout.strip()
        status = subprocess.run(
            ["git", "status", "--porcelain", "--untracked-files=no"],
            cwd=root,
            capture_output=True,
            text=True,
            timeout=10,
            check=True,
        ).stdout
        return {"revision": rev, "dirty": bool(status.strip())}
    except (OSError, subprocess.SubprocessError):
        return {"revision": "unknown", "dirty": None}


def resolve_device(name: str = "auto"):
    import torch

    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    device = torch.device(name)
    if device.type == "cuda" and not torch.cuda.is_available():
        from iwae.errors import UserError

        raise UserError(f"device: {name!r} requested but CUDA is not available here")
    return device


def device_name(device) -> str:
    import torch

    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    model = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return f"{model} ({os.cpu_count()} logical CPUs)"


def machine_load() -> float | None:
    """The machine's 1-minute load average (runnable processes, this one included; compare it
    with the logical CPUs of `device_name`), or None where the system has none."""
    try:
        return round(os.getloadavg()[0], 2)
    except (AttributeError, OSError):
        return None


def environment(device) -> dict:
    import numpy as np
    import torch

    return {
        "iwae": VERSION,
        "python": platform.python_version(),
        "torch": torch.__version__,
        "numpy": np.__version__,
        "platform": platform.platform(),
        "hostname": platform.node(),
        "device": str(device),
        "device_name": device_name(device),
        "threads": torch.get_num_threads(),
        "load": machine_load(),  # when the record was written
        "git": git_revision(),
    }
