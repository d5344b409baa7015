"""A training script as a user would write it, for runner tests: takes --key=value flags, logs points.

Flags: --steps, --sleep (seconds per step), --fail_at (raise at that step), --stubborn (ignore
SIGINT and SIGTERM, so only SIGKILL stops it), --lr (any float; only recorded). Everything it got
is recorded so tests can assert what reached it: the flags, $LABFOLIO_CONFIG's content and
$CUDA_VISIBLE_DEVICES, plus wall-clock start and end times.
"""

import json
import os
import signal
import sys
import time

import labfolio

flags = dict(arg[2:].split("=", 1) for arg in sys.argv[1:] if arg.startswith("--") and "=" in arg)
steps = int(flags.get("steps", 5))
sleep = float(flags.get("sleep", 0))
fail_at = int(flags.get("fail_at", -1))
if flags.get("stubborn") == "true":
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)

with open(os.environ["LABFOLIO_CONFIG"]) as handle:
    file_config = json.load(handle)
run = labfolio.init(config={"flags": flags}, batch_size=1)
run.summary["gpu"] = os.environ.get("CUDA_VISIBLE_DEVICES", "")
run.summary["threads"] = os.environ.get("OMP_NUM_THREADS", "")
run.summary["file_config"] = json.dumps(file_config, sort_keys=True)
run.summary["started_wall"] = time.time()
for step in range(steps):
    if step == fail_at:
        raise RuntimeError(f"deliberate failure at step {step}")
    run.log({"train/loss": 1.0 / (step + 1), "score": step / max(1, steps - 1)}, step=step)
    time.sleep(sleep)
run.summary["ended_wall"] = time.time()
run.finish()
