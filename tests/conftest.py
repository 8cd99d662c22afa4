"""Fixtures shared by the test files."""
import json
import signal
import time

import pytest


@pytest.fixture
def kill_mid_epoch():
    """``kill(process, run_dir, after_epoch=2)``: wait for the run's checkpoint of epoch ``after_epoch``,
    then SIGKILL the training process 40% into the next epoch (by the last epoch's duration).
    Returns the run's checkpoint.json path."""
    def kill(process, run_dir, after_epoch=2):
        meta_file = run_dir / "checkpoint.json"
        deadline = time.time() + 300
        while time.time() < deadline:
            if meta_file.exists() and json.loads(meta_file.read_text())["epoch"] >= after_epoch:
                break
            time.sleep(0.005)
        time.sleep(json.loads(meta_file.read_text())["history"][-1]["seconds"] * 0.4)
        process.send_signal(signal.SIGKILL)
        process.wait()
        return meta_file
    return kill
