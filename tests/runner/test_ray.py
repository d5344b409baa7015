"""The Ray executor against a real local Ray instance on CPU, reached through $RAY_ADDRESS.

The instance declares two logical GPUs, so every run is a ``num_gpus=1`` task and Ray itself
chooses its CUDA_VISIBLE_DEVICES. In CI (CI=true) a missing Ray fails the test instead of skipping.
"""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

import labfolio

IN_CI = os.environ.get("CI", "").lower() in ("1", "true", "yes")


@pytest.fixture
def ray_cluster():
    try:
        import ray
    except ImportError:
        if IN_CI:
            pytest.fail("ray is required in CI: pip install 'labfolio[ray]'")
        pytest.skip("ray is not installed (pip install 'labfolio[ray]')")
    import tempfile

    # Ray's socket paths must stay under 108 bytes: pytest's tmp_path is too deep
    temp_dir = tempfile.mkdtemp(prefix="lf-ray-")
    ray.init(num_cpus=2, num_gpus=2, include_dashboard=False, _temp_dir=temp_dir,
             logging_level="ERROR", log_to_driver=False)
    try:
        yield ray.get_runtime_context().gcs_address
    finally:
        ray.shutdown()
        import shutil

        shutil.rmtree(temp_dir, ignore_errors=True)


@pytest.mark.slow
def test_ray_runs_each_variant_seed_as_a_one_gpu_task_at_ray_address(write_spec, tmp_path, ray_cluster):
    path = write_spec("experiment: toy_ray\ncommand: python {toy}\nbase: {steps: 3, sleep: 0.3}\n"
                      "variants:\n  a: {}\n  b: {lr: 0.2}\nseeds: [0]\n")
    env = {**os.environ, "RAY_ADDRESS": ray_cluster, "LABFOLIO_PLAIN": "1"}
    result = subprocess.run([sys.executable, "-m", "labfolio.cli", "run", str(path), "--executor", "ray",
                             "--no-notebook", "--store", os.environ["LABFOLIO_DIR"]],
                            env=env, cwd=tmp_path, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stdout + result.stderr
    assert f"on Ray at {ray_cluster}" in result.stdout
    runs = labfolio.open_store().list_runs(experiment="toy_ray")
    assert sorted((r.variant, r.state) for r in runs) == [("a", "finished"), ("b", "finished")]
    gpus = [r.summary["gpu"].value for r in runs]
    assert all(g in ("0", "1") for g in gpus), gpus  # Ray granted each task one of the two GPUs
    assert all(len(labfolio.open_store().history(r.run_id)["train/loss"].steps) == 3 for r in runs)
