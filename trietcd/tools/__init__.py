"""Tools shipped with trietcd that talk to any etcd-compatible server."""

__all__: list[str] = []
