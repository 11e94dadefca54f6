"""How many torch threads training takes by default: the CPUs other work leaves free now."""

from __future__ import annotations

import os
import subprocess
import sys
import time

import pytest

pytest.importorskip("torch")

from regionmir.train.loop import auto_threads, busy_cpus, set_threads  # noqa: E402


@pytest.mark.skipif(not os.path.exists("/proc/stat"), reason="needs Linux /proc/stat")
def test_a_spinning_process_counts_as_a_busy_cpu():
    spinner = subprocess.Popen([sys.executable, "-c", "while True: pass"])
    try:
        time.sleep(0.5)  # let it start spinning
        assert busy_cpus() >= 0.6  # one whole CPU, whatever else the machine does
    finally:
        spinner.kill()
        spinner.wait()


def test_threads_stay_within_the_cpus_and_an_explicit_count_wins():
    cpus = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    assert 1 <= auto_threads() <= cpus
    assert set_threads(1) == 1
