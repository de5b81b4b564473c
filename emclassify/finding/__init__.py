"""Finding particles in whole micrographs: finders by name, their detections, and how to score them.

A finder turns one 2-D micrograph into :class:`Detections` (an instance label image plus one
measured :class:`Particle` per instance). Finders are chosen by name like classifiers
(:data:`FINDERS`): ``classical`` (threshold + watershed, no training, :mod:`.classical`).
:mod:`.matching` scores detections against outlined particles (F1 at IoU >= 0.5, IoU of matches,
count error).
"""
from __future__ import annotations

from typing import Dict

from .classical import ClassicalFinder, estimate_diameter
from .detections import Detections, Particle, ParticleSize, cut_out, measure, sizes_by_class

from ..defaults import DEFAULT_FINDER  # noqa: E402  (one source of defaults)

FINDERS: Dict[str, type] = {"classical": ClassicalFinder}


def list_finders():
    return list(FINDERS)


def make_finder(name: str = DEFAULT_FINDER, **params):
    """A finder by name with its parameters (None values mean the finder's default)."""
    if name not in FINDERS:
        raise ValueError(f"unknown particle finder {name!r}; choose one of {', '.join(FINDERS)}")
    return FINDERS[name](**{k: v for k, v in params.items() if v is not None})


__all__ = ["ClassicalFinder", "DEFAULT_FINDER", "Detections", "FINDERS", "Particle", "ParticleSize", "cut_out",
           "estimate_diameter", "list_finders", "make_finder", "measure", "sizes_by_class"]
