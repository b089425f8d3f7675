"""Resolve user-supplied file paths, refusing any that escape a configured root folder."""

from __future__ import annotations

from pathlib import Path

from trustdiff.errors import PathOutsideRootError


def resolve_under_root(path: str | Path, root: Path | None, *, what: str) -> Path:
    """The absolute, symlink-resolved form of `path`, which must lie under `root`.

    A relative `path` is joined to `root` (or to the working directory when `root` is None).
    Symlinks are resolved *before* the containment check, so a link inside the root that
    points outside it is refused like `../` is. `root=None` accepts any local path: the CLI's
    default, where the user already has the filesystem. `what` names the path in the error
    ("reference checkpoint", "dataset", ...).

    Raises `PathOutsideRootError` when the resolved path is not `root` or below it, and
    `ValueError` for an empty path. The path need not exist; callers check that themselves
    so that "missing" and "outside" stay distinct errors.
    """
    text = str(path)
    if not text.strip():
        raise ValueError(f"{what} path is empty")
    if "\x00" in text:
        raise PathOutsideRootError(f"{what} path contains a NUL byte: {text!r}")
    candidate = Path(text)
    if root is None:
        return candidate.resolve()
    resolved_root = root.resolve()
    resolved = (resolved_root / candidate).resolve()
    if not resolved.is_relative_to(resolved_root):
        raise PathOutsideRootError(
            f"{what} path {text!r} resolves outside the allowed root {str(resolved_root)!r}",
            details={"path": text, "root": str(resolved_root)},
        )
    return resolved
