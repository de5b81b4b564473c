"""Training: balance strategies, augmentation, determinism, interruption, train -> save -> load -> batch."""
from __future__ import annotations

import csv

import numpy as np
import pytest
import torch
from hypothesis import given, settings, strategies as st

from emclassify import synth
from emclassify.batch import run_batch
from emclassify.inference import Classifier
from emclassify.io import load_dataset, read_image
from emclassify.modelfile import load_model
from emclassify.preprocess import PreprocessConfig
from emclassify.training import (InputSet, TrainConfig, augment, class_weights, epoch_indices, epoch_plan, fit,
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


def test_a_large_class_is_drawn_at_most_ratio_times_the_others_per_epoch_with_a_fresh_subset():
    y = torch.tensor([0] * 900 + [1] * 90 + [2] * 10)
    plan = epoch_plan(y, 3, "none", majority_ratio=3.0)
    assert plan.capped == 0 and plan.draws == (300, 90, 10) and plan.size == 400
    assert plan.loss_factor.tolist() == pytest.approx([3.0, 1.0, 1.0])  # 900 / 300: the expected loss is kept
    assert epoch_plan(y, 3, "none", 3.0, min_size=600).draws == (500, 90, 10)  # never under the floor
    for uncapped in (epoch_plan(y, 3, "none", 0.0), epoch_plan(y, 3, "none", 3.0, min_size=2000),
                     epoch_plan(y, 3, "none", 10.0), epoch_plan(torch.arange(30) % 3, 3, "none", 1.0)):
        assert uncapped.capped is None and uncapped.draws == uncapped.counts
        assert uncapped.loss_factor.tolist() == [1.0] * 3
    gen = torch.Generator().manual_seed(0)
    drawn = []
    for _ in range(2):
        idx = epoch_indices(y, 3, "none", gen, plan)
        assert idx.unique().numel() == idx.numel() == 400
        assert np.bincount(y[idx].numpy(), minlength=3).tolist() == [300, 90, 10]  # every rare particle, once
        drawn.append(set(idx[y[idx] == 0].tolist()))
    assert drawn[0] != drawn[1]


@settings(max_examples=150, deadline=None)
@given(st.lists(st.integers(0, 300), min_size=2, max_size=5), st.sampled_from([0.0, 1.0, 1.5, 3.0, 10.0]),
       st.integers(0, 900), st.integers(0, 2**31 - 1))
def test_epoch_plan_and_indices_hold_their_contract_for_any_class_counts(counts, ratio, min_size, seed):
    y = torch.tensor([c for c, n in enumerate(counts) for _ in range(n)], dtype=torch.int64)
    n, k = sum(counts), len(counts)
    plan = epoch_plan(y, k, "none", ratio, min_size)
    assert plan.counts == tuple(counts) and plan.size == sum(plan.draws)
    short = [c for c in range(k) if plan.draws[c] < counts[c]]
    assert short == ([] if plan.capped is None else [plan.capped])
    if plan.capped is not None:
        c = plan.capped
        rest = n - counts[c]
        assert ratio > 0 and counts[c] > ratio * rest and plan.draws[c] >= ratio * rest and rest > 0
        assert plan.size >= min(n, min_size)
        assert float(plan.loss_factor[c]) * plan.draws[c] == pytest.approx(counts[c])
    idx = epoch_indices(y, k, "none", torch.Generator().manual_seed(seed), plan)
    assert idx.numel() == plan.size and idx.unique().numel() == idx.numel()
    assert ((idx >= 0) & (idx < n)).all()
    assert np.bincount(y[idx].numpy(), minlength=k).tolist() == list(plan.draws)


def test_a_cap_under_the_epoch_floor_leaves_training_bit_identical(lamellarity_set):
    """On sets where ``auto``'s step budget needs every particle each epoch, majority_ratio changes nothing."""
    from emclassify.training import holdout_split, load_inputs

    data = load_inputs(lamellarity_set.samples, PreprocessConfig(mode="crop", size=24), lamellarity_set.classes)
    tr, va = holdout_split(data.labels.numpy(), None, 0.25, 0)
    fits = [fit(data.subset(tr), data.subset(va), 3,
                TrainConfig(arch="lipnet1", **FAST, majority_ratio=r)) for r in (0.0, 1.0)]
    assert all(f.epoch_plan.capped is None for f in fits)
    for (k, a), (_, b) in zip(fits[0].model.state_dict().items(), fits[1].model.state_dict().items()):
        assert torch.equal(a, b), k


def _imbalanced_inputs(n_per_class, size=48, seed=0):
    g = torch.Generator().manual_seed(seed)
    y = torch.tensor([c for c, n in enumerate(n_per_class) for _ in range(n)], dtype=torch.int64)
    x = torch.randn(len(y), 1, size, size, generator=g) + y.float().view(-1, 1, 1, 1)  # learnable, not trivial
    return InputSet(x, None, y, [], [])


@pytest.mark.parametrize("balance,ratio", [("undersample", 0.0), ("class-weights", 3.0)])
def test_short_epochs_run_the_whole_one_cycle_schedule(balance, ratio):
    """An undersampled or capped epoch takes fewer steps; the schedule must span those, not a full epoch's
    (it used to stop part-way, at a high learning rate)."""
    train_set, val_set = _imbalanced_inputs((270, 20, 10)), _imbalanced_inputs((9, 6, 3), seed=1)
    cfg = TrainConfig(arch="lipnet1", epochs=2, patience=2, batch_size=2, device="cpu", balance=balance,
                      majority_ratio=ratio)
    res = fit(train_set, val_set, 3, cfg)
    assert res.epoch_plan.size < 300
    assert (res.epoch_plan.capped is not None) == (balance == "class-weights")
    assert res.history[-1].lr == pytest.approx(cfg.lr / 25 / 1e4, rel=1e-3)  # OneCycleLR's final rate


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


@pytest.mark.parametrize("grouped", [False, True])
def test_splits_with_a_rare_class_raise_no_library_warning(grouped):
    """A class of 2 among 60: the CV folds and the validation split stay silent (the few-examples
    flag reports it in emclassify's words); scikit-learn's splitters warn while being iterated."""
    import warnings

    from emclassify.evaluation import make_folds
    from emclassify.training import holdout_split

    labels = np.array([0] * 40 + [1] * 18 + [2] * 2)
    groups = [f"g{i % 12}" for i in range(60)] if grouped else None
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        folds = make_folds(labels, groups, 5, seed=0)
        tr, va = holdout_split(labels, groups, 0.15, seed=0)
    assert sorted(set(folds.tolist())) == [0, 1, 2, 3, 4] and len(tr) + len(va) == 60


def test_card_and_cv_report_say_when_epochs_drew_a_subset_of_the_largest_class(tmp_path, capsys):
    import json

    from emclassify.cli import main

    root = tmp_path / "imbalanced"
    synth.generate(root, "lamellarity", 400, seed=3, proportions=(0.92, 0.06, 0.02))  # a capped epoch still holds budget/12 batches: more than the 240 particles of before had
    fast = ["--arch", "lipnet1", "--size", "48", "--mode", "crop", "--epochs", "1", "--batch-size", "2",
            "--majority-ratio", "3"]
    assert main(["train", str(root), *fast, "--out", str(tmp_path / "m.safetensors")]) == 0
    training = load_model(tmp_path / "m.safetensors").card.training
    assert training["majority_ratio"] == 3.0 and "of the" in training["epoch_plan"]
    assert "unilamellar" in training["epoch_plan"]
    assert main(["cv", str(root), *fast, "--folds", "2", "--out", str(tmp_path / "cv")]) == 0
    folds = json.loads((tmp_path / "cv" / "metrics.json").read_text())["folds"]
    assert all("unilamellar" in f["epoch_plan"] for f in folds)
    report = (tmp_path / "cv" / "report.md").read_text()
    assert "largest class at most 3x the others per epoch" in report and "fold 2: each epoch drew" in report
    assert f"Training steps ran in {folds[0]['precision']}" in report
    out = capsys.readouterr().out
    assert "epochs: fold 1: each epoch drew" in out
    assert ("training steps: bfloat16" in out) == (folds[0]["precision"] == "bfloat16")
    # off (the default), every particle is drawn and nothing is said
    assert main(["train", str(root), *fast[:-2], "--out", str(tmp_path / "all.safetensors")]) == 0
    training = load_model(tmp_path / "all.safetensors").card.training
    assert training["majority_ratio"] == 0 and "epoch_plan" not in training
    for bad in ("0.5", "-1", "nan", "inf", "three"):
        with pytest.raises(SystemExit) as e:
            main(["train", str(root), "--majority-ratio", bad, "--out", str(tmp_path / "x.safetensors")])
        assert e.value.code == 2


def test_training_precision_resolves_per_machine(monkeypatch):
    from emclassify import runtime

    cpu, cuda = torch.device("cpu"), torch.device("cuda")
    assert runtime.training_autocast_dtype("float32", cpu) is None
    assert runtime.training_autocast_dtype("bfloat16", cpu) is torch.bfloat16
    for native, expected in ((True, torch.bfloat16), (False, None)):
        monkeypatch.setattr(runtime, "cpu_has_native_bf16", lambda: native)
        assert runtime.training_autocast_dtype("auto", cpu) is expected
        assert runtime.training_autocast_dtype("auto", cuda) is None  # not measured on a GPU yet
    with pytest.raises(ValueError, match="precision"):
        runtime.training_autocast_dtype("fp8", cpu)
    with pytest.raises(ValueError, match="precision"):
        TrainConfig(precision="half")


@pytest.mark.parametrize("precision", ["float32", "bfloat16"])
def test_bf16_steps_keep_float32_weights_and_say_what_ran(lamellarity_set, tmp_path, precision):
    out = train(lamellarity_set, PreprocessConfig(mode="crop", size=24),
                TrainConfig(arch="lipnet1", **FAST, precision=precision), tmp_path / "m.safetensors")
    model = load_model(out.path)
    assert out.card.training["precision"] == precision and out.card.training["precision_used"] == precision
    assert all(p.dtype == torch.float32 for p in model.model.state_dict().values() if p.is_floating_point())
    assert np.isfinite([h.train_loss for h in out.fit.history]).all()


def test_bf16_recalibration_estimates_the_float32_statistics():
    """Batch-norm statistics gathered in bf16 autocast (the default with bf16 steps) are the float32
    ones up to bf16 rounding of the activations: a small fraction of the spread between batches."""
    from emclassify.models import create_model
    from emclassify.training import recalibrate_batchnorm

    torch.manual_seed(0)
    model = create_model("lipnet-fcn", 3, 32).to(memory_format=torch.channels_last)
    x = torch.randn(256, 1, 32, 32) + torch.linspace(0, 2, 32)  # a gradient, so the means are not ~0
    data = InputSet(x=x, features=None, labels=torch.zeros(256, dtype=torch.long), samples=[None] * 256, errors=[])
    stats = {}
    for dtype in (None, torch.bfloat16):
        recalibrate_batchnorm(model, data, torch.device("cpu"), torch.Generator().manual_seed(1), n=256,
                              memory_format=torch.channels_last, autocast=dtype)
        stats[dtype] = [(m.running_mean.clone(), m.running_var.clone()) for m in model.modules()
                        if isinstance(m, torch.nn.BatchNorm2d)]
    assert len(stats[None]) >= 4
    for (m32, v32), (m16, v16) in zip(stats[None], stats[torch.bfloat16]):
        assert m16.dtype == torch.float32 and not torch.equal(v32, v16)  # bf16 really ran
        scale = v32.sqrt()
        assert ((m16 - m32).abs() <= 0.03 * scale + 1e-4).all()
        assert ((v16 - v32).abs() <= 0.03 * v32 + 1e-6).all()


def test_validation_in_bf16_runs_the_pytorch_layers_and_agrees_with_float32(monkeypatch):
    """Each epoch validates in the steps' autocast: the native trunk has no bf16, so the PyTorch layers run
    (in bf16), and the logits are float32 values close to the float32 ones."""
    from emclassify import ops
    from emclassify.models import create_model
    from emclassify.training import predict_logits

    torch.manual_seed(0)
    model = create_model("lipnet-fcn", 3, 32).to(memory_format=torch.channels_last).eval()
    x = torch.randn(40, 1, 32, 32) + torch.linspace(0, 2, 32)
    reference = predict_logits(model, x)
    calls = []
    real = ops.conv_trunk
    monkeypatch.setattr(ops, "conv_trunk", lambda *a, **k: calls.append(1) or real(*a, **k))
    bf16 = predict_logits(model, x, autocast=torch.bfloat16)
    assert not calls and bf16.dtype == torch.float32
    assert not torch.equal(bf16, reference)  # bf16 really ran
    torch.testing.assert_close(bf16, reference, rtol=0.05, atol=0.05 * float(reference.abs().max()))
    predict_logits(model, x)
    assert calls == ([1] if ops.native_available() else [])  # float32 inference keeps the native trunk


def test_fused_optimizer_trains_the_same_network():
    """AdamW's fused kernel (the default where it runs) computes the per-tensor loop's update."""
    train_set, val_set = _imbalanced_inputs((30, 20, 10), size=24), _imbalanced_inputs((6, 6, 3), size=24, seed=1)
    cfg = TrainConfig(arch="lipnet1", epochs=2, patience=3, batch_size=16, device="cpu", precision="float32")
    fused, loop = (fit(train_set, val_set, 3, cfg, fused_optimizer=f).model.state_dict() for f in (True, False))
    for name, a in fused.items():
        torch.testing.assert_close(a, loop[name], rtol=1e-4, atol=1e-5, msg=lambda m, n=name: f"{n}: {m}")
