"""Log a small synthetic study into the embedded SQLite store (.labfolio/ at the project root).

Two variants × two seeds of a made-up training curve: enough to see runs, summaries,
throughput and provenance in `labfolio runs` and `labfolio show RUN`.
"""

from __future__ import annotations

import math
import random

import labfolio

STEPS = 400
BASE_CONFIG = {"model": {"width": 128, "depth": 6}, "lr": 3e-3, "schedule": "cosine_warmup",
               "warmup_steps": 40, "steps": STEPS, "batch_size": 64}


def lr_at(step: int) -> float:
    if step < BASE_CONFIG["warmup_steps"]:
        return BASE_CONFIG["lr"] * (step + 1) / BASE_CONFIG["warmup_steps"]
    progress = (step - BASE_CONFIG["warmup_steps"]) / (STEPS - BASE_CONFIG["warmup_steps"])
    return BASE_CONFIG["lr"] * 0.5 * (1 + math.cos(math.pi * progress))


def train(variant: str, seed: int, gain: float) -> str:
    rng = random.Random(seed)
    config = {**BASE_CONFIG, "connection": variant, "streams": 4 if variant != "residual" else 1}
    with labfolio.init(project="quickstart", experiment="quickstart_001", variant=variant, seed=seed,
                       config=config, batch_size=config["batch_size"],
                       hypothesis="A 4-stream mHC connection lowers the loss at equal steps") as run:
        for step in range(STEPS):
            loss = 2.3 * math.exp(-step / (120 * gain)) + 0.25 + rng.gauss(0, 0.02)
            run.log({"train/loss": loss, "lr": lr_at(step), "grad_norm": abs(rng.gauss(1.0, 0.2))}, step=step)
            if step % 100 == 99 or step == STEPS - 1:
                acc = 0.9 - 0.6 * math.exp(-step / (100 * gain)) + rng.gauss(0, 0.005)
                run.log({"test/acc": acc, "epoch": step // 100}, step=step)
        return run.id


def main() -> None:
    for variant, gain in (("residual", 1.0), ("mhc", 0.9)):
        for seed in (0, 1):
            print("logged", train(variant, seed, gain))


if __name__ == "__main__":
    main()
