"""Scripts the reliability tests run as child processes (`python -c SCRIPT ...`)."""

from __future__ import annotations

import re

RUN_ID = re.compile(r"training run ([0-9a-f]{32})")

# `python -m projects.train ARGS`, stalled (sleeping) once step STALL's metrics are logged.
STALLED_TRAIN = """
import sys, time
import lvtrack.runs as runs
stall = int(sys.argv.pop(1))
log = runs.FlopsMeter.log
def stalling(self, counted, step, metrics=None):
    log(self, counted, step, metrics)
    if step == stall and metrics and "train_loss" in metrics:
        time.sleep(600)  # killed here by the test
runs.FlopsMeter.log = stalling
from projects.train import main
main(prog_name="projects.train")
"""
