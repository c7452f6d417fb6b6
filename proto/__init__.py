"""etcd v3.5.1's protobuf definitions, compiled for Python.

Generated modules (protobuf package names are etcd's, so full names match the Go server's,
e.g. service "etcdserverpb.KV", method path "/etcdserverpb.KV/Range"):

    proto.etcdserverpb.rpc_pb2            client API: KV, Watch, Lease, Cluster, Maintenance, Auth
    proto.etcdserverpb.raft_internal_pb2  InternalRaftRequest and friends (raft entry payloads)
    proto.etcdserverpb.etcdserver_pb2     v2 Request, Metadata (WAL metadata record) - proto2
    proto.mvccpb.kv_pb2                   KeyValue, Event
    proto.authpb.auth_pb2                 User, Role, Permission, UserAddOptions
    proto.membershippb.membership_pb2     cluster/member attribute requests
    proto.leasepb.lease_pb2               Lease (backend "lease" bucket), LeaseInternalRequest/Response
    proto.raftpb.raft_pb2                 Entry, HardState, Message, Snapshot, ConfChange(V2) - proto2
    proto.walpb.record_pb2                WAL Record, Snapshot - proto2
    proto.snappb.snap_pb2                 .snap file wrapper `snapshot` - proto2
    proto.v3lockpb.v3lock_pb2             Lock service
    proto.v3electionpb.v3election_pb2     Election service

Hand-written / other generated helpers:

    proto.gateway_routes   ROUTES: HTTP path -> gRPC method path of etcd's JSON gateway
                           ("/v3/kv/range" -> "/etcdserverpb.KV/Range"); HTTP_VERBS.
    proto.gogo             marshal(msg): bytes exactly as etcd's gogoproto code writes them
                           (always writes the fields etcd marks non-nullable).
    proto.gogo_fields      NON_NULLABLE: the full names of those fields.

Regenerate with `python -m proto.gen` (needs grpcio-tools); `python -m proto.gen --check` fails
when the committed files are stale. The annotated upstream sources live in proto/upstream/.

Notes for users: raftpb.Message has a field named `from`, a Python keyword - use
`getattr(m, "from")` / `setattr(m, "from", x)` or `Message(**{"from": x})`.
"""

__all__ = ["gateway_routes", "gogo", "gogo_fields"]
