"""The member: membership, alarms, the write path and the nursery that runs them."""

from trietcd.server.alarms import AlarmStore
from trietcd.server.errors import RequestTooLargeError, ServerError
from trietcd.server.member import Member
from trietcd.server.membership import MemberInfo, Membership, compute_cluster_id, compute_member_id

__all__ = [
    "AlarmStore",
    "Member",
    "MemberInfo",
    "Membership",
    "RequestTooLargeError",
    "ServerError",
    "compute_cluster_id",
    "compute_member_id",
]
