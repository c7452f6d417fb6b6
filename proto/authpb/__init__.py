"""etcd's authpb protobuf package (generated modules)."""

__all__ = ["auth_pb2"]
