from __future__ import annotations

from labfolio.notebook.snapshot import data_label


def test_data_label_names_a_dataset_as_given_and_a_data_file_by_its_name():
    assert data_label({"dataset": "cifar10"}) == "cifar10"
    assert data_label({"data": {"name": "imagenet"}}) == "imagenet"
    # the lm recipe's data is a text file: the master log shows which, not where it lay
    assert data_label({"text": ".devdata/tinyshakespeare.txt"}) == "tinyshakespeare.txt"
    assert data_label({"dataset": "/data/cifar10-jpeg/"}) == "cifar10-jpeg"
    assert data_label({"lr": 0.1}) is None


def test_data_label_prefers_a_named_dataset_over_a_text_file():
    assert data_label({"dataset": "shakespeare", "text": "corpus/input.txt"}) == "shakespeare"


def _run(machine, gpus):
    from labfolio.store.records import RunRecord

    provenance = {"machine": {"hostname": machine, "gpus": gpus}} if gpus is not None else {}
    return RunRecord(run_id="r", project="p", experiment="e", variant="v", seed=0, name=None, state="finished",
                     status=None, status_reason=None, tags=[], notes=None, evaluates=None, config={},
                     provenance=provenance, host=machine, machine=machine, batch_size=None, tokens_per_step=None,
                     created_at=0.0, started_at=0.0, ended_at=1.0, heartbeat_at=None, exit_reason=None,
                     first_step=0, last_step=1, first_time=0.0, last_time=1.0, point_count=2)


def test_machine_label_counts_the_runs_gpus_beside_the_host_name():
    from labfolio.notebook.snapshot import machine_label

    h200 = {"index": 0, "name": "NVIDIA H200", "memory_total_gb": 140.4}
    assert machine_label(_run("vm", [h200])) == "vm (1× H200)"
    assert machine_label(_run("node7", [h200, {**h200, "index": 1}, {"name": "NVIDIA A100-SXM4-80GB"}])) \
        == "node7 (2× H200, 1× A100-SXM4-80GB)"
    assert machine_label(_run("laptop", [])) == "laptop"
    assert machine_label(_run(None, None)) == "--"
