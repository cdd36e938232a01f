"""The Volume data model and its geometry."""

from __future__ import annotations

import numpy as np
import pytest

from medssl.io import AXIAL, Volume, orientation_code


def test_2d_array_becomes_one_slice_and_float32():
    v = Volume(np.zeros((4, 5), dtype=np.int16))
    assert v.shape == (1, 4, 5) and v.array.dtype == np.float32


def test_default_direction_is_axial_lps():
    v = Volume(np.zeros((2, 3, 4)), spacing=(2.0, 0.5, 0.25), origin=(1.0, 2.0, 3.0))
    np.testing.assert_array_equal(v.direction, AXIAL)
    assert v.orientation == "LPS"
    # index (k, j, i) -> origin + (i*dx, j*dy, k*dz) in (x, y, z)
    np.testing.assert_allclose(v.index_to_physical([1, 2, 3]), [1 + 0.75, 2 + 1.0, 3 + 2.0])
    np.testing.assert_allclose(v.physical_to_index(v.index_to_physical([1, 2, 3])), [1, 2, 3])


@pytest.mark.parametrize(
    ("direction", "code"),
    [
        (AXIAL, "LPS"),
        (AXIAL @ np.diag([-1.0, -1.0, -1.0]), "RAI"),
        (np.array([[0, 0, 1.0], [-1.0, 0, 0], [0, -1.0, 0]]), "LIA"),
    ],
)
def test_orientation_code(direction, code):
    assert orientation_code(direction) == code


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"array": np.zeros((2, 2, 2, 2))}, "must be"),
        ({"array": np.zeros((0, 2, 2))}, "empty"),
        ({"array": np.zeros((2, 2, 2)), "spacing": (1.0, 0.0, 1.0)}, "spacing"),
        ({"array": np.zeros((2, 2, 2)), "spacing": (1.0, float("nan"), 1.0)}, "spacing"),
        ({"array": np.zeros((2, 2, 2)), "direction": np.zeros((3, 3))}, "singular"),
        ({"array": np.zeros((2, 2, 2)), "origin": (0.0, 0.0)}, "origin"),
    ],
)
def test_invalid_volumes_are_rejected(kwargs, match):
    with pytest.raises(ValueError, match=match):
        Volume(**kwargs)


def test_with_array_keeps_geometry_and_checks_shape():
    v = Volume(np.zeros((2, 3, 4)), spacing=(2.0, 1.0, 1.0), modality="CT", meta={"a": 1})
    w = v.with_array(np.ones((2, 3, 4)))
    assert w.same_grid(v) and w.modality == "CT" and w.meta == {"a": 1}
    w.meta["b"] = 2
    assert "b" not in v.meta
    with pytest.raises(ValueError, match="shape"):
        v.with_array(np.ones((2, 3, 5)))


def test_looks_like_ct():
    rng = np.random.default_rng(0)
    ct = np.where(rng.random((4, 32, 32)) < 0.4, -1000.0, 40.0) + rng.normal(0, 10, (4, 32, 32))
    assert Volume(ct).looks_like_ct()
    assert not Volume((ct + 1000) / 2000).looks_like_ct()  # min-max scaled
    assert not Volume(rng.random((4, 32, 32)) * 800).looks_like_ct()  # MR-like


def test_content_hash_depends_on_values_and_geometry():
    v = Volume(np.zeros((2, 3, 4)))
    assert v.content_hash() == Volume(np.zeros((2, 3, 4))).content_hash()
    assert v.content_hash() != Volume(np.zeros((2, 3, 4)), spacing=(2, 1, 1)).content_hash()
    assert v.content_hash() != v.with_array(np.ones((2, 3, 4))).content_hash()
