"""List-and-watch with informer semantics, on the official Kubernetes client.

An `Informer` lists a resource, then watches from the list's resourceVersion,
follows bookmarks, relists when the server answers 410 Gone (the version is too
old, e.g. after an apiserver restart compacted it), and backs off exponentially
on other errors. Handlers see `on_add/on_update/on_delete`-style events computed
against its local store, so a relist produces deletes for objects that vanished.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from typing import Any

from kubernetes import watch
from kubernetes.client.exceptions import ApiException

LOG = logging.getLogger(__name__)
Handler = Callable[[str, Any], None]  # ("ADDED" | "MODIFIED" | "DELETED", object)
_WATCH_SECONDS = 300
_MAX_BACKOFF = 30.0


class Gone(Exception):
    """The watch's resourceVersion is too old: relist."""


def _key(obj: Any) -> str:
    meta = obj.metadata
    return f"{meta.namespace or ''}/{meta.name}"


class Informer:
    """Keep a local store of one resource kind in sync with the API server.

    `list_fn` is a client method such as `CoreV1Api.list_node` (called with
    `resource_version`, `timeout_seconds`, `watch`, `allow_watch_bookmarks`).
    `sleep` is injected so tests need not wait.
    """

    def __init__(
        self,
        name: str,
        list_fn: Callable[..., Any],
        handler: Handler,
        sleep: Callable[[float], bool] | None = None,
    ) -> None:
        self.name = name
        self.list_fn = list_fn
        self.handler = handler
        self.store: dict[str, Any] = {}
        self.synced = threading.Event()
        self.relists = 0
        self._stop = threading.Event()
        self._sleep = sleep or self._stop.wait
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        """Run in a daemon thread."""
        self._thread = threading.Thread(target=self.run, name=f"informer-{self.name}", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        """Ask the loop to end (an open watch ends at its timeout)."""
        self._stop.set()

    @property
    def alive(self) -> bool:
        """Whether the informer thread runs."""
        return self._thread is not None and self._thread.is_alive()

    def run(self) -> None:
        """List, then watch until stopped; relist on 410, back off on errors."""
        backoff = 0.5
        version = None
        while not self._stop.is_set():
            try:
                if version is None:
                    version = self.relist()
                    backoff = 0.5
                version = self.watch_once(version)
                backoff = 0.5
            except Gone:
                LOG.info("%s: resourceVersion too old, relisting", self.name)
                version = None
            except Exception as exc:  # noqa: BLE001 — any API failure: back off, retry
                LOG.warning("%s: %s; retrying in %.1f s", self.name, exc, backoff)
                self._sleep(backoff)
                backoff = min(backoff * 2, _MAX_BACKOFF)

    def relist(self) -> str:
        """List everything, emit the differences to the store; return the list's version."""
        result = self.list_fn(watch=False)
        self.relists += 1
        fresh = {_key(obj): obj for obj in result.items}
        for key in list(self.store):
            if key not in fresh:
                self._emit("DELETED", self.store.pop(key))
        for key, obj in fresh.items():
            event = "MODIFIED" if key in self.store else "ADDED"
            self.store[key] = obj
            self._emit(event, obj)
        self.synced.set()
        return str(result.metadata.resource_version)

    def watch_once(self, version: str) -> str:
        """Watch from `version` until the server closes the stream; return the last version."""
        stream = watch.Watch().stream(
            self.list_fn,
            resource_version=version,
            timeout_seconds=_WATCH_SECONDS,
            allow_watch_bookmarks=True,
        )
        try:
            for event in stream:
                if self._stop.is_set():
                    break
                version = self._handle(event, version)
        except ApiException as exc:
            if exc.status == 410:
                raise Gone() from exc
            raise
        return version

    def _handle(self, event: dict[str, Any], version: str) -> str:
        kind, obj = event["type"], event["object"]
        raw = event.get("raw_object") or {}
        if kind == "ERROR":
            if raw.get("code") == 410:
                raise Gone()
            raise RuntimeError(f"watch error: {raw}")
        if kind == "BOOKMARK":
            # why: the client hands bookmarks over undeserialized (a dict), and a
            # bookmark carries nothing but the resourceVersion.
            body = raw or (obj if isinstance(obj, dict) else {})
            return str((body.get("metadata") or {}).get("resourceVersion") or version)
        new_version = obj.metadata.resource_version or version
        key = _key(obj)
        if kind == "DELETED":
            self.store.pop(key, None)
        else:
            kind = "MODIFIED" if key in self.store else "ADDED"
            self.store[key] = obj
        self._emit(kind, obj)
        return str(new_version)

    def _emit(self, kind: str, obj: Any) -> None:
        try:
            self.handler(kind, obj)
        except Exception:  # noqa: BLE001 — a bad object must not stop the informer
            LOG.exception("%s: handler failed on %s %s", self.name, kind, _key(obj))
