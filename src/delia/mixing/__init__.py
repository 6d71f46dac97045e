"""Mixing downstream and diverse data: ratio, shuffle/interleave schedules, manifests and the `build` stage."""

from delia.mixing.build import BuildError, build
from delia.mixing.cache import CacheScan, scan_cache
from delia.mixing.config import BuildConfig
from delia.mixing.schedule import diverse_count, order, select

__all__ = ["BuildConfig", "BuildError", "CacheScan", "build", "diverse_count", "order", "scan_cache", "select"]
