"""GPUs for jobs and streams for runs.

Devices. Snakemake hands out no device ids: with `--resources gpu=N` on a workstation with
several GPUs, a job that asks for "cuda" takes the first device nobody holds, by an
exclusive lock per device (`claim`), held until the process ends, and records it. Where a
scheduler made one device visible (Slurm sets CUDA_VISIBLE_DEVICES), that one is used.

Streams. PyTorch hands out the 32 streams of its pool in turn (c10/cuda/CUDAStream.cpp,
`kStreamsPerPool`, `get_idx`), so a 33rd stream is the first again and two runs on one
stream take turns. `run_streams` makes a process's run streams together and refuses more
runs than the pool holds.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import socket
import tempfile
import time
from pathlib import Path

import torch

from iwae.errors import UserError

LOCK_ENV = "IWAE_GPU_LOCK_DIR"
_held: list = []  # lock files held for the life of the process


def claim(device: torch.device, wait_minutes: float = 60.0, say=print) -> torch.device:
    """A concrete device for `device`: "cuda" becomes the first free visible GPU."""
    if device.type != "cuda" or device.index is not None:
        return device
    count = torch.cuda.device_count()
    if count <= 1:
        return torch.device("cuda", 0)
    return torch.device("cuda", lock_free_device(count, wait_minutes=wait_minutes, say=say))


def _physical_ids(count: int) -> list[str]:
    visible = os.environ.get("CUDA_VISIBLE_DEVICES")
    ids = [v.strip() for v in visible.split(",")] if visible else []
    return ids[:count] if len(ids) >= count else [str(i) for i in range(count)]


def lock_free_device(
    count: int, lock_dir: str | None = None, wait_minutes: float = 60.0, poll_s: float = 5.0, say=print
) -> int:
    """The index of the first of `count` devices whose lock this process could take."""
    directory = Path(lock_dir or os.environ.get(LOCK_ENV) or tempfile.gettempdir())
    directory.mkdir(parents=True, exist_ok=True)
    host = socket.gethostname()
    deadline = time.monotonic() + wait_minutes * 60
    told = False
    while True:
        for index, physical in enumerate(_physical_ids(count)):
            f = open(directory / f"iwae-gpu-{host}-{physical}.lock", "a+")
            try:
                fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                f.close()
                continue
            f.truncate(0)
            f.write(f"{os.getpid()}\n")
            f.flush()
            _held.append(f)
            return index
        if time.monotonic() > deadline:
            raise UserError(f"device: all {count} GPUs are held by other jobs (locks in {directory})")
        if not told:
            say(f"waiting for a free GPU (all {count} are held; locks in {directory})")
            told = True
        time.sleep(poll_s)


# --------------------------------------------------------------------------- streams

STREAMS_PER_POOL = 32  # c10/cuda/CUDAStream.cpp: kStreamsPerPool, handed out in turn


def run_streams(device: torch.device, count: int) -> list:
    """A stream of its own for each of `count` runs (None each off a GPU), after the work the
    current stream has queued. They are made together, so none repeats; more runs than the
    pool holds would share streams, and two runs on one stream take turns."""
    if device.type != "cuda":
        return [None] * count
    if count > STREAMS_PER_POOL:
        raise UserError(
            f"a process trains at most {STREAMS_PER_POOL} runs on a GPU, one per CUDA stream, not {count}: "
            f"set compute.pack to {STREAMS_PER_POOL} or fewer"
        )
    streams = [torch.cuda.Stream(device) for _ in range(count)]
    if len({s.cuda_stream for s in streams}) < count:
        raise RuntimeError(f"{count} CUDA streams asked for, fewer distinct ones handed out")
    for stream in streams:
        stream.wait_stream(torch.cuda.current_stream(device))
    return streams


def on(stream):
    """Make `stream` current (nothing to do off a GPU, where `stream` is None)."""
    return torch.cuda.stream(stream) if stream is not None else contextlib.nullcontext()
