"""Keys and values that grow in place: a decoding step's KV cache without a `torch.cat` of
the whole cache every step (used by `neural.GPT` and the Hugging Face adapter)."""

from __future__ import annotations

import torch


class GrowingKV:
    """Keys and values (B, H, S, hs) of S past positions, in buffers with room for more.

    A value, as a pair of tensors is: `append` returns a new `GrowingKV` and leaves this one
    as it was. It writes the new positions into the free end of the buffers this one shares
    with the caches it came from, where none of them has written past these S positions
    (`_frontier`, shared by them); otherwise, or where the buffers are full, it copies into
    buffers of its own, with room for a quarter more positions (at least 32). New keys that
    need a gradient are never written in place: they take new buffers, as `torch.cat` would.
    """

    __slots__ = ("_k", "_v", "_frontier", "length")

    def __init__(self, k: torch.Tensor, v: torch.Tensor, frontier: list[int], length: int):
        self._k, self._v, self._frontier, self.length = k, v, frontier, length

    @classmethod
    def _empty(cls, keys: torch.Tensor, values: torch.Tensor, rows: int, length: int,
               extra: int, slack: bool = True) -> GrowingKV:
        """Buffers like keys/values for `rows` rows of `length` positions (to be filled),
        with room for `extra` more, and then some where `slack`."""
        room = length + extra + (max(32, (length + extra) // 4) if slack else 0)
        H = keys.size(1)
        k = keys.new_empty((rows, H, room, keys.size(-1)))
        v = values.new_empty((rows, values.size(1), room, values.size(-1)))
        return cls(k, v, [length], length)

    @classmethod
    def of(cls, keys: torch.Tensor, values: torch.Tensor, extra: int = 0) -> GrowingKV:
        """Copies of `keys` and `values`, with room for `extra` more positions and then some."""
        new = cls._empty(keys, values, keys.size(0), keys.size(2), extra)
        new.keys.copy_(keys)
        new.values.copy_(values)
        return new

    @classmethod
    def wrap(cls, keys: torch.Tensor, values: torch.Tensor) -> GrowingKV:
        """`keys` and `values` themselves, with no room: the first `append` copies them."""
        return cls(keys, values, [keys.size(2)], keys.size(2))

    @property
    def keys(self) -> torch.Tensor:
        return self._k[:, :, : self.length]

    @property
    def values(self) -> torch.Tensor:
        return self._v[:, :, : self.length]

    def append(self, k: torch.Tensor, v: torch.Tensor) -> GrowingKV:
        """These positions followed by the T positions of k, v (B, H, T, hs)."""
        S, T = self.length, k.size(2)
        if k.requires_grad or v.requires_grad:
            return GrowingKV.of(torch.cat((self.keys, k), dim=2),
                                torch.cat((self.values, v), dim=2))
        if self._frontier[0] != S or S + T > self._k.size(2):
            return GrowingKV.of(self.keys, self.values, T).append(k, v)
        self._k[:, :, S : S + T] = k
        self._v[:, :, S : S + T] = v
        self._frontier[0] = S + T
        return GrowingKV(self._k, self._v, self._frontier, S + T)

    def prefix(self, length: int) -> GrowingKV:
        """The first `length` positions (sharing the buffers)."""
        return GrowingKV(self._k, self._v, self._frontier, max(0, min(length, self.length)))

    def select(self, index: torch.Tensor, room: int | None = None) -> GrowingKV:
        """The rows `index` (in buffers of their own, written in one pass), with room for
        exactly `room` more positions (None: a few)."""
        return select(self.keys, self.values, index, room)


def select(keys: torch.Tensor, values: torch.Tensor, index: torch.Tensor,
           room: int | None = None) -> GrowingKV:
    """The rows `index` of keys and values (B, H, S, hs) as a `GrowingKV` with room for
    exactly `room` more positions (None: a few): where the caller knows how many positions
    will follow, appending them never copies the cache again."""
    if torch.is_grad_enabled() and (keys.requires_grad or values.requires_grad):
        return GrowingKV.wrap(keys.index_select(0, index), values.index_select(0, index))
    new = GrowingKV._empty(keys, values, index.numel(), keys.size(2), room or 0,
                           slack=room is None)
    torch.index_select(keys, 0, index, out=new.keys)
    torch.index_select(values, 0, index, out=new.values)
    return new


def grow(past, k: torch.Tensor, v: torch.Tensor) -> GrowingKV:
    """`past` ((keys, values) of a prefill, or a `GrowingKV`) followed by k, v."""
    return (past if isinstance(past, GrowingKV) else GrowingKV.wrap(*past)).append(k, v)
