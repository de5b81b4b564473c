#!/usr/bin/env python3
"""Rebuild the assets shipped in the package, from the project's own synthetic generator only.

- ``emclassify/data/samples/``: a small synthetic lamellarity folder (images, masks,
  manifest) that the README's main command classifies.
- ``packaging/linux/emclassify.png``, ``packaging/windows/emclassify.ico`` (``--icons``): the app icon.
- ``emclassify/data/models/lamellarity-lipnet-fcn.safetensors``: the default model,
  a lipnet-fcn trained on synthetic lamellarity particles, with its card (training
  settings, validation metrics and confusion matrix, test on a natural-prevalence set).

Usage (from the repository root, after installing emclassify)::

    python packaging/make_assets.py            # both
    python packaging/make_assets.py --samples  # only the sample folder

Deterministic for the seeds below on one machine (CPU training).
"""
from __future__ import annotations

import argparse
import shutil
import sys
import time
from pathlib import Path

import torch

from emclassify import metrics, ops, synth
from emclassify.assets import DEFAULT_MODEL_NAME, data_dir
from emclassify.contrast import mask_contrast, polarity_record
from emclassify.input_decision import side_stats
from emclassify.modelfile import ModelCard, save_model
from emclassify.preprocess import PreprocessConfig
from emclassify.training import InputSet, TrainConfig, fit, predict_logits

PROBLEM = "lamellarity"
SAMPLE_SEED, SAMPLE_N, SAMPLE_PROPORTIONS = 7, 40, (0.75, 0.20, 0.05)
TRAIN_SEED, TRAIN_N, TRAIN_PROPORTIONS = 101, 3000, (0.6, 0.3, 0.1)
VAL_SEED, VAL_N = 102, 600
TEST_SEED, TEST_N = 103, 2000  # natural (seed-paper) proportions


def make_samples(root: Path) -> None:
    out = root / "samples"
    if out.exists():
        shutil.rmtree(out)
    synth.generate(out, PROBLEM, SAMPLE_N, seed=SAMPLE_SEED, proportions=SAMPLE_PROPORTIONS)
    print(f"samples: {SAMPLE_N} images in {out}")


def tensors(n: int, seed: int, proportions, cfg: PreprocessConfig):
    items = list(synth.iter_particles(PROBLEM, n, seed=seed, proportions=proportions))
    classes = synth.PROBLEMS[PROBLEM][0]
    x = ops.preprocess([it.image for it in items], [it.mask for it in items], cfg)
    y = torch.tensor([classes.index(it.label) for it in items])
    return InputSet(x, None, y, [], [])


def training_data_record() -> dict:
    """What ``train`` records of its data for ``batch``'s checks, from all 3,000 training particles
    (``train`` samples 400 of larger sets): ``image_sides_px`` (size warnings, and the doubt on a
    "micrograph" the size of a particle image) and ``particle_contrast`` (:mod:`emclassify.contrast`)."""
    items = list(synth.iter_particles(PROBLEM, TRAIN_N, seed=TRAIN_SEED, proportions=TRAIN_PROPORTIONS))
    diffs = [mask_contrast(it.image, it.mask) for it in items]
    return {"image_sides_px": side_stats([it.image.shape[:2] for it in items]),
            "particle_contrast": polarity_record([d for d in diffs if d is not None])}


def make_model(root: Path, epochs: int) -> None:
    classes = list(synth.PROBLEMS[PROBLEM][0])
    pcfg = PreprocessConfig(mode="crop", size=64, normalize="zscore")
    tcfg = TrainConfig(arch="lipnet-fcn", epochs=epochs, batch_size=64, lr=2e-3, patience=8,
                       balance="class-weights", seed=0, device="cpu", augment=True)
    t0 = time.time()
    train = tensors(TRAIN_N, TRAIN_SEED, TRAIN_PROPORTIONS, pcfg)
    val = tensors(VAL_N, VAL_SEED, TRAIN_PROPORTIONS, pcfg)
    test = tensors(TEST_N, TEST_SEED, None, pcfg)
    print(f"data ready in {time.time() - t0:.0f} s", flush=True)

    def report(log):
        print(f"epoch {log.epoch:3d}  loss {log.train_loss:.4f}  val loss {log.val_loss:.4f}  "
              f"val macro-F1 {log.val_macro_f1:.4f}  ({log.seconds:.0f} s)", flush=True)

    res = fit(train, val, len(classes), tcfg, on_epoch=report)
    val_pred = predict_logits(res.model, val.x).argmax(1)
    val_m = metrics.summary(metrics.confusion_matrix(val.labels, val_pred, len(classes)), classes)
    test_pred = predict_logits(res.model, test.x).argmax(1)
    test_m = metrics.summary(metrics.confusion_matrix(test.labels, test_pred, len(classes)), classes)
    print(f"best epoch {res.best_epoch}: val macro-F1 {val_m['macro_f1']:.4f}; "
          f"test (natural prevalence) accuracy {test_m['accuracy']:.4f} macro-F1 {test_m['macro_f1']:.4f}")
    card = ModelCard(
        classes=classes,
        arch=tcfg.arch,
        preprocess=pcfg,
        name="emclassify default lamellarity model",
        problem=PROBLEM,
        description=(
            "Trained on synthetic liposome images made by emclassify's own generator only "
            "(no real micrographs). A demo and starting point: train on your own labelled particles "
            "before relying on it."
        ),
        training={**tcfg.to_dict(), "best_epoch": res.best_epoch, "stopped": res.stopped,
                  "epochs_run": len(res.history)},
        metrics={"validation": val_m, "test_natural_prevalence": test_m},
        data={
            "source": "emclassify.synth",
            "train": {"n": TRAIN_N, "seed": TRAIN_SEED, "proportions": list(TRAIN_PROPORTIONS)},
            "validation": {"n": VAL_N, "seed": VAL_SEED, "proportions": list(TRAIN_PROPORTIONS)},
            "test": {"n": TEST_N, "seed": TEST_SEED, "proportions": list(synth.PROBLEMS[PROBLEM][1])},
            "fingerprint": f"synth:{PROBLEM}:train={TRAIN_SEED}x{TRAIN_N}",
            **training_data_record(),
        },
    )
    path = save_model(root / "models" / DEFAULT_MODEL_NAME, res.model, card)
    print(f"model: {path} ({path.stat().st_size / 1024:.0f} KiB) in {time.time() - t0:.0f} s")


def make_icons(packaging: Path) -> None:
    """The app icon: a multilamellar vesicle, drawn (PNG for Linux, multi-size ICO for Windows)."""
    from PIL import Image, ImageDraw

    side = 256
    img = Image.new("RGBA", (side, side), (0, 0, 0, 0))
    d = ImageDraw.Draw(img)
    d.rounded_rectangle([8, 8, side - 8, side - 8], radius=48, fill=(226, 232, 240, 255))
    c = side / 2
    for r, w in ((92, 9), (70, 8), (50, 7)):
        d.ellipse([c - r, c - r * 0.9, c + r, c + r * 0.9], outline=(40, 62, 92, 255), width=w)
    d.ellipse([c - 30, c - 27, c + 30, c + 27], fill=(120, 140, 165, 255))
    (packaging / "linux").mkdir(exist_ok=True)
    (packaging / "windows").mkdir(exist_ok=True)
    img.save(packaging / "linux" / "emclassify.png")
    img.save(packaging / "windows" / "emclassify.ico", sizes=[(16, 16), (32, 32), (48, 48), (64, 64), (256, 256)])
    print(f"icons in {packaging}")


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--samples", action="store_true", help="only rebuild the sample folder")
    ap.add_argument("--model", action="store_true", help="only retrain the default model")
    ap.add_argument("--icons", action="store_true", help="only redraw the app icons")
    ap.add_argument("--epochs", type=int, default=30)
    args = ap.parse_args(argv)
    root = data_dir()
    if args.icons:
        make_icons(Path(__file__).resolve().parent)
        return 0
    both = not (args.samples or args.model)
    if args.samples or both:
        make_samples(root)
    if args.model or both:
        make_model(root, args.epochs)
    return 0


if __name__ == "__main__":
    sys.exit(main())
