"""Word features: positions, segments, and the texts a keep-mask stands for."""

from __future__ import annotations

import numpy as np
import pytest

from trustdiff.explain.words import WordFeatures


def test_words_are_whitespace_tokens_by_position() -> None:
    features = WordFeatures.from_input("  the film,  the   END ")
    assert features.words == ("the", "film,", "the", "END")
    assert features.segments == (0, 0, 0, 0)
    assert features.original() == "the film, the END"
    keep = np.array([True, False, True, True])
    assert features.compose(keep) == "the the END"
    assert features.compose(keep, masking="mask_token", mask_token="[MASK]") == (
        "the [MASK] the END"
    )
    assert features.compose(np.zeros(4, dtype=bool)) == ""


def test_pairs_keep_their_boundary_and_never_expose_sep() -> None:
    features = WordFeatures.from_input(("a good plot", "dull cast"))
    assert features.words == ("a", "good", "plot", "dull", "cast")
    assert features.segments == (0, 0, 0, 1, 1)
    assert "[SEP]" not in features.words
    rng = np.random.default_rng(0)
    for keep in rng.random((50, 5)) > 0.5:
        composed = features.compose(keep)
        assert isinstance(composed, tuple) and len(composed) == 2
        assert composed[0].split() == [
            w
            for w, k, s in zip(features.words, keep, features.segments, strict=True)
            if k and s == 0
        ]
        assert composed[1].split() == [
            w
            for w, k, s in zip(features.words, keep, features.segments, strict=True)
            if k and s == 1
        ]
    assert features.compose(np.zeros(5, dtype=bool)) == ("", "")
    masked = features.compose(
        np.array([1, 0, 1, 0, 1], dtype=bool), masking="mask_token", mask_token="<mask>"
    )
    assert masked == ("a <mask> plot", "<mask> cast")


def test_compose_validates() -> None:
    features = WordFeatures.from_input("one two")
    with pytest.raises(ValueError, match="shape"):
        features.compose(np.ones(3, dtype=bool))
    with pytest.raises(ValueError, match="mask_token"):
        features.compose(np.ones(2, dtype=bool), masking="mask_token")
    with pytest.raises(ValueError, match="masking"):
        features.compose(np.ones(2, dtype=bool), masking="blank")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="input"):
        WordFeatures.from_input(["not", "a", "tuple"])  # type: ignore[arg-type]
