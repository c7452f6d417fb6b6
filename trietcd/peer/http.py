"""The HTTP/1.1 endpoints of the peer port that need no raft transport.

`GET /members` and `GET /version` are what a joining member and operators'
scripts ask first; `GET /members/hashkv` is what members' corruption checks ask
(trietcd/peer/hashkv.py). The raft message streams (`/raft/...`) and the lease and
snapshot endpoints arrive with clustering; until then those paths answer
as unknown paths do.
"""

from __future__ import annotations

import json

from trietcd.peer import hashkv
from trietcd.wire.http1 import Request, Response, split_target

__all__ = ["peer_http_app", "members_json"]

_NOT_FOUND = Response(
    404,
    (("Content-Type", "text/plain; charset=utf-8"), ("X-Content-Type-Options", "nosniff")),
    b"404 page not found\n",
)
_NOT_ALLOWED = Response(
    405,
    (("Allow", "GET"), ("Content-Type", "text/plain; charset=utf-8"), ("X-Content-Type-Options", "nosniff")),
    b"Method Not Allowed\n",
)


def members_json(members) -> bytes:
    # Go's encoding/json field order of etcd's membership.Member;
    # isLearner is omitted when false.
    items = []
    for m in members:
        item = {"id": m.id, "peerURLs": list(m.peer_urls), "name": m.name, "clientURLs": list(m.client_urls)}
        if m.is_learner:
            item["isLearner"] = True
        items.append(item)
    return json.dumps(items, separators=(",", ":")).encode() + b"\n"


def peer_http_app(server):
    async def app(request: Request) -> Response:
        path, _ = split_target(request.target)
        if path == "/members":
            if request.method != "GET":
                return _NOT_ALLOWED
            return Response(
                200,
                (
                    ("Content-Type", "application/json"),
                    ("X-Etcd-Cluster-Id", f"{server.cluster_id:x}"),
                ),
                members_json(server.membership.sorted_members()),
            )
        if path == hashkv.PATH:
            return hashkv.hash_kv_response(server, request.method, request.body)
        if path == "/version":
            if request.method != "GET":
                return _NOT_ALLOWED
            body = json.dumps(server.version_info(), separators=(",", ":")).encode()
            return Response(200, (("Content-Type", "application/json"),), body)
        return _NOT_FOUND

    return app
