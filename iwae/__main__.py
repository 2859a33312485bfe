"""`python -m iwae`, the command the workflow runs for every job."""

import os
import sys

from iwae.cli import main

code = main()
# Every output is complete by now (written atomically). Skipping the interpreter's teardown
# of PyTorch's module graph saves about half a second per job, which a pack's first process
# would otherwise add after its workers have finished.
sys.stdout.flush()
sys.stderr.flush()
os._exit(code)
