"""List-and-watch with informer semantics, on the official Kubernetes client.

An `Informer` lists a resource, then watches from the list's resourceVersion,
follows bookmarks, relists when the server answers 410 Gone (the version is too
old, e.g. after an apiserver restart compacted it), and backs off exponentially
on other errors. Handlers see `on_add/on_update/on_delete`-style events computed
against its local store, so a relist produces deletes for objects that vanished.

Lists are paged (``limit``/``continue``), as client-go's reflector does, so a
relist of 10 000 pods never holds the whole response at once. A handler with
a true ``raw`` attribute receives the API server's JSON as plain dicts and the
store keeps only each object's resourceVersion: no client model object is
ever built. That is what lets a node controller watch every pod of a big
cluster: in the 10 000-pod benchmark (bench/resources.py) the client's model
of a pod took ≈ 20 KiB, what the policy model keeps of it < 1 KiB. Other
handlers get the client's models, and the store keeps them.
"""

from __future__ import annotations

import json
import logging
import threading
from collections.abc import Callable, Iterator
from typing import Any

from kubernetes import watch
from kubernetes.client.exceptions import ApiException
from kubernetes.watch.watch import iter_resp_lines

LOG = logging.getLogger(__name__)
Handler = Callable[[str, Any], None]  # ("ADDED" | "MODIFIED" | "DELETED", object)
_WATCH_SECONDS = 300
_MAX_BACKOFF = 30.0
PAGE_SIZE = 500


class Gone(Exception):
    """The watch's resourceVersion is too old: relist."""


def _key(obj: Any) -> str:
    if isinstance(obj, dict):
        meta = obj.get("metadata") or {}
        return f"{meta.get('namespace') or ''}/{meta.get('name')}"
    meta = obj.metadata
    return f"{meta.namespace or ''}/{meta.name}"


def _version(obj: Any) -> str | None:
    if isinstance(obj, dict):
        return (obj.get("metadata") or {}).get("resourceVersion")
    return obj.metadata.resource_version


def _tombstone(key: str) -> dict[str, Any]:
    """The little a raw handler needs of an object deleted while we were not watching."""
    namespace, _, name = key.partition("/")
    return {"metadata": {"name": name, "namespace": namespace or None}}


class Informer:
    """Keep a local store of one resource kind in sync with the API server.

    `list_fn` is `controller.kubeapi.RawApi.lister(path)` or a client method such
    as `CoreV1Api.list_node` (called with `resource_version`, `timeout_seconds`,
    `watch`, `allow_watch_bookmarks`, `limit`, `_continue` and, for a raw
    handler, `_preload_content=False`).
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
        self.raw = bool(getattr(handler, "raw", False))
        # key -> the object (model handlers) or its resourceVersion (raw handlers)
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
        """List everything, emit the differences to the store; return the list's version.

        A raw handler sees each page as it arrives (so only one page of dicts is
        alive at a time), then the deletions; a model handler the deletions first.
        """
        seen: set[str] = set()
        held: list[Any] = []
        version = ""
        for items, page_version in self._pages():
            version = page_version
            seen.update(_key(obj) for obj in items)
            if self.raw:
                self._store_and_emit(items)
            else:
                held.extend(items)
        self.relists += 1
        for key in [k for k in self.store if k not in seen]:
            old = self.store.pop(key)
            self._emit("DELETED", _tombstone(key) if self.raw else old)
        self._store_and_emit(held)
        self.synced.set()
        return version

    def _store_and_emit(self, items: list[Any]) -> None:
        for obj in items:
            key = _key(obj)
            event = "MODIFIED" if key in self.store else "ADDED"
            self.store[key] = _version(obj) if self.raw else obj
            self._emit(event, obj)

    def _pages(self) -> Iterator[tuple[list[Any], str]]:
        """Each page of one consistent list: (items, the list's resourceVersion)."""
        token = None
        while True:
            kwargs: dict[str, Any] = {"watch": False, "limit": PAGE_SIZE}
            if token:
                kwargs["_continue"] = token
            if self.raw:
                resp = self.list_fn(**kwargs, _preload_content=False)
                try:
                    body = json.loads(resp.data)
                finally:
                    resp.release_conn()
                meta = body.get("metadata") or {}
                items, token = body.get("items") or [], meta.get("continue")
                yield items, str(meta.get("resourceVersion"))
            else:
                result = self.list_fn(**kwargs)
                token = getattr(result.metadata, "_continue", None)
                yield result.items, str(result.metadata.resource_version)
            if not token:
                return

    def watch_once(self, version: str) -> str:
        """Watch from `version` until the server closes the stream; return the last version."""
        try:
            for event in self._events(version):
                if self._stop.is_set():
                    break
                version = self._handle(event, version)
        except ApiException as exc:
            if exc.status == 410:
                raise Gone() from exc
            raise
        return version

    def _events(self, version: str) -> Iterator[dict[str, Any]]:
        kwargs = {
            "resource_version": version,
            "timeout_seconds": _WATCH_SECONDS,
            "allow_watch_bookmarks": True,
        }
        if not self.raw:
            yield from watch.Watch().stream(self.list_fn, **kwargs)
            return
        resp = self.list_fn(watch=True, _preload_content=False, **kwargs)
        try:
            for line in iter_resp_lines(resp):
                if line.strip():
                    event = json.loads(line)
                    # why: the same shape as the client's events, for `_handle`.
                    event["raw_object"] = event["object"]
                    yield event
        finally:
            resp.release_conn()

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
        new_version = _version(obj) or version
        key = _key(obj)
        if kind == "DELETED":
            self.store.pop(key, None)
        else:
            kind = "MODIFIED" if key in self.store else "ADDED"
            self.store[key] = new_version if self.raw else obj
        self._emit(kind, obj)
        return str(new_version)

    def _emit(self, kind: str, obj: Any) -> None:
        try:
            self.handler(kind, obj)
        except Exception:  # noqa: BLE001 — a bad object must not stop the informer
            LOG.exception("%s: handler failed on %s %s", self.name, kind, _key(obj))
