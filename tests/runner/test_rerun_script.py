"""examples/results/rerun.sh: start a detached runner for several specs, wait, read its status,
pack the store in parts, and bring it back whole (the cycle a remote GPU session runs)."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tarfile
from pathlib import Path

import pytest

import labfolio

REPO = Path(__file__).resolve().parents[2]
SCRIPT = REPO / "examples" / "results" / "rerun.sh"


def _script(*args, env, cwd, timeout=120):
    return subprocess.run(["bash", str(SCRIPT), *args], env=env, cwd=cwd, capture_output=True, text=True,
                          timeout=timeout)


@pytest.mark.skipif(shutil.which("bash") is None or shutil.which("setsid") is None, reason="needs bash and setsid")
def test_rerun_starts_one_detached_runner_for_the_specs_and_packs_a_store_that_reads_back(write_spec, tmp_path):
    first = write_spec("experiment: toy_001\ncommand: python {toy}\nbase: {steps: 30}\n"
                       "variants:\n  a: {}\nseeds: [0, 1, 2]\n", name="toy_001.yaml")
    second = write_spec("experiment: toy_002\nprevious: toy_001\ncommand: python {toy}\nbase: {steps: 30}\n"
                        "variants:\n  a: {}\n  b: {lr: 0.2}\nseeds: [0, 1, 2]\n", name="toy_002.yaml")
    store = tmp_path / "study_store"
    labfolio_cli = Path(sys.executable).with_name("labfolio")
    env = {**os.environ, "STORE": str(store), "GPUS": "none", "SEEDS": "0,1", "SPLIT_MB": "1",
           "LABFOLIO": str(labfolio_cli), "RUN_ARGS": "--no-notebook -j 2"}
    for name in ("LABFOLIO_STORE", "LABFOLIO_DIR", "LABFOLIO_SERVER"):
        env.pop(name, None)
    started = _script("start", str(second), str(first), env=env, cwd=tmp_path)
    assert started.returncode == 0, started.stderr
    assert "started (pid" in started.stdout
    waited = _script("wait", "90", str(tmp_path / "each_call"), env=env, cwd=tmp_path)
    assert "ended" in waited.stdout, waited.stderr
    assert sorted((tmp_path / "each_call").glob("store.tar.xz.part_*"))  # a wait with DEST packs too
    status = _script("status", env=env, cwd=tmp_path)
    assert status.returncode == 0, status.stderr
    assert "6 run(s)" in status.stdout and "runner still running: no" in status.stdout
    log = (store / "rerun" / "runner.log").read_text(encoding="utf-8")
    assert log.index("toy_001/a/s0 started") < log.index("toy_002/a/s0 started")  # each spec after its previous
    assert "toy_001: 2 finished" in log and "toy_002: 4 finished" in log  # SEEDS=0,1 of the spec's 3

    packed = _script("pack", str(tmp_path / "out"), env=env, cwd=tmp_path)
    assert packed.returncode == 0, packed.stderr
    parts = sorted((tmp_path / "out").glob("store.tar.xz.part_*"))
    assert parts and (tmp_path / "out" / "rerun.tar.xz").is_file()
    joined = tmp_path / "joined.tar.xz"
    joined.write_bytes(b"".join(part.read_bytes() for part in parts))
    with tarfile.open(joined) as archive:
        archive.extractall(tmp_path / "back", filter="data")
    copy = labfolio.open_store(str(tmp_path / "back" / "store"))
    assert sorted((r.experiment, r.variant, r.seed, r.state) for r in copy.list_runs()) == [
        ("toy_001", "a", 0, "finished"), ("toy_001", "a", 1, "finished"),
        ("toy_002", "a", 0, "finished"), ("toy_002", "a", 1, "finished"),
        ("toy_002", "b", 0, "finished"), ("toy_002", "b", 1, "finished")]
    assert _script("stop", env=env, cwd=tmp_path).returncode == 0


def test_rerun_refuses_a_spec_that_does_not_validate_and_starts_nothing(write_spec, tmp_path):
    bad = write_spec("experiment: toy\ncommand: python {toy}\nvariants:\n  a: {}\nseeds: [0]\nepochs: 3\n",
                     name="bad.yaml")
    # LABFOLIO may be a command of several words, for a checkout without the console script
    env = {**os.environ, "STORE": str(tmp_path / "s"), "GPUS": "none", "LABFOLIO": f"{sys.executable} -m labfolio"}
    result = _script("start", str(bad), env=env, cwd=tmp_path)
    assert result.returncode == 2 and "do not validate" in result.stderr
    assert "unknown spec key 'epochs'" in result.stderr  # labfolio itself ran and said why
    assert f"see: {sys.executable} -m labfolio run" in result.stderr
    assert not (tmp_path / "s" / "rerun" / "runner.pid").exists()
