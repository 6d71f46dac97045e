"""KV-cache plumbing for the decode loop in `delia.generation`: a layer that grows in place instead of copying,
and the joins, row selections and trims that continuous batching does on the cache."""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import torch


def growing_layer_class():
    """A DynamicLayer that appends in place into a buffer with spare room.

    transformers' DynamicLayer appends a token with `torch.cat`, which copies the layer's whole cache every
    step (O(length) per token; profiled at about a fifth of a CPU decode step at batch 32). This layer keeps
    keys/values in a larger buffer and exposes `keys`/`values` as views of the used part, so a step writes one
    column; the buffer grows by half when full. Anything that assigns `keys`/`values` (batch selection,
    merging, trimming) simply replaces the buffer.
    """
    from transformers.cache_utils import DynamicLayer

    class GrowingLayer(DynamicLayer):
        _kbuf = _vbuf = None
        _nk = _nv = 0  # used lengths of the buffers

        @staticmethod
        def _used(buf, n):
            return buf if buf is None or buf.dim() < 4 else buf[:, :, :n]

        @staticmethod
        def _length(t):
            return t.shape[-2] if t is not None and t.dim() == 4 else 0

        @property
        def keys(self):
            return self._used(self._kbuf, self._nk)

        @keys.setter
        def keys(self, t):
            self._kbuf, self._nk = t, self._length(t)

        @property
        def values(self):
            return self._used(self._vbuf, self._nv)

        @values.setter
        def values(self, t):
            self._vbuf, self._nv = t, self._length(t)

        def update(self, key_states, value_states, *args, **kwargs):
            if not self.is_initialized:
                self.lazy_initialization(key_states, value_states)
            n, add = self._nk, key_states.shape[-2]
            if self._kbuf.dim() < 4 or n + add > self._kbuf.shape[-2]:  # empty or full: a larger buffer
                room = n + add + max(64, (n + add) // 2)
                kbuf = key_states.new_empty(*key_states.shape[:2], room, key_states.shape[-1])
                vbuf = value_states.new_empty(*value_states.shape[:2], room, value_states.shape[-1])
                if n:
                    kbuf[:, :, :n], vbuf[:, :, :n] = self._kbuf[:, :, :n], self._vbuf[:, :, :n]
                self._kbuf, self._vbuf = kbuf, vbuf
            self._kbuf[:, :, n:n + add] = key_states
            self._vbuf[:, :, n:n + add] = value_states
            self._nk = self._nv = n + add
            return self.keys, self.values

        def batch_select_indices(self, indices):
            if self._nk > 0:  # keep the spare room
                self._kbuf, self._vbuf = self._kbuf[indices], self._vbuf[indices]

    return GrowingLayer


_GROWING = None


def growing(cache):
    """Swap the plain DynamicLayers of a fresh DynamicCache for in-place growing ones (others are kept)."""
    global _GROWING
    from transformers.cache_utils import DynamicLayer

    _GROWING = _GROWING or growing_layer_class()
    cache.layers = [_GROWING() if type(layer) is DynamicLayer else layer for layer in cache.layers]
    return cache


def mergeable(cache) -> bool:
    """Whether every layer is a plain full-attention layer whose rows can be joined, selected and trimmed."""
    from transformers.cache_utils import DynamicLayer

    return all(type(layer) is DynamicLayer or type(layer) is _GROWING for layer in cache.layers)


def pad_left(t: torch.Tensor, n: int, dim: int) -> torch.Tensor:
    if n == 0:
        return t
    shape = list(t.shape)
    shape[dim] = n
    import torch

    return torch.cat([t.new_zeros(shape), t], dim=dim)


def merge(cache, mask: torch.Tensor, cache_b, mask_b: torch.Tensor) -> torch.Tensor:
    """Append the rows of (cache_b, mask_b) to (cache, mask), left-padding the shorter side; returns the mask."""
    return merge_all([cache, cache_b], [mask, mask_b])


def merge_all(caches: list, masks: list[torch.Tensor]) -> torch.Tensor:
    """Stack the rows of all caches into the first one (one copy per layer), left-padding each to the widest;
    returns the joined mask."""
    import torch

    width = max(m.shape[1] for m in masks)
    for layers in zip(*(c.layers for c in caches)):
        keys = [pad_left(layer.keys, width - m.shape[1], 2) for layer, m in zip(layers, masks)]
        values = [pad_left(layer.values, width - m.shape[1], 2) for layer, m in zip(layers, masks)]
        layers[0].keys, layers[0].values = torch.cat(keys, dim=0), torch.cat(values, dim=0)
    return torch.cat([pad_left(m, width - m.shape[1], 1) for m in masks], dim=0)


def trim(cache, mask: torch.Tensor) -> torch.Tensor:
    """Drop leading columns that are padding for every row left (after long rows have finished)."""
    used = (mask.sum(0) > 0).nonzero()
    c = int(used[0]) if len(used) else 0
    if c > 0:
        for layer in cache.layers:
            layer.keys, layer.values = layer.keys[:, :, c:], layer.values[:, :, c:]
        mask = mask[:, c:]
    return mask


def cache_kwargs(model, cache) -> dict:
    """The forward keyword that passes a KV cache: `cache` where the model takes it (transformers >= 5.x renamed
    `past_key_values`, which now warns on every call), else `past_key_values`. A PEFT wrapper passes keywords
    through to its base model, which decides."""
    base = model.get_base_model() if hasattr(model, "get_base_model") else model
    return {_cache_name(type(base)): cache}


_CACHE_NAMES: dict[type, str] = {}


def _cache_name(cls: type) -> str:
    if cls not in _CACHE_NAMES:
        import inspect

        params = inspect.signature(cls.forward).parameters
        _CACHE_NAMES[cls] = "cache" if "cache" in params else "past_key_values"
    return _CACHE_NAMES[cls]

