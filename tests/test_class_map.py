import json

import pytest

from raydd.data import ClassMap, imagenet_wnids, load_class_map

IMAGENETTE = {"n01440764": 0, "n02102040": 217, "n02979186": 482, "n03000684": 491, "n03028079": 497,
              "n03394916": 566, "n03417042": 569, "n03425413": 571, "n03445777": 574, "n03888257": 701}


def test_default_follows_the_datas_class_order_and_sorted_sorts(tmp_path):
    from raydd.data import list_images
    from tests.conftest import make_image_folder

    folders = list_images(str(make_image_folder(tmp_path, ["dog", "cat", "bird"], 1, size=8)))
    cmap = load_class_map(None, folders.classes)  # folders come sorted by name
    assert cmap.classes == ("bird", "cat", "dog")
    assert cmap.indices == (0, 1, 2)
    assert cmap.restricted(3) is None
    assert load_class_map(None, ["2", "10"]).classes == ("2", "10")  # integer labels keep label order
    assert load_class_map("sorted", ["dog", "cat"]).classes == ("cat", "dog")


def test_imagenet_subset_maps_wnids_to_imagenet_indices():
    assert len(imagenet_wnids()) == 1000
    cmap = load_class_map("imagenet", list(IMAGENETTE))
    assert cmap.to_dict() == IMAGENETTE
    cmap.check(list(IMAGENETTE), 1000)
    assert cmap.restricted(1000) == sorted(IMAGENETTE.values())


def test_unknown_wnid_is_an_error():
    with pytest.raises(ValueError, match="not ImageNet-1K wnids: n99999999"):
        load_class_map("imagenet", ["n01440764", "n99999999"])


def test_mapping_files(tmp_path):
    (tmp_path / "m.json").write_text(json.dumps({"cat": 3, "dog": 5}))
    assert load_class_map(str(tmp_path / "m.json"), ["cat", "dog"]).to_dict() == {"cat": 3, "dog": 5}
    (tmp_path / "m.txt").write_text("dog\ncat\n")
    assert load_class_map(str(tmp_path / "m.txt"), ["cat", "dog"]).classes == ("dog", "cat")
    with pytest.raises(ValueError, match="does not exist"):
        load_class_map(str(tmp_path / "missing.json"), ["cat"])


def test_map_missing_a_data_class_names_it():
    with pytest.raises(ValueError, match="no entry for data class.*horse"):
        load_class_map({"cat": 0, "dog": 1}, ["cat", "dog", "horse"])


def test_observer_output_count_mismatch_is_refused():
    cmap = load_class_map(None, [f"c{i}" for i in range(10)])
    with pytest.raises(ValueError, match="10 classes but the observer has 1000 outputs"):
        cmap.check(cmap.classes, 1000)
    with pytest.raises(ValueError, match="maps to observer output 7"):
        ClassMap(("a", "b"), (0, 7)).check(["a", "b"], 5)


def test_two_classes_on_one_output_is_refused():
    with pytest.raises(ValueError, match="same observer output"):
        ClassMap(("a", "b"), (1, 1))


def test_superset_map_is_cut_to_the_data_classes():
    cmap = load_class_map({"a": 4, "b": 2, "c": 9}, ["a", "c"])
    assert cmap.to_dict() == {"a": 4, "c": 9}
