"""sluice-controller's REST API: health probes, state and flow dumps, metrics.

``create_app(view, metrics)`` builds a FastAPI app whose handlers only read a
``ControllerView`` and format the answer; ``RestServer`` runs it with uvicorn in
a background thread on loopback. Endpoints and errors: docs/rest.md.

Every 4xx caused by a query parameter answers
``{"detail": {"parameter": NAME, "message": TEXT}}``: 400 for a malformed or
unknown parameter, 404 for a well-formed filter that names nothing.
"""

from __future__ import annotations

import logging
import re
import socket
import threading
import time
from collections.abc import Callable
from importlib import metadata
from typing import Annotated, Any, Final, Literal

import uvicorn
from fastapi import Depends, FastAPI, HTTPException, Query, Request, Response
from fastapi.exceptions import RequestValidationError
from fastapi.openapi.utils import get_openapi
from fastapi.responses import JSONResponse
from fastapi.routing import APIRoute
from pydantic import BaseModel

from controller.metrics import CONTENT_TYPE, Metrics
from controller.view import (
    ControllerView,
    FlowInfo,
    NodeInfo,
    PodInfo,
    PodPolicies,
    PolicyInfo,
    PolicyView,
    UnknownFilter,
)

LOG = logging.getLogger(__name__)

API_TITLE: Final = "sluice-controller"
# Kubernetes object names: namespace = DNS-1123 label, pod = DNS-1123 subdomain.
_DNS_LABEL: Final = re.compile(r"^[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?$")
_DNS_SUBDOMAIN: Final = re.compile(r"^(?=.{1,253}$)[a-z0-9]([-a-z0-9.]*[a-z0-9])?$")


class ParameterError(BaseModel):
    """Which query parameter was wrong, and how."""

    parameter: str
    message: str


class ErrorBody(BaseModel):
    """Body of every 400/404 caused by a query parameter."""

    detail: ParameterError


class Health(BaseModel):
    """Liveness: "ok" (200) or "unhealthy" (503)."""

    status: Literal["ok", "unhealthy"]


class Readiness(BaseModel):
    """Readiness: "ready" (200) or "not ready" (503) with the reasons."""

    status: Literal["ready", "not ready"]
    reasons: list[str]


class PrometheusResponse(Response):
    """Prometheus text exposition format 0.0.4."""

    media_type = CONTENT_TYPE


def _param_error(status: int, parameter: str, message: str) -> HTTPException:
    return HTTPException(status, ParameterError(parameter=parameter, message=message).model_dump())


def _reject_unknown_query(request: Request) -> None:
    """Dependency: 400 for a query parameter the route does not declare, or a repeated one.

    # why read the route: the allowed names come from the handler's own
    # signature, so adding a parameter never needs a second list kept in step.
    """
    route = request.scope.get("route")
    allowed = (
        {p.alias for p in route.dependant.query_params} if isinstance(route, APIRoute) else set()
    )
    for name in sorted(set(request.query_params.keys())):
        if name not in allowed:
            raise _param_error(400, name, f"unknown query parameter {name!r}")
        if len(request.query_params.getlist(name)) > 1:
            raise _param_error(400, name, f"query parameter {name!r} given more than once")


def _check_pod_ref(ref: str) -> None:
    """400 unless ``ref`` is "namespace/name" with valid Kubernetes names."""
    namespace, slash, name = ref.partition("/")
    if not slash:
        raise _param_error(400, "pod", f"pod must be 'namespace/name', got {ref!r}")
    if not _DNS_LABEL.match(namespace):
        raise _param_error(400, "pod", f"pod: invalid namespace {namespace!r} in {ref!r}")
    if not _DNS_SUBDOMAIN.match(name):
        raise _param_error(400, "pod", f"pod: invalid pod name {name!r} in {ref!r}")


def _check_nonempty(parameter: str, value: str | None) -> None:
    if value is not None and not value:
        raise _param_error(400, parameter, f"{parameter} must not be empty")


_PARAM_ERRORS: Final[dict[int | str, dict[str, Any]]] = {
    400: {"model": ErrorBody, "description": "malformed or unknown query parameter"},
}
_ERROR_REF: Final = {"$ref": "#/components/schemas/ErrorBody"}
_FILTER_ERRORS: Final[dict[int | str, dict[str, Any]]] = {
    404: {"model": ErrorBody, "description": "the filter names no table / pod"},
}


def _add_probe_routes(app: FastAPI, view: ControllerView) -> None:
    @app.get("/healthz", responses={503: {"model": Health}}, tags=["probes"])
    def healthz(response: Response) -> Health:
        """Liveness: the process and its threads are running."""
        try:
            alive = view.health()
        except Exception:  # why: a probe must answer 503, never a 500 traceback
            LOG.exception("health check raised")
            alive = False
        if not alive:
            response.status_code = 503
        return Health(status="ok" if alive else "unhealthy")

    @app.get("/readyz", responses={503: {"model": Readiness}}, tags=["probes"])
    def readyz(response: Response) -> Readiness:
        """Readiness: connected to the switch and OVSDB, podCIDR known."""
        try:
            ready, reasons = view.readiness()
        except Exception as exc:  # why: as for /healthz
            LOG.exception("readiness check raised")
            ready, reasons = False, [f"readiness check failed: {exc}"]
        if not ready:
            response.status_code = 503
        return Readiness(status="ready" if ready else "not ready", reasons=list(reasons))


def _add_state_routes(app: FastAPI, view: ControllerView) -> None:
    @app.get("/v1/node", tags=["state"])
    def get_node() -> NodeInfo:
        """This node's identity, addressing and bridge."""
        return view.node()

    @app.get("/v1/pods", tags=["state"])
    def get_pods(
        namespace: Annotated[str | None, Query(description="only this namespace's pods")] = None,
    ) -> list[PodInfo]:
        """Pod interfaces attached on this node."""
        if namespace is not None and not _DNS_LABEL.match(namespace):
            raise _param_error(400, "namespace", f"invalid namespace {namespace!r}")
        pods = view.pods()
        return pods if namespace is None else [p for p in pods if p.namespace == namespace]

    @app.get("/v1/tables", tags=["state"])
    def get_tables() -> list[str]:
        """Pipeline table names in packet order (values for ``/v1/flows?table=``)."""
        return view.tables()

    @app.get("/v1/flows", responses=_FILTER_ERRORS, tags=["state"])
    def get_flows(
        table: Annotated[str | None, Query(description="pipeline table name")] = None,
        pod: Annotated[str | None, Query(description="namespace/name")] = None,
    ) -> list[FlowInfo]:
        """Installed flows, rendered ovs-ofctl style; optionally one table's / pod's."""
        _check_nonempty("table", table)
        if pod is not None:
            _check_pod_ref(pod)
        try:
            return view.flows(table, pod)
        except UnknownFilter as exc:
            raise _param_error(404, exc.parameter, str(exc)) from exc


def _add_policy_routes(app: FastAPI, view: PolicyView) -> None:
    @app.get("/v1/policies", tags=["policy"])
    def get_policies(
        namespace: Annotated[str | None, Query(description="only this namespace's")] = None,
    ) -> list[PolicyInfo]:
        """NetworkPolicies with their selected pods and rules resolved (docs/policy.md)."""
        if namespace is not None and not _DNS_LABEL.match(namespace):
            raise _param_error(400, "namespace", f"invalid namespace {namespace!r}")
        return view.policies(namespace)

    @app.get("/v1/policies/explain", responses=_FILTER_ERRORS, tags=["policy"])
    def explain(
        namespace: Annotated[str, Query(description="the pod's namespace")],
        pod: Annotated[str, Query(description="the pod's name")],
    ) -> PodPolicies:
        """Which policies select one pod for ingress and egress, and what they allow."""
        if not _DNS_LABEL.match(namespace):
            raise _param_error(400, "namespace", f"invalid namespace {namespace!r}")
        if not _DNS_SUBDOMAIN.match(pod):
            raise _param_error(400, "pod", f"invalid pod name {pod!r}")
        try:
            return view.pod_policies(namespace, pod)
        except UnknownFilter as exc:
            raise _param_error(404, exc.parameter, str(exc)) from exc


def _add_metrics_route(app: FastAPI, metrics: Metrics) -> None:
    @app.get(
        "/metrics",
        response_class=PrometheusResponse,
        responses={
            200: {"content": {CONTENT_TYPE: {"schema": {"type": "string"}}}},
            # why explicit: with a non-JSON response class FastAPI would file the
            # 400 model under text/plain, but errors are always JSON.
            400: {
                "description": _PARAM_ERRORS[400]["description"],
                "content": {"application/json": {"schema": _ERROR_REF}},
            },
        },
        tags=["metrics"],
    )
    def get_metrics() -> PrometheusResponse:
        """Prometheus metrics (text exposition format 0.0.4)."""
        return PrometheusResponse(metrics.render())


async def _validation_error(_request: Request, exc: Exception) -> JSONResponse:
    """Report FastAPI's own parameter validation as a 400 naming the parameter."""
    errors = exc.errors() if isinstance(exc, RequestValidationError) else []
    loc = errors[0]["loc"] if errors else ()
    name = str(loc[-1]) if loc else "?"
    message = errors[0]["msg"] if errors else str(exc)
    body = ErrorBody(detail=ParameterError(parameter=name, message=f"{name}: {message}"))
    return JSONResponse(body.model_dump(), status_code=400)


def _openapi_without_422(app: FastAPI) -> Callable[[], dict[str, Any]]:
    """Build the OpenAPI document without FastAPI's automatic 422 responses.

    # why: validation errors are answered as 400 ``ErrorBody`` (above), so the
    # 422 ``HTTPValidationError`` FastAPI documents by default never happens.
    """

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            doc = get_openapi(
                title=app.title,
                version=app.version,
                description=app.description,
                routes=app.routes,
            )
            for path in doc["paths"].values():
                for operation in path.values():
                    operation["responses"].pop("422", None)
            schemas = doc.get("components", {}).get("schemas", {})
            for unused in ("HTTPValidationError", "ValidationError"):
                schemas.pop(unused, None)
            app.openapi_schema = doc
        return app.openapi_schema

    return openapi


def _version() -> str:
    try:
        return metadata.version("sluice")
    except metadata.PackageNotFoundError:
        return "0+unknown"


def create_app(view: ControllerView, metrics: Metrics) -> FastAPI:
    """Build the REST app reading ``view`` and serving ``metrics``; nothing is started.

    The ``/v1/policies`` routes are added when ``view`` is also a ``PolicyView``.

    Handlers are plain functions, which FastAPI runs in its worker threads.
    # why: a view method may take the controller's state lock; a blocking call
    # in an ``async def`` handler would stall every other request.
    """
    app = FastAPI(
        title=API_TITLE,
        version=_version(),
        description="Node-local API of the Sluice CNI controller (docs/rest.md).",
        # why: Swagger UI / ReDoc load assets from a CDN; the JSON document suffices.
        docs_url=None,
        redoc_url=None,
        dependencies=[Depends(_reject_unknown_query)],
        responses=_PARAM_ERRORS,  # every route may answer 400 for an unknown parameter
    )
    app.add_exception_handler(RequestValidationError, _validation_error)
    _add_probe_routes(app, view)
    _add_state_routes(app, view)
    if isinstance(view, PolicyView):  # why: a view without policy inputs serves no such routes
        _add_policy_routes(app, view)
    _add_metrics_route(app, metrics)
    app.openapi = _openapi_without_422(app)  # type: ignore[method-assign]
    return app


class RestServer:
    """Runs an ASGI app with uvicorn in a daemon thread.

    The socket is bound in ``start()`` so that bind errors surface there and
    ``port`` is known (``port=0`` picks a free one) before any request.
    """

    def __init__(self, app: Any, host: str = "127.0.0.1", port: int = 0) -> None:
        self._app = app
        self.host = host
        self._requested_port = port
        self._socket: socket.socket | None = None
        self._server: uvicorn.Server | None = None
        self._thread: threading.Thread | None = None

    @property
    def port(self) -> int:
        """The bound port (after ``start()``), else the requested one."""
        if self._socket is not None:
            return int(self._socket.getsockname()[1])
        return self._requested_port

    def start(self, timeout: float = 10.0) -> None:
        """Bind, start serving in a background thread, and wait until it accepts."""
        if self._thread is not None:
            raise RuntimeError("RestServer already started")
        family = socket.AF_INET6 if ":" in self.host else socket.AF_INET
        sock = socket.socket(family, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((self.host, self._requested_port))
        except OSError:
            sock.close()
            raise
        self._socket = sock
        config = uvicorn.Config(
            self._app,
            log_config=None,  # why: never reconfigure the controller's logging
            log_level="warning",
            access_log=False,
            lifespan="off",
            http="h11",
            ws="none",
        )
        self._server = uvicorn.Server(config)
        self._thread = threading.Thread(
            target=self._run, args=(self._server, sock), name="sluice-rest", daemon=True
        )
        self._thread.start()
        self._wait_started(timeout)
        LOG.info("REST API on http://%s:%d", self.host, self.port)

    def _run(self, server: uvicorn.Server, sock: socket.socket) -> None:
        try:
            server.run(sockets=[sock])
        except BaseException:  # why: uvicorn sys.exit()s on startup failure
            LOG.exception("REST server stopped with an error")

    def _wait_started(self, timeout: float) -> None:
        assert self._server is not None and self._thread is not None
        deadline = time.monotonic() + timeout
        while not self._server.started:
            if not self._thread.is_alive() or time.monotonic() > deadline:
                self.stop()
                raise RuntimeError(f"REST server did not start on {self.host}:{self.port}")
            time.sleep(0.01)

    def stop(self, timeout: float = 5.0) -> None:
        """Let uvicorn finish open requests and exit, join its thread, close the socket.

        After ``timeout`` seconds open connections are cut (uvicorn's force exit).
        """
        server, thread = self._server, self._thread
        if server is not None and thread is not None:
            server.should_exit = True
            thread.join(timeout)
            if thread.is_alive():
                LOG.warning("REST server still busy after %.1fs; forcing exit", timeout)
                server.force_exit = True
                thread.join(timeout)
        if self._socket is not None:
            self._socket.close()
        self._server, self._thread, self._socket = None, None, None
