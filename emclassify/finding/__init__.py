"""Finding particles in whole micrographs: finders by name, their detections, and how to score them.

A finder turns one 2-D micrograph into :class:`Detections` (an instance label image plus one
measured :class:`Particle` per instance). Finders are chosen by name like classifiers
(:data:`FINDERS`): ``classical`` (threshold + watershed, no training, :mod:`.classical`) and
``learned`` (a U-Net trained on outlined micrographs by ``emclassify train-finder``, :mod:`.learned`).
:mod:`.matching` scores detections against outlined particles (F1 at IoU >= 0.5, IoU of matches,
count error).
"""
from __future__ import annotations

import dataclasses
from typing import Dict

from .classical import MIN_SCORE, ClassicalFinder, estimate_diameter
from .detections import Detections, Particle, ParticleSize, cut_out, measure, sizes_by_class
from .learned import LearnedFinder

from ..defaults import DEFAULT_FINDER  # noqa: E402  (one source of defaults)

FINDERS: Dict[str, type] = {"classical": ClassicalFinder, "learned": LearnedFinder}


def list_finders():
    return list(FINDERS)


def make_finder(name: str = DEFAULT_FINDER, **params):
    """A finder by name with its parameters (None values mean the finder's default).

    A parameter the finder does not take (e.g. ``views`` for ``classical``, which has no network) is
    a ValueError naming it; so is a missing or foreign ``model`` file for ``learned``.
    """
    if name not in FINDERS:
        raise ValueError(f"unknown particle finder {name!r}; choose one of {', '.join(FINDERS)}")
    cls = FINDERS[name]
    given = {k: v for k, v in params.items() if v is not None}
    known = {f.name for f in dataclasses.fields(cls)}
    foreign = sorted(set(given) - known)
    if foreign:
        raise ValueError(f"the {name} finder does not take {', '.join(foreign)}")
    if name == "learned" and "model" not in given:
        raise ValueError("the learned finder needs its model file (--finder-model, made by `emclassify train-finder`)")
    return cls(**given)


def describe_finding(finding: Dict) -> str:
    """One line on a micrograph run's finder and the settings it ran with (its summary's ``finding``
    record, :meth:`emclassify.batch.BatchRun.finding`), for the CLI: what a lab should see it assumed."""
    name = finding.get("finder", "?")
    comparative = {"dark": "darker", "bright": "brighter"}
    polarity = comparative.get(finding.get("polarity"))
    if name == "learned":
        what = f"learned ({finding.get('model')}), " + (
            f"told the particles are {polarity} than their surroundings" if polarity else
            "particles of the contrast it learnt")
    else:
        what = f"{name}, particles {polarity or 'darker'} than their surroundings"
    diameter = finding.get("diameter_px")
    if isinstance(diameter, (int, float)):
        what += f", {diameter:g} px across"
    elif name == "classical":
        what += ", diameter estimated per micrograph"
    return what + " (--polarity, --particle-diameter to change)"


def finder_from_record(finding: Dict):
    """The finder a micrograph run used, rebuilt from its summary's ``finding`` record
    (:meth:`emclassify.batch.BatchRun.finding`). A learned finder whose model file is gone or has
    changed since the run is a ValueError saying so: its particles would not be the run's.
    """
    from ..modelfile import ModelFileError

    if not isinstance(finding, dict) or finding.get("finder") not in FINDERS:
        raise ValueError("the run does not record which particle finder it used")
    name = finding["finder"]
    known = {f.name for f in dataclasses.fields(FINDERS[name])} - {"native", "preloaded"}
    params = {k: v for k, v in finding.items() if k in known and v is not None}
    if name == "classical":
        # a record from before the edge test existed: its particles were found without it
        params.setdefault("min_edge_sharpness", 0.0)
        # ... and before outlines were moved onto the particles' edges
        params.setdefault("refine_outlines", False)
        # ... and before faint objects with sharp edges were kept
        params.setdefault("sharp_min_score", params.get("min_score", MIN_SCORE))
        # ... and before particles were found by their membrane ring alone
        params.setdefault("find_rings", False)
        # ... and before rings cut by the micrograph's edge counted as closed by it
        params.setdefault("edge_rings", False)
    try:
        finder = make_finder(name, **params)
    except ModelFileError as exc:
        raise ValueError(f"the run's finder model cannot be loaded: {exc}") from None
    recorded = finding.get("model_sha256")
    if recorded and finder.params().get("model_sha256") != recorded:
        raise ValueError(f"the finder model {finding.get('model')} has changed since the run; its particles "
                         "would not be the run's")
    return finder


__all__ = ["ClassicalFinder", "DEFAULT_FINDER", "Detections", "FINDERS", "LearnedFinder", "Particle", "ParticleSize", "cut_out",
           "describe_finding", "estimate_diameter", "finder_from_record", "list_finders", "make_finder", "measure", "sizes_by_class"]
