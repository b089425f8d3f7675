"""Parity metrics: how well each model predicts, and how often and how closely they agree."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from numpy.typing import ArrayLike, NDArray

from trustdiff.metrics._checks import check_class_labels, check_integer, check_same_length
from trustdiff.metrics.divergence import jensen_shannon_distance_per_instance


def accuracy(y_true: ArrayLike, y_pred: ArrayLike) -> float:
    """Fraction of correct predictions, `mean(y_pred == y_true)`.

    `y_true`, `y_pred`: integer class ids, shape (n,).
    """
    truth = check_class_labels(y_true, name="y_true")
    predicted = check_class_labels(y_pred, name="y_pred")
    check_same_length(y_true=truth, y_pred=predicted)
    return float(np.mean(truth == predicted))


def macro_f1(
    y_true: ArrayLike, y_pred: ArrayLike, *, n_classes: int, zero_division: float = 0.0
) -> float:
    """Unweighted mean over the K classes of `F1_k = 2·TP_k / (2·TP_k + FP_k + FN_k)`.

    `y_true`, `y_pred`: integer class ids in `[0, n_classes)`, shape (n,). The mean runs over
    the full label space, every class `0..n_classes−1` (scikit-learn's `f1_score(...,
    labels=range(K), average="macro")`), so two models are always averaged over the same
    classes: a class one model never predicts cannot change what is averaged. A class with
    neither a true nor a predicted instance has no F1 (0/0); it counts as `zero_division`
    (0.0, as in scikit-learn).
    """
    if n_classes < 1:
        raise ValueError(f"n_classes must be >= 1, got {n_classes}")
    truth = check_class_labels(y_true, name="y_true", n_classes=n_classes)
    predicted = check_class_labels(y_pred, name="y_pred", n_classes=n_classes)
    check_same_length(y_true=truth, y_pred=predicted)
    true_positive = np.bincount(truth[truth == predicted], minlength=n_classes)
    # 2·TP + FP + FN is the number of predictions plus the number of true instances.
    denominator = np.bincount(predicted, minlength=n_classes) + np.bincount(
        truth, minlength=n_classes
    )
    f1 = np.full(n_classes, float(zero_division))
    used = denominator > 0
    f1[used] = 2 * true_positive[used] / denominator[used]
    return float(np.mean(f1))


def per_class_recall(
    y_true: ArrayLike, y_pred: ArrayLike, *, n_classes: int, zero_division: float = 0.0
) -> NDArray[np.float64]:
    """Recall of each class, `TP_k / (TP_k + FN_k)`, shape (n_classes,).

    `y_true`, `y_pred`: integer class ids in `[0, n_classes)`, shape (n,). A class with no true
    instance has no recall; it gets `zero_division` (0.0, as in scikit-learn).
    """
    if n_classes < 1:
        raise ValueError(f"n_classes must be >= 1, got {n_classes}")
    truth = check_class_labels(y_true, name="y_true", n_classes=n_classes)
    predicted = check_class_labels(y_pred, name="y_pred", n_classes=n_classes)
    check_same_length(y_true=truth, y_pred=predicted)
    support = np.bincount(truth, minlength=n_classes)
    hits = np.bincount(truth[truth == predicted], minlength=n_classes)
    recall = np.full(n_classes, float(zero_division))
    present = support > 0
    recall[present] = hits[present] / support[present]
    return recall


def agreement(reference_pred: ArrayLike, candidate_pred: ArrayLike) -> float:
    """Fraction of instances on which both models predict the same class.

    `reference_pred`, `candidate_pred`: integer class ids, shape (n,). Gold labels play no part.
    """
    reference = check_class_labels(reference_pred, name="reference_pred")
    candidate = check_class_labels(candidate_pred, name="candidate_pred")
    check_same_length(reference_pred=reference, candidate_pred=candidate)
    return float(np.mean(reference == candidate))


@dataclass(frozen=True)
class FlipCounts:
    """`fixed`: reference wrong, candidate right; `broken`: reference right, candidate wrong."""

    fixed: int
    broken: int


def flip_counts(
    y_true: ArrayLike, reference_pred: ArrayLike, candidate_pred: ArrayLike
) -> FlipCounts:
    """Count the instances whose correctness flips between the two models.

    All arguments: integer class ids, shape (n,). Instances both models get right, or both
    get wrong (even with different wrong classes), are not flips.
    """
    truth = check_class_labels(y_true, name="y_true")
    reference = check_class_labels(reference_pred, name="reference_pred")
    candidate = check_class_labels(candidate_pred, name="candidate_pred")
    check_same_length(y_true=truth, reference_pred=reference, candidate_pred=candidate)
    reference_right = reference == truth
    candidate_right = candidate == truth
    return FlipCounts(
        fixed=int(np.sum(~reference_right & candidate_right)),
        broken=int(np.sum(reference_right & ~candidate_right)),
    )


def disagreement_matrix(
    reference_pred: ArrayLike, candidate_pred: ArrayLike, *, n_classes: int
) -> NDArray[np.int64]:
    """Counts of (reference prediction, candidate prediction) pairs, shape (K, K).

    Entry `[i, j]` counts instances the reference predicts as class i and the candidate as
    class j; the diagonal holds the agreements, everything off it the disagreements. The
    entries sum to n.
    """
    if n_classes < 1:
        raise ValueError(f"n_classes must be >= 1, got {n_classes}")
    reference = check_class_labels(reference_pred, name="reference_pred", n_classes=n_classes)
    candidate = check_class_labels(candidate_pred, name="candidate_pred", n_classes=n_classes)
    check_same_length(reference_pred=reference, candidate_pred=candidate)
    flat = np.bincount(reference * n_classes + candidate, minlength=n_classes * n_classes)
    return flat.reshape(n_classes, n_classes).astype(np.int64)


def mcnemar_exact_p_value(fixed: int, broken: int) -> float:
    """Two-sided exact McNemar p-value on the discordant counts.

    Under the null hypothesis (both models equally accurate) each of the `fixed + broken`
    discordant instances is a fair coin: `p = min(1, 2 · P[Binomial(fixed + broken, 1/2) ≤
    min(fixed, broken)])`. Equals scipy's `binomtest(fixed, fixed + broken).pvalue`.
    Returns 1.0 when both counts are 0 (no evidence of any difference).
    """
    fixed = check_integer(fixed, name="fixed", minimum=0)
    broken = check_integer(broken, name="broken", minimum=0)
    discordant = fixed + broken
    if discordant == 0:
        return 1.0
    # Imported here: scipy.stats takes a noticeable time to import and only this needs it.
    from scipy.stats import binom

    return float(min(1.0, 2.0 * binom.cdf(min(fixed, broken), discordant, 0.5)))


def cohen_kappa(reference_pred: ArrayLike, candidate_pred: ArrayLike) -> float:
    """Cohen's kappa between two prediction vectors, `(p_o − p_e) / (1 − p_e)`.

    `p_o` is the observed agreement, `p_e = Σ_k (n_ref,k / n)(n_cand,k / n)` the agreement
    expected by chance from each model's class frequencies. When `p_e = 1` (both models
    predict one and the same class everywhere) kappa is 0/0; we return 1.0, since the
    agreement is then perfect — scikit-learn returns NaN there.
    """
    reference = check_class_labels(reference_pred, name="reference_pred")
    candidate = check_class_labels(candidate_pred, name="candidate_pred")
    check_same_length(reference_pred=reference, candidate_pred=candidate)
    n_classes = int(max(reference.max(), candidate.max())) + 1
    observed = float(np.mean(reference == candidate))
    reference_share = np.bincount(reference, minlength=n_classes) / reference.size
    candidate_share = np.bincount(candidate, minlength=n_classes) / candidate.size
    expected = float(np.dot(reference_share, candidate_share))
    if expected >= 1.0:
        return 1.0
    return (observed - expected) / (1.0 - expected)


def probability_loyalty_per_instance(
    reference_proba: ArrayLike, candidate_proba: ArrayLike
) -> NDArray[np.float64]:
    """`1 − sqrt(JSD₂(p_ref,i, p_cand,i))` for each instance, shape (n,), in [0, 1].

    `JSD₂(p, q) = ½ KL₂(p ‖ m) + ½ KL₂(q ‖ m)`, `m = (p + q) / 2`, base-2 logarithms (so JSD
    lies in [0, 1]) and `0 · log 0 = 0`. Its square root is scipy's
    `jensenshannon(p, q, base=2)` (`jensen_shannon_distance_per_instance`). 1 means identical
    distributions, 0 disjoint supports.
    """
    return 1.0 - jensen_shannon_distance_per_instance(reference_proba, candidate_proba)


def probability_loyalty(reference_proba: ArrayLike, candidate_proba: ArrayLike) -> float:
    """Mean over instances of `1 − sqrt(JSD₂(p_ref, p_cand))`; see the per-instance function.

    `reference_proba`, `candidate_proba`: probability matrices of the same shape (n, K).
    """
    return float(np.mean(probability_loyalty_per_instance(reference_proba, candidate_proba)))
