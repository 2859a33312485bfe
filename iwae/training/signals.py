"""Signals to a training run: a scheduler's SIGTERM (or a user's Ctrl-C) becomes a request to
stop at the next step boundary, after a checkpoint, so that the run resumes where it stopped."""

from __future__ import annotations

import signal


class StopRequest:
    """Turns SIGTERM / SIGINT into a flag the training loop checks at every step, so that a
    scheduler's kill (Slurm sends SIGTERM first) leaves a fresh checkpoint behind. A second
    SIGTERM or SIGINT stops at once. SIGUSR1 is a pack's own request to its workers: it never
    escalates, since a worker may get the scheduler's signal too."""

    FROM_PACK = signal.SIGUSR1

    def __init__(self, also=None):
        """`also(signum)` is called on every signal too (a pack passes it on to its workers)."""
        self.requested = False
        self.signum = 0
        self.also = also
        self._previous = {}

    def _handler(self, signum, frame):
        if self.also:
            self.also(signum)
        if self.requested and signum != self.FROM_PACK and self.signum != self.FROM_PACK:
            raise KeyboardInterrupt  # a second signal from outside: stop now
        if not self.requested or self.signum == self.FROM_PACK:
            self.signum = signum
        self.requested = True

    def install(self):
        for sig in (signal.SIGTERM, signal.SIGINT, self.FROM_PACK):
            try:
                self._previous[sig] = signal.signal(sig, self._handler)
            except ValueError:  # not the main thread: leave signals alone
                pass

    def uninstall(self):
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)
        self._previous.clear()
