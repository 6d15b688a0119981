"""Talk to ovs-vswitchd itself (not OpenFlow): flush its datapath flow cache.

# why: after a NetworkPolicy narrows what is allowed, ovs-vswitchd 3.1 on the
# userspace datapath was seen to keep forwarding new connections along cached
# datapath flows built from the old rules for more than 10 s, although br-int's
# OpenFlow tables were already correct (tests/e2e/test_netpol_truth.py). Purging
# the cache makes the next packet of every flow take the new rules; established
# connections are untouched because conntrack keeps them.
"""

from __future__ import annotations

import logging
import subprocess
from pathlib import Path

LOG = logging.getLogger(__name__)


def rundir_of(ovsdb_remote: str) -> Path | None:
    """OVS's run directory: where the OVSDB unix socket lives (OVS_RUNDIR)."""
    if not ovsdb_remote.startswith("unix:"):
        return None
    return Path(ovsdb_remote[len("unix:") :]).parent


def vswitchd_target(rundir: Path) -> Path | None:
    """The control socket of the running ovs-vswitchd in `rundir`, if any."""
    try:
        pid = int((rundir / "ovs-vswitchd.pid").read_text().strip())
    except (OSError, ValueError):
        return None
    ctl = rundir / f"ovs-vswitchd.{pid}.ctl"
    return ctl if ctl.exists() else None


def purge_datapath_flows(rundir: Path | None) -> bool:
    """`ovs-appctl revalidator/purge`: drop every cached datapath flow. True on success."""
    target = vswitchd_target(rundir) if rundir else None
    if target is None:
        LOG.warning("cannot purge datapath flows: no ovs-vswitchd control socket in %s", rundir)
        return False
    proc = subprocess.run(
        ["ovs-appctl", "-t", str(target), "revalidator/purge"],
        capture_output=True,
        text=True,
        timeout=10,
        check=False,
    )
    if proc.returncode != 0:
        LOG.warning("revalidator/purge failed: %s", proc.stderr.strip())
        return False
    return True
