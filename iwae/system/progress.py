"""A one-line progress bar on a terminal; silence elsewhere (log files, batch jobs)."""

from __future__ import annotations

import sys
import time


class Progress:
    def __init__(self, total: int, label: str, enabled: bool | None = None, stream=sys.stderr):
        self.total, self.label, self.stream = total, label, stream
        self.enabled = stream.isatty() if enabled is None else enabled
        self.start = time.monotonic()
        self._last = 0.0
        self._shown = False

    def update(self, done: int, note: str = "", force: bool = False) -> None:
        if not self.enabled:
            return
        now = time.monotonic()
        if not force and now - self._last < 0.25:
            return
        self._last = now
        frac = done / self.total if self.total else 1.0
        bar = "#" * int(30 * frac) + "-" * (30 - int(30 * frac))
        eta = (now - self.start) / frac * (1 - frac) if frac > 0 else float("nan")
        self.stream.write(f"\r{self.label} [{bar}] {done}/{self.total} {note} eta {_hms(eta)}  ")
        self.stream.flush()
        self._shown = True

    def close(self) -> None:
        if self.enabled and self._shown:
            self.stream.write("\n")
            self.stream.flush()
            self._shown = False


def _hms(seconds: float) -> str:
    if seconds != seconds:  # nan
        return "?"
    seconds = int(seconds)
    return f"{seconds // 3600}:{seconds // 60 % 60:02d}:{seconds % 60:02d}"
