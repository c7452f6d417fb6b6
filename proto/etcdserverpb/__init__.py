"""etcd's etcdserverpb protobuf package (generated modules)."""

__all__ = ["etcdserver_pb2", "raft_internal_pb2", "rpc_pb2"]
