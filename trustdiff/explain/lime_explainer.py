"""LIME over word positions, fitted by the `lime` library's own `LimeBase`, for several outputs."""

from __future__ import annotations

import functools
from collections.abc import Sequence
from typing import TYPE_CHECKING

import numpy as np
from numpy.typing import NDArray

from trustdiff.config import Masking
from trustdiff.explain.attributions import WordAttributions
from trustdiff.explain.words import WordFeatures

if TYPE_CHECKING:
    from trustdiff.explain.words import PredictFunction
    from trustdiff.inference import TextInput

# lime 0.2.0.1's `LimeTextExplainer.explain_instance` with `bow=False` and every word a
# feature draws its neighbourhood in a Python loop over the samples, rebuilding a string per
# sample, and then fits each label with `LimeBase.explain_instance_with_data`. The draws
# depend only on d, the sample count and the seed (`lime_keep_masks` reproduces them), so the
# neighbourhood is built here from the masks, as lime builds it (`data`, the model's outputs,
# cosine distances × 100 on the sparse data), and handed to lime's own fit: the same numbers
# as a direct call on the real text with `split_expression=r"\s+"`, `bow=False`, without the
# per-sample Python and with the masks drawn once for `inputs_ahead` and the run alike.
_MASK_CACHE_SIZE = 1024


@functools.lru_cache(maxsize=_MASK_CACHE_SIZE)
def lime_keep_masks(d: int, *, num_samples: int, seed: int) -> NDArray[np.bool_]:
    """The keep-masks LIME evaluates for d words, shape (num_samples, d), row 0 all kept;
    read-only, and kept for the next call with the same arguments (an instance's inputs are
    sent ahead, then explained).

    The draws of lime 0.2.0.1's `LimeTextExplainer` seeded with `seed` (its private
    `__data_labels_distances`): a `RandomState(seed)` draws num_samples − 1 sizes in
    [1, d], then for each hides `size` distinct words (`choice(range(d), size,
    replace=False)`). They depend on nothing but d, the sample count and the seed, which is
    what lets every LIME input be evaluated before LIME runs (`inputs_ahead`); a test holds
    them equal to what LIME asks for.
    """
    random_state = np.random.RandomState(seed)
    sizes = random_state.randint(1, d + 1, num_samples - 1)
    masks = np.ones((num_samples, d), dtype=bool)
    for row, size in enumerate(sizes.tolist(), start=1):
        # What `choice(range(d), size, replace=False)` draws (RandomState's legacy stream is
        # frozen), without its argument checks: a third of the time.
        masks[row, random_state.permutation(d)[:size]] = False
    masks.flags.writeable = False
    return masks


def lime_inputs(
    features: WordFeatures,
    *,
    num_samples: int,
    seed: int,
    masking: Masking = "remove",
    mask_token: str | None = None,
) -> list[TextInput]:
    """Every input `explain_lime` with these arguments sends to `predict`, in its order."""
    keep = lime_keep_masks(len(features), num_samples=num_samples, seed=seed)
    return features.compose_many(keep, masking=masking, mask_token=mask_token)


def explain_lime(
    features: WordFeatures,
    predict: PredictFunction,
    *,
    columns: Sequence[int],
    num_samples: int,
    seed: int,
    masking: Masking = "remove",
    mask_token: str | None = None,
) -> WordAttributions:
    """Explain the output `columns` of `predict` around `features` with one LIME neighbourhood.

    `predict(inputs)` returns an (n, C) array; every explained column is fitted on the same
    perturbed inputs, which is how both models are explained on identical texts. Every word is
    a feature (`feature_selection="none"`), so each column gets d weights; the base values are
    LIME's intercepts.
    """
    from lime.lime_text import LimeTextExplainer
    from scipy import sparse
    from sklearn.metrics.pairwise import pairwise_distances

    d = len(features)
    if d == 0:
        raise ValueError("cannot explain an input without words")
    # Built for its kernel and its `LimeBase`, configured as a direct call would be.
    explainer = LimeTextExplainer(
        split_expression=r"\s+", bow=False, feature_selection="none", random_state=seed
    )
    keep = lime_keep_masks(d, num_samples=num_samples, seed=seed)
    outputs = np.asarray(
        predict(features.compose_many(keep, masking=masking, mask_token=mask_token)),
        dtype=np.float64,
    )
    data = keep.astype(np.float64)
    rows = sparse.csr_matrix(data)
    distances = pairwise_distances(rows, rows[0], metric="cosine").ravel() * 100
    fits = {
        column: explainer.base.explain_instance_with_data(
            data, outputs, distances, column, d, model_regressor=None, feature_selection="none"
        )
        for column in columns
    }
    scores = np.zeros((len(columns), d), dtype=np.float64)
    for row, column in enumerate(columns):
        for feature, weight in fits[column][1]:
            scores[row, feature] = weight
    return WordAttributions(
        words=features.words,
        targets=tuple(columns),
        scores=scores,
        base_values=np.array([fits[column][0] for column in columns]),
    )
