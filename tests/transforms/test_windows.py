"""The named CT windows and the HU intensity map live in medssl.transforms; every other fixed
HU range of medssl agrees with them."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest
import torch

from medssl.io import dicom_write
from medssl.transforms import (
    AIR_HU,
    BONE,
    FULL,
    LUNG,
    SOFT_TISSUE,
    WINDOWS,
    Window,
    hu_to_net,
    net_to_hu,
    outside_fov,
    window,
)


def test_windows_are_the_radiology_ones():
    assert (SOFT_TISSUE.width, SOFT_TISSUE.center) == (400.0, 40.0)
    assert (LUNG.width, LUNG.center) == (1500.0, -600.0)
    assert (BONE.width, BONE.center) == (1800.0, 400.0)
    assert tuple(FULL) == (-1000.0, 1000.0)
    assert SOFT_TISSUE.label() == "W 400 L 40"
    assert Window.from_level(40.0, 400.0) == SOFT_TISSUE
    assert WINDOWS["soft_tissue"] is SOFT_TISSUE
    lo, hi = SOFT_TISSUE  # still a (low, high) pair
    assert (lo, hi) == (-160.0, 240.0)


def test_window_clips_and_maps_to_unit_range():
    hu = np.array([-2000.0, -160.0, 40.0, 240.0, 3000.0])
    np.testing.assert_array_equal(window(hu, SOFT_TISSUE), [0.0, 0.0, 0.5, 1.0, 1.0])
    np.testing.assert_array_equal(window(hu), window(hu, (-1000.0, 1000.0)))
    assert window(hu).dtype == np.float64


def test_the_other_fixed_windows_agree():
    # the display hint of written CT series (io may not import transforms)
    assert (SOFT_TISSUE.center, SOFT_TISSUE.width) == dicom_write.CT_DISPLAY_WINDOW
    # the denoising metrics (until they import these windows)
    from medssl.denoise import metrics

    assert tuple(metrics.SOFT_TISSUE_WINDOW) == tuple(SOFT_TISSUE)
    assert tuple(metrics.FULL_WINDOW) == tuple(FULL)
    hu = np.linspace(-1500.0, 1500.0, 31)
    np.testing.assert_array_equal(metrics.window(hu, SOFT_TISSUE), window(hu, SOFT_TISSUE))


@pytest.mark.parametrize("kind", ["numpy", "torch"])
def test_intensity_map(kind):
    values = [-3024.0, -1024.0, 0.0, 1000.0]
    hu = torch.tensor(values) if kind == "torch" else np.array(values)
    u = hu_to_net(hu)
    assert type(u) is type(hu)
    np.testing.assert_allclose(np.asarray(u), [-1.024, -1.024, 0.0, 1.0])
    np.testing.assert_allclose(np.asarray(net_to_hu(u)), [AIR_HU, AIR_HU, 0.0, 1000.0])
    np.testing.assert_array_equal(np.asarray(outside_fov(hu)), [True, False, False, False])


def test_intensity_map_is_the_denoisers():
    from medssl.denoise.filter2noise import intensity

    hu = torch.linspace(-3000.0, 3000.0, 61)
    assert torch.equal(intensity.hu_to_net(hu), hu_to_net(hu))
    assert (intensity.AIR_HU, intensity.HU_PER_UNIT) == (AIR_HU, 1000.0)


def test_windows_import_without_torch():
    code = "import sys, medssl.transforms; assert 'torch' not in sys.modules"
    subprocess.run([sys.executable, "-c", code], check=True)
