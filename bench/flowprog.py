"""Benchmark 2: installing a node's full flow set, Sluice's reconciler vs ovs-ofctl.

One private OVS (netdev) in a ``slb-*`` netns. Every trial gets a fresh
``br-int`` (OpenFlow13, fail_mode=secure). Variants, interleaved trial by trial:

* ``sluice`` - ``bench.flowprog_worker`` (os-ken + SluiceApp + Switch, in the
  same netns) runs ``Reconciler.full_sync()`` over its real OpenFlow
  connection: dump, compile, build, one atomic bundle + barrier, clean-up.
  Timed inside the worker from the call to its return (the connection
  handshake is not included); the compiler's caches are emptied first, so
  every trial compiles cold, as at controller start.
* ``ovs-ofctl`` - ``ovs-ofctl -O OpenFlow13 add-flows br-int FILE`` of the same
  flows (those the reconciler installed in an untimed first sync) rendered by
  ``flows.render.render(flow, names=False)``, timed from exec
  to exit (includes parsing the file). ``ovs-ofctl --bundle`` too, since
  Sluice's batch is a bundle.

After each trial the installed flows are dumped: the count and the exact flow
set (``--no-stats``) must be the same for every variant. Two states: local pods
+ remote nodes, then the same plus NetworkPolicy flows when flows/policy.py
exists (see ``bench.flowpolicy``).
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from contextlib import ExitStack
from pathlib import Path
from typing import Any

from bench import flowpolicy
from bench.common import REPO, TOOL_PATH, netns, ratio, stop_proc, summary_ms, target
from sandbox.ovs import OvsInstance

OF_PORT = 6653
LIMIT = 1.5
VARIANTS = ("ovs-ofctl", "ovs-ofctl --bundle", "sluice")
POLICY_NOTE = (
    "flows/policy.py exists: the second state adds 20 NetworkPolicies over 10 namespaces "
    "(bench/flowpolicy.py); policy_input says how the worker fed them: 'state' = "
    "NodeState.set_policy_input, so full_sync compiles them itself (the controller's path); "
    "'patched' = added to desired_for's result (a reconciler without policy support)"
)
NO_POLICY_NOTE = "flows/policy.py does not exist at run time: no NetworkPolicy rules in the state"


def sizes(quick: bool) -> tuple[int, int, int]:
    """(local pods, remote nodes, trials per variant)."""
    return (10, 20, 2) if quick else (110, 1000, 7)


def fresh_bridge(ovs: OvsInstance, controller: bool) -> None:
    """Replace br-int with an empty one; with ``controller`` point it at the worker.

    Deleting and re-adding in one transaction would keep the old bridge (and
    its flows): ovs-vswitchd matches bridges by name. Two transactions do not.
    """
    ovs.vsctl("--if-exists", "del-br", "br-int")
    args = ["add-br", "br-int", "--", "set", "Bridge", "br-int", "datapath_type=netdev"]
    args += ["protocols=OpenFlow13", "fail_mode=secure"]
    if controller:
        args += ["--", "set-controller", "br-int", f"tcp:127.0.0.1:{OF_PORT}"]
    ovs.vsctl(*args)
    left = installed(ovs)
    if left:
        raise RuntimeError(f"br-int is not fresh: {len(left)} flows")


def installed(ovs: OvsInstance) -> list[str]:
    """The installed flows without statistics, sorted."""
    out = ovs.ofctl("-O", "OpenFlow13", "--no-stats", "dump-flows", "br-int")
    return sorted(line.strip() for line in out.splitlines() if "actions=" in line)


class Worker:
    """The os-ken child process, driven over its stdin/stdout."""

    def __init__(self, ns: str, n_pods: int, n_remotes: int, policy: bool, log: Path) -> None:
        argv = ["ip", "netns", "exec", ns, sys.executable, "-m", "bench.flowprog_worker"]
        argv += [str(OF_PORT), str(n_pods), str(n_remotes), str(int(policy))]
        with open(log, "a") as err:
            self.proc = subprocess.Popen(
                argv,
                cwd=REPO,
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                stderr=err,
                text=True,
                env={"PATH": TOOL_PATH, "PYTHONWARNINGS": "ignore"},
            )
        self.connections = 0
        ready = self._line().split()
        if ready[:1] != ["ready"]:
            stop_proc(self.proc)
            raise RuntimeError(f"flowprog worker did not start; see {log}")
        self.policy_path = ready[1] if len(ready) > 1 else "?"

    def _line(self) -> str:
        assert self.proc.stdout is not None
        return self.proc.stdout.readline()

    def sync(
        self, ovs: OvsInstance, profile: bool = False, flow_file: Path | None = None
    ) -> dict[str, Any]:
        """Make a fresh br-int connected to the worker; return its full_sync result.

        With ``flow_file`` the worker also writes the flows it installed there.
        """
        assert self.proc.stdin is not None
        fresh_bridge(ovs, controller=True)
        self.connections += 1
        cmd = f"{'profile' if profile else 'sync'} {self.connections} {flow_file or ''}"
        self.proc.stdin.write(cmd.strip() + "\n")
        self.proc.stdin.flush()
        result: dict[str, Any] = json.loads(self._line() or '{"error": "worker died"}')
        if "error" in result:
            raise RuntimeError(f"full_sync failed: {result['error']}")
        return result

    def stop(self) -> None:
        """Ask it to quit, then stop it by pid."""
        if self.proc.poll() is None and self.proc.stdin is not None:
            try:
                self.proc.stdin.write("quit\n")
                self.proc.stdin.close()
                self.proc.wait(5)
            except (OSError, subprocess.TimeoutExpired):
                pass
        stop_proc(self.proc)


def ofctl_trial(ovs: OvsInstance, flow_file: Path, bundle: bool) -> float:
    """Fresh bridge, then time one ``ovs-ofctl add-flows`` from exec to exit."""
    fresh_bridge(ovs, controller=False)
    extra = ["--bundle"] if bundle else []
    start = time.perf_counter()
    ovs.ofctl("-O", "OpenFlow13", *extra, "add-flows", "br-int", str(flow_file))
    return time.perf_counter() - start


def trials(ovs: OvsInstance, worker: Worker, flow_file: Path, n: int) -> dict[str, Any]:
    """``n`` trials per variant, rotating the order; check every installed set."""
    times: dict[str, list[float]] = {v: [] for v in VARIANTS}
    sets: dict[str, list[str]] = {}
    for i in range(n):
        for k in range(len(VARIANTS)):
            variant = VARIANTS[(i + k) % len(VARIANTS)]
            if variant == "sluice":
                times[variant].append(worker.sync(ovs)["seconds"])
            else:
                times[variant].append(ofctl_trial(ovs, flow_file, "bundle" in variant))
            sets[variant] = installed(ovs)
    return {"times": times, "sets": sets}


def states() -> list[tuple[str, bool]]:
    """(label, with NetworkPolicy flows?) of each synthetic state measured."""
    out = [("pods + remote nodes", False)]
    if flowpolicy.available():
        out.append(("pods + remote nodes + NetworkPolicy", True))
    return out


def measure_state(ns: str, ovs: OvsInstance, workdir: Path, policy: bool, quick: bool) -> Any:
    """Trials of every variant for one state; the worker is stopped afterwards.

    An untimed first sync writes the flows Sluice installs to the file that
    ovs-ofctl then loads, so both install exactly the same flows.
    """
    n_pods, n_remotes, n_trials = sizes(quick)
    flow_file = workdir / f"flows-{int(policy)}.txt"
    with ExitStack() as inner:
        worker = Worker(ns, n_pods, n_remotes, policy, workdir / "worker.log")
        inner.callback(worker.stop)
        worker.sync(ovs, flow_file=flow_file)
        data = trials(ovs, worker, flow_file, n_trials)
        data["profile"] = worker.sync(ovs, profile=True).get("profile", "")
        data["policy_path"] = worker.policy_path
    data["flows"] = len(flow_file.read_text().splitlines())
    return data


def run(workdir: Path, quick: bool = False) -> dict[str, Any]:
    """Run the flow-programming benchmark; return its result record."""
    workdir.mkdir(parents=True, exist_ok=True)
    results: dict[str, dict[str, Any]] = {}
    with ExitStack() as stack:
        ns = stack.enter_context(netns("flow"))
        ovs = stack.enter_context(OvsInstance(workdir / "ovs", ns))
        for label, policy in states():
            results[label] = measure_state(ns, ovs, workdir, policy, quick)
    return report(results, quick)


def state_rows(label: str, data: dict[str, Any]) -> list[dict[str, Any]]:
    """One row per variant of one state, with the ratio to plain ovs-ofctl."""
    ref = summary_ms(data["times"]["ovs-ofctl"])
    identical = len({tuple(s) for s in data["sets"].values()}) == 1
    rows = []
    for variant in VARIANTS:
        row: dict[str, Any] = {"state": label, "flows": data["flows"], "variant": variant}
        row.update(n=len(data["times"][variant]), **summary_ms(data["times"][variant]))
        row["installed_flows"] = len(data["sets"][variant])
        row["identical_set"] = identical
        row["ratio_p50"] = ratio(row["p50_ms"], ref["p50_ms"])
        rows.append(row)
    return rows


def report(results: dict[str, dict[str, Any]], quick: bool) -> dict[str, Any]:
    """The result record; the target is measured on the largest state."""
    n_pods, n_remotes, n_trials = sizes(quick)
    rows = [row for label, data in results.items() for row in state_rows(label, data)]
    last = list(results)[-1]
    sluice = next(r for r in rows if r["state"] == last and r["variant"] == "sluice")
    cols = ["state", "flows", "variant", "n", "p50_ms", "p99_ms", "installed_flows"]
    return {
        "name": "flows",
        "title": "Flow programming (full flow set into a fresh br-int)",
        "params": {
            "local_pods": n_pods,
            "remote_nodes": n_remotes,
            "trials_per_variant": n_trials,
            "policy": POLICY_NOTE if flowpolicy.available() else NO_POLICY_NOTE,
            "policy_input": results[last].get("policy_path"),
        },
        "tables": [
            {
                "title": "Install the full flow set (ms per trial)",
                "columns": [*cols, "identical_set", "ratio_p50"],
                "rows": rows,
            }
        ],
        "profile_top": results[last]["profile"].splitlines()[:40],
        "targets": [
            target(f"flow install <= 1.5x bulk ovs-ofctl ({last})", sluice["ratio_p50"], LIMIT)
        ],
    }
