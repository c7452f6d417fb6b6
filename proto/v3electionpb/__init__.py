"""etcd's v3electionpb protobuf package (generated modules)."""

__all__ = ["v3election_pb2"]
