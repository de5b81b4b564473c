"""Training: balance strategies, augmentation, determinism, interruption, train -> save -> load -> batch."""
from __future__ import annotations

import csv

import numpy as np
import pytest
import torch

from emclassify import synth
from emclassify.batch import run_batch
from emclassify.inference import Classifier
from emclassify.io import load_dataset, read_image
from emclassify.modelfile import load_model
from emclassify.preprocess import PreprocessConfig
from emclassify.training import (InputSet, TrainConfig, augment, class_weights, epoch_indices, fit,
                                 synthetic_topup, train)

FAST = dict(epochs=2, batch_size=16, patience=5, device="cpu")


def test_class_weights_inverse_sqrt_frequency():
    y = torch.tensor([0] * 16 + [1] * 4 + [2] * 1)
    w = class_weights(y, 3)
    assert w[y].mean().item() == pytest.approx(1.0)            # the loss keeps its scale
    assert (w / w[0]).tolist() == pytest.approx([1.0, 2.0, 4.0])  # 1/sqrt(16) : 1/sqrt(4) : 1/sqrt(1)
    assert (class_weights(y, 3, power=1.0) / class_weights(y, 3, power=1.0)[0]).tolist() == pytest.approx([1, 4, 16])
    assert class_weights(torch.tensor([0, 0, 2]), 3)[1] == 0  # absent class


@pytest.mark.parametrize("balance", ["none", "oversample", "undersample"])
def test_epoch_sampling_changes_class_distribution_as_documented(balance):
    y = torch.tensor([0] * 900 + [1] * 90 + [2] * 10)
    gen = torch.Generator().manual_seed(0)
    counts = np.zeros(3)
    for _ in range(20):
        idx = epoch_indices(y, 3, balance, gen)
        counts += np.bincount(y[idx].numpy(), minlength=3)
    share = counts / counts.sum()
    if balance == "none":
        assert share.tolist() == pytest.approx([0.9, 0.09, 0.01])  # every sample once per epoch
    elif balance == "oversample":
        assert share == pytest.approx([1 / 3] * 3, abs=0.02)        # classes drawn equally, epoch size kept
        assert counts.sum() == 20 * 1000
    else:
        assert share.tolist() == pytest.approx([1 / 3] * 3)         # each class cut to the rarest (10)
        assert counts.sum() == 20 * 30


def test_synthetic_topup_for_liposome_classes_and_by_augmentation():
    cfg = PreprocessConfig(mode="crop", size=16)
    classes = ["unilamellar", "multilamellar", "uncertain"]
    y = torch.tensor([0] * 20 + [1] * 6 + [2] * 2)
    data = InputSet(torch.randn(28, 1, 16, 16), None, y, [], [])
    out = synthetic_topup(data, classes, cfg, seed=0, want_features=False)
    # minority classes grow to the majority count, at most 5x their real count
    assert np.bincount(out.labels.numpy()).tolist() == [20, 20, 10]
    assert torch.equal(out.x[:28], data.x)
    other = synthetic_topup(data, ["a", "b", "c"], cfg, seed=0, want_features=False)  # not liposome names
    assert np.bincount(other.labels.numpy()).tolist() == [20, 20, 10]
    assert not torch.equal(other.x[28:34], data.x[20:26])  # augmented copies, not duplicates


def test_augment_keeps_shape_and_changes_pixels():
    x = torch.randn(8, 1, 24, 24)
    a = augment(x, torch.Generator().manual_seed(0))
    assert a.shape == x.shape and torch.isfinite(a).all() and not torch.allclose(a, x)
    b = augment(x, torch.Generator().manual_seed(0))
    assert torch.equal(a, b)


@pytest.fixture(scope="module")
def lamellarity_set(tmp_path_factory):
    root = tmp_path_factory.mktemp("lam")
    synth.generate(root, "lamellarity", 72, seed=9, proportions=(0.5, 0.35, 0.15))
    return load_dataset(root)


def test_fit_is_deterministic_and_keeps_best_on_interrupt(lamellarity_set):
    from emclassify.training import holdout_split, load_inputs

    pcfg = PreprocessConfig(mode="crop", size=24)
    data = load_inputs(lamellarity_set.samples, pcfg, lamellarity_set.classes)
    tr, va = holdout_split(data.labels.numpy(), None, 0.25, 0)
    cfg = TrainConfig(arch="lipnet1", **FAST)
    a = fit(data.subset(tr), data.subset(va), 3, cfg)
    b = fit(data.subset(tr), data.subset(va), 3, cfg)
    for (k, va_), (_, vb) in zip(a.model.state_dict().items(), b.model.state_dict().items()):
        assert torch.equal(va_, vb), k

    def interrupt(log):
        if log.epoch == 2:
            raise KeyboardInterrupt

    c = fit(data.subset(tr), data.subset(va), 3, TrainConfig(arch="lipnet1", **{**FAST, "epochs": 5}),
            on_epoch=interrupt)
    assert c.stopped == "interrupted" and len(c.history) == 2 and c.best_epoch in (1, 2)


@pytest.mark.parametrize("arch,mode", [("lipnet1", "crop"), ("svm", "mask"), ("lipnet1+features", "surround")])
def test_train_save_load_batch_round_trip(lamellarity_set, tmp_path, arch, mode):
    pcfg = PreprocessConfig(mode=mode, size=24)
    out = train(lamellarity_set, pcfg, TrainConfig(arch=arch, **FAST), tmp_path / "m.safetensors",
                problem="lamellarity")
    card = load_model(out.path).card
    assert card.arch == arch and card.classes == lamellarity_set.classes
    assert card.data["fingerprint"] == lamellarity_set.fingerprint()
    v = card.metrics["validation"]
    assert np.asarray(v["confusion_matrix"]).sum() == v["n"] > 0
    assert card.training["balance"] == "class-weights" and "seed" in card.training
    # the same images through batch reproduce direct predictions of the loaded model
    res = run_batch(lamellarity_set.root, model=out.path, out=tmp_path / "r.csv")
    assert res.summary["files"]["error"] == 0 and "classes" in res.summary["adjusted"]
    rows = {r["path"]: r for r in csv.DictReader(open(tmp_path / "r.csv"))}
    clf = Classifier.from_file(out.path, device="cpu")
    samples = lamellarity_set.samples[:6]
    imgs = [read_image(s.path).array for s in samples]
    masks = [read_image(s.mask).array for s in samples]
    probs = clf.predict_proba(imgs, masks)
    for s, p in zip(samples, probs):
        got = [float(rows[s.relpath][f"prob_{c}"]) for c in card.classes]
        assert got == pytest.approx(p.tolist(), abs=1e-5)


@pytest.mark.parametrize("n_groups", [3, 12])
def test_holdout_split_keeps_groups_together(n_groups):
    from emclassify.training import holdout_split

    groups = [f"g{i % n_groups}" for i in range(120)]
    labels = np.array([i % 3 for i in range(120)])
    tr, va = holdout_split(labels, groups, 0.15, seed=0)
    assert len(tr) + len(va) == 120 and len(va) > 0
    assert not ({groups[i] for i in tr} & {groups[i] for i in va})
    assert (holdout_split(labels, groups, 0.15, seed=0)[1] == va).all()
