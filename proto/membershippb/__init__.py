"""etcd's membershippb protobuf package (generated modules)."""

__all__ = ["membership_pb2"]
