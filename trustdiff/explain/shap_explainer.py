"""SHAP over word positions through the `shap` library (Partition, Permutation or Kernel)."""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any, Protocol

import numpy as np
from numpy.typing import NDArray

from trustdiff.config import Masking, ShapAlgorithm
from trustdiff.explain.attributions import WordAttributions
from trustdiff.explain.words import WordFeatures

if TYPE_CHECKING:
    from trustdiff.explain.words import PredictFunction
    from trustdiff.inference import TextInput


# shap draws from numpy's *global* generator: Permutation seeds it in its constructor and
# shuffles with it, Kernel samples coalitions with it, and even Partition breaks priority ties
# in its Owen recursion with `np.random.randn()` (shap issue #3995: a seed alone does not make
# results reproducible, least of all with several explanations running in threads). So each
# explanation owns a private stream of that generator and runs shap's code holding this lock
# with its stream swapped in; it lets go (saving its stream) only while the model is being
# evaluated, which is when explanations running in other threads may proceed.
_GLOBAL_NUMPY_RANDOM = threading.Lock()


class GlobalRandomStream:
    """A private, seeded stream of numpy's global generator for one explanation.

    `with stream.installed():` holds `_GLOBAL_NUMPY_RANDOM` with this stream swapped in as
    numpy's global state; leaving saves the stream and puts back what was there. Inside it,
    `with stream.set_aside():` does the reverse for a while (the model call), letting other
    explanations run their shap code meanwhile.
    """

    def __init__(self, seed: int) -> None:
        self._state: Any = np.random.RandomState(seed % 2**32).get_state()
        self._outer: Any = None

    @contextmanager
    def installed(self) -> Iterator[None]:
        self._enter()
        try:
            yield
        finally:
            self._leave()

    @contextmanager
    def set_aside(self) -> Iterator[None]:
        self._leave()
        try:
            yield
        finally:
            self._enter()

    def _enter(self) -> None:
        _GLOBAL_NUMPY_RANDOM.acquire()
        self._outer = np.random.get_state()
        np.random.set_state(self._state)

    def _leave(self) -> None:
        self._state = np.random.get_state()
        np.random.set_state(self._outer)
        _GLOBAL_NUMPY_RANDOM.release()


def word_partition_tree(features: WordFeatures) -> NDArray[np.float64]:
    """The Partition explainer's hierarchy over the words, shape (d − 1, 4), scipy linkage form.

    Each segment is clustered with the heuristic `shap.maskers.Text` uses for its own tokens
    (adjacent words merge first, punctuation and connectives late), with cluster sizes as
    heights as that masker does; for a text pair the two segment trees are joined only at the
    root, so no coalition straddles the boundary before the top level.
    """
    from shap.maskers._text import partition_tree

    d = len(features)
    segment_words = [
        [w for w, s in zip(features.words, features.segments, strict=True) if s == segment]
        for segment in (0, 1)
    ]
    rows: list[NDArray[np.float64]] = []
    roots: list[int] = []
    offset = 0  # first global leaf index of the segment
    next_node = d  # global index of the next internal node
    for words in segment_words:
        if not words:
            continue
        size = len(words)
        tree = partition_tree(words, [])
        local_to_global = np.concatenate(
            [offset + np.arange(size), next_node + np.arange(size - 1)]
        ).astype(np.float64)
        if size > 1:
            remapped = tree.copy()
            remapped[:, 0] = local_to_global[tree[:, 0].astype(int)]
            remapped[:, 1] = local_to_global[tree[:, 1].astype(int)]
            rows.append(remapped)
            roots.append(next_node + size - 2)
        else:
            roots.append(offset)
        offset += size
        next_node += size - 1
    if len(roots) == 2:
        rows.append(np.array([[roots[0], roots[1], 0.0, float(d)]]))
    linkage = np.concatenate(rows) if rows else np.zeros((0, 4))
    if len(linkage):
        linkage[:, 2] = linkage[:, 3] / linkage[:, 3].max()
    return linkage


def partition_keep_masks_ahead(features: WordFeatures, *, max_evals: int) -> NDArray[np.bool_]:
    """The keep-masks a Partition run with `max_evals` is certain to evaluate, whatever the
    model answers, shape (m, d): all hidden, all kept, then every round of shap's Owen
    recursion that empties its queue before the limit.

    With a batch as big as the budget (`_explain_keep_masks`), each round pops the whole queue:
    every pending cluster, under the context it was reached in, is split into its two children.
    The outputs only order the queue (and so choose which clusters a round cut short by the
    limit expands); the clusters and contexts of a round popped whole follow from the word
    tree alone. The masks are built as shap 0.51's `PartitionExplainer.owen` builds them (the
    parent's context joined with a child's members); a test holds them equal to what shap
    sends. Of the round the limit cuts short, and all after it, nothing is returned.
    """
    from shap.utils import make_masks

    d = len(features)
    masks = [np.zeros(d, dtype=bool), np.ones(d, dtype=bool)]
    if d < 2:
        return np.array(masks)
    clustering = word_partition_tree(features)
    members = make_masks(clustering).toarray().astype(bool)
    limit = max_evals - 2  # what `explain_row` leaves `owen` after the two ends
    evaluated = 0
    pending = [(np.zeros(d, dtype=bool), 2 * d - 2)]  # (context, cluster): the root, hidden
    while True:
        clusters = [(context, node) for context, node in pending if node >= d]
        # shap pops while evaluated + masks so far < limit: the last cluster's pair goes in
        # only if the round's other pairs leave room before the limit.
        if not clusters or evaluated >= limit or evaluated + 2 * (len(clusters) - 1) >= limit:
            return np.array(masks)
        pending = []
        for context, node in clusters:
            left, right = (int(child) for child in clustering[node - d, :2])
            with_left, with_right = context | members[left], context | members[right]
            masks += [with_left, with_right]
            pending += [
                (context, left),
                (context, right),
                (with_right, left),
                (with_left, right),
            ]
        evaluated += 2 * len(clusters)


def partition_inputs(
    features: WordFeatures,
    *,
    max_evals: int,
    masking: Masking = "remove",
    mask_token: str | None = None,
) -> list[TextInput]:
    """The inputs of `partition_keep_masks_ahead`: what a Partition run sends whatever the
    model answers."""
    keep = partition_keep_masks_ahead(features, max_evals=max_evals)
    return features.compose_many(keep, masking=masking, mask_token=mask_token)


def _keep_mask_masker(d: int, clustering: NDArray[np.float64] | None) -> Any:
    """A shap masker whose masked "input" is the keep-mask itself, shape (1, d)."""
    from shap.maskers import Masker

    class KeepMaskMasker(Masker):
        def __init__(self) -> None:
            self.shape = (1, d)
            self.clustering = clustering
            # Every call returns a fresh array, so shap need not deep-copy it.
            self.immutable_outputs = True

        def __call__(self, mask: Any, *args: Any) -> tuple[NDArray[np.bool_]]:
            keep = self._standardize_mask(mask, *args)
            return (np.array(keep, dtype=bool).reshape(1, d),)

    return KeepMaskMasker()


def explain_shap(
    features: WordFeatures,
    predict: PredictFunction,
    *,
    columns: Sequence[int],
    algorithm: ShapAlgorithm = "partition",
    max_evals: int = 500,
    seed: int = 0,
    masking: Masking = "remove",
    mask_token: str | None = None,
    batch_size: int | None = None,
) -> WordAttributions:
    """Explain the output `columns` of `predict` around `features`, all columns at once.

    `predict(inputs)` returns an (n, C) array. One explanation covers every column, so each
    column's model is evaluated on the same coalitions (for Partition, the recursion expands
    the coalitions where any explained column changes most). Partition follows
    `word_partition_tree`; Permutation samples plain permutations of the words; Kernel fits
    on `max_evals` coalitions against the all-hidden background. `max_evals` bounds the model
    evaluations; Permutation needs at least one forward and backward pass, `2d + 1`, and is
    given that when `max_evals` is smaller. `batch_size` is how many coalitions shap hands
    over per call (Partition, Permutation); the default, `max_evals`, makes each Partition
    round one call (shap's own default is 5 for text). The evaluator sorts and pads per call,
    so bigger calls pad less: on MiniLM-L6 this took the engine from 1.32× to 1.17× the pure
    forward time (bench/README.md), at the price of expanding the coalition tree a round at
    a time rather than strictly best-first.
    `seed` seeds this explanation's own stream of numpy's global generator (see
    `_GLOBAL_NUMPY_RANDOM`), so results do not depend on other explanations running at once.
    Additivity: `base_value_of(t) + scores_of(t).sum()` equals the model output on the
    unperturbed input (exactly for Partition and Permutation, up to the fit for Kernel).
    """
    # Imported before any random stream is installed, as importing might draw from it.
    import shap  # noqa: F401

    d = len(features)
    if d == 0:
        raise ValueError("cannot explain an input without words")
    run_algorithm = _SHAP_ALGORITHMS.get(algorithm)
    if run_algorithm is None:
        raise ValueError(f"unknown SHAP algorithm {algorithm!r}; known: {sorted(_SHAP_ALGORITHMS)}")
    selected = list(columns)
    stream = GlobalRandomStream(seed)
    model = _coalition_model(
        features, predict, selected, stream=stream, masking=masking, mask_token=mask_token
    )
    with stream.installed():
        values, base = run_algorithm(
            model, features, max_evals=max_evals, seed=seed, batch_size=batch_size
        )
    return WordAttributions(
        words=features.words,
        targets=tuple(selected),
        scores=values.reshape(d, len(selected)).T,
        base_values=base.reshape(len(selected)),
    )


def _coalition_model(
    features: WordFeatures,
    predict: PredictFunction,
    selected: list[int],
    *,
    stream: GlobalRandomStream,
    masking: Masking,
    mask_token: str | None,
) -> Callable[[NDArray[Any]], NDArray[np.float64]]:
    """What shap calls: (n, d) keep-masks -> the `selected` columns of `predict`, (n, C').

    The prediction runs with the explanation's random stream set aside, so the evaluator's
    work never draws from it.
    """

    def model(keep_masks: NDArray[Any]) -> NDArray[np.float64]:
        inputs = features.compose_many(
            np.asarray(keep_masks) > 0.5, masking=masking, mask_token=mask_token
        )
        with stream.set_aside():
            outputs = np.asarray(predict(inputs), dtype=np.float64)
        return outputs[:, selected]

    return model


KeepMaskModel = Callable[[NDArray[Any]], NDArray[np.float64]]


class ShapRun(Protocol):
    """One SHAP algorithm run on `model` (keep masks (m, d) -> outputs (m, c)) over the d
    words, called while the explanation's random stream is installed: the values, (d, c),
    and the base values, (c,)."""

    def __call__(
        self,
        model: KeepMaskModel,
        features: WordFeatures,
        *,
        max_evals: int,
        seed: int,
        batch_size: int | None,
    ) -> tuple[NDArray[np.float64], NDArray[np.float64]]: ...


def _run_partition(
    model: KeepMaskModel,
    features: WordFeatures,
    *,
    max_evals: int,
    seed: int,
    batch_size: int | None,
) -> tuple[NDArray[np.float64], NDArray[np.float64]]:
    import shap

    masker = _keep_mask_masker(len(features), word_partition_tree(features))
    explainer = shap.explainers.PartitionExplainer(model, masker)
    return _explain_keep_masks(explainer, len(features), budget=max_evals, batch_size=batch_size)


def _run_permutation(
    model: KeepMaskModel,
    features: WordFeatures,
    *,
    max_evals: int,
    seed: int,
    batch_size: int | None,
) -> tuple[NDArray[np.float64], NDArray[np.float64]]:
    import shap

    # No clustering: with one, shap shuffles along the tree inside numba, whose generator
    # numpy's seed does not reach, and results are not reproducible. Plain permutations
    # (numpy's global generator, our stream) estimate the ordinary Shapley values.
    d = len(features)
    masker = _keep_mask_masker(d, None)
    explainer = shap.explainers.PermutationExplainer(model, masker, seed=seed % 2**32)
    budget = max(max_evals, 2 * d + 1)
    return _explain_keep_masks(explainer, d, budget=budget, batch_size=batch_size)


def _run_kernel(
    model: KeepMaskModel,
    features: WordFeatures,
    *,
    max_evals: int,
    seed: int,
    batch_size: int | None,
) -> tuple[NDArray[np.float64], NDArray[np.float64]]:
    import shap

    d = len(features)
    kernel = shap.KernelExplainer(model, np.zeros((1, d)))
    raw = kernel.shap_values(np.ones((1, d)), nsamples=max_evals, l1_reg=False, silent=True)
    return np.asarray(raw, dtype=np.float64), np.asarray(kernel.expected_value, dtype=np.float64)


def _explain_keep_masks(
    explainer: Any, d: int, *, budget: int, batch_size: int | None
) -> tuple[NDArray[np.float64], NDArray[np.float64]]:
    result = explainer(
        np.zeros((1, d)), max_evals=budget, batch_size=batch_size or budget, silent=True
    )
    return (
        np.asarray(result.values, dtype=np.float64),
        np.asarray(result.base_values, dtype=np.float64),
    )


_SHAP_ALGORITHMS: dict[str, ShapRun] = {
    "partition": _run_partition,
    "permutation": _run_permutation,
    "kernel": _run_kernel,
}
