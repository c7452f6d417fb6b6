"""etcd's snappb protobuf package (generated modules)."""

__all__ = ["snap_pb2"]
