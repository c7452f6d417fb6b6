"""etcd's walpb protobuf package (generated modules)."""

__all__ = ["record_pb2"]
