"""Class maps: which observer output each class folder is scored against.

A silent mismatch between the data's class order and the observer's outputs was the most reported bug of
RDED's reference code (accuracies of 0.5–23 % instead of 40–50 %). raydd makes the mapping explicit and
checks it against both the data and the observer before any work starts.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from functools import cache
from importlib import resources
from pathlib import Path

__all__ = ["ClassMap", "imagenet_wnids", "load_class_map"]


@cache
def imagenet_wnids() -> tuple[str, ...]:
    """The 1000 ImageNet-1K wnids in the index order of torchvision's (and most) ImageNet models."""
    text = resources.files("raydd.data").joinpath("imagenet_synsets.txt").read_text()
    return tuple(line.strip() for line in text.splitlines() if line.strip())


@dataclass(frozen=True)
class ClassMap:
    """Class folder names, in the data's class order, and the observer output index of each.

    ``classes[i]`` is the data's class ``i``; ``indices[i]`` the observer logit it is scored by. Restricting
    an observer to ``indices`` gives logits in the data's class order (e.g. Imagenette's 10 of 1000).
    """

    classes: tuple[str, ...]
    indices: tuple[int, ...]
    explicit: bool = True

    def __post_init__(self) -> None:
        if len(self.classes) != len(self.indices):
            raise ValueError("a class map needs one observer index per class")
        if len(set(self.classes)) != len(self.classes):
            raise ValueError("a class map lists a class twice")
        if len(set(self.indices)) != len(self.indices):
            dup = sorted({i for i in self.indices if self.indices.count(i) > 1})
            raise ValueError(f"a class map sends two classes to the same observer output(s): {dup}")
        if any(i < 0 for i in self.indices):
            raise ValueError("observer indices must be non-negative")

    @classmethod
    def from_sorted(cls, classes: Sequence[str]) -> ClassMap:
        """The default: sorted folder names, scored by outputs 0..n-1 in that order."""
        names = tuple(sorted(classes))
        return cls(names, tuple(range(len(names))), explicit=False)

    @classmethod
    def in_order(cls, classes: Sequence[str]) -> ClassMap:
        """The default: the data's own class order (sorted folder names, or a Parquet source's integer labels in
        order), scored by outputs 0..n-1 in that order."""
        return cls(tuple(classes), tuple(range(len(classes))), explicit=False)

    @classmethod
    def imagenet(cls, classes: Sequence[str]) -> ClassMap:
        """ImageNet wnid folders (any subset: Imagenette, Imagewoof, ImageNet-100) → ImageNet-1K outputs."""
        position = {w: i for i, w in enumerate(imagenet_wnids())}
        unknown = [c for c in sorted(classes) if c not in position]
        if unknown:
            raise ValueError(f"not ImageNet-1K wnids: {', '.join(unknown[:5])}"
                             + (f" and {len(unknown) - 5} more" if len(unknown) > 5 else ""))
        names = tuple(sorted(classes))
        return cls(names, tuple(position[c] for c in names))

    @classmethod
    def from_mapping(cls, mapping: Mapping[str, int]) -> ClassMap:
        """An explicit ``{folder name: observer index}``; the data's class order follows the indices."""
        items = sorted(mapping.items(), key=lambda kv: (int(kv[1]), kv[0]))
        return cls(tuple(k for k, _ in items), tuple(int(v) for _, v in items))

    @property
    def num_classes(self) -> int:
        return len(self.classes)

    def index_of(self, name: str) -> int:
        """The data's class index of a folder name."""
        return self.classes.index(name)

    def restricted(self, num_outputs: int) -> list[int] | None:
        """Observer columns to keep, or ``None`` when the observer's outputs already are the classes."""
        if list(self.indices) == list(range(num_outputs)):
            return None
        return list(self.indices)

    def check(self, data_classes: Sequence[str], num_outputs: int | None = None) -> None:
        """Refuse a map that does not cover the data or does not fit the observer, before any work.

        Raises:
            ValueError: naming the classes that are missing, or the indices out of the observer's range.
        """
        missing = sorted(set(data_classes) - set(self.classes))
        if missing:
            raise ValueError(
                f"class map has no entry for data class(es) {', '.join(missing[:8])}"
                f"{' …' if len(missing) > 8 else ''}; pass a class map that names every class folder"
            )
        if num_outputs is None:
            return
        too_big = [(c, i) for c, i in zip(self.classes, self.indices, strict=True) if i >= num_outputs]
        if too_big:
            c, i = too_big[0]
            raise ValueError(f"class {c!r} maps to observer output {i}, but the observer has {num_outputs}")
        if num_outputs != self.num_classes and not self.explicit:
            raise ValueError(
                f"the data has {self.num_classes} classes but the observer has {num_outputs} outputs, and no "
                "class map says which output is which class; pass --class-map (e.g. 'imagenet' for "
                "ImageNet wnid folders, or a JSON file {folder: index})"
            )

    def to_dict(self) -> dict[str, int]:
        return dict(zip(self.classes, self.indices, strict=True))


def load_class_map(spec: str | Mapping[str, int] | ClassMap | None, classes: Sequence[str]) -> ClassMap:
    """Resolve a class-map spec against the data's class folders.

    Args:
        spec: ``None`` (the data's class order → 0..n-1), ``"sorted"`` (sorted names → 0..n-1), ``"imagenet"``
            (wnid folders → ImageNet-1K index), a dict, a ``ClassMap``, or a file: JSON ``{name: index}`` or text
            lines ``name index`` (or one name a line, in index order).
        classes: the data's class names, in the data's order (``ImageIndex.classes``).

    Raises:
        ValueError: when the map does not cover ``classes``.
    """
    if isinstance(spec, ClassMap):
        cmap = spec
    elif spec is None:
        cmap = ClassMap.in_order(classes)
    elif spec == "sorted":
        cmap = ClassMap.from_sorted(classes)
    elif spec == "imagenet":
        cmap = ClassMap.imagenet(classes)
    elif isinstance(spec, Mapping):
        cmap = ClassMap.from_mapping(spec)
    else:
        cmap = ClassMap.from_mapping(_read_mapping_file(Path(spec)))
    cmap.check(classes)
    if len(cmap.classes) != len(classes):
        kept = {c: i for c, i in cmap.to_dict().items() if c in set(classes)}
        cmap = ClassMap.from_mapping(kept) if cmap.explicit else ClassMap.in_order(list(kept))
    return cmap


def _read_mapping_file(path: Path) -> dict[str, int]:
    if not path.exists():
        raise ValueError(f"class map {path} does not exist (or use 'sorted' or 'imagenet')")
    text = path.read_text()
    if path.suffix == ".json":
        data = json.loads(text)
        if not isinstance(data, dict):
            raise ValueError(f"{path}: expected a JSON object {{folder name: observer index}}")
        return {str(k): int(v) for k, v in data.items()}
    mapping: dict[str, int] = {}
    for n, line in enumerate(ln.split() for ln in text.splitlines() if ln.strip()):
        mapping[line[0]] = int(line[1]) if len(line) > 1 else n
    return mapping
