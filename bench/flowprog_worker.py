"""Child process of the flow-programming benchmark: Sluice's real reconciler path.

Run inside the benchmark's netns as
``python -m bench.flowprog_worker PORT PODS REMOTES POLICY`` (POLICY 0 or 1).
It starts os-ken with SluiceApp (controller.app.start_osken) listening on
127.0.0.1:PORT, builds the synthetic NodeState, prints ``ready`` and then reads
one command per stdin line:

* ``sync N [FILE]`` - wait for switch connection number N (a fresh br-int
  the parent made), clear the flow compiler's caches, then time
  ``Reconciler.full_sync()``: dump of the (empty) bridge, flow compilation,
  message building, one atomic ONF bundle plus a barrier, stale-flow clean-up.
  Prints ``{"seconds": ..., "messages": ...}``. With FILE, also writes the
  installed flows there, rendered for ``ovs-ofctl``.
* ``profile N`` - the same under cProfile; adds the top functions.
* ``quit``.

With POLICY=1 the NetworkPolicy inputs of ``bench.flowpolicy`` go into the
NodeState (``set_policy_input``) so full_sync compiles them itself; against a
reconciler without policy support, they are added to ``desired_for``'s result
instead. The ``ready`` line says which (``ready state|patched|none``).
"""

from __future__ import annotations

import cProfile
import io
import json
import pstats
import sys
import time
from typing import Any

from bench import flowpolicy, flowstate
from controller import reconcile
from controller.app import start_osken
from controller.metrics import Metrics
from controller.reconcile import Reconciler
from controller.state import NodeState
from controller.switch import Switch
from flows.render import render

CONNECT_TIMEOUT = 30.0


class CountingSwitch(Switch):
    """A Switch that counts the messages the reconciler sends."""

    def __init__(self) -> None:
        super().__init__()
        self.sent = 0

    def attach(self, datapath: Any) -> int:
        """Switch.attach, logged."""
        gen = super().attach(datapath)
        print(f"attach {gen} {datapath.id:x}", file=sys.stderr, flush=True)
        return gen

    def detach(self, datapath: Any) -> None:
        """Switch.detach, logged."""
        print(f"detach {datapath.id or 0:x}", file=sys.stderr, flush=True)
        super().detach(datapath)

    def send_batch(self, build: Any, timeout: float = 60.0, atomic: bool = False) -> int:
        """Switch.send_batch with a longer timeout for big bundles; counts messages."""
        n = super().send_batch(build, timeout=timeout, atomic=atomic)
        self.sent += n
        return n


def wait_generation(switch: Switch, generation: int) -> None:
    """Block until the switch's connection generation reaches ``generation``."""
    deadline = time.monotonic() + CONNECT_TIMEOUT
    while switch.generation < generation or switch.datapath is None:
        if time.monotonic() > deadline:
            raise TimeoutError("br-int did not connect")
        time.sleep(0.005)


def clear_flow_caches() -> None:
    """Empty every cache of the flow compiler (functools', flows.memo's), so each trial
    compiles cold."""
    for name, module in list(sys.modules.items()):
        if name == "flows" or name.startswith("flows."):
            for value in vars(module).values():
                # why not classes: flows.memo.RunMemo itself has the method, unbound
                if not isinstance(value, type) and callable(getattr(value, "cache_clear", None)):
                    value.cache_clear()


def write_flows(reconciler: Reconciler, path: str) -> None:
    """The flows the reconciler installed, as ``ovs-ofctl add-flows`` input."""
    flows = [f for fs in reconciler.installed.values() for f in fs]
    with open(path, "w") as out:
        out.writelines(render(f, names=False) + "\n" for f in flows)


def one_sync(state: NodeState, switch: CountingSwitch, profile: bool) -> dict[str, Any]:
    """A fresh Reconciler's full_sync against the connected bridge, timed."""
    reconciler = Reconciler(state, switch, Metrics(), 1, lambda _r, _s: None)
    switch.sent = 0
    clear_flow_caches()
    prof = cProfile.Profile() if profile else None
    start = time.perf_counter()
    if prof:
        prof.enable()
    reconciler.full_sync()
    if prof:
        prof.disable()
    out: dict[str, Any] = {"seconds": time.perf_counter() - start, "messages": switch.sent}
    out["reconciler"] = reconciler
    if prof:
        text = io.StringIO()
        pstats.Stats(prof, stream=text).sort_stats("cumulative").print_stats(25)
        out["profile"] = text.getvalue()
    return out


def add_policy(state: NodeState, n_pods: int, n_remotes: int) -> str:
    """Give the reconciler the synthetic NetworkPolicy state; return how.

    ``state``: through ``NodeState.set_policy_input``, as the controller's
    Kubernetes watchers do. ``patched``: a reconciler without policy support
    gets the compiled flows added to what ``desired_for`` returns.
    """
    if hasattr(state, "set_policy_input"):
        for kind, items in flowpolicy.inputs(n_pods, n_remotes).items():
            for key, value in items.items():
                state.set_policy_input(kind, key, value)
        return "state"
    original = reconcile.desired_for

    def desired_for(snap: Any, keys: Any, round_: int, *rest: Any) -> Any:
        out = original(snap, keys, round_, *rest)
        out.update(flowpolicy.policy_flows(n_pods, n_remotes, round_))
        return out

    setattr(reconcile, "desired_for", desired_for)  # noqa: B010 — keep mypy out of it
    return "patched"


def main(argv: list[str]) -> int:
    """Serve sync/profile commands on stdin (see the module docstring)."""
    port, n_pods, n_remotes, policy = (int(a) for a in argv)
    state = flowstate.state(n_pods, n_remotes)
    how = add_policy(state, n_pods, n_remotes) if policy else "none"
    switch = CountingSwitch()
    start_osken("127.0.0.1", port, switch, state)
    print(f"ready {how}", flush=True)
    for line in sys.stdin:
        cmd, *args = line.split()
        if cmd == "quit":
            break
        print(f"{cmd} {args}: generation {switch.generation}", file=sys.stderr, flush=True)
        try:
            wait_generation(switch, int(args[0]))
            result = one_sync(state, switch, profile=cmd == "profile")
            reconciler = result.pop("reconciler")
            if len(args) > 1:
                write_flows(reconciler, args[1])
        except Exception as exc:  # noqa: BLE001 — report to the parent, keep serving
            result = {"error": repr(exc)}
        print(json.dumps(result), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
