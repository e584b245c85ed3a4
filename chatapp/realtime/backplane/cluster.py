"""ClusterNodes: where each room's channel is served on a Redis Cluster (REDIS_CLUSTER=1).

A room's channel `chat:{room}:events` hashes, by its braces, to the slot of the room's keys,
so the master that stores a room's messages is the one that publishes them (SPUBLISH, in the
store's append script) and the one a worker subscribes to (SSUBSCRIBE). redis-py's
RedisCluster knows the slots (its slot cache, refreshed by `refresh`) and gives a client per
node. Its own ClusterPubSub is not used: after a failover or a moved slot it subscribes again
by itself, silently, and the events published meanwhile are gone without anyone knowing
which rooms must resume. RedisBackplane's links (one per master) do that, and tell.
"""

from __future__ import annotations

from time import monotonic

import redis
from redis.crc import key_slot

REFRESH_EVERY = 0.1  # seconds: the slots asked for at most this often (ClusterNodes.refresh)

# What a node's connection is made of (and ssl_*), of what redis-py's cluster gives its own.
_CONNECTION = {
    "host",
    "port",
    "db",
    "username",
    "password",
    "credential_provider",
    "socket_timeout",
    "socket_connect_timeout",
    "socket_keepalive",
    "socket_keepalive_options",
    "client_name",
}


class ClusterNodes:
    sharded = True

    def __init__(self, cluster: redis.RedisCluster) -> None:
        self._cluster = cluster
        self._always: dict[str, str] = {}  # master -> a channel in one of its slots, as last found
        self._clients: dict[str, redis.Redis] = {}  # master -> the client of its subscription connection
        self._refreshed = -REFRESH_EVERY  # monotonic time the slots were last asked for

    def masters(self) -> list[str]:
        """The masters that serve slots now (a master with none has no rooms)."""
        return sorted({nodes[0].name for nodes in self._cluster.nodes_manager.slots_cache.values() if nodes})

    def node_of(self, channel: str) -> str:
        return self._cluster.nodes_manager.get_node_from_slot(self.slot(channel)).name

    def client(self, name: str) -> redis.Redis:
        """A client of its own for the node's subscription connection: redis-py marks the
        connections of its node pools for reconnection whenever it refreshes the slots (after
        any error, anyone's), which for a subscription is a loss."""
        if name not in self._clients:
            pool = self._cluster.get_redis_connection(self._cluster.get_node(node_name=name)).connection_pool
            own = {k: v for k, v in pool.connection_kwargs.items() if k in _CONNECTION or k.startswith("ssl_")}
            self._clients[name] = redis.Redis(connection_pool=redis.ConnectionPool(pool.connection_class, **own))
        return self._clients[name]

    def always(self, name: str) -> str:
        """`chat:{backplane-N}` for the first N whose slot `name` serves (a few tries with 3
        masters): SSUBSCRIBE takes only channels of the node's own slots."""
        found = self._always.get(name)
        if found is None or not self._serves(name, found):
            found = next(
                (f"chat:{{backplane-{n}}}" for n in range(1 << 20) if self._serves(name, f"chat:{{backplane-{n}}}")),
                None,
            )
            if found is None:  # its slots went elsewhere: the link is lost, and retired when replanned
                raise redis.ConnectionError(f"{name} serves no slot now")
            self._always[name] = found
        return found

    def _serves(self, name: str, channel: str) -> bool:
        nodes = self._cluster.nodes_manager.slots_cache.get(self.slot(channel))
        return bool(nodes) and nodes[0].name == name

    def slot(self, channel: str) -> int:
        return key_slot(channel.encode())

    def refresh(self) -> None:
        if monotonic() - self._refreshed >= REFRESH_EVERY:
            self._cluster.nodes_manager.initialize()
            self._refreshed = monotonic()

    def publish(self, channel: str, payload: bytes) -> None:
        self._cluster.spublish(channel, payload)

    def close(self) -> None:
        for client in self._clients.values():
            client.connection_pool.disconnect()  # a pool given to a client is not closed with it
        self._clients.clear()
