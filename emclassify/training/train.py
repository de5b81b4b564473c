"""``emclassify train``: load once, split, fit and assess, write the model file."""
from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Dict, List, Optional

from ..events import Decoding, EpochEnded, Progress, RemainingTime, emit
from ..features import FEATURES_VERSION, N_FEATURES
from ..io import Dataset
from ..models import parse_arch
from ..preprocess import PreprocessConfig
from .config import FitResult, TrainConfig
from .inputs import load_inputs, refuse_too_small
from .splits import holdout_split

MAX_GROUP_NAMES = 20_000  # the card lists at most this many training micrographs (a header, not a database)


@dataclass
class TrainOutcome:
    path: object
    card: object
    fit: FitResult
    validation: Dict
    skipped: List[str]
    flags: List[Dict[str, str]] = field(default_factory=list)


def train(dataset: Dataset, pcfg: PreprocessConfig, cfg: TrainConfig, out, progress: Optional[Progress] = None,
          cancel=None, name: str = "", problem: str = "", input_decision: Optional[Dict] = None) -> TrainOutcome:
    """``emclassify train``: load once, hold out a validation split, fit and assess
    (:func:`emclassify.assess.fit_assessed`: baselines, ``auto`` choice, calibration, flags), write the
    model file. input_decision: how the input mode was chosen (recorded in the card).
    progress: receives :class:`~emclassify.events.Decoding` and :class:`~emclassify.events.EpochEnded`."""
    from .._version import __version__
    from ..assess import fit_assessed  # assess builds on this module's fitting
    from ..input_decision import image_side_stats, particle_contrast_stats
    from ..modelfile import ModelCard, save_model

    data = load_inputs(dataset.samples, pcfg, dataset.classes, want_features=True,
                       progress=lambda done, total: emit(progress, Decoding(done, total)))
    refuse_too_small(data)
    if len(data) < 4:
        unread = "".join(f"\n  {e}" for e in data.errors[:10]) + (
            f"\n  ... and {len(data.errors) - 10} more" if len(data.errors) > 10 else "")
        raise ValueError(f"only {len(data)} usable images: too few to train on"
                         + (f"; {len(data.errors)} could not be used:{unread}" if data.errors else ""))
    groups = [s.group for s in data.samples] if dataset.has_groups else None
    tr, va = holdout_split(data.labels.numpy(), groups, cfg.val_fraction, cfg.seed)
    val_set = data.subset(va)
    cfg = cfg.resolved(len(tr), pcfg.size)
    clock = RemainingTime(runs=1, epochs=cfg.epochs)
    clock.run_started()
    res = fit_assessed(data.subset(tr), val_set, dataset.classes, pcfg, cfg, cancel=cancel,
                       on_epoch=lambda log: emit(progress, EpochEnded(cfg.arch, log,
                                                                      remaining_s=clock.epoch_ended(log.seconds))))
    _, uses_features = parse_arch(res.arch)
    validation = {**res.scores["model"], "n": int(len(va))}
    card = ModelCard(
        classes=list(dataset.classes),
        arch=res.arch,
        preprocess=pcfg,
        name=name or f"{res.arch} on {dataset.root.name}",
        problem=problem,
        training={**cfg.to_dict(), "arch": res.arch, "arch_requested": cfg.arch, "best_epoch": res.fit.best_epoch,
                  "epochs_run": len(res.fit.history), "stopped": res.fit.stopped,
                  **({"precision_used": res.fit.precision} if res.fit.history else {}),
                  **({"epoch_plan": note} if (note := res.fit.epoch_plan_note(dataset.classes)) else {}),
                  **({"svm": res.fit.info} if res.fit.info else {}),
                  "history": [asdict(h) for h in res.fit.history],
                  **({"input_decision": input_decision} if input_decision else {})},
        metrics=res.card_metrics(int(len(va))),
        data={"root": str(dataset.root), "source": dataset.source, "fingerprint": dataset.fingerprint(),
              "n_images": len(dataset), "n_used": len(data), "n_skipped": len(data.errors),
              "class_counts": dataset.class_counts(), "class_order": dataset.class_order,
              "n_train": int(len(tr)), "n_validation": int(len(va)),
              "groups": len(set(groups)) if groups else 0, "group_aware_split": groups is not None,
              # which micrographs it learned from, so that find-eval can tell when it scores one of them
              "group_names": sorted({str(g) for g in groups if g is not None})[:MAX_GROUP_NAMES] if groups else [],
              "image_sides_px": image_side_stats(dataset.samples),
              **({"particle_contrast": contrast} if (contrast := particle_contrast_stats(dataset.samples)) else {}),
              "emclassify": __version__},
        features={"version": FEATURES_VERSION, "n": N_FEATURES} if uses_features else {},
    )
    path = save_model(out, res.model, card)
    return TrainOutcome(path, card, res.fit, validation, data.errors, res.flags)
