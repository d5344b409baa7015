"""configs_unchanging() only memoises: inside it every diff is what it is outside it."""

import copy
import math

from labfolio.analysis.diff import (VARIES, configs_unchanging, diff_configs, flatten_config, is_ignored,
                                    shared_config)


def _configs():
    base = {"model": {"name": "mlp", "width": 256, "act": {}}, "optimizer": {"lr": 1e-3, "betas": [0.9, 0.99]},
            "seed": 0, "epochs": 10, "flag": True, "tag": None, "nan": math.nan, "big": 2**60}
    other = copy.deepcopy(base)
    other["seed"] = 1
    other["optimizer"]["lr"] = 1e-3  # equal, not identical objects
    third = copy.deepcopy(base)
    third["epochs"] = 10.0
    third["flag"] = 1
    third["model"]["width"] = 512
    third["extra"] = {"x": 1}
    return [base, other, third]


def test_memoised_results_equal_plain_ones():
    configs = _configs()
    groups = [configs[:1], configs[:2], configs, configs[1:], [configs[2], configs[0]]]
    plain = [shared_config(g) for g in groups]
    diffs = [diff_configs(shared_config(a), shared_config(b)) for a in groups for b in groups]
    with configs_unchanging():
        for _ in range(2):  # second pass served from the memo
            assert [shared_config(g) for g in groups] == plain
            assert [diff_configs(shared_config(a), shared_config(b)) for a in groups for b in groups] == diffs
    assert shared_config(configs)["model.width"] is VARIES
    assert shared_config(configs)["epochs"] == 10  # 10 == 10.0
    assert shared_config(configs)["flag"] is VARIES  # True is not 1
    assert math.isnan(shared_config(configs[:2])["nan"])  # NaN equals NaN


def test_callers_cannot_corrupt_the_memo_and_nothing_outlives_the_block():
    configs = _configs()
    with configs_unchanging():
        first = shared_config(configs)
        first["model.name"] = "changed by a caller"
        assert shared_config(configs)["model.name"] == "mlp"
    configs[0]["model"]["name"] = "resnet"  # changed after the block: seen at once
    assert shared_config(configs)["model.name"] is VARIES
    assert flatten_config(configs[0])["model.name"] == "resnet"


def test_is_ignored_accepts_any_iterable_of_globs():
    assert is_ignored("trainer.seed") and not is_ignored("optimizer.lr")
    assert is_ignored("optimizer.lr", (p for p in ["*lr"])) and is_ignored("optimizer.lr", ["OPTIMIZER*"])
