"""The twin beside the audit: its cache key, the figures cached of it, and each section with
the twin's figures added."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from numpy.typing import NDArray

from trustdiff.manifest import LoadedModel, checkpoint_manifest, versions
from trustdiff.result import (
    Attributions,
    Calibration,
    Explanation,
    MethodAlignment,
    Parity,
    TwinCacheManifest,
)
from trustdiff.twin_cache import TwinFigures, twin_cache_key
from trustdiff.validation import ValidatedAudit


@dataclass(frozen=True)
class Twin:
    """The twin's figures, and whether they were computed in this audit or read from a cache."""

    figures: TwinFigures
    cache_manifest: TwinCacheManifest


def twin_key(
    validated: ValidatedAudit, reference_fingerprint: str, twin_fingerprint: str | None
) -> str | None:
    """The twin's cache key (`twin_cache_key`); None when the audit has no twin."""
    if twin_fingerprint is None:
        return None
    return twin_cache_key(
        validated.config,
        reference_fingerprint=reference_fingerprint,
        twin_fingerprint=twin_fingerprint,
        dataset_fingerprint=validated.dataset.fingerprint,
        device=validated.config.device,
        version=versions()["trustdiff"],
    )


def twin_figures(
    validated: ValidatedAudit,
    model: LoadedModel,
    fingerprint: str,
    sections: tuple[Parity, Calibration],
    twin_proba: NDArray[np.float64],
    alignment: dict[str, MethodAlignment],
    explanations: dict[int, Explanation],
) -> TwinFigures:
    """What the cache keeps of the twin, taken from this audit's measurements."""
    config = validated.config
    if config.twin is None or validated.twin is None:
        raise RuntimeError("no twin to describe")
    attributions: dict[str, dict[int, list[float]]] = {}
    for index, explanation in explanations.items():
        for method in alignment:
            document: Attributions | None = getattr(explanation, method, None)
            if document is not None and document.twin is not None:
                attributions.setdefault(method, {})[index] = document.twin
    return TwinFigures(
        manifest=checkpoint_manifest(config.twin, validated.twin, fingerprint, model),
        parity=sections[0],
        calibration=sections[1],
        alignment={
            method: aligned.twin
            for method, aligned in alignment.items()
            if aligned.twin is not None
        },
        probabilities=twin_proba.tolist(),
        attributions=attributions,
    )


def with_twin(
    figures: TwinFigures,
    parity: Parity,
    calibration: Calibration,
    alignment: dict[str, MethodAlignment],
    explanations: dict[int, Explanation],
) -> tuple[Parity, Calibration, dict[str, MethodAlignment], dict[int, Explanation]]:
    """Each section with the twin's beside it, and each explanation with the twin's scores."""
    with_twin_alignment = {
        method: aligned.model_copy(update={"twin": figures.alignment.get(method)})
        for method, aligned in alignment.items()
    }
    with_twin_explanations = {}
    for index, explanation in explanations.items():
        update: dict[str, Attributions] = {}
        for method, by_row in figures.attributions.items():
            document: Attributions | None = getattr(explanation, method, None)
            if document is not None and index in by_row:
                update[method] = document.model_copy(update={"twin": by_row[index]})
        with_twin_explanations[index] = explanation.model_copy(update=update)
    return (
        parity.model_copy(update={"twin": figures.parity}),
        calibration.model_copy(update={"twin": figures.calibration}),
        with_twin_alignment,
        with_twin_explanations,
    )
