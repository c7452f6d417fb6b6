"""etcd's peer protocol: HTTP/1.1 endpoints on the peer URLs."""

from trietcd.peer.http import peer_http_app

__all__ = ["peer_http_app"]
