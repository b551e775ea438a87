"""Loaded models kept in one worker process, so a second job on the same model starts at once.

A `LoadedModel` carries its compiled attack functions in `.cache`; keeping the object keeps them.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Callable
from typing import Generic, TypeVar

T = TypeVar("T")


class ModelCache(Generic[T]):
    """Least-recently-used map from a model's key (its sha256 and output kind) to its loaded form.

    Args:
        capacity: how many models stay loaded; the least recently used one is dropped first.
    """

    def __init__(self, capacity: int) -> None:
        if capacity < 1:
            raise ValueError("capacity must be at least 1")
        self.capacity = capacity
        self._items: OrderedDict[str, T] = OrderedDict()
        self._lock = threading.Lock()
        self.hits = 0
        self.misses = 0

    def get_or_load(self, sha256: str, load: Callable[[], T]) -> T:
        """The cached model for `sha256`, or `load()`'s result, which is then cached."""
        with self._lock:
            if sha256 in self._items:
                self._items.move_to_end(sha256)
                self.hits += 1
                return self._items[sha256]
        # Loading can take seconds; a failure leaves nothing cached, so the next job retries.
        value = load()
        with self._lock:
            self.misses += 1
        self.put(sha256, value)
        return value

    def put(self, key: str, value: T) -> None:
        with self._lock:
            self._items[key] = value
            self._items.move_to_end(key)
            while len(self._items) > self.capacity:
                self._items.popitem(last=False)

    def __contains__(self, sha256: object) -> bool:
        with self._lock:
            return sha256 in self._items

    def __len__(self) -> int:
        with self._lock:
            return len(self._items)

    def clear(self) -> None:
        with self._lock:
            self._items.clear()
