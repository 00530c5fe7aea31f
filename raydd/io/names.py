"""Class names that become folder names: refused unless each is one safe path component.

A class name comes from the data (a folder's name, or a Parquet label from a hub) and becomes
``images/<class>/`` in every distilled set raydd writes. A label such as ``../../x`` would make the writer put
files outside its output, so every source is checked when it is listed and every writer checks again.
"""

from __future__ import annotations

from collections.abc import Iterable

__all__ = ["UnsafeClassNameError", "check_class_names"]


class UnsafeClassNameError(ValueError):
    """A class name that cannot be used as a folder name without leaving the output."""


def _problem(name: object) -> str | None:
    if not isinstance(name, str):
        return f"is a {type(name).__name__}, not a string"
    if name in ("", ".", ".."):
        return "is empty, '.' or '..'"
    if "/" in name or "\\" in name:
        return "contains a path separator"
    if any(ord(ch) < 32 or ord(ch) == 127 for ch in name):
        return "contains a NUL or control character"
    return None


def check_class_names(names: Iterable[object], *, source: str = "the data") -> None:
    """Raise ``UnsafeClassNameError`` naming the first class name that is not one safe path component."""
    for name in names:
        if (problem := _problem(name)) is not None:
            raise UnsafeClassNameError(
                f"class name {name!r} in {source} {problem}: raydd writes each class to a folder of its name, so "
                "it must be one path component (rename the class folder, or relabel the Parquet column)")
