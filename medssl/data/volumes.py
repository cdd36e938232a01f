"""Volume collections for pretraining, preprocessed once and cached on disk.

A collection is a folder (searched recursively: NIfTI/NRRD/MHA files and DICOM series) or a
list file (one path per line, relative to the list's folder; ``#`` starts a comment).
:func:`preprocess` resamples each volume to a target spacing with nnU-Net's own resampling,
normalises it with one of nnU-Net's normalisation schemes and writes it to a cache folder as a
``.npy`` file that the patch dataset memory-maps: the collection is never held in memory, one
volume is in memory at a time (per worker process).

Cache entries are keyed by the source file (path, size, modification time) and the settings, so
a second run reuses them and a changed file or setting is preprocessed again.
"""

from __future__ import annotations

import fnmatch
import hashlib
import json
from collections.abc import Iterable, Sequence
from concurrent.futures import ProcessPoolExecutor
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from medssl.errors import InputError
from medssl.io import (
    ITK_SUFFIXES,
    atomic_file,
    find_series,
    is_dicom_file,
    orientation_code,
    read_volume,
    write_json,
)

__all__ = [
    "DEFAULT_EXCLUDE",
    "NORMALIZATION_SCHEMES",
    "CachedVolume",
    "Preprocessing",
    "VolumeRef",
    "discover_volumes",
    "is_excluded",
    "is_volume_file",
    "load_manifest",
    "preprocess",
    "volume_files",
    "write_manifest",
]

#: nnU-Net v2's normalisation classes medssl can apply (names as in nnU-Net plans).
NORMALIZATION_SCHEMES = (
    "ZScoreNormalization",
    "CTNormalization",
    "NoNormalization",
    "RescaleTo01Normalization",
)
DEFAULT_EXCLUDE = ("*label*", "*_seg.*", "*_mask.*")
_LIST_SUFFIXES = (".txt", ".lst", ".list")
_CACHE_VERSION = 2
_FG_SAMPLES = 20000


@dataclass(frozen=True)
class VolumeRef:
    """One volume of a collection: a file, or a DICOM series in a folder (``series`` = key)."""

    path: str
    series: str | None = None

    @property
    def label(self) -> str:
        """A short non-identifying label (a hash of the path and series)."""
        return hashlib.sha256(f"{self.path}|{self.series}".encode()).hexdigest()[:12]


def is_volume_file(path: Path) -> bool:
    """Whether ``path``'s name ends in a NIfTI, NRRD or MetaImage suffix (case-insensitive).

    DICOM files are recognised by their content (:func:`medssl.io.is_dicom_file`), not here.
    """
    name = path.name.lower()
    return any(name.endswith(s) for s in ITK_SUFFIXES)


def is_excluded(path: Path, patterns: Iterable[str] = DEFAULT_EXCLUDE) -> bool:
    """Whether ``path``'s file name matches one of the ``fnmatch`` ``patterns``
    (case-insensitive; by default label maps and masks, :data:`DEFAULT_EXCLUDE`)."""
    return any(fnmatch.fnmatch(path.name.lower(), pat.lower()) for pat in patterns)


def volume_files(paths: Iterable[Path], exclude: Iterable[str] = DEFAULT_EXCLUDE) -> list[Path]:
    """The image files (NIfTI, NRRD, MetaImage) among ``paths``, without the excluded ones.

    Args:
        paths: Candidate paths (e.g. :func:`medssl.io.list_files` of a folder); folders and
            missing paths are left out.
        exclude: ``fnmatch`` patterns on file names to leave out (:data:`DEFAULT_EXCLUDE`:
            label maps and masks).

    Returns:
        The volume files, in the order of ``paths``.
    """
    patterns = tuple(exclude)
    return [p for p in paths if p.is_file() and is_volume_file(p) and not is_excluded(p, patterns)]


def discover_volumes(
    source: str | Path | Sequence[str | Path], exclude: Iterable[str] = DEFAULT_EXCLUDE
) -> list[VolumeRef]:
    """The volumes of a folder, a list file or a list of paths, in a stable order.

    Args:
        source: Folder (recursive), list file (``.txt``/``.lst``/``.list``), a single volume,
            or a sequence of any of these.
        exclude: ``fnmatch`` patterns on file names to leave out (label maps and atlases by
            default: pretraining on a label map teaches nothing).

    Raises:
        InputError: A path does not exist, or nothing readable was found.
    """
    patterns = tuple(exclude)
    if isinstance(source, str | Path):
        sources: list[Path] = [Path(source)]
    else:
        sources = [Path(s) for s in source]
    refs: list[VolumeRef] = []
    for src in sources:
        refs.extend(_discover_one(src, patterns))
    if not refs:
        raise InputError(
            "no volumes found",
            path=sources[0] if len(sources) == 1 else None,
            hint="give a folder with NIfTI/NRRD/MHA files or DICOM series, or a list file "
            "with one path per line",
        )
    seen: set[VolumeRef] = set()
    unique = []
    for r in refs:
        if r not in seen:
            seen.add(r)
            unique.append(r)
    return unique


def _discover_one(src: Path, patterns: tuple[str, ...]) -> list[VolumeRef]:
    if not src.exists():
        raise InputError("no such file or folder", path=src, hint="check the --data path")
    if src.is_file():
        if src.suffix.lower() in _LIST_SUFFIXES:
            return _read_list(src, patterns)
        if is_volume_file(src) or is_dicom_file(src):
            return [VolumeRef(str(src.resolve()))]
        raise InputError(
            "not a volume or a list file",
            path=src,
            hint=f"volumes end in {', '.join(ITK_SUFFIXES)} or are DICOM; list files end in "
            f"{', '.join(_LIST_SUFFIXES)}",
        )
    refs = [VolumeRef(str(p.resolve())) for p in volume_files(sorted(src.rglob("*")), patterns)]
    dicom_dirs = sorted(
        {p.parent for p in src.rglob("*") if p.is_file() and is_dicom_file(p)}, key=str
    )
    for d in _top_dirs(dicom_dirs):
        series, _ = find_series(d)
        refs.extend(VolumeRef(str(d.resolve()), s.key) for s in series)
    return refs


def _top_dirs(dirs: list[Path]) -> list[Path]:
    # find_series scans recursively: keep only folders not below another one in the list
    out: list[Path] = []
    for d in dirs:
        if not any(d.is_relative_to(o) for o in out):
            out.append(d)
    return out


def _read_list(path: Path, patterns: tuple[str, ...]) -> list[VolumeRef]:
    refs: list[VolumeRef] = []
    for n, raw in enumerate(path.read_text().splitlines(), start=1):
        line = raw.split("#", 1)[0].strip()
        if not line:
            continue
        p = Path(line)
        if not p.is_absolute():
            p = path.parent / p
        if not p.exists():
            raise InputError(
                f"line {n} names {line!r}, which does not exist",
                path=path,
                hint="paths in a list file are relative to the list file's folder",
            )
        refs.extend(_discover_one(p, patterns))
    return refs


@dataclass(frozen=True)
class Preprocessing:
    """How volumes are prepared (recorded in checkpoints so fine-tuning can check it).

    Attributes:
        target_spacing: ``(z, y, x)`` mm, or ``None`` to keep each volume's spacing.
        normalization: One of :data:`NORMALIZATION_SCHEMES` (nnU-Net's class names).
        intensity_properties: For ``CTNormalization``: ``mean``, ``std``,
            ``percentile_00_5``, ``percentile_99_5`` (computed over the collection's
            foreground when left empty, as nnU-Net's fingerprint does over its labels).
        dtype: Storage type of the cache (``float16`` halves disk and I/O).
    """

    target_spacing: tuple[float, float, float] | None = (1.0, 1.0, 1.0)
    normalization: str = "ZScoreNormalization"
    intensity_properties: dict[str, float] = field(default_factory=dict)
    dtype: str = "float16"

    def __post_init__(self) -> None:
        if self.normalization not in NORMALIZATION_SCHEMES:
            raise ValueError(
                f"normalization {self.normalization!r} is not one of "
                f"{', '.join(NORMALIZATION_SCHEMES)}"
            )
        if self.dtype not in ("float16", "float32"):
            raise ValueError(f"cache dtype must be float16 or float32, got {self.dtype!r}")
        if self.target_spacing is not None:
            sp = tuple(float(s) for s in self.target_spacing)
            if len(sp) != 3 or min(sp) <= 0:
                raise ValueError(f"target_spacing must be three positive numbers, got {sp}")
            object.__setattr__(self, "target_spacing", sp)

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["target_spacing"] = list(self.target_spacing) if self.target_spacing else None
        return d


@dataclass(frozen=True)
class CachedVolume:
    """A preprocessed volume in the cache.

    Attributes:
        image: ``.npy`` file, ``(Z, Y, X)``.
        foreground: ``.npy`` file of up to 20000 foreground voxel indices, ``(N, 3)`` int32.
        shape: ``(Z, Y, X)`` after resampling.
        label: Non-identifying label of the source.
        orientation: Three-letter orientation code of the source (e.g. ``LPS``).
        modality: DICOM modality of the source (``OT`` when unknown).
    """

    image: str
    foreground: str
    shape: tuple[int, int, int]
    label: str
    orientation: str | None = None
    modality: str | None = None


def _key(ref: VolumeRef, prep: Preprocessing) -> str:
    p = Path(ref.path)
    if p.is_dir():  # a DICOM series: its files' sizes and times
        files = sorted(f for f in p.rglob("*") if f.is_file())
        stamp = [(str(f.relative_to(p)), f.stat().st_size, f.stat().st_mtime_ns) for f in files]
    else:  # .mhd/.nhdr headers name a data file beside them: stamp files sharing the stem
        stem = p.name.split(".")[0]
        files = sorted(f for f in p.parent.glob(f"{stem}.*") if f.is_file())
        stamp = [(f.name, f.stat().st_size, f.stat().st_mtime_ns) for f in files]
    payload = json.dumps(
        [_CACHE_VERSION, ref.path, ref.series, stamp, prep.to_dict()], sort_keys=True
    )
    return hashlib.sha256(payload.encode()).hexdigest()[:20]


def _foreground_mask(arr: np.ndarray) -> np.ndarray:
    """Body/head mask by Otsu's threshold (air or background below it)."""
    from skimage.filters import threshold_otsu

    sample = arr[:: max(1, arr.shape[0] // 32)].ravel()
    if sample.size > 2_000_000:
        sample = sample[:: sample.size // 2_000_000]
    if float(sample.min()) == float(sample.max()):
        return np.ones(arr.shape, dtype=bool)
    return arr > threshold_otsu(sample)


def _read_volume(ref: VolumeRef) -> Any:
    return read_volume(ref.path, series=ref.series)


def _resample(arr: np.ndarray, spacing: Sequence[float], prep: Preprocessing) -> np.ndarray:
    if prep.target_spacing is None or np.allclose(spacing, prep.target_spacing):
        return arr
    from nnunetv2.preprocessing.resampling.default_resampling import (
        resample_data_or_seg_to_spacing,
    )

    out = resample_data_or_seg_to_spacing(
        arr[None].astype(np.float32),
        list(spacing),
        list(prep.target_spacing),
        is_seg=False,
        order=3,
        order_z=0,
        force_separate_z=None,
    )
    return np.asarray(out[0], dtype=np.float32)


def _normalise(arr: np.ndarray, prep: Preprocessing) -> np.ndarray:
    from nnunetv2.preprocessing.normalization import default_normalization_schemes as schemes

    cls = getattr(schemes, prep.normalization)
    norm = cls(use_mask_for_norm=False, intensityproperties=dict(prep.intensity_properties))
    return norm.run(arr.astype(np.float32, copy=True))


def _foreground_sample(arr: np.ndarray, rng: np.random.Generator, n: int) -> np.ndarray:
    idx = np.flatnonzero(_foreground_mask(arr))
    if idx.size == 0:
        return np.zeros((0, 3), dtype=np.int32)
    pick = idx if idx.size <= n else rng.choice(idx, n, replace=False)
    return np.stack(np.unravel_index(np.sort(pick), arr.shape), axis=1).astype(np.int32)


def _intensity_sample(ref: VolumeRef, n: int = 10000) -> np.ndarray:
    arr = _read_volume(ref).array
    rng = np.random.default_rng(int(ref.label, 16) % (2**32))
    vals = arr[_foreground_mask(arr)]
    if vals.size > n:
        vals = rng.choice(vals, n, replace=False)
    return vals.astype(np.float32)


def _ct_properties(refs: Sequence[VolumeRef], workers: int) -> dict[str, float]:
    with _pool(workers) as pool:
        parts = list(pool.map(_intensity_sample, refs))
    vals = np.concatenate(parts)
    return {
        "mean": float(vals.mean()),
        "std": float(vals.std()),
        "percentile_00_5": float(np.percentile(vals, 0.5)),
        "percentile_99_5": float(np.percentile(vals, 99.5)),
        "min": float(vals.min()),
        "max": float(vals.max()),
        "median": float(np.median(vals)),
    }


class _Serial:
    def __enter__(self) -> _Serial:
        return self

    def __exit__(self, *exc: object) -> None:
        return None

    def map(self, fn: Any, items: Any) -> Any:
        return map(fn, items)


def _pool(workers: int) -> Any:
    return ProcessPoolExecutor(workers) if workers > 1 else _Serial()


def _prepare_one(args: tuple[VolumeRef, Preprocessing, str, str]) -> dict[str, Any]:
    ref, prep, cache, key = args
    root = Path(cache)
    image, fg, meta = root / f"{key}.npy", root / f"{key}_fg.npy", root / f"{key}.json"
    if meta.is_file() and image.is_file() and fg.is_file():
        return json.loads(meta.read_text())
    vol = _read_volume(ref)
    arr, spacing = vol.array, vol.spacing
    arr = _resample(arr, spacing, prep)
    coords = _foreground_sample(arr, np.random.default_rng(int(key, 16) % (2**32)), _FG_SAMPLES)
    arr = _normalise(arr, prep).astype(prep.dtype)
    for target, data in ((image, arr), (fg, coords)):
        with atomic_file(target) as tmp:
            np.save(tmp, data)
    info = {
        "image": image.name,
        "foreground": fg.name,
        "shape": list(arr.shape),
        "label": ref.label,
        "spacing_in": list(spacing),
        "orientation": orientation_code(vol.direction),
        "modality": vol.modality,
    }
    write_json(meta, info)
    return info


def preprocess(
    refs: Sequence[VolumeRef],
    cache: str | Path,
    prep: Preprocessing,
    *,
    workers: int = 1,
    progress: Any = None,
    manifest: str | Path | None = None,
) -> tuple[list[CachedVolume], Preprocessing]:
    """Preprocess volumes into ``cache`` (reusing entries already there).

    Args:
        refs: Volumes (see :func:`discover_volumes`).
        cache: Cache folder (created).
        prep: Settings. With ``CTNormalization`` and no intensity properties, they are
            computed over the collection's foreground first (one extra read per volume).
        workers: Processes (1 = in this process).
        progress: Optional callable ``progress(done, total)``.

    Returns:
        The cached volumes (in ``refs`` order) and the settings actually used (with the
        intensity properties filled in). ``manifest`` (a JSON file), when given, records both
        (:func:`load_manifest` reads it back); the cache folder is shared by runs.
    """
    root = Path(cache)
    root.mkdir(parents=True, exist_ok=True)
    if prep.normalization == "CTNormalization" and not prep.intensity_properties:
        prep = Preprocessing(
            prep.target_spacing, prep.normalization, _ct_properties(refs, workers), prep.dtype
        )
    jobs = [(r, prep, str(root), _key(r, prep)) for r in refs]
    infos: list[dict[str, Any]] = []
    with _pool(workers) as pool:
        for info in pool.map(_prepare_one, jobs):
            infos.append(info)
            if progress is not None:
                progress(len(infos), len(jobs))
    vols = [
        CachedVolume(
            str(root / i["image"]),
            str(root / i["foreground"]),
            tuple(i["shape"]),
            i["label"],
            i.get("orientation"),
            i.get("modality"),
        )
        for i in infos
    ]
    if manifest is not None:
        write_manifest(manifest, vols, prep)
    return vols, prep


def write_manifest(path: str | Path, vols: Sequence[CachedVolume], prep: Preprocessing) -> None:
    """Record cached volumes and their settings (atomically); :func:`load_manifest` reads it."""
    record = {
        "version": _CACHE_VERSION,
        "preprocessing": prep.to_dict(),
        "volumes": [{**asdict(v), "shape": list(v.shape)} for v in vols],
    }
    write_json(path, record)


def load_manifest(manifest: str | Path) -> tuple[list[CachedVolume], Preprocessing]:
    """Read back the manifest :func:`preprocess` wrote."""
    m = json.loads(Path(manifest).read_text())
    p = m["preprocessing"]
    prep = Preprocessing(
        tuple(p["target_spacing"]) if p["target_spacing"] else None,
        p["normalization"],
        p["intensity_properties"],
        p["dtype"],
    )
    vols = [
        CachedVolume(
            v["image"],
            v["foreground"],
            tuple(v["shape"]),
            v["label"],
            v.get("orientation"),
            v.get("modality"),
        )
        for v in m["volumes"]
    ]
    return vols, prep
