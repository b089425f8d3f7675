"""Path resolution under a root: relative joins, escapes by `..` and by symlink."""

from __future__ import annotations

from pathlib import Path

import pytest

from trustdiff.errors import PathOutsideRootError
from trustdiff.paths import resolve_under_root


def test_relative_paths_join_the_root(tmp_path: Path) -> None:
    assert resolve_under_root("models/bert", tmp_path, what="checkpoint") == (
        tmp_path.resolve() / "models" / "bert"
    )


def test_absolute_paths_inside_the_root_are_accepted(tmp_path: Path) -> None:
    inside = tmp_path / "data" / "dev.jsonl"
    assert resolve_under_root(inside, tmp_path, what="dataset") == inside.resolve()


def test_the_root_itself_is_accepted(tmp_path: Path) -> None:
    assert resolve_under_root(".", tmp_path, what="dataset") == tmp_path.resolve()


@pytest.mark.parametrize("escape", ["../outside", "models/../../outside", "/etc/passwd"])
def test_paths_escaping_the_root_are_refused(tmp_path: Path, escape: str) -> None:
    root = tmp_path / "root"
    root.mkdir()
    with pytest.raises(PathOutsideRootError, match=r"dataset path .* outside the allowed root"):
        resolve_under_root(escape, root, what="dataset")


def test_a_symlink_pointing_outside_the_root_is_refused(tmp_path: Path) -> None:
    root = tmp_path / "root"
    root.mkdir()
    (tmp_path / "secret").mkdir()
    (root / "innocent").symlink_to(tmp_path / "secret")
    with pytest.raises(PathOutsideRootError):
        resolve_under_root("innocent", root, what="reference checkpoint")


def test_a_symlink_inside_the_root_is_followed(tmp_path: Path) -> None:
    (tmp_path / "real").mkdir()
    (tmp_path / "alias").symlink_to(tmp_path / "real")
    assert resolve_under_root("alias", tmp_path, what="checkpoint") == (tmp_path / "real").resolve()


def test_without_a_root_any_local_path_is_accepted(tmp_path: Path) -> None:
    assert (
        resolve_under_root(tmp_path / ".." / "x", None, what="dataset")
        == (tmp_path.parent / "x").resolve()
    )


def test_an_empty_path_is_refused(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="dataset path is empty"):
        resolve_under_root("  ", tmp_path, what="dataset")
