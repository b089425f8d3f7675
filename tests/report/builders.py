"""A complete, plausible audit result document for report tests, built without any model."""

from __future__ import annotations

import random
from pathlib import Path
from typing import Any

import numpy as np

from trustdiff import sections
from trustdiff.datasets import Dataset
from trustdiff.result import (
    AlignmentMetrics,
    Attributions,
    AuditResult,
    BinnedCalibration,
    Calibration,
    CheckpointManifest,
    DatasetManifest,
    Explanation,
    Faithfulness,
    Gate,
    GateCheck,
    Histogram,
    Instance,
    Interval,
    Manifest,
    MethodAlignment,
    MetricSummary,
    ModelCalibration,
    ModelFaithfulness,
    ModelParity,
    NoiseFloor,
    Parity,
    ReliabilityBin,
    RowsSummary,
)

LABELS = ["negative", "positive"]
HOSTILE_TEXT = "<script>alert(1)</script><img src=x onerror=alert(2)>"
HOSTILE_SENTENCE = f'the plot {HOSTILE_TEXT} was "dull" & boring'
PAIR_TEXT = "a man is playing a guitar"
PAIR_TEXT_PAIR = "someone plays an instrument"
ALIGNMENT_FIELDS = tuple(AlignmentMetrics.model_fields)


def _summary(rng: random.Random, centre: float, n: int, *, edges: int = 10) -> MetricSummary:
    values = [min(max(rng.gauss(centre, 0.15), 0.0), 1.0) for _ in range(n)]
    bounds = [i / edges for i in range(edges + 1)]
    counts = [0] * edges
    for value in values:
        counts[min(int(value * edges), edges - 1)] += 1
    mean = sum(values) / n
    ordered = sorted(values)
    return MetricSummary(
        mean=mean,
        median=ordered[n // 2],
        ci_low=mean - 0.06,
        ci_high=mean + 0.06,
        n=n,
        histogram=Histogram(edges=bounds, counts=counts),
    )


def _metrics(rng: random.Random, centre: float, n: int) -> dict[str, MetricSummary]:
    return {field: _summary(rng, centre, n) for field in ALIGNMENT_FIELDS}


def _bins(
    rng: random.Random, n_bins: int, n: int, *, overconfidence: float, binning: str
) -> list[ReliabilityBin]:
    """Binary-classifier bins: confidences lie in (0.5, 1], so the low bins stay empty."""
    bins = []
    remaining = n
    for m in range(n_bins):
        lower, upper = m / n_bins, (m + 1) / n_bins
        if binning == "equal_mass":
            lower, upper = 0.5 + 0.5 * m / n_bins, 0.5 + 0.5 * (m + 1) / n_bins
        if upper <= 0.5:
            bins.append(
                ReliabilityBin(
                    lower=lower, upper=upper, count=0, mean_confidence=None, accuracy=None
                )
            )
            continue
        count = remaining if m == n_bins - 1 else min(remaining, rng.randint(2, 2 * n // n_bins))
        remaining -= count
        if count == 0:
            bins.append(
                ReliabilityBin(
                    lower=lower, upper=upper, count=0, mean_confidence=None, accuracy=None
                )
            )
            continue
        confidence = (lower + upper) / 2
        accuracy = min(max(confidence - overconfidence + rng.uniform(-0.05, 0.05), 0.0), 1.0)
        bins.append(
            ReliabilityBin(
                lower=lower,
                upper=upper,
                count=count,
                mean_confidence=confidence,
                accuracy=accuracy,
            )
        )
    return bins


def _calibration(
    rng: random.Random, n: int, *, ece: float, overconfidence: float
) -> ModelCalibration:
    width = _bins(rng, 15, n, overconfidence=overconfidence, binning="equal_width")
    mass = _bins(rng, 10, n, overconfidence=overconfidence, binning="equal_mass")
    return ModelCalibration(
        ece=ece,
        mce=ece * 3.1,
        classwise_ece=ece * 1.2,
        brier=0.21 + ece,
        nll=0.48 + 2 * ece,
        bins=width,
        reliability=[
            BinnedCalibration(binning="equal_width", n_bins=15, ece=ece, mce=ece * 3.1, bins=width),
            BinnedCalibration(
                binning="equal_mass", n_bins=10, ece=ece * 0.9, mce=ece * 2.5, bins=mass
            ),
        ],
    )


def _attributions(rng: random.Random, d: int, *, shift: float) -> Attributions:
    reference = [rng.gauss(0, 0.2) for _ in range(d)]
    candidate = [value + rng.gauss(0, shift) for value in reference]
    rerun = [value + rng.gauss(0, 0.03) for value in reference]
    return Attributions(reference=reference, candidate=candidate, reference_rerun=rerun)


def _explanation(
    rng: random.Random, text: str, pair: str | None, jaccard: float, target: str
) -> Explanation:
    words = text.split(" ")
    segments = [0] * len(words)
    if pair is not None:
        pair_words = pair.split(" ")
        words += pair_words
        segments += [1] * len(pair_words)
    d = len(words)
    return Explanation(
        words=words,
        segments=segments,
        target=target,
        lime=_attributions(rng, d, shift=0.25),
        shap=_attributions(rng, d, shift=0.15),
        alignment={
            "lime": {field: jaccard for field in ALIGNMENT_FIELDS} | {"cosine_similarity": None},
            "shap": {field: min(jaccard + 0.1, 1.0) for field in ALIGNMENT_FIELDS},
        },
    )


def build_audit_result(
    *,
    passed: bool = False,
    with_alignment: bool = True,
    with_breakdown: bool = True,
    schema_version: str = "2",
) -> AuditResult:
    """A document shaped like a real audit of a binary sentiment model and a compressed copy.

    It holds a sentence-pair instance, a hostile instance (`HOSTILE_TEXT` inside its
    sentence) among the lowest-alignment ones, empty reliability bins and a missing interval.
    With `with_breakdown` it also has the sections beyond the averages (`add_breakdown`);
    without, it is a document written before they existed. `schema_version="1"` shapes it
    as documents were before the rows file: every one of its 24 rows in `instances`,
    explained or not, and no `rows` section.
    """
    rng = random.Random(3)
    n = 200
    texts = [
        (HOSTILE_SENTENCE, None, 0.0),
        (PAIR_TEXT, PAIR_TEXT_PAIR, 0.1),
        ("a wonderful and moving film with great acting", None, 0.25),
        ("the ending was awful but the music was fun", None, 0.33),
        ("boring story and dull cast", None, 0.5),
        ("really great fun", None, 0.8),
        ("i love this movie", None, 0.9),
    ]
    instances = []
    for index in range(24):
        label = LABELS[index % 2]
        p_ref = 0.55 + 0.4 * rng.random()
        p_cand = min(max(p_ref + rng.uniform(-0.3, 0.1), 0.05), 0.95)
        if index == 0:  # the hostile row flips hard: it heads the divergence and review lists
            p_ref, p_cand = 0.97, 0.04
        ref_proba = [1 - p_ref, p_ref] if label == "positive" else [p_ref, 1 - p_ref]
        cand_proba = [1 - p_cand, p_cand] if label == "positive" else [p_cand, 1 - p_cand]
        explanation = None
        text, pair = f"instance number {index} was fine", None
        if index < len(texts):
            text, pair, jaccard = texts[index]
            explanation = _explanation(rng, text, pair, jaccard, label)
        instances.append(
            Instance(
                index=index,
                text=text,
                text_pair=pair,
                label=label,
                reference_proba=ref_proba,
                candidate_proba=cand_proba,
                reference_prediction=LABELS[ref_proba.index(max(ref_proba))],
                candidate_prediction=LABELS[cand_proba.index(max(cand_proba))],
                explanations=explanation,
            )
        )
    alignment = {}
    if with_alignment:
        for method, centre in (("lime", 0.42), ("shap", 0.55)):
            floor = NoiseFloor(**_metrics(rng, 0.78, 7))
            alignment[method] = MethodAlignment(
                **_metrics(rng, centre, 7),
                top_k=10,
                n_instances=7,
                settings={"samples": 500, "masking": "remove"},
                noise_floor=floor,
            )
    checks = [
        GateCheck(
            name="accuracy_drop",
            pillar="parity",
            value=0.005,
            threshold=0.01,
            comparison="<=",
            ci_low=-0.01,
            ci_high=0.02,
            judged_on="value",
            passed=True,
            description="reference accuracy − candidate accuracy",
        ),
        GateCheck(
            name="macro_f1_drop",
            pillar="parity",
            value=0.008,
            threshold=0.02,
            comparison="<=",
            ci_low=None,
            ci_high=None,
            judged_on="value",
            passed=True,
        ),
        GateCheck(
            name="agreement",
            pillar="parity",
            value=0.955,
            threshold=0.95,
            comparison=">=",
            ci_low=0.93,
            ci_high=0.975,
            judged_on="value",
            passed=True,
        ),
        GateCheck(
            name="ece_increase",
            pillar="calibration",
            value=0.031,
            threshold=0.02,
            comparison="<=",
            ci_low=0.012,
            ci_high=0.05,
            judged_on="interval",
            passed=passed,
            description="candidate ECE − reference ECE",
        ),
        GateCheck(
            name="brier_increase",
            pillar="calibration",
            value=0.004,
            threshold=0.02,
            comparison="<=",
            ci_low=-0.003,
            ci_high=0.011,
            judged_on="value",
            passed=True,
        ),
        GateCheck(
            name="lime_jaccard_margin",
            pillar="alignment",
            value=0.36,
            threshold=0.15,
            comparison="<=",
            ci_low=0.28,
            ci_high=0.44,
            judged_on="value",
            passed=passed,
            description="noise-floor mean − between-model mean",
        ),
        GateCheck(
            name="shap_jaccard_margin",
            pillar="alignment",
            value=0.1,
            threshold=0.15,
            comparison="<=",
            ci_low=0.04,
            ci_high=0.17,
            judged_on="value",
            passed=True,
        ),
    ]
    fingerprint = "sha256:" + "".join(rng.choice("0123456789abcdef") for _ in range(64))
    result = AuditResult(
        manifest=Manifest(
            reference=CheckpointManifest(
                path="models/minilm-sst2",
                fingerprint=fingerprint,
                model_type="bert",
                num_parameters=22_713_602,
                labels=LABELS,
            ),
            candidate=CheckpointManifest(
                path="models/minilm-sst2",
                fingerprint=fingerprint[:-4] + "beef",
                transform="int8-dynamic",
                model_type="bert",
                num_parameters=22_713_602,
                labels=LABELS,
            ),
            dataset=DatasetManifest(
                path="data/<b>reviews</b>.jsonl",
                fingerprint="sha256:" + "ab" * 32,
                format="jsonl",
                rows=n,
                rows_in_file=10_605,
                text_field="text",
                text_pair_field="text_pair",
                label_field="label",
            ),
            labels=LABELS,
            config={
                "calibration": {
                    "n_bins": 15,
                    "binning": "equal_width",
                    "n_bootstrap": 1000,
                    "confidence_level": 0.95,
                },
                "explain": {"instances": 7, "methods": ["lime", "shap"], "top_k": 10},
                "gate": {"accuracy_drop": {"threshold": 0.01, "judged_on": "value"}},
                "seed": 0,
            },
            seed=0,
            versions={
                "trustdiff": "0.1.0",
                "torch": "2.13.0",
                "transformers": "4.57.0",
                "shap": "0.48.0",
                "lime": "0.2.0.1",
                "python": "3.11.9",
            },
            device="cpu",
            timings={"load": 1.8, "predict": 4.2, "calibration": 0.6, "explain": 95.3},
            created_at="2025-11-22T09:14:03Z",
        ),
        parity=Parity(
            reference=ModelParity(
                accuracy=0.885, macro_f1=0.884, per_class_recall={"negative": 0.87, "positive": 0.9}
            ),
            candidate=ModelParity(
                accuracy=0.88, macro_f1=0.876, per_class_recall={"negative": 0.85, "positive": 0.91}
            ),
            accuracy_delta=Interval(value=-0.005, ci_low=-0.02, ci_high=0.01),
            macro_f1_delta=Interval(value=-0.008),
            agreement=0.955,
            fixed=4,
            broken=5,
            mcnemar_p=1.0,
            kappa=0.91,
            probability_loyalty=0.93,
            disagreement_matrix=[[97, 4], [5, 94]],
        ),
        calibration=Calibration(
            binning="equal_width",
            n_bins=15,
            reference=_calibration(rng, n, ece=0.034, overconfidence=0.02),
            candidate=_calibration(rng, n, ece=0.065, overconfidence=0.07),
            delta={
                "ece": Interval(value=0.031, ci_low=0.012, ci_high=0.05),
                "mce": Interval(value=0.09, ci_low=None, ci_high=None),
                "classwise_ece": Interval(value=0.037, ci_low=0.015, ci_high=0.06),
                "brier": Interval(value=0.004, ci_low=-0.003, ci_high=0.011),
                "nll": Interval(value=0.062, ci_low=0.02, ci_high=0.1),
            },
        ),
        alignment=alignment,
        gate=Gate(passed=passed, checks=checks),
        schema_version="1",
        instances=instances,
    )
    if with_breakdown:
        result = add_breakdown(result)
    return result.model_copy(update=_rows_and_instances(result.instances, schema_version))


def add_breakdown(result: AuditResult) -> AuditResult:
    """`result` with flip rates, slices (one of them named by `HOSTILE_TEXT`), output-distance
    tails, SmoothECE, faithfulness and exemplars, measured by the engine's own sections from
    the document's instances."""
    labels = result.manifest.labels
    instances = result.instances
    y_true = np.array([labels.index(item.label) for item in instances], dtype=np.intp)
    reference = np.array([item.reference_proba for item in instances])
    candidate = np.array([item.candidate_proba for item in instances])
    dataset = Dataset(
        path=Path("reviews.jsonl"),
        format="jsonl",
        texts=[item.text for item in instances],
        text_pairs=[item.text_pair or "" for item in instances],
        labels=y_true.tolist(),
        label_names=labels,
        row_numbers=[item.index + 1 for item in instances],
        rows_in_file=len(instances),
        fingerprint="0" * 64,
        columns={"source": [HOSTILE_TEXT if i % 3 == 0 else "web" for i in range(len(y_true))]},
    )
    bootstrap = sections.Bootstrap(n_resamples=100, confidence_level=0.95, seed=0)
    slices = sections.slices_section(
        y_true, reference, candidate, dataset=dataset, labels=labels, columns=["source"],
        min_slice_size=8, n_bins=10, binning="equal_width", bootstrap=bootstrap,
        thresholds=[sections.SliceThreshold("worst_slice_agreement", 0.9, "value")],
    )  # fmt: skip
    summary = MetricSummary(
        mean=0.3, median=0.28, ci_low=0.2, ci_high=0.4, n=7,
        histogram=Histogram(edges=[-1.0, 0.0, 1.0], counts=[0, 7]),
    )  # fmt: skip
    faithfulness = Faithfulness(
        top_k=10,
        n_instances=7,
        reference=ModelFaithfulness(comprehensiveness=summary, sufficiency=summary),
        candidate=ModelFaithfulness(comprehensiveness=summary, sufficiency=summary),
        comprehensiveness_delta=Interval(value=-0.04, ci_low=-0.09, ci_high=0.01),
        sufficiency_delta=Interval(value=0.02, ci_low=-0.01, ci_high=0.05),
    )
    parity = result.parity.model_copy(
        update={
            "negative_flip_rate": Interval(value=0.025, ci_low=0.01, ci_high=0.045),
            "positive_flip_rate": Interval(value=0.02, ci_low=0.005, ci_high=0.035),
        }
    )
    smooth = sections.smooth_calibration_section(y_true, reference, candidate, bootstrap=bootstrap)
    return result.model_copy(
        update={
            "parity": parity,
            "calibration": result.calibration.model_copy(update={"smooth": smooth}),
            "alignment": {
                method: aligned.model_copy(update={"faithfulness": faithfulness})
                for method, aligned in result.alignment.items()
            },
            "slices": slices,
            "divergence": sections.divergence_section(
                reference, candidate, dataset=dataset, labels=labels
            ),
            "exemplars": sections.exemplars_section(
                reference, candidate, dataset=dataset, labels=labels
            ),
        }
    )


def _rows_and_instances(instances: list[Instance], schema_version: str) -> dict[str, Any]:
    if schema_version == "1":
        return {"schema_version": "1", "rows": None, "instances": instances}
    flipped = sum(i.reference_prediction != i.candidate_prediction for i in instances)
    return {
        "schema_version": schema_version,
        "rows": RowsSummary(count=len(instances), flipped=flipped),
        "instances": [i for i in instances if i.explanations is not None],
    }
