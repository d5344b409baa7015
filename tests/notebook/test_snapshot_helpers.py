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
