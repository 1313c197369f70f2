"""A bounded mapping that forgets the least recently used entry first (caches of computed state)."""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Hashable
from typing import Any


class LRU(OrderedDict):
    """At most `size` entries; `get` marks an entry as used, `put` evicts the least recently used."""

    def __init__(self, size: int):
        super().__init__()
        self.size = max(0, int(size))

    def get(self, key: Hashable, default: Any = None) -> Any:
        if key not in self:
            return default
        self.move_to_end(key)
        return self[key]

    def put(self, key: Hashable, value: Any) -> None:
        self[key] = value
        self.move_to_end(key)
        while len(self) > self.size:
            self.popitem(last=False)


__all__ = ["LRU"]
