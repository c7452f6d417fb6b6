"""etcd's mvccpb protobuf package (generated modules)."""

__all__ = ["kv_pb2"]
