"""etcd's leasepb protobuf package (generated modules)."""

__all__ = ["lease_pb2"]
