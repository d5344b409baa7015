"""Code written for the common wandb calls runs unchanged through labfolio.compat.wandb."""

from __future__ import annotations

import subprocess
import sys
import textwrap

from labfolio.store import open_store

WANDB_STYLE_SCRIPT = textwrap.dedent('''
    import labfolio.compat.wandb as wandb

    assert wandb.run is None
    run = wandb.init(project="shim", name="baseline-run", group="exp_shim", job_type="regular",
                     config={"lr": 0.01, "seed": 3}, tags=["t1"], notes="from a wandb script",
                     mode="online")
    wandb.config.update({"epochs": 2})
    for epoch in range(2):
        for step in range(5):
            wandb.log({"train/loss": 1.0 / (epoch * 5 + step + 1), "epoch": epoch})
    wandb.summary["test/acc"] = 0.75
    print(run.id, run.name, wandb.config["lr"], wandb.run is run)
    wandb.finish()
''')


def test_a_wandb_style_script_runs_unchanged(tmp_path):
    script = tmp_path / "train.py"
    script.write_text(WANDB_STYLE_SCRIPT)
    out = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, cwd=tmp_path)
    assert out.returncode == 0, out.stderr
    run_id, name, lr, same = out.stdout.split()
    assert (name, lr, same) == ("baseline-run", "0.01", "True")
    record = open_store().get_run(run_id)
    assert (record.project, record.experiment, record.variant, record.seed) == ("shim", "exp_shim", "regular", 3)
    assert record.config == {"lr": 0.01, "seed": 3, "epochs": 2}
    assert record.tags == ["t1"] and record.notes == "from a wandb script"
    assert record.summary["train/loss"].count == 10 and record.summary["test/acc"].value == 0.75
    assert record.state == "finished"
