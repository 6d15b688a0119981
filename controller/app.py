"""The os-ken application: the only module that imports os_ken.controller.

Handlers translate OpenFlow events into calls on `Switch` (connection state,
barrier replies, errors, flow-stats replies) and wake the reconciler. They never
block and never touch OVSDB. `start_osken` runs the app in this process.
"""

from __future__ import annotations

import logging
from typing import Any, ClassVar

from os_ken import cfg
from os_ken.base import app_manager
from os_ken.controller import ofp_event
from os_ken.controller.handler import (
    CONFIG_DISPATCHER,
    DEAD_DISPATCHER,
    MAIN_DISPATCHER,
    set_ev_cls,
)
from os_ken.ofproto import ofproto_v1_3

from controller.state import NodeState
from controller.switch import Switch

LOG = logging.getLogger(__name__)


class SluiceApp(app_manager.OSKenApp):
    """Connects br-int to the reconciler."""

    OFP_VERSIONS: ClassVar[list[int]] = [ofproto_v1_3.OFP_VERSION]
    # why: AppManager instantiates the class itself; the runtime hands over its
    # objects through these class attributes before instantiation.
    switch: ClassVar[Switch]
    state: ClassVar[NodeState]
    on_connection: ClassVar[Any] = None

    @set_ev_cls(ofp_event.EventOFPStateChange, [MAIN_DISPATCHER, DEAD_DISPATCHER])
    def _state_change(self, ev: Any) -> None:
        dp = ev.datapath
        if ev.state == MAIN_DISPATCHER:
            generation = self.switch.attach(dp)
            LOG.info("switch %016x connected (generation %d)", dp.id or 0, generation)
            if self.on_connection:
                self.on_connection(True)
            self.state.mark_all_dirty()
        elif ev.state == DEAD_DISPATCHER:
            LOG.warning("switch disconnected")
            self.switch.detach(dp)
            if self.on_connection:
                self.on_connection(False)

    @set_ev_cls(ofp_event.EventOFPBarrierReply, MAIN_DISPATCHER)
    def _barrier_reply(self, ev: Any) -> None:
        self.switch.barrier_reply(ev.msg.xid)

    @set_ev_cls(ofp_event.EventOFPErrorMsg, [CONFIG_DISPATCHER, MAIN_DISPATCHER])
    def _error(self, ev: Any) -> None:
        msg = ev.msg
        text = f"OFPT_ERROR type={msg.type} code={msg.code} data={bytes(msg.data)[:64].hex()}"
        self.switch.error(msg.xid, text)

    @set_ev_cls(ofp_event.EventOFPFlowStatsReply, MAIN_DISPATCHER)
    def _flow_stats(self, ev: Any) -> None:
        msg = ev.msg
        more = bool(msg.flags & msg.datapath.ofproto.OFPMPF_REPLY_MORE)
        self.switch.stats_reply(msg.xid, msg.body, more)


def start_osken(
    listen_host: str, port: int, switch: Switch, state: NodeState, on_connection: Any = None
) -> list[Any]:
    """Load and start SluiceApp (and os-ken's OpenFlow listener); return its threads."""
    cfg.CONF(
        args=["--ofp-listen-host", listen_host, "--ofp-tcp-listen-port", str(port)],
        project="os_ken",
    )
    SluiceApp.switch = switch
    SluiceApp.state = state
    SluiceApp.on_connection = on_connection
    manager = app_manager.AppManager.get_instance()
    manager.load_apps([__name__])
    contexts = manager.create_contexts()
    return list(manager.instantiate_apps(**contexts))
