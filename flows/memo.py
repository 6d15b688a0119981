"""A memo for the flow compiler that keeps only what the latest compile used.

``functools.lru_cache`` bounds the number of entries, not their size: one
entry of the policy compiler may hold thousands of flows, and under label
churn most entries describe conjunctions that no longer exist, so a 4096-entry
LRU kept hundreds of MiB of dead flows. A ``RunMemo`` instead forgets, at the
end of each compile (``with memo.run():``), every entry that compile did not
look up. Between compiles it holds exactly the results of the last one: the
same ``Flow`` objects the reconciler keeps as installed, so the memo costs
little beyond its keys, and a recompute after an event still finds every
conjunction that did not change.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Hashable, Iterator
from contextlib import contextmanager
from typing import Generic, TypeVar

K = TypeVar("K", bound=Hashable)
V = TypeVar("V")


class RunMemo(Generic[K, V]):
    """Memoize ``compute(key)``; keep only the entries of the latest run.

    Inside ``run()`` an entry looked up or computed is kept for the next run;
    when the outermost ``run()`` ends, entries it did not use are dropped.
    Outside any run, ``get`` computes without storing (no unbounded growth).
    Runs on several threads at once count as one run (their union is kept);
    ``get`` is safe from any thread because each dict operation is atomic.
    """

    def __init__(self, compute: Callable[[K], V]) -> None:
        self._compute = compute
        self._current: dict[K, V] = {}
        self._previous: dict[K, V] = {}
        self._depth = 0
        self._lock = threading.Lock()

    def get(self, key: K) -> V:
        """The memoized ``compute(key)``."""
        try:
            return self._current[key]
        except KeyError:
            pass
        value = self._previous.get(key, _MISSING)
        if value is _MISSING:
            value = self._compute(key)
        if self._depth:
            self._current[key] = value  # type: ignore[assignment]
        return value  # type: ignore[return-value]

    def lookup(self, key: K) -> V | None:
        """The stored value of ``key`` (this run's or the last one's), without computing."""
        value = self._current.get(key, _MISSING)
        if value is _MISSING:
            value = self._previous.get(key)
        return value  # type: ignore[return-value]

    def store(self, key: K, value: V) -> None:
        """Keep ``value`` for ``key`` until the end of the next run (only inside a run)."""
        if self._depth:
            self._current[key] = value

    @contextmanager
    def run(self) -> Iterator[None]:
        """One compile: at its end, forget what it did not use."""
        with self._lock:
            if self._depth == 0:
                # why: the last run's entries become look-up-only; a hit moves one back.
                self._previous, self._current = self._current, {}
            self._depth += 1
        try:
            yield
        finally:
            with self._lock:
                self._depth -= 1
                if self._depth == 0:
                    self._previous = {}

    def __len__(self) -> int:
        return len(self._current) + len(self._previous)

    def cache_clear(self) -> None:
        """Forget everything (the same name as ``functools`` caches, for benchmarks)."""
        with self._lock:
            self._current, self._previous = {}, {}


_MISSING = object()
