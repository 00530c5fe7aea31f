import pytest

from raydd.data import ImageIndex, sample_per_class


def _index(n_a: int = 20, n_b: int = 5, reverse: bool = False) -> ImageIndex:
    files = {"a": [f"/d/a/{i}.png" for i in range(n_a)], "b": [f"/d/b/{i}.png" for i in range(n_b)]}
    if reverse:
        files = {k: v[::-1] for k, v in reversed(files.items())}
    return ImageIndex(root="/d", files=files)


def test_same_seed_same_files_whatever_the_listing_order():
    first = sample_per_class(_index(), 4, seed=3)
    assert first == sample_per_class(_index(reverse=True), 4, seed=3)
    assert len(first["a"]) == 4 and len(set(first["a"])) == 4


def test_different_seeds_draw_differently():
    assert sample_per_class(_index(), 4, seed=1)["a"] != sample_per_class(_index(), 4, seed=2)["a"]


def test_classes_are_drawn_independently():
    # Adding files to class b must not change class a's draw.
    assert sample_per_class(_index(n_b=5), 4, seed=0)["a"] == sample_per_class(_index(n_b=9), 4, seed=0)["a"]


def test_small_class_gives_all_and_too_small_is_an_error():
    assert len(sample_per_class(_index(), 10, seed=0)["b"]) == 5
    with pytest.raises(ValueError, match=r"b \(5\)"):
        sample_per_class(_index(), 10, seed=0, min_count=8)
