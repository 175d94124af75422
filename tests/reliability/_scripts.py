"""Scripts the reliability tests run as child processes (`python -c SCRIPT ...`)."""

from __future__ import annotations

import re

RUN_ID = re.compile(r"training run ([0-9a-f]{32})")

# `python -m projects.train ARGS`, stalled (sleeping) once step STALL's metrics are logged.
STALLED_TRAIN = """
import sys, time
import lvtrack.runs as runs
stall = int(sys.argv.pop(1))
log_rows = runs.FlopsMeter.log_rows
def stalling(self, rows):
    log_rows(self, rows)
    if any(step == stall and "train_loss" in metrics for step, _, metrics in rows):
        time.sleep(600)  # killed here by the test
runs.FlopsMeter.log_rows = stalling
from projects.train import main
main(prog_name="projects.train")
"""
