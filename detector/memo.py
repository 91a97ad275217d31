"""A small thread-safe cache of the values most recently computed, for per-work data that scans
read again and again (a work id names its content, so an entry never goes stale)."""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Callable, Hashable


class Recent[K: Hashable, V]:
    """The last `size()` values by key, the least recently used dropped first. *size* is read at
    each insert, so it follows its setting in `detector.config`."""

    def __init__(self, size: Callable[[], int]) -> None:
        self._size = size
        self._values: OrderedDict[K, V] = OrderedDict()
        self._lock = threading.Lock()

    def get(self, key: K, compute: Callable[[], V]) -> V:
        """The value kept for *key*, else `compute()` (run outside the lock), kept."""
        with self._lock:
            if key in self._values:
                self._values.move_to_end(key)
                return self._values[key]
        value = compute()
        with self._lock:
            self._values[key] = value
            while len(self._values) > self._size():
                self._values.popitem(last=False)
        return value
