"""System-metrics sampler: sane values, prompt stop, failures never reach the caller."""
from __future__ import annotations

import threading
import time
import warnings

import pytest

from labfolio.sysmetrics import (
    SystemMetricsSampler,
    describe_gpus,
    load_nvml,
    parse_nvidia_smi_csv,
)

psutil = pytest.importorskip("psutil")

HOST_KEYS = {"sys/cpu_percent", "sys/ram_used_gb", "sys/ram_percent", "sys/proc_rss_gb",
             "sys/proc_cpu_percent"}


def collect(sampler_kwargs: dict, count: int, timeout: float = 5.0) -> list[dict]:
    samples: list[dict] = []
    enough = threading.Event()

    def callback(sample: dict) -> None:
        samples.append(sample)
        if len(samples) >= count:
            enough.set()

    with SystemMetricsSampler(callback, **sampler_kwargs):
        assert enough.wait(timeout), f"only {len(samples)} samples in {timeout} s"
    return samples


def test_sampler_calls_back_with_sane_host_numbers():
    samples = collect({"interval": 0.05}, count=2)
    ram_total_gb = psutil.virtual_memory().total / 2**30
    for sample in samples:
        assert HOST_KEYS <= set(sample), sorted(sample)
        assert all(isinstance(v, float) for v in sample.values())
        assert 0.0 <= sample["sys/cpu_percent"] <= 100.0
        assert 0.0 < sample["sys/ram_percent"] <= 100.0
        assert 0.0 < sample["sys/ram_used_gb"] <= ram_total_gb
        # This test process holds at least a Python interpreter and numpy-free stdlib: > 5 MiB.
        assert 5 / 1024 < sample["sys/proc_rss_gb"] < ram_total_gb
        assert sample["sys/proc_cpu_percent"] >= 0.0


def test_stop_returns_promptly_even_with_a_long_interval():
    sampler = SystemMetricsSampler(lambda sample: None, interval=30.0).start()
    assert sampler.running
    time.sleep(0.05)
    start = time.perf_counter()
    sampler.stop()
    assert time.perf_counter() - start < 1.0
    assert not sampler.running
    sampler.stop()  # a second stop is harmless


def test_sampler_can_restart_after_stop():
    sampler = SystemMetricsSampler(lambda sample: None, interval=0.05)
    sampler.start()
    sampler.stop()
    samples: list[dict] = []
    sampler.callback = samples.append
    sampler.start()
    deadline = time.monotonic() + 5.0
    while not samples and time.monotonic() < deadline:
        time.sleep(0.01)
    sampler.stop()
    assert samples, "a restarted sampler produced no samples"


def test_failing_callback_is_skipped_with_one_warning_and_sampling_goes_on():
    calls = []
    three_calls = threading.Event()

    def callback(sample: dict) -> None:
        calls.append(sample)
        if len(calls) >= 3:
            three_calls.set()
        raise RuntimeError("store unreachable")

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        with SystemMetricsSampler(callback, interval=0.03):
            assert three_calls.wait(5.0), "sampling stopped after a failing callback"
    ours = [w for w in caught if "labfolio system metrics" in str(w.message)]
    assert len(ours) == 1, [str(w.message) for w in ours]
    assert "store unreachable" in str(ours[0].message)


def test_sample_now_returns_host_metrics_without_starting_a_thread():
    sampler = SystemMetricsSampler(lambda sample: None)
    assert HOST_KEYS <= set(sampler.sample())
    assert not sampler.running


@pytest.mark.parametrize("interval", [0, -1.0, "10"])
def test_invalid_interval_is_refused_with_a_clear_error(interval):
    with pytest.raises(ValueError, match="positive number of seconds"):
        SystemMetricsSampler(lambda sample: None, interval=interval)


def test_non_callable_callback_is_refused():
    with pytest.raises(TypeError, match="callable"):
        SystemMetricsSampler({}, interval=1.0)


def test_nvidia_smi_csv_is_parsed_into_gpus_and_driver():
    text = (
        "0, NVIDIA H100 80GB HBM3, 81559, GPU-1a2b3c4d-0000-1111-2222-333344445555, 550.54.15\n"
        "1, NVIDIA GeForce RTX 4090, [N/A], GPU-ffffffff-0000-1111-2222-333344445555, 550.54.15\n"
        "\n"
    )
    gpus, driver = parse_nvidia_smi_csv(text)
    assert driver == "550.54.15"
    assert gpus == [
        {"index": 0, "name": "NVIDIA H100 80GB HBM3", "memory_total_gb": 79.65,
         "uuid": "GPU-1a2b3c4d-0000-1111-2222-333344445555"},
        {"index": 1, "name": "NVIDIA GeForce RTX 4090", "memory_total_gb": None,
         "uuid": "GPU-ffffffff-0000-1111-2222-333344445555"},
    ]


def test_gpu_metrics_are_reported_per_gpu_when_nvml_works():
    nvml = load_nvml()
    if nvml is None:
        pytest.skip("NVML is not available on this machine")
    count = nvml.nvmlDeviceGetCount()
    nvml.nvmlShutdown()
    gpus, _, source = describe_gpus()
    assert source == "nvml" and len(gpus) == count
    sample = SystemMetricsSampler(lambda s: None).sample()
    for i in range(count):
        assert 0.0 <= sample[f"sys/gpu{i}/mem_percent"] <= 100.0
        assert 0.0 <= sample[f"sys/gpu{i}/mem_used_gb"] <= gpus[i]["memory_total_gb"] + 0.01
