"""etcd's v3lockpb protobuf package (generated modules)."""

__all__ = ["v3lock_pb2"]
