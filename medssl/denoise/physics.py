"""Image quality of a denoised CT measured the way a physicist does, against its own input
(no reference image needed).

Three measures, each taken at the same places in the input and in the output, chosen on the
input only (a denoiser that smooths would otherwise change where it is measured):

* **Noise SD** in homogeneous fat and soft tissue: the patches that
  :func:`~medssl.denoise.noise_model.estimate_noise_model` picks on the input, measured in both
  images, and its relative reduction.
* **NPS** (noise power spectrum) in the same patches, and its NPS-weighted mean frequency:
  over-smoothing moves the noise power to low frequencies (the "plastic" look that
  radiologists reject), so the mean frequency drops.
* **Edge width**: the 10-90 % rise distance of the edge-spread function (ESF) at strong,
  straight, high-contrast edges (body/air, lung/chest wall, bone/soft tissue) found on the
  input, away from the field-of-view border and its padding. Pixels near each edge are binned
  by their distance to the edge (aligned at the edge's sub-pixel position: the oversampled
  slanted-edge method of ISO 12233 and Samei et al., Med. Phys. 1998, applied to many short
  edges), averaged into one ESF per image, and the rise distance compared.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from scipy import ndimage

from medssl.denoise.noise_model import (
    MIN_PATCHES,
    NoiseModel,
    _autocovariance,
    _nps_from_acf,
    _patch_size,
    _undo_mean_removal,
    noise_only,
    tissue_class_masks,
)

__all__ = [
    "EdgeSites",
    "NoisePatches",
    "QualityReport",
    "edge_sites",
    "edge_spread",
    "field_of_view",
    "noise_in_patches",
    "noise_patches",
    "quality_report",
    "rise_distance",
]

#: Smallest step (HU) between the two sides of an edge used for the edge width.
MIN_EDGE_CONTRAST_HU = 400.0
#: Each side of an edge must be flat within this fraction of the step.
EDGE_FLATNESS = 0.12
#: Straightness: smallest coherence of the local structure tensor at an edge.
EDGE_COHERENCE = 0.9
#: Edges per slice at most (evenly chosen along the candidates).
MAX_EDGES_PER_SLICE = 400
#: Below this (smoothed) HU a pixel is padding outside the field of view, not air.
BELOW_AIR_HU = -1150.0


def _slice_indices(depth: int, max_slices: int) -> np.ndarray:
    """The estimator's choice of evenly spaced slices."""
    idx = np.linspace(0, depth - 1, min(max_slices, depth)).round()
    return np.unique(idx).astype(int)


def _as_volume(hu: np.ndarray, name: str) -> np.ndarray:
    arr = np.asarray(hu, dtype=np.float32)
    if arr.ndim == 2:
        arr = arr[None]
    if arr.ndim != 3:
        raise ValueError(f"{name} must be (Y, X) or (Z, Y, X), got shape {np.shape(hu)}")
    return arr


# ---------------------------------------------------------------------------------------------
# noise in the same patches


@dataclass(frozen=True)
class NoisePatches:
    """Square noise patches: slice ``z`` and top-left corner ``(y, x)`` of each, size ``patch``."""

    z: np.ndarray
    y: np.ndarray
    x: np.ndarray
    patch: int

    def __len__(self) -> int:
        return int(self.z.size)

    def tiles(self, volume: np.ndarray) -> np.ndarray:
        """The patches of ``volume`` ``(Z, Y, X)``, each with its mean removed: ``(N, P, P)``."""
        p = self.patch
        iy, ix = np.mgrid[:p, :p]
        t = volume[self.z[:, None, None], self.y[:, None, None] + iy, self.x[:, None, None] + ix]
        t = t.astype(np.float64)
        return t - t.mean(axis=(1, 2), keepdims=True)


def _candidates(
    sl: np.ndarray, p: int, masks: list[np.ndarray]
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Patches of one slice fully inside one of ``masks`` (on the estimator's half-patch grid),
    with their variances after a least-squares plane is removed: ``(ys, xs, variances)``."""
    h, w = sl.shape
    ys = np.arange(0, h - p + 1, p // 2)
    xs = np.arange(0, w - p + 1, p // 2)
    if ys.size == 0 or xs.size == 0:
        return np.zeros(0, int), np.zeros(0, int), np.zeros(0)
    inside = np.zeros((ys.size, xs.size), dtype=bool)
    for m in masks:
        integral = np.pad(m.astype(np.int64).cumsum(0).cumsum(1), ((1, 0), (1, 0)))
        count = (
            integral[ys[:, None] + p, xs[None, :] + p]
            - integral[ys[:, None], xs[None, :] + p]
            - integral[ys[:, None] + p, xs[None, :]]
            + integral[ys[:, None], xs[None, :]]
        )
        inside |= count == p * p
    gy, gx = np.nonzero(inside)
    py, px = ys[gy], xs[gx]
    if py.size == 0:
        return py, px, np.zeros(0)
    iy, ix = np.mgrid[:p, :p]
    tiles = sl[py[:, None, None] + iy, px[:, None, None] + ix].astype(np.float64)
    design = np.stack([np.ones(p * p), iy.ravel() - p / 2, ix.ravel() - p / 2], 1)
    flat = tiles.reshape(len(py), -1)  # (N, P*P)
    resid = flat - (flat @ np.linalg.pinv(design).T) @ design.T
    return py, px, resid.var(axis=1)


def noise_patches(
    hu: np.ndarray, *, max_slices: int = 16, patch: int | None = None
) -> NoisePatches:
    """The noise-only patches of a scan, chosen as
    :func:`~medssl.denoise.noise_model.estimate_noise_model` chooses them (patches inside one
    homogeneous tissue class whose variance lies near the mode of all patch variances).

    Args:
        hu: ``(Z, Y, X)`` or ``(Y, X)`` in HU: the image the patches are chosen on.
        max_slices: At most this many slices (evenly spaced).
        patch: Patch size in pixels (default: the estimator's).

    Returns:
        The patches; none where the scan has no homogeneous tissue (a phantom in air): then
        there is no noise measurement.

    Shape:
        hu: ``(Z, Y, X)`` or ``(Y, X)``; a ``(Y, X)`` slice is slice ``z = 0``.
    """
    arr = _as_volume(hu, "hu")
    idx = _slice_indices(arr.shape[0], max_slices)
    class_masks = {int(z): tissue_class_masks(arr[z]) for z in idx}

    def gather(size: int) -> tuple[NoisePatches, np.ndarray]:
        zs, ys, xs, vs = [], [], [], []
        for z in idx:
            y, x, v = _candidates(arr[z], size, class_masks[int(z)])
            zs.append(np.full(y.size, z, dtype=int))
            ys.append(y)
            xs.append(x)
            vs.append(v)
        sites = NoisePatches(np.concatenate(zs), np.concatenate(ys), np.concatenate(xs), size)
        return sites, np.concatenate(vs)

    p = patch or _patch_size(arr.shape[1:])
    sites, var = gather(p)
    while len(sites) < MIN_PATCHES and p > 8 and patch is None:
        p //= 2
        sites, var = gather(p)
    keep = var > 1e-6
    if not keep.any():
        return NoisePatches(np.zeros(0, int), np.zeros(0, int), np.zeros(0, int), p)
    sites = NoisePatches(sites.z[keep], sites.y[keep], sites.x[keep], p)
    var = var[keep]
    keep = noise_only(sites.tiles(arr), var)  # the estimator's own choice
    return NoisePatches(sites.z[keep], sites.y[keep], sites.x[keep], p)


def noise_in_patches(
    hu: np.ndarray, patches: NoisePatches, spacing_yx: tuple[float, float] = (1.0, 1.0)
) -> NoiseModel:
    """The noise model (SD, NPS, autocorrelation) of ``hu`` measured in given patches.

    Shape:
        hu: ``(Z, Y, X)`` or ``(Y, X)``, the shape the patches were chosen on.
    """
    arr = _as_volume(hu, "hu")
    p = patches.patch
    dy, dx = float(spacing_yx[0]), float(spacing_yx[1])
    tiles = patches.tiles(arr) if len(patches) else np.zeros((0, p, p))
    if tiles.shape[0] == 0 or float((tiles**2).sum()) <= 0.0:
        flat = np.zeros((2 * p - 1, 2 * p - 1))
        flat[p - 1, p - 1] = 1.0
        return NoiseModel(0.0, np.zeros((p, p)), flat, (dy, dx), int(tiles.shape[0]), p)
    variance, rho = _undo_mean_removal(_autocovariance(tiles), p)
    power = _nps_from_acf(rho * variance, p)
    return NoiseModel(
        sd_hu=math.sqrt(max(variance, 0.0)),
        nps=power * dy * dx,  # HU² mm²
        acf=rho,
        pixel_mm=(dy, dx),
        patches=int(tiles.shape[0]),
        patch=p,
    )


# ---------------------------------------------------------------------------------------------
# edges


def field_of_view(hu: np.ndarray) -> np.ndarray:
    """Pixels inside the scanner's field of view: not padding.

    Padding is either far below air (``-2000``, ``-3024``: below ``BELOW_AIR_HU`` after a
    2-pixel smoothing), or one constant value, not air's, filling a region that touches the
    image border (padding with 0 HU, say). Air clipped at -1024 is not padding: it has no edge
    against the padding.

    Shape:
        hu: ``(Y, X)``; returns a boolean ``(Y, X)``.
    """
    sl = np.asarray(hu, dtype=np.float32)
    outside = ndimage.gaussian_filter(sl, 2.0) < BELOW_AIR_HU
    border = np.concatenate([sl[0], sl[-1], sl[1:-1, 0], sl[1:-1, -1]])
    values, counts = np.unique(border, return_counts=True)
    v = values[int(np.argmax(counts))]
    if counts.max() >= 0.25 * border.size and abs(float(v) + 1000.0) > 50.0:
        labels, _ = ndimage.label(sl == v)
        edge_labels = np.unique(
            np.concatenate([labels[0], labels[-1], labels[:, 0], labels[:, -1]])
        )
        outside |= np.isin(labels, edge_labels[edge_labels > 0])
    return ~outside


@dataclass(frozen=True)
class EdgeSites:
    """Short straight edges: slice ``z``, pixel ``(y, x)`` near the edge, the unit normal
    ``(ny, nx)`` (in mm, from the low to the high side), and ``offset_mm``, the edge's
    sub-pixel position along the normal from the pixel centre. Pixels within
    ``half_length_mm`` across and ``half_width_mm`` along each edge form its profile; the two
    sides are the outer ``(1 - PLATEAU) * half_length_mm`` of it."""

    z: np.ndarray
    y: np.ndarray
    x: np.ndarray
    normal: np.ndarray = field(repr=False)
    offset_mm: np.ndarray = field(repr=False)
    half_length_mm: float
    half_width_mm: float
    smoothing_mm: float

    def __len__(self) -> int:
        return int(self.z.size)


#: Inner end of each side of an edge profile, as a fraction of its half-length.
PLATEAU = 0.55


def _edge_scales(spacing_yx: tuple[float, float]) -> tuple[float, float, float]:
    """``(smoothing, half-length, half-width)`` in mm for a pixel size."""
    big = max(spacing_yx)
    return max(1.0, 1.5 * big), max(4.0, 8.0 * big), 2.5 * big


def _sample(image: np.ndarray, y: np.ndarray, x: np.ndarray) -> np.ndarray:
    return ndimage.map_coordinates(image, [y, x], order=1, mode="nearest")


def _slice_edges(
    sl: np.ndarray, spacing_yx: tuple[float, float]
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Edge sites of one slice: ``(y, x, normal (N, 2), offset_mm)``."""
    dy, dx = spacing_yx
    smooth_mm, half, width = _edge_scales(spacing_yx)
    s = ndimage.gaussian_filter(sl.astype(np.float64), (smooth_mm / dy, smooth_mm / dx))
    gy, gx = np.gradient(s, dy, dx)  # HU / mm
    mag = np.hypot(gy, gx)
    # straightness: coherence of the structure tensor over twice the smoothing
    rho = (2 * smooth_mm / dy, 2 * smooth_mm / dx)
    jyy = ndimage.gaussian_filter(gy * gy, rho)
    jxx = ndimage.gaussian_filter(gx * gx, rho)
    jxy = ndimage.gaussian_filter(gx * gy, rho)
    coherence = np.hypot(jxx - jyy, 2 * jxy) / np.maximum(jxx + jyy, 1e-12)
    # inside the field of view, with the whole profile away from its border and the array's
    reach = math.hypot(half, width) + 2 * max(dy, dx)
    fov = field_of_view(sl)
    if (~fov).any():
        dist = ndimage.distance_transform_edt(fov, sampling=(dy, dx))
        valid = dist > reach
    else:
        valid = np.ones(sl.shape, dtype=bool)
    ry, rx = math.ceil(reach / dy), math.ceil(reach / dx)
    valid[:ry] = valid[-ry:] = False
    valid[:, :rx] = valid[:, -rx:] = False
    # a lenient gradient floor: a MIN_EDGE_CONTRAST_HU step blurred three times the smoothing
    floor = MIN_EDGE_CONTRAST_HU / (math.sqrt(2 * math.pi) * 3 * smooth_mm)
    cy, cx = np.nonzero(valid & (coherence > EDGE_COHERENCE) & (mag > floor))
    if cy.size == 0:
        empty = np.zeros(0, int)
        return empty, empty, np.zeros((0, 2)), np.zeros(0)
    ny, nx = gy[cy, cx] / mag[cy, cx], gx[cy, cx] / mag[cy, cx]
    # local maxima of the gradient along the normal (one pixel each way)
    step = min(dy, dx)
    m0 = mag[cy, cx]
    ahead = _sample(mag, cy + step * ny / dy, cx + step * nx / dx)
    behind = _sample(mag, cy - step * ny / dy, cx - step * nx / dx)
    peak = (m0 >= ahead) & (m0 >= behind)
    cy, cx, ny, nx = cy[peak], cx[peak], ny[peak], nx[peak]
    # one edge per cell of about the profile's width: the one nearest the cell's centre (not
    # the strongest, which favours edges that the noise happened to steepen)
    cell = max(1, round(2 * width / max(dy, dx)))
    cells = (cy // cell) * (sl.shape[1] // cell + 1) + cx // cell
    off_centre = np.hypot(cy % cell - (cell - 1) / 2, cx % cell - (cell - 1) / 2)
    order = np.lexsort((off_centre, cells))
    _, first = np.unique(cells[order], return_index=True)
    pick = order[first]
    cy, cx, ny, nx = cy[pick], cx[pick], ny[pick], nx[pick]
    # the two sides: a step of at least MIN_EDGE_CONTRAST_HU between flat sides
    t_side = np.linspace(PLATEAU * half, half, 5)

    def along(t: np.ndarray) -> np.ndarray:  # (N, T) samples of s at distance t along normal
        yy = cy[:, None] + t[None, :] * ny[:, None] / dy
        xx = cx[:, None] + t[None, :] * nx[:, None] / dx
        return _sample(s, yy.ravel(), xx.ravel()).reshape(cy.size, t.size)

    low, high = along(-t_side), along(t_side)
    lo, hi = low.mean(1), high.mean(1)
    contrast = hi - lo
    flat = (np.ptp(low, 1) <= EDGE_FLATNESS * contrast) & (
        np.ptp(high, 1) <= EDGE_FLATNESS * contrast
    )
    # a single monotonic step in between (no thin structure next to the edge), whose
    # half-way crossing is within a pixel of the site: the sub-pixel edge position
    t_mid = np.linspace(-PLATEAU * half, PLATEAU * half, round(2 * PLATEAU * half / step * 10))
    mid = along(t_mid)
    within = (mid.min(1) >= lo - EDGE_FLATNESS * contrast) & (
        mid.max(1) <= hi + EDGE_FLATNESS * contrast
    )
    level = (mid - ((lo + hi) / 2)[:, None]) >= 0
    crossings = np.diff(level.astype(np.int8), axis=1)
    single = (np.abs(crossings).sum(1) == 1) & (crossings.sum(1) == 1)
    k = np.argmax(crossings, axis=1)
    rows = np.arange(cy.size)
    a, b = mid[rows, k], mid[rows, np.minimum(k + 1, t_mid.size - 1)]
    frac = np.clip(((lo + hi) / 2 - a) / np.where(b != a, b - a, 1.0), 0.0, 1.0)
    offset = t_mid[k] + frac * (t_mid[1] - t_mid[0])
    ok = (contrast >= MIN_EDGE_CONTRAST_HU) & flat & within & single
    ok &= np.abs(offset) <= max(dy, dx)
    cy, cx, ny, nx, offset = cy[ok], cx[ok], ny[ok], nx[ok], offset[ok]
    if cy.size > MAX_EDGES_PER_SLICE:
        take = np.linspace(0, cy.size - 1, MAX_EDGES_PER_SLICE).round().astype(int)
        cy, cx, ny, nx, offset = cy[take], cx[take], ny[take], nx[take], offset[take]
    return cy, cx, np.stack([ny, nx], 1), offset


def edge_sites(
    hu: np.ndarray, spacing_yx: tuple[float, float] = (1.0, 1.0), *, max_slices: int = 16
) -> EdgeSites:
    """Strong, straight, high-contrast edges of a scan, away from the field-of-view border.

    On a smoothed copy of each slice: local maxima of the gradient along its direction where
    the structure tensor is coherent (a straight edge), with two flat sides at least
    ``MIN_EDGE_CONTRAST_HU`` apart and a single monotonic step between them; at most one per
    small cell, and at most ``MAX_EDGES_PER_SLICE`` per slice.

    Args:
        hu: ``(Z, Y, X)`` or ``(Y, X)`` in HU.
        spacing_yx: In-plane pixel size ``(dy, dx)`` in mm.
        max_slices: At most this many slices (evenly spaced).

    Shape:
        hu: ``(Z, Y, X)`` or ``(Y, X)``; a ``(Y, X)`` slice is slice ``z = 0``.
    """
    arr = _as_volume(hu, "hu")
    spacing = (float(spacing_yx[0]), float(spacing_yx[1]))
    zs, ys, xs, normals, offsets = [], [], [], [], []
    for z in _slice_indices(arr.shape[0], max_slices):
        y, x, n, off = _slice_edges(arr[z], spacing)
        zs.append(np.full(y.size, z, dtype=int))
        ys.append(y)
        xs.append(x)
        normals.append(n)
        offsets.append(off)
    smooth, half, width = _edge_scales(spacing)
    return EdgeSites(
        np.concatenate(zs),
        np.concatenate(ys),
        np.concatenate(xs),
        np.concatenate(normals),
        np.concatenate(offsets),
        half,
        width,
        smooth,
    )


def edge_spread(
    hu: np.ndarray, sites: EdgeSites, spacing_yx: tuple[float, float] = (1.0, 1.0)
) -> tuple[np.ndarray, np.ndarray]:
    """The mean edge-spread function of ``hu`` at ``sites``.

    Every pixel within an edge's profile is placed at its distance (mm) from the edge along
    the normal; values are scaled per edge to 0 on the low side and 1 on the high side (levels
    from a smoothed copy of ``hu``, so an output is scaled by its own levels), then binned at
    a tenth of a pixel and averaged over all edges.

    Returns:
        ``(distance in mm, ESF)`` for the bins that hold any pixel; empty without sites.

    Shape:
        hu: ``(Z, Y, X)`` or ``(Y, X)``, the shape the sites were found on.
    """
    arr = _as_volume(hu, "hu")
    if len(sites) == 0:
        return np.zeros(0), np.zeros(0)
    dy, dx = float(spacing_yx[0]), float(spacing_yx[1])
    half, width = sites.half_length_mm, sites.half_width_mm
    bin_mm = 0.1 * min(dy, dx)
    nbins = 2 * math.ceil(half / bin_mm) + 1
    centre = nbins // 2
    total, count = np.zeros(nbins), np.zeros(nbins)
    reach = math.hypot(half, width)
    ky, kx = math.ceil(reach / dy) + 1, math.ceil(reach / dx) + 1
    oy, ox = np.mgrid[-ky : ky + 1, -kx : kx + 1]
    oy, ox = oy.ravel(), ox.ravel()  # (K,) pixel offsets around a site
    t_side = np.linspace(PLATEAU * half, half, 5)
    for z in np.unique(sites.z):
        sel = np.nonzero(sites.z == z)[0]
        sl = arr[z].astype(np.float64)
        s = ndimage.gaussian_filter(sl, (sites.smoothing_mm / dy, sites.smoothing_mm / dx))
        cy, cx = sites.y[sel], sites.x[sel]
        ny, nx = sites.normal[sel, 0], sites.normal[sel, 1]
        # (N, K) distances across (d) and along (u) each edge, from its sub-pixel position
        d = oy[None] * dy * ny[:, None] + ox[None] * dx * nx[:, None] - sites.offset_mm[sel, None]
        u = -oy[None] * dy * nx[:, None] + ox[None] * dx * ny[:, None]
        inside = (np.abs(d) <= half) & (np.abs(u) <= width)
        py = np.clip(cy[:, None] + oy[None], 0, sl.shape[0] - 1)
        px = np.clip(cx[:, None] + ox[None], 0, sl.shape[1] - 1)
        values = sl[py, px]

        def side(sign: float, cy=cy, cx=cx, ny=ny, nx=nx, s=s, sel=sel) -> np.ndarray:
            t = sign * t_side[None, :] + sites.offset_mm[sel, None]
            yy = cy[:, None] + t * ny[:, None] / dy
            xx = cx[:, None] + t * nx[:, None] / dx
            return _sample(s, yy.ravel(), xx.ravel()).reshape(t.shape).mean(1)

        lo, hi = side(-1.0), side(1.0)
        scale = np.where(np.abs(hi - lo) > 1e-6, hi - lo, np.nan)
        norm = (values - lo[:, None]) / scale[:, None]
        use = inside & np.isfinite(norm)
        b = np.rint(d[use] / bin_mm).astype(int) + centre
        b = np.clip(b, 0, nbins - 1)
        total += np.bincount(b, norm[use], minlength=nbins)
        count += np.bincount(b, minlength=nbins)
    filled = count > 0
    position = (np.arange(nbins) - centre) * bin_mm
    return position[filled], total[filled] / count[filled]


def rise_distance(
    position_mm: np.ndarray, esf: np.ndarray, low: float = 0.1, high: float = 0.9
) -> float | None:
    """The distance (mm) over which an edge-spread function rises from ``low`` to ``high``
    of its step, the levels taken from its outer ends (beyond ``PLATEAU`` of its half-length).

    The ESF is smoothed over five bins (half a pixel) first; the crossings nearest the
    half-way point are interpolated linearly. ``None`` when it has no clear rise.
    """
    pos = np.asarray(position_mm, dtype=np.float64)
    f = np.asarray(esf, dtype=np.float64)
    if f.size < 10:
        return None
    f = np.convolve(np.pad(f, 2, mode="edge"), np.ones(5) / 5, mode="valid")
    reach = float(np.abs(pos).max())
    lo_side, hi_side = pos <= -PLATEAU * reach, pos >= PLATEAU * reach
    if not lo_side.any() or not hi_side.any():
        return None
    lo, hi = float(f[lo_side].mean()), float(f[hi_side].mean())
    if hi - lo <= 0:
        return None
    f = (f - lo) / (hi - lo)
    start = int(np.argmin(np.abs(pos)))

    def crossing(level: float, direction: int) -> float | None:
        i = start
        above = f[i] >= level
        while 0 <= i + direction < f.size:
            j = i + direction
            if (f[j] >= level) != above:
                a, b = f[i], f[j]
                w = (level - a) / (b - a) if b != a else 0.0
                return float(pos[i] + w * (pos[j] - pos[i]))
            i = j
        return None

    # from the centre outwards: the low level to the left, the high level to the right
    x_low = crossing(low, -1) if f[start] >= low else crossing(low, 1)
    x_high = crossing(high, 1) if f[start] <= high else crossing(high, -1)
    if x_low is None or x_high is None or x_high <= x_low:
        return None
    return x_high - x_low


# ---------------------------------------------------------------------------------------------
# the report


def _ratio(after: float | None, before: float | None) -> float | None:
    if after is None or before is None or before <= 0:
        return None
    return after / before


@dataclass(frozen=True)
class QualityReport:
    """Image quality of a denoised scan against its input (see the module's description).

    Attributes:
        noise_before: Noise model of the input in the chosen patches.
        noise_after: Noise model of the output in the same patches.
        edge_width_before_mm: 10-90 % rise distance of the input's mean ESF (``None`` when
            no edge qualified).
        edge_width_after_mm: The same for the output, at the same edges.
        edge_sites: Number of edges measured.
        esf_position_mm: Bin positions of the ESFs (mm from the edge).
        esf_before: Mean ESF of the input (0 on the low side, 1 on the high side).
        esf_after: Mean ESF of the output.
    """

    noise_before: NoiseModel = field(repr=False)
    noise_after: NoiseModel = field(repr=False)
    edge_width_before_mm: float | None
    edge_width_after_mm: float | None
    edge_sites: int
    esf_position_mm: np.ndarray = field(repr=False)
    esf_before: np.ndarray = field(repr=False)
    esf_after: np.ndarray = field(repr=False)

    @property
    def noise_sd_reduction(self) -> float | None:
        """``1 - SD after / SD before`` (0.3 is a 30 % lower noise SD)."""
        r = _ratio(self.noise_after.sd_hu, self.noise_before.sd_hu)
        return None if r is None else 1.0 - r

    @property
    def nps_mean_frequency_shift(self) -> float | None:
        """``mean frequency after / before - 1`` (negative: the noise texture got coarser)."""
        r = _ratio(self.noise_after.mean_frequency, self.noise_before.mean_frequency)
        return None if r is None else r - 1.0

    @property
    def edge_width_growth(self) -> float | None:
        """``edge width after / before - 1`` (0.1 is a 10 % wider edge)."""
        r = _ratio(self.edge_width_after_mm, self.edge_width_before_mm)
        return None if r is None else r - 1.0

    def to_dict(self) -> dict[str, Any]:
        """Scalars (JSON-ready, ``None`` where not measurable) and the radial NPS of both
        images on one frequency axis (``nps_radial``)."""

        measured = self.noise_before.patches > 0  # no homogeneous tissue: no noise values

        def r(v: float | None, digits: int) -> float | None:
            if v is None or not math.isfinite(v):
                return None
            return round(float(v), digits) + 0.0  # no -0.0

        def n(v: float | None, digits: int) -> float | None:
            return r(v, digits) if measured else None

        freq, before = self.noise_before.radial_nps()
        _, after = self.noise_after.radial_nps()
        return {
            "noise_sd_before_hu": n(self.noise_before.sd_hu, 3),
            "noise_sd_after_hu": n(self.noise_after.sd_hu, 3),
            "noise_sd_reduction": n(self.noise_sd_reduction, 4),
            "nps_mean_frequency_before_per_mm": n(self.noise_before.mean_frequency, 4),
            "nps_mean_frequency_after_per_mm": n(self.noise_after.mean_frequency, 4),
            "nps_mean_frequency_shift": n(self.nps_mean_frequency_shift, 4),
            "edge_width_before_mm": r(self.edge_width_before_mm, 3),
            "edge_width_after_mm": r(self.edge_width_after_mm, 3),
            "edge_width_growth": r(self.edge_width_growth, 4),
            "edge_sites": self.edge_sites,
            "noise_patches": self.noise_before.patches,
            "patch_px": self.noise_before.patch,
            "nps_radial": {
                "frequency_per_mm": [round(float(f), 4) for f in freq],
                "before_hu2_mm2": [float(f"{v:.4g}") for v in before],
                "after_hu2_mm2": [float(f"{v:.4g}") for v in after],
            },
        }


def quality_report(
    before_hu: np.ndarray,
    after_hu: np.ndarray,
    spacing_yx: tuple[float, float] = (1.0, 1.0),
    *,
    max_slices: int = 16,
) -> QualityReport:
    """Noise SD, NPS and edge width of a denoised scan against its input, measured at the same
    patches and edges, chosen on the input.

    Args:
        before_hu: The input in HU.
        after_hu: The denoised output in HU, the same shape.
        spacing_yx: In-plane pixel size ``(dy, dx)`` in mm.
        max_slices: At most this many slices (evenly spaced) are measured.

    Raises:
        ValueError: The two images differ in shape or are not 2D or 3D.

    Shape:
        before_hu, after_hu: ``(Y, X)`` or ``(Z, Y, X)``.
    """
    before = _as_volume(before_hu, "before_hu")
    after = _as_volume(after_hu, "after_hu")
    if before.shape != after.shape:
        raise ValueError(
            f"before_hu and after_hu differ in shape: {np.shape(before_hu)} and "
            f"{np.shape(after_hu)}"
        )
    spacing = (float(spacing_yx[0]), float(spacing_yx[1]))
    patches = noise_patches(before, max_slices=max_slices)
    sites = edge_sites(before, spacing, max_slices=max_slices)
    pos, esf_b = edge_spread(before, sites, spacing)
    _, esf_a = edge_spread(after, sites, spacing)
    return QualityReport(
        noise_before=noise_in_patches(before, patches, spacing),
        noise_after=noise_in_patches(after, patches, spacing),
        edge_width_before_mm=rise_distance(pos, esf_b),
        edge_width_after_mm=rise_distance(pos, esf_a),
        edge_sites=len(sites),
        esf_position_mm=pos,
        esf_before=esf_b,
        esf_after=esf_a,
    )
