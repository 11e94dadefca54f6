"""Who may hold a connection to `regionmir listen`: allowed peer addresses, and limits per peer.

pynetdicom alone counts every TCP connection against one global limit of associations, and a
connection that never sends an A-ASSOCIATE-RQ holds its place for half a minute: a dozen idle
sockets from any host locked every PACS out. The gate works on connections before pynetdicom
sees them: a peer outside ``--allow-peer`` is disconnected at once, each peer address gets at
most ``per_peer`` connections (and all peers together ``total``), and when a limit is reached
the oldest connection that has not yet sent its A-ASSOCIATE-RQ is closed to make room, so a
host that leaks idle connections cannot starve a legitimate sender, even one on the same host.
"""

from __future__ import annotations

import ipaddress
import logging
import socket
import threading
from dataclasses import dataclass

log = logging.getLogger("regionmir")

Network = ipaddress.IPv4Network | ipaddress.IPv6Network


def parse_peer(text: str) -> Network:
    """An ``--allow-peer`` value (an IP address or a CIDR block such as 10.1.0.0/16) as a network.

    Raises:
        ValueError: not an address or block; the message says what is expected.
    """
    try:
        return ipaddress.ip_network(text.strip(), strict=False)
    except ValueError:
        raise ValueError(f"{text!r} is not an IP address or CIDR block (e.g. 10.1.2.3 or 10.1.0.0/16)") from None


def peer_address(client_address) -> ipaddress.IPv4Address | ipaddress.IPv6Address:
    """The peer's IP address; an IPv4 peer of an IPv6 socket (``::ffff:a.b.c.d``) as IPv4."""
    address = ipaddress.ip_address(client_address[0].split("%")[0])
    mapped = getattr(address, "ipv4_mapped", None)
    return mapped or address


@dataclass
class _Connection:
    peer: ipaddress.IPv4Address | ipaddress.IPv6Address
    sock: socket.socket
    assoc: object = None  # the pynetdicom Association, once its handler thread made it


class PeerGate:
    """Admits, counts and evicts the listener's TCP connections (thread-safe)."""

    def __init__(self, allowed: tuple[Network, ...] = (), per_peer: int = 8, total: int = 32):
        self.allowed = allowed  # () admits every address
        self.per_peer = per_peer
        self.total = total
        self._lock = threading.Lock()
        self._open: list[_Connection] = []  # in order of admission: the oldest first

    def admit(self, sock: socket.socket, client_address) -> bool:
        """Whether the connection from ``client_address`` may go on (False: the server closes it)."""
        peer = peer_address(client_address)
        if self.allowed and not any(peer in net for net in self.allowed):
            log.warning("refused a connection from %s: not in --allow-peer", peer)
            return False
        with self._lock:
            self._prune()
            if not self._make_room([c for c in self._open if c.peer == peer], self.per_peer):
                log.warning("refused a connection from %s: it holds %d busy connections already", peer, self.per_peer)
                return False
            if not self._make_room(self._open, self.total):
                log.warning("refused a connection from %s: %d busy connections already", peer, self.total)
                return False
            self._open.append(_Connection(peer, sock))
        return True

    def attach(self, sock: socket.socket, assoc) -> None:
        """Record the Association that serves ``sock`` (from the connection's handler thread)."""
        with self._lock:
            for c in self._open:
                if c.sock is sock:
                    c.assoc = assoc

    def _prune(self) -> None:
        """Forget connections that are closed or whose association thread has ended."""
        self._open = [c for c in self._open if c.sock.fileno() != -1 and (c.assoc is None or c.assoc.is_alive())]

    def _make_room(self, held: list[_Connection], limit: int) -> bool:
        """Close the oldest idle connection of ``held`` if it is at ``limit``; False when none can go."""
        if len(held) < limit:
            return True
        idle = [c for c in held if c.assoc is not None and c.assoc.requestor.primitive is None]
        if not idle:
            return False
        self._open.remove(idle[0])
        _evict(idle[0])
        log.info("closed an idle connection from %s (no A-ASSOCIATE-RQ) to make room", idle[0].peer)
        return True


def _evict(conn: _Connection) -> None:
    """Close a connection that never sent an A-ASSOCIATE-RQ, and end its association thread now.

    Shutting the socket down lets pynetdicom's state machine see the connection closed; the
    None wakes the acceptor thread, which otherwise waits out the ACSE timeout for a request.
    """
    try:
        conn.sock.shutdown(socket.SHUT_RDWR)
    except OSError:  # closed already
        pass
    queue = getattr(getattr(conn.assoc, "dul", None), "to_user_queue", None)
    if queue is not None:
        queue.put(None)


def gated_server_class(gate: PeerGate):
    """pynetdicom's threaded association server with ``gate`` deciding on every connection."""
    from pynetdicom import evt
    from pynetdicom.transport import RequestHandler, ThreadedAssociationServer

    class GatedHandler(RequestHandler):
        def handle(self) -> None:
            assoc = self._create_association()
            evt.trigger(assoc, evt.EVT_CONN_OPEN, {"address": self.client_address})
            assoc.start()
            gate.attach(self.request, assoc)  # once started: an unstarted thread would read as ended

    class GatedServer(ThreadedAssociationServer):
        def __init__(self, *args, **kwargs):
            super().__init__(*args, request_handler=GatedHandler, **kwargs)

        def verify_request(self, request, client_address) -> bool:
            return gate.admit(request, client_address)

    return GatedServer
