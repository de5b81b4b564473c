"""Numbers a lab can put in its records: the input decision, guardrail flags, calibration, honest group
reporting and stable class order — each case that once went silently wrong, as a regression test."""
from __future__ import annotations

import csv
import json

import numpy as np
import pytest
import torch

from emclassify import synth
from emclassify.calibration import calibrate, expected_calibration_error, fit_temperature
from emclassify.cli import main
from emclassify.evaluation import cross_validate
from emclassify.finding import make_finder
from emclassify.guardrails import LATE_GAIN_MARGIN, MIN_CLASS_EXAMPLES, flags, majority_scores
from emclassify.input_decision import decide_preprocess, training_data_summary
from emclassify.io import load_dataset
from emclassify.modelfile import load_model, read_card
from emclassify.preprocess import MIN_REGION_SIDE, PreprocessConfig
from emclassify.models import AUTO_CANDIDATES, AUTO_CANDIDATES_IMAGE_ONLY
from emclassify.training import TooSmallError, TrainConfig, load_inputs, train

from conftest import write_tiff

FAST = dict(epochs=2, batch_size=16, patience=2, seed=0)


def _small_unmasked(root, n=24, side=41, seed=0):
    """Small particle images without masks or surround (like public 41x41 crops)."""
    rng = np.random.default_rng(seed)
    for i in range(n):
        label = "a" if i % 2 else "b"
        yy, xx = np.mgrid[:side, :side] - side // 2
        disc = (yy ** 2 + xx ** 2 < (side // 3) ** 2) * (80 if label == "a" else 160)
        write_tiff(root / label / f"{i}.tif", (disc + rng.normal(60, 10, (side, side))).clip(0, 255).astype(np.uint8))
    return root


# --------------------------------------------------------------------------- input decision


def test_auto_mode_uses_crop_when_masks_exist(tmp_path):
    synth.generate(tmp_path, "lamellarity", 20, seed=1)
    pcfg, record = decide_preprocess(load_dataset(tmp_path).samples)
    assert pcfg.mode == "crop" and record["with_mask"] == 20 and "masks found" in record["reason"]
    assert record["median_mask_box"] > 48


def _masked_discs(root, radius: int, n=12, side=None):
    """Particle images with masks: a disc of ``radius`` px in a ``side`` px image."""
    side = side or 4 * radius
    yy, xx = np.mgrid[:side, :side] - side // 2
    disc = (yy ** 2 + xx ** 2 <= radius ** 2)
    rng = np.random.default_rng(radius)
    rows = ["path,mask,label"]
    for i in range(n):
        write_tiff(root / f"{i}.tif", (disc * 90 + rng.normal(80, 8, disc.shape)).clip(0, 255).astype(np.uint8))
        write_tiff(root / f"{i}_mask.tif", disc.astype(np.uint8) * 255)
        rows.append(f"{i}.tif,{i}_mask.tif,{'ab'[i % 2]}")
    (root / "manifest.csv").write_text("\n".join(rows) + "\n")
    return root


def test_auto_size_follows_the_particles_without_upsampling_beyond_them(tmp_path):
    """--size auto: the median region side rounded up to a multiple of 8, within AUTO_SIZE_RANGE, by mode."""
    from emclassify.defaults import AUTO_SIZE_RANGE
    from emclassify.input_decision import auto_size

    lo, hi = AUTO_SIZE_RANGE
    for median in range(1, 200):
        size = auto_size(median)
        assert lo <= size <= hi and size % 8 == 0
        assert size >= median or size == hi            # never smaller than the particles, unless capped
        assert size - median < 8 or size == lo          # never more than the next multiple of 8
    small = decide_preprocess(load_dataset(_masked_discs(tmp_path / "small", radius=14)).samples)
    large = decide_preprocess(load_dataset(_masked_discs(tmp_path / "large", radius=40)).samples)
    assert (small[0].mode, small[1]["size"]["median_region"], small[0].size) == ("crop", 29, 32)
    assert large[0].size == hi and "mask bounding box" in large[1]["size"]["reason"]
    unmasked = decide_preprocess(load_dataset(_small_unmasked(tmp_path / "u", side=41)).samples)
    # the whole 41 px image, at its own size: every image is 41x41, so nothing is resampled
    assert unmasked[0].mode == "surround" and unmasked[0].size == 41
    assert "without resampling" in unmasked[1]["size"]["reason"]
    tiny = decide_preprocess(load_dataset(_small_unmasked(tmp_path / "t", side=17)).samples)
    assert tiny[0].size == lo
    big = decide_preprocess(load_dataset(_small_unmasked(tmp_path / "b", side=64)).samples)
    assert big[0].size == hi  # one size, but above the range: the ceiling, as before
    explicit = decide_preprocess(load_dataset(tmp_path / "small").samples, size=40)
    assert explicit[0].size == 40 and "size" not in explicit[1]


def test_auto_size_resamples_when_the_images_differ_in_size(tmp_path):
    from emclassify.input_decision import UNIFORM_SHARE

    _small_unmasked(tmp_path, n=20, side=41, seed=1)
    _small_unmasked(tmp_path, n=4, side=45, seed=2)  # overwrite 4 of the 24 files with 45 px images
    pcfg, record = decide_preprocess(load_dataset(tmp_path).samples)
    assert 20 / 24 < UNIFORM_SHARE and pcfg.size == 48 and "rounded up" in record["size"]["reason"]


def test_cli_prints_and_records_the_size_decision(tmp_path, capsys):
    out = tmp_path / "m.safetensors"
    assert main(["train", str(_masked_discs(tmp_path / "d", radius=14, n=16)), "--out", str(out), "--arch",
                 "lipnet1", "--epochs", "2"]) == 0
    assert "32x32 px (median mask bounding box 29 px" in capsys.readouterr().out
    card = read_card(out)
    assert card.preprocess.size == 32 and card.training["input_decision"]["size"]["chosen"] == 32


def test_auto_mode_uses_surround_for_small_unmasked_images(tmp_path):
    ds = load_dataset(_small_unmasked(tmp_path))
    pcfg, record = decide_preprocess(ds.samples)
    assert pcfg.mode == "surround" and record["median_crop_region"] == 1
    # the old default (crop, 50 px margin) on these images is refused, naming the files
    with pytest.raises(TooSmallError, match=r"24 image\(s\) are too small.*1x1 px.*: a/1.tif, a/11.tif"):
        train(ds, PreprocessConfig(mode="crop", size=24), TrainConfig(arch="lipnet1", **FAST), tmp_path / "m.safetensors")


def test_auto_mode_keeps_crop_for_large_unmasked_images(tmp_path):
    rng = np.random.default_rng(0)
    for i in range(4):
        write_tiff(tmp_path / "c" / f"{i}.tif", rng.integers(0, 255, (200, 220), dtype=np.uint8))
    pcfg, record = decide_preprocess(load_dataset(tmp_path).samples, size=48, margin=50)
    assert pcfg.mode == "crop" and record["median_crop_region"] == 100


def test_cli_records_the_decision_in_the_card(tmp_path, capsys):
    ds = _small_unmasked(tmp_path / "ds")
    out = tmp_path / "m.safetensors"
    code = main(["train", str(ds), "--out", str(out), "--arch", "lipnet1", "--size", "24", "--epochs", "2"])
    assert code == 0
    assert "input: mode surround" in capsys.readouterr().out
    card = read_card(out)
    assert card.preprocess.mode == "surround"
    assert card.training["input_decision"]["chosen"] == "surround"


# --------------------------------------------------------------------------- guardrails


def test_flags_rules():
    k = ["a", "b"]
    maj = majority_scores(np.array([0, 0, 0, 1]), np.array([0, 0, 1, 1]), k)
    assert maj["predicts"] == "a" and maj["balanced_accuracy"] == 0.5
    same_as_majority = dict(maj)
    out = flags(same_as_majority, majority=maj, train_counts={"a": 30, "b": 3}, eval_counts={"a": 5, "b": 0},
                best_epoch=1, epochs_run=5, max_epochs=12, stopped="early-stopping")
    codes = {f["code"] for f in out}
    assert codes == {"below-majority", "few-examples", "class-missing", "kept-first-epoch"}
    good = {"accuracy": 0.9, "balanced_accuracy": 0.9, "macro_f1": 0.9}
    assert flags(good, majority=maj, train_counts={"a": MIN_CLASS_EXAMPLES, "b": MIN_CLASS_EXAMPLES}) == []
    assert {f["code"] for f in flags(good, svm={"macro_f1": 0.95}, best_epoch=12, epochs_run=12, max_epochs=12,
                                     stopped="completed")} == {"below-svm", "kept-last-epoch"}
    # the last epoch kept: flagged when the curve was still rising (or that is unknown), not when level
    last = dict(best_epoch=12, epochs_run=12, max_epochs=12, stopped="completed")
    rising = flags(good, late_gain=LATE_GAIN_MARGIN + 0.03, **last)
    assert [f["code"] for f in rising] == ["kept-last-epoch"] and "still rising (+0.040)" in rising[0]["message"]
    assert flags(good, late_gain=LATE_GAIN_MARGIN / 2, **last) == []
    assert flags(good, late_gain=-0.02, **last) == []


def test_small_imbalanced_training_is_flagged_in_card_cli_and_report(tmp_path, capsys):
    """`synth --n 300` at the seed's imbalance: a model not above the majority baseline must carry the flag."""
    synth.generate(tmp_path / "d", "lamellarity", 120, seed=1)
    out = tmp_path / "m.safetensors"
    assert main(["train", str(tmp_path / "d"), "--out", str(out), "--arch", "lipnet1", "--size", "24",
                 "--epochs", "2"]) == 0
    captured = capsys.readouterr()
    card = load_model(out).card
    validation, majority = card.metrics["validation"], card.metrics["baselines"]["majority"]
    codes = {f["code"] for f in card.metrics["flags"]}
    assert "few-examples" in codes                       # 'uncertain' is 0.6 % of 120
    if validation["balanced_accuracy"] <= majority["balanced_accuracy"] or \
            validation["macro_f1"] <= majority["macro_f1"]:
        assert "below-majority" in codes
    assert "svm" in card.metrics["baselines"]
    for f in card.metrics["flags"]:
        assert f["message"] in captured.err                # printed by the CLI
    assert main(["info", str(out)]) == 0
    assert "WARNINGS:" in capsys.readouterr().out          # and shown by `info`
    # the CV report carries them too, beside the baselines
    assert main(["cv", str(tmp_path / "d"), "--out", str(tmp_path / "cv"), "--arch", "lipnet1", "--size", "24",
                 "--epochs", "2", "--folds", "3"]) == 0
    report = (tmp_path / "cv" / "report.md").read_text()
    m = json.loads((tmp_path / "cv" / "metrics.json").read_text())
    assert "**Warnings**" in report and "majority class" in report and "SVM on handcrafted features" in report
    assert {"majority", "svm"} <= set(m["baselines"]) and m["flags"]
    assert (tmp_path / "cv" / "reliability.png").is_file()


def test_auto_epochs_give_small_sets_enough_optimiser_steps():
    """The documented rule (defaults.EPOCH_BUDGET), checked as properties over set and input sizes: at
    least the compute budget's optimiser steps unless capped, no epoch more than needed unless at the
    floor, patience a third of the epochs; fewer epochs for larger sets and for larger inputs;
    explicit numbers kept."""
    import math

    from emclassify.defaults import EPOCH_BUDGET as b

    for size in (24, 32, 48, 64):
        budget = b["min_steps"] * (b["reference_size"] / size) ** 2
        previous = None
        for n in (10, 100, 500, 808, 2000, 5000, 50000):
            cfg = TrainConfig().resolved(n, size)
            steps = math.ceil(n / cfg.batch_size)
            assert b["min_epochs"] <= cfg.epochs <= b["max_epochs"]
            assert cfg.epochs * steps >= budget or cfg.epochs == b["max_epochs"]
            assert (cfg.epochs - 1) * steps < budget or cfg.epochs == b["min_epochs"]
            assert cfg.patience >= max(b["min_patience"], cfg.epochs / 3)
            assert previous is None or cfg.epochs <= previous
            previous = cfg.epochs
            assert cfg.resolved(n, size) == cfg and f"{n} training images" in cfg.epoch_decision
        assert previous == b["min_epochs"]  # large sets keep the floor
    assert TrainConfig().resolved(2000, 32).epochs > TrainConfig().resolved(2000, 48).epochs
    explicit = TrainConfig(epochs=5, patience=2).resolved(100, 32)
    assert (explicit.epochs, explicit.patience, explicit.epoch_decision) == (5, 2, None)
    for bad in ({"epochs": 0}, {"patience": "soon"}, {"epochs": 2.5}):
        with pytest.raises(ValueError):
            TrainConfig(**bad)


def test_auto_epochs_are_printed_and_recorded_by_cv(tmp_path, capsys):
    from emclassify.evaluation import inner_training_size

    synth.generate(tmp_path / "d", "lamellarity", 80, seed=3, proportions=(0.4, 0.4, 0.2))
    assert main(["cv", str(tmp_path / "d"), "--out", str(tmp_path / "cv"), "--arch", "lipnet1", "--size", "24",
                 "--folds", "3"]) == 0
    out = capsys.readouterr().out
    training = json.loads((tmp_path / "cv" / "metrics.json").read_text())["settings"]["training"]
    inner = inner_training_size(80, 3, TrainConfig().val_fraction)
    assert training["epochs"] == TrainConfig().resolved(inner, 24).epochs > 12  # tiny folds: more than the floor
    assert f"epochs: {training['epoch_decision']}" in out
    assert training["epoch_decision"] in (tmp_path / "cv" / "report.md").read_text()
    with pytest.raises(SystemExit) as usage:
        main(["cv", str(tmp_path / "d"), "--out", str(tmp_path / "cv2"), "--epochs", "0"])
    assert usage.value.code == 2


@pytest.mark.parametrize("informative", [True, False])
def test_auto_architecture_choice_is_recorded(tmp_path, monkeypatch, informative):
    from emclassify import assess

    # Both outcomes of the features test, whatever this tiny set's SVM scores: the measured rule
    # itself is tested below (test_auto_network_rule).
    monkeypatch.setattr(assess, "AUTO_FEATURES_INFORMATIVE", -1.0 if informative else 2.0)
    synth.generate(tmp_path / "d", "lamellarity", 60, seed=2, proportions=(0.5, 0.4, 0.1))
    ds = load_dataset(tmp_path / "d")
    out = train(ds, PreprocessConfig(mode="crop", size=24), TrainConfig(arch="auto", **FAST), tmp_path / "m.safetensors")
    sel = out.card.metrics["selection"]
    expected = AUTO_CANDIDATES if informative else AUTO_CANDIDATES_IMAGE_ONLY
    assert expected == (("lipnet-fcn+features+svm", "lipnet-fcn+features", "svm") if informative
                        else ("lipnet-fcn+svm", "lipnet-fcn", "svm"))
    assert set(sel["candidates"]) == set(expected)
    assert sel["features"]["informative"] is informative and sel["features"]["network"] == expected[1]
    assert out.card.arch == sel["kept"] and out.card.training["arch_requested"] == "auto"
    # the highest validation macro-F1; on a tie the earlier candidate (ensemble, network, SVM)
    best = max(expected, key=lambda a: (sel["candidates"][a], -expected.index(a)))
    assert sel["kept"] == best
    assert load_model(out.path).card.arch == best  # the kept model is the one saved, and it loads


def test_cv_report_says_per_fold_whether_the_network_saw_the_features(tmp_path):
    synth.generate(tmp_path / "d", "lamellarity", 60, seed=3, proportions=(0.5, 0.4, 0.1))
    assert main(["cv", str(tmp_path / "d"), "--out", str(tmp_path / "cv"), "--size", "24", "--epochs", "2",
                 "--folds", "2"]) == 0
    m = json.loads((tmp_path / "cv" / "metrics.json").read_text())
    notes = [f["features"] for f in m["folds"]]
    assert len(notes) == 2
    for f, note in zip(m["folds"], notes):
        expected = AUTO_CANDIDATES if note["informative"] else AUTO_CANDIDATES_IMAGE_ONLY
        assert f["kept_arch"] in expected and note["network"] == expected[1]
    report = (tmp_path / "cv" / "report.md").read_text()
    informative = sum(n["informative"] for n in notes)
    assert f"the network saw the features in {informative} of 2 folds" in report


def test_auto_network_rule():
    from emclassify.assess import auto_network
    from emclassify.defaults import AUTO_FEATURES_INFORMATIVE

    assert AUTO_FEATURES_INFORMATIVE == 0.5
    # NanoShapes' SVM (3 classes, balanced accuracy 0.895: 0.84 above chance) -> the fusion
    candidates, note = auto_network({"balanced_accuracy": 0.895}, 3)
    assert candidates == AUTO_CANDIDATES and note["informative"] and note["above_chance"] == pytest.approx(0.8425)
    # texture classes (6 classes, 0.335: 0.20 above chance) -> the CNN on the image alone
    candidates, note = auto_network({"balanced_accuracy": 0.335}, 6)
    assert candidates == AUTO_CANDIDATES_IMAGE_ONLY and not note["informative"]
    assert note["above_chance"] == pytest.approx(0.202)
    # the same balanced accuracy is informative for 6 classes and not for 2 (chance differs)
    assert auto_network({"balanced_accuracy": 0.6}, 6)[1]["informative"]
    assert not auto_network({"balanced_accuracy": 0.6}, 2)[1]["informative"]
    assert auto_network(None, 3) == (AUTO_CANDIDATES, None)  # no features: as before


def test_ensemble_is_the_mean_of_its_members_and_round_trips(tmp_path):
    from emclassify.inference import Classifier
    from emclassify.modelfile import ModelFileError, load_model
    from emclassify.models import NetSVMEnsemble

    synth.generate(tmp_path / "d", "lamellarity", 60, seed=2, proportions=(0.5, 0.4, 0.1))
    ds = load_dataset(tmp_path / "d")
    out = train(ds, PreprocessConfig(mode="crop", size=24), TrainConfig(arch="lipnet-fcn+features+svm", **FAST),
                tmp_path / "m.safetensors")
    trained = load_model(out.path)
    model = trained.model
    assert isinstance(model, NetSVMEnsemble) and trained.card.arch == "lipnet-fcn+features+svm"
    assert float(model.net_temperature) == pytest.approx(out.card.training["svm"]["net_temperature"])
    data = load_inputs(ds.samples[:12], trained.card.preprocess, ds.classes, want_features=True)
    f = torch.as_tensor(data.features)
    with torch.no_grad():
        p = torch.exp(model(data.x, f)).double()
        p_net = torch.softmax(model.net(data.x, f).double() / float(model.net_temperature), 1)
        p_svm = torch.softmax(model.svm(f).double(), 1)
    assert torch.allclose(p, (p_net + p_svm) / 2, atol=1e-5)
    probs = Classifier(trained, device="cpu").predict_proba_inputs(data.x[:4], data.features[:4])
    assert np.allclose(probs.sum(1), 1.0)
    # a file whose ensemble holds tensors of neither member is refused
    from safetensors.torch import load_file, save_file
    from emclassify.modelfile import CARD_KEY
    from safetensors import safe_open

    with safe_open(str(out.path), "pt") as fh:
        meta = fh.metadata()
    tensors = load_file(str(out.path))
    tensors["stray"] = torch.zeros(1)
    save_file(tensors, str(tmp_path / "bad.safetensors"), metadata=meta)
    with pytest.raises(ModelFileError, match="unexpected tensors"):
        load_model(tmp_path / "bad.safetensors")
    assert CARD_KEY in meta


def test_one_pass_of_views_gives_the_augmented_and_plain_predictions_of_every_model_kind(tmp_path):
    """Cross-validation and the assessment take test-time-augmented and plain logits from one pass of
    the 8 views, and score an ensemble from its network's views kept by the fit: the same numbers as
    running each prediction on its own."""
    from emclassify.assess import _validation_logits
    from emclassify.models import NetSVMEnsemble, d4_views, forward
    from emclassify.training import fit_model, predict_logits, predict_views

    synth.generate(tmp_path / "d", "lamellarity", 48, seed=4, proportions=(0.5, 0.4, 0.1))
    ds = load_dataset(tmp_path / "d")
    pcfg = PreprocessConfig(mode="crop", size=24)
    data = load_inputs(ds.samples, pcfg, ds.classes, want_features=True)
    train_part, val = data.subset(np.arange(0, 36)), data.subset(np.arange(36, 48))
    fit = fit_model(train_part, val, ds.classes, pcfg, TrainConfig(arch="lipnet-fcn+features+svm", tta=True, **FAST))
    ensemble = fit.model
    assert isinstance(ensemble, NetSVMEnsemble)
    f = torch.as_tensor(val.features)
    for model in (ensemble, ensemble.net, ensemble.svm):
        views = predict_views(model, val.x, val.features, batch_size=5)   # batches that split the set
        with torch.no_grad():
            one_by_one = (torch.stack([forward(model, v, f) for v in d4_views(val.x)])
                          if model is not ensemble.svm else forward(model, None, f)[None])
        assert views.shape == one_by_one.shape
        assert torch.allclose(views, one_by_one, atol=1e-5)
        assert torch.allclose(views[0], predict_logits(model, val.x, val.features), atol=1e-6)
        assert torch.allclose(views.mean(0), predict_logits(model, val.x, val.features, tta=True), atol=1e-6)
    # the ensemble's network views kept by the fit: the ensemble's and the network's augmented logits
    assert fit.net_val_views is not None and fit.net_val_views.shape == (8, len(val), len(ds.classes))
    ens_logits, net_logits = _validation_logits(fit, val, tta=True)
    assert torch.allclose(ens_logits, predict_logits(ensemble, val.x, val.features, tta=True), atol=1e-5)
    assert torch.allclose(net_logits, predict_logits(ensemble.net, val.x, val.features, tta=True), atol=1e-5)
    # views of another set (or none kept, or no augmentation) are never reused
    assert _validation_logits(fit, train_part, tta=True) is None
    assert _validation_logits(fit, data.subset(np.arange(0, 12)), tta=True) is None   # same length, other images
    assert _validation_logits(fit, val, tta=False) is None


# --------------------------------------------------------------------------- calibration


def test_temperature_scaling_lowers_ece_on_held_out_data():
    rng = np.random.default_rng(0)
    n, k = 4000, 3
    true_logits = rng.normal(0, 1.5, (n, k))
    p = torch.softmax(torch.as_tensor(true_logits), 1).numpy()
    labels = np.array([rng.choice(k, p=row) for row in p])
    overconfident = torch.as_tensor(3.0 * true_logits)          # a network 3x too sure of itself
    fit_half, test_half = slice(0, n // 2), slice(n // 2, n)
    t = fit_temperature(overconfident[fit_half], torch.as_tensor(labels[fit_half]))
    assert 2.5 < t < 3.5
    before = torch.softmax(overconfident[test_half], 1).numpy()
    after = torch.softmax(overconfident[test_half] / t, 1).numpy()
    assert expected_calibration_error(after, labels[test_half]) < 0.5 * expected_calibration_error(before, labels[test_half])
    assert (before.argmax(1) == after.argmax(1)).all()          # no prediction changes


def test_calibration_is_stored_and_applied_by_batch(tmp_path):
    synth.generate(tmp_path / "d", "lamellarity", 40, seed=3, proportions=(0.5, 0.4, 0.1))
    out = train(load_dataset(tmp_path / "d"), PreprocessConfig(mode="crop", size=24),
                TrainConfig(arch="lipnet1", **FAST), tmp_path / "m.safetensors")
    t = out.card.metrics["calibration"]["temperature"]
    assert t > 0 and "ece_after" in out.card.metrics["calibration"]
    from emclassify.inference import Classifier
    from emclassify.io import read_image

    clf = Classifier.from_file(out.path, device="cpu")
    assert clf.temperature == pytest.approx(t)
    s = load_dataset(tmp_path / "d").samples[0]
    img, mask = read_image(s.path).array, read_image(s.mask).array
    x = __import__("emclassify.ops", fromlist=["preprocess"]).preprocess([img], [mask], clf.config)
    from emclassify.models import model_logits

    assert clf.tta   # assessed with test-time augmentation, so classified with it
    with torch.inference_mode():
        logits = model_logits(clf.model, x, tta=True).double()
    expected = torch.softmax(logits / t, 1).numpy()
    assert np.allclose(clf.predict_proba([img], [mask]), expected, atol=1e-9)
    _, info = calibrate(torch.zeros((1, 3)), torch.zeros(1, dtype=torch.long))
    assert info["temperature"] == 1.0   # nothing to fit on one example


# --------------------------------------------------------------------------- splits, SVM, class order


def test_svm_cv_with_a_one_example_class_does_not_crash(tmp_path):
    synth.generate(tmp_path / "d", "lamellarity", 80, seed=4, proportions=(0.6, 0.375, 0.025))
    ds = load_dataset(tmp_path / "d")
    assert ds.class_counts()["uncertain"] == 2      # a training fold holds <= 1 of them
    res = cross_validate(ds, PreprocessConfig(mode="crop", size=24), TrainConfig(arch="svm", seed=0), k=3)
    assert res.complete and res.metrics_dict()["n_samples"] == 80


def test_group_aware_is_reported_only_when_it_was_used(tmp_path):
    synth.generate(tmp_path / "d", "lamellarity", 30, seed=5, proportions=(0.5, 0.5, 0.0))
    manifest = tmp_path / "d" / "manifest.csv"
    rows = list(csv.DictReader(open(manifest, newline="")))
    rows[0]["group"] = ""                           # one sample without a group
    with open(manifest, "w", newline="") as fh:
        w = csv.DictWriter(fh, list(rows[0]), lineterminator="\n")
        w.writeheader()
        w.writerows(rows)
    ds = load_dataset(tmp_path / "d")
    res = cross_validate(ds, PreprocessConfig(mode="crop", size=24), TrainConfig(arch="svm", seed=0), k=3)
    assert res.metrics_dict()["settings"]["group_aware"] is False


def test_class_order_is_the_same_in_card_csv_and_report(tmp_path):
    synth.generate(tmp_path / "d", "encapsulation", 40, seed=6, proportions=(0.5, 0.3, 0.2))
    ds = load_dataset(tmp_path / "d")
    assert ds.classes == ["full", "empty", "uncertain"]
    out = train(ds, PreprocessConfig(mode="crop", size=24), TrainConfig(arch="lipnet1", **FAST),
                tmp_path / "m.safetensors")
    assert out.card.classes == ds.classes and out.card.data["class_order"] == "declared in classes.txt"
    csv_out = tmp_path / "r.csv"
    main(["batch", str(tmp_path / "d" / "images"), "--model", str(out.path), "--out", str(csv_out), "-q"])
    header = next(csv.reader(open(csv_out, newline="")))
    assert [h for h in header if h.startswith("prob_")] == [f"prob_{c}" for c in ds.classes]


def test_min_region_constant_is_documented_in_the_readme():
    from pathlib import Path

    readme = (Path(__file__).resolve().parents[1] / "README.md").read_text()
    assert f"under {MIN_REGION_SIDE} px" in readme


def test_batch_warns_about_images_unlike_the_training_images(tmp_path):
    synth.generate(tmp_path / "d", "lamellarity", 40, seed=7, proportions=(0.5, 0.4, 0.1))
    out = train(load_dataset(tmp_path / "d"), PreprocessConfig(mode="surround", size=24),
                TrainConfig(arch="lipnet1", **FAST), tmp_path / "m.safetensors")
    sides = out.card.data["image_sides_px"]
    assert sides["longer_median"] > 100
    folder = tmp_path / "mixed"
    write_tiff(folder / "particle.tif", next(synth.iter_particles("lamellarity", 1, seed=8)).image)
    write_tiff(folder / "micrograph.tif", np.random.default_rng(0).integers(0, 255, (2048, 2048), dtype=np.uint8))
    from emclassify.batch import run_batch

    outcome = run_batch(folder, model=out.path, out=tmp_path / "r.csv")
    by = {r.path: r for r in outcome.results}
    assert any("whole micrograph?" in w for w in by["micrograph.tif"].warnings)
    assert not any("trained on images" in w for w in by["particle.tif"].warnings)
    assert outcome.summary["size_warnings"] == 1


def test_the_bundled_model_knows_its_training_images_sizes(tmp_path):
    """Its card records the sizes of its training images (packaging/make_assets.py), so a whole
    micrograph given as a particle image is flagged, and particle images given as micrographs are too."""
    import shutil

    from emclassify.assets import default_model_path
    from emclassify.batch import run_batch

    data = read_card(default_model_path()).data
    sides = data["image_sides_px"]
    assert sides["n"] == 3000 and 150 < sides["shorter_median"] <= sides["longer_median"] < sides["longer_p95"]
    summary = training_data_summary(data)   # what the window shows of the model
    assert f"images of about {sides['shorter_median']}-{sides['longer_median']} px" in summary
    assert "particles darker than their surroundings" in summary
    assert training_data_summary({}) == ""
    assert "mixed contrast" in training_data_summary({"particle_contrast": {"particles": 9, "darker_share": 0.5,
                                                                            "polarity": None}})
    folder = tmp_path / "one"
    write_tiff(folder / "micrograph.tif", np.random.default_rng(0).integers(0, 255, (2048, 2048), dtype=np.uint8))
    outcome = run_batch(folder, out=tmp_path / "r.csv")
    assert outcome.summary["size_warnings"] == 1

    particles = tmp_path / "particles"
    shutil.copytree(default_model_path().parents[1] / "samples" / "images", particles)
    outcome = run_batch(particles, out=tmp_path / "m.csv", finder=make_finder("classical"))
    table = outcome.summary["micrographs"]
    assert len(table) == 40
    assert all(any("a particle image rather than a micrograph?" in w for w in m["warnings"]) for m in table)
    fields = tmp_path / "fields"
    synth.generate_micrographs(fields, "lamellarity", 1, seed=5, side=512, per_micrograph=6)
    field = run_batch(fields / "images", out=tmp_path / "f.csv", finder=make_finder("classical"))
    assert not any("particle image rather" in w for m in field.summary["micrographs"] for w in m["warnings"])


def test_trained_on_masks_reads_the_cards_input_decision():
    from emclassify.input_decision import trained_on_masks

    crop, surround = PreprocessConfig(mode="crop"), PreprocessConfig(mode="surround")
    assert trained_on_masks(crop, {})   # no record (models made before it): its mode uses masks
    assert trained_on_masks(crop, {"input_decision": {"images": 10, "with_mask": 5}})
    assert not trained_on_masks(crop, {"input_decision": {"images": 10, "with_mask": 4}})   # margin crops
    assert not trained_on_masks(surround, {})
    assert trained_on_masks(PreprocessConfig(mode="mask"), {"input_decision": {"images": 3, "with_mask": 3}})


def test_batch_warns_when_a_model_trained_on_masks_meets_images_without_them(tmp_path, capsys):
    """A model that learnt mask-cut particles sees central crops where images have no masks (on the
    bundled samples 23 of 40 right against 36 of 40): counted in the summary, a WARNING in the CLI."""
    import shutil

    from emclassify.batch import run_batch

    synth.generate(tmp_path / "d", "lamellarity", 30, seed=7, proportions=(0.5, 0.4, 0.1))
    model = tmp_path / "m.safetensors"
    assert main(["train", str(tmp_path / "d"), "--out", str(model), "--arch", "lipnet1", "--size", "24",
                 "--epochs", "1"]) == 0
    card = read_card(model)
    assert card.preprocess.mode == "crop" and card.training["input_decision"]["with_mask"] == 30
    masked = run_batch(tmp_path / "d", model=model, out=tmp_path / "masked.csv")
    assert masked.summary["mask_fallbacks"] == 0
    bare = tmp_path / "bare"
    shutil.copytree(tmp_path / "d" / "images", bare)
    outcome = run_batch(bare, model=model, out=tmp_path / "bare.csv")
    assert outcome.summary["mask_fallbacks"] == outcome.summary["files"]["ok"] == 30
    from emclassify.batch import BatchRun

    reopened = BatchRun.from_csv(tmp_path / "bare.csv")   # the record read back (its warnings split at "; ")
    assert reopened.summary(tmp_path / "bare.csv")["mask_fallbacks"] == 30
    capsys.readouterr()
    main(["batch", str(bare), "--model", str(model), "--out", str(tmp_path / "bare2.csv")])
    printed = capsys.readouterr().out
    assert "WARNING: 30 of the 30 images classified had no mask" in printed and "central crop" in printed

    # a crop model trained on margin crops (no masks) sees in them what it learnt: no warning
    unmasked = tmp_path / "u"
    shutil.copytree(bare, unmasked / "images")
    plain = tmp_path / "plain.safetensors"
    assert main(["train", str(unmasked), "--out", str(plain), "--arch", "lipnet1", "--mode", "crop", "--size", "24",
                 "--epochs", "1"]) == 0
    assert read_card(plain).training["input_decision"]["with_mask"] == 0
    assert run_batch(bare, model=plain, out=tmp_path / "plain.csv").summary["mask_fallbacks"] == 0


def test_test_time_augmentation_averages_the_eight_views():
    from emclassify.models import create_model, d4_views, model_logits

    torch.manual_seed(0)
    model = create_model("lipnet-fcn", 3, 24).eval()
    x = torch.randn(5, 1, 24, 24)
    views = d4_views(x)
    assert len(views) == 8 and len({tuple(v.flatten()[:20].tolist()) for v in views}) == 8
    with torch.inference_mode():
        expected = torch.stack([model(v) for v in views]).mean(0)
        assert torch.allclose(model_logits(model, x, tta=True), expected, atol=1e-6)
        symmetric = torch.stack(views).sum(0)  # the orbit sum is invariant under every view
        assert torch.allclose(model_logits(model, symmetric, tta=True), model(symmetric), atol=1e-5)


def test_a_set_where_only_some_images_have_masks_gets_a_note(tmp_path):
    """In crop mode the images without a mask are cut by a margin, those with one by its box: the
    decision says so (printed by train and cv, recorded in the card)."""
    synth.generate(tmp_path, "lamellarity", 10, seed=9)
    manifest = tmp_path / "manifest.csv"
    rows = list(csv.DictReader(open(manifest, newline="")))
    for r in rows[:4]:   # four images lose their mask
        (tmp_path / r["mask"]).unlink()
        r["mask"] = ""
    with open(manifest, "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=list(rows[0]))
        w.writeheader()
        w.writerows(rows)
    pcfg, record = decide_preprocess(load_dataset(tmp_path).samples)
    assert pcfg.mode == "crop" and record["with_mask"] == 6
    assert record["note"].startswith("4 of the 10 images have no mask: in crop mode they are cut as a central crop")
    _, masked_mode = decide_preprocess(load_dataset(tmp_path).samples, mode="mask")
    assert "held-out micrographs" in masked_mode["note"] and "by automatic segmentation" in masked_mode["note"]
    _, surround = decide_preprocess(load_dataset(tmp_path).samples, mode="surround")
    assert "note" not in surround   # no mask is read there


def test_classes_told_apart_by_how_their_files_were_made_get_a_note(tmp_path):
    """Classes exported separately can differ in image size or pixel type rather than in their
    particles; the decision says so."""
    from emclassify.input_decision import class_confounds

    items = list(synth.iter_particles("lamellarity", 36, seed=3, proportions=(0.5, 0.5, 0)))
    for i, it in enumerate(items):
        img = it.image
        if it.label == "multilamellar":   # another export: a larger frame, 16-bit
            img = np.pad(img.astype(np.uint16) * 257, 120, mode="reflect")
        write_tiff(tmp_path / "d" / it.label / f"{i}.tif", img)
    _, record = decide_preprocess(load_dataset(tmp_path / "d").samples)
    assert "the 'multilamellar' images are" in record["note"] and "by the image size alone" in record["note"]
    assert "are uint16, the 'unilamellar' ones uint8" in record["note"]
    assert record["note"].endswith("(saliency in the Review view)")
    synth.generate(tmp_path / "same", "lamellarity", 40, seed=9, proportions=(0.5, 0.5, 0))
    assert class_confounds(load_dataset(tmp_path / "same").samples) == []   # one export: nothing to say


def test_the_survey_reads_each_file_once_and_sees_edited_files(tmp_path, monkeypatch):
    """The input decision and train's card survey the same images; an edited file is surveyed again."""
    import emclassify.input_decision as decision

    synth.generate(tmp_path, "lamellarity", 12, seed=9)
    reads = []
    real = decision.read_image
    monkeypatch.setattr(decision, "read_image", lambda path, **kw: reads.append(path) or real(path, **kw))
    samples = load_dataset(tmp_path).samples
    decide_preprocess(samples)
    assert len(reads) == len(set(reads)) == 24   # 12 images and 12 masks, each once
    decision.image_side_stats(samples)
    assert decision.particle_contrast_stats(samples)["polarity"] == "dark" and len(reads) == 24
    first = samples[0].mask
    write_tiff(first, (read_image_array(first) == 0).astype(np.uint8) * 255)   # one mask saved the other way
    assert decision.survey(load_dataset(tmp_path).samples).mask_problems == {"background": 1}


def read_image_array(path):
    from emclassify.io import read_image

    return read_image(path).array


def test_explicit_mask_mode_carries_the_evidence_note(tmp_path):
    synth.generate(tmp_path, "lamellarity", 10, seed=9)
    pcfg, record = decide_preprocess(load_dataset(tmp_path).samples, mode="mask")
    assert pcfg.mode == "mask" and "held-out micrographs" in record["note"]
    assert "note" not in decide_preprocess(load_dataset(tmp_path).samples, mode="crop")[1]
