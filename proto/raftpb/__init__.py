"""etcd's raftpb protobuf package (generated modules)."""

__all__ = ["raft_pb2"]
