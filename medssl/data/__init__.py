"""Sample data: the real images medssl fetches from package registries, and (later) datasets,
patch samplers and caches."""

from medssl.data.fetch import (
    DataUnavailableError,
    cache_root,
    fetch,
    fetch_archive,
    is_cached,
    sample_path,
)
from medssl.data.samples import ARCHIVES, SAMPLES, Archive, Sample

__all__ = [
    "ARCHIVES",
    "SAMPLES",
    "Archive",
    "DataUnavailableError",
    "Sample",
    "cache_root",
    "fetch",
    "fetch_archive",
    "is_cached",
    "sample_path",
]
