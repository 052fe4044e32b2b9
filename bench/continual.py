"""Continual learning A -> B -> C with the probe family: does each strategy keep the old generators?

The protocol of the continual-detection papers, on the demo generators (A: transposed-convolution
up-sampler; B: nearest-neighbour up-sampler with grain; C: colour bleeding): a model is trained on A,
then continued on B (the snapshot now holds A and B; the A images are *seen*), then on C. Each
strategy starts from the same A model with the same seed and replay budget:

* ``fine-tune``  — continue the champion's head on the new images only (no replay);
* ``replay (warm)`` — continue it on new images + a (generator, label)-balanced buffer of seen ones
  (budget: as many as new);
* ``fresh+replay (default)`` — the same rows, but a fresh seeded head (``continual.warm_start: false``);
* ``fresh+replay+kd`` — + logit distillation from the previous model (weight 0.3, T = 2);
* ``replay+kd+ewc (warm)`` — continued head + distillation (1.0) + EWC on the head's weights (lambda 10);
* ``joint``      — retrain from scratch on everything so far (the upper bound, not continual).

Printed per strategy: AUC on every generator seen so far after each step, average forgetting (how much
the best AUC of an old generator was lost by the end), backward transfer (final minus just-learned
AUC of the old generators), forward transfer (AUC on the next generator before training on it, minus
chance), the final model's AUC drops under JPEG q75 and 0.5x, its test FPR (real test images flagged at its
threshold, chosen on val for the target FPR: does the threshold transfer?), and the training time. Same seed, so a
rerun prints the same AUCs.
"""

from __future__ import annotations

import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd
from sklearn.metrics import roc_auc_score

from tasks.data.frames import Frame, folder_frame
from tasks.demo.data import DemoSpec, generate
from tasks.evaluate import jpeg_q75, resize_half
from tasks.evaluate.metrics import threshold_at_fpr
from tasks.logs import setup_logging
from tasks.model import backbone
from tasks.model.card import card_for
from tasks.model.config import load_config
from tasks.model.detector import Detector
from tasks.model.probe import save_probe
from tasks.settings import Settings
from tasks.train.job import select_training_rows
from tasks.train.probe import fit_probe

GENERATORS = ("A", "B", "C")
STRATEGIES = {
    "fine-tune": {
        "continual.warm_start": True,
        "continual.replay_budget": 0,
        "continual.distillation_weight": 0.0,
        "continual.ewc_lambda": 0.0,
    },
    "replay (warm)": {
        "continual.warm_start": True,
        "continual.replay_budget": "new",
        "continual.distillation_weight": 0.0,
        "continual.ewc_lambda": 0.0,
    },
    "fresh+replay (default)": {
        "continual.warm_start": False,
        "continual.replay_budget": "new",
        "continual.distillation_weight": 0.0,
        "continual.ewc_lambda": 0.0,
    },
    "fresh+replay+kd": {
        "continual.warm_start": False,
        "continual.replay_budget": "new",
        "continual.distillation_weight": 0.3,
        "continual.ewc_lambda": 0.0,
    },
    "replay+kd+ewc (warm)": {
        "continual.warm_start": True,
        "continual.replay_budget": "new",
        "continual.distillation_weight": 1.0,
        "continual.ewc_lambda": 10.0,
    },
    "joint": {"continual.warm_start": False, "continual.replay_budget": 100_000},
}


def split(frame: Frame, name: str) -> Frame:
    return frame.where(frame.table["split"].to_numpy() == name, f"{frame.name} {name}")


def concat(frames: list[Frame], name: str) -> Frame:
    return Frame(pd.concat([f.table for f in frames], ignore_index=True), name)


def save(fit, config, val: Frame, dest: Path) -> Detector:
    threshold = threshold_at_fpr(val.labels, fit.val_scores, config.target_fpr)
    card = card_for(config, threshold=threshold, weights=backbone.identity(), feature_names=fit.feature_names)
    return Detector.load(save_probe(dest, card, fit.head))


def auc(detector: Detector, frame: Frame, perturb=None) -> float:
    images = frame.images()
    if perturb is not None:
        images = [perturb(image) for image in images]
    return float(roc_auc_score(frame.labels, detector.score(images)))


def fpr(detector: Detector, frame: Frame) -> float:
    """Share of the real test images flagged at the model's threshold (chosen on val at the target FPR):
    whether the threshold transfers to new photographs, which AUC alone does not show."""
    real = frame.where(frame.labels == 0, "real")
    return float((detector.score(real.images()) >= detector.threshold).mean())


def main() -> None:
    setup_logging()
    work = Path(tempfile.mkdtemp(prefix="vigil-bench-continual-"))
    data = {g: folder_frame(generate(work / "data", DemoSpec(generator=g))) for g in GENERATORS}
    tests = {g: split(data[g], "test") for g in GENERATORS}
    cache = work / "cache"
    base = load_config(None, Settings(), profile="probe")
    rows = []
    a_train, a_val = split(data["A"], "train"), split(data["A"], "val")
    t0 = time.monotonic()
    a_fit = fit_probe(base, a_train, a_val, np.zeros(len(a_train), bool), cache)
    a_seconds = time.monotonic() - t0
    a_model = save(a_fit, base, a_val, work / "A")  # every strategy continues from this model
    for name, overrides in STRATEGIES.items():
        config = base.with_overrides(overrides)
        champion = a_model
        table = [{"step": "A", "auc": {"A": auc(a_model, tests["A"])}, "forward": None, "seconds": a_seconds}]
        for step, generator in enumerate(GENERATORS[1:], start=1):
            learned = GENERATORS[: step + 1]
            train_all = concat([split(data[g], "train") for g in learned], "train")
            val = concat([split(data[g], "val") for g in learned], "val")
            seen_ids = set(concat([split(data[g], "train") for g in learned[:-1]], "seen").table["image_id"])
            forward = auc(champion, tests[generator])
            train, _ = select_training_rows(train_all, seen_ids, config.continual.replay_budget, config.seed)
            seen = train.table["image_id"].isin(seen_ids).to_numpy()
            t0 = time.monotonic()
            fit = fit_probe(config, train, val, seen, cache, champion=None if name == "joint" else champion)
            seconds = time.monotonic() - t0
            champion = save(fit, config, val, work / name / generator)
            table.append(
                {
                    "step": generator,
                    "auc": {g: auc(champion, tests[g]) for g in learned},
                    "forward": forward,
                    "seconds": seconds,
                }
            )
        final = table[-1]["auc"]
        old = GENERATORS[:-1]
        forgetting = np.mean([max(t["auc"][g] for t in table if g in t["auc"]) - final[g] for g in old])
        backward = np.mean([final[g] - table[i]["auc"][g] for i, g in enumerate(old)])
        forwards = [t["forward"] for t in table if t["forward"] is not None]
        all_tests = concat(list(tests.values()), "all")
        clean = auc(champion, all_tests)
        rows.append(
            {
                "strategy": name,
                "steps": " | ".join(" ".join(f"{g}={v:.3f}" for g, v in t["auc"].items()) for t in table),
                "forgetting": forgetting,
                "backward": backward,
                "forward": np.mean(forwards) - 0.5 if forwards else None,
                "jpeg_drop": clean - auc(champion, all_tests, jpeg_q75),
                "resize_drop": clean - auc(champion, all_tests, resize_half),
                "fpr": fpr(champion, all_tests),
                "seconds": sum(t["seconds"] for t in table),
            }
        )
    print()
    print(
        "| strategy | AUC after A \\| after B \\| after C | avg forgetting | backward transfer | forward transfer "
        "| JPEG q75 drop | 0.5x drop | test FPR | training s |"
    )
    print("|---|---|---:|---:|---:|---:|---:|---:|---:|")
    for r in rows:
        forward = "–" if r["forward"] is None else f"{r['forward']:+.3f}"
        print(
            f"| {r['strategy']} | {r['steps']} | {r['forgetting']:.3f} | {r['backward']:+.3f} | {forward} | "
            f"{r['jpeg_drop']:.3f} | {r['resize_drop']:.3f} | {r['fpr']:.3f} | {r['seconds']:.1f} |"
        )


if __name__ == "__main__":
    main()
