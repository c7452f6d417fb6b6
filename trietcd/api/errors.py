"""etcd's server-side gRPC errors (etcd 3.5.1 `api/v3rpc/rpctypes/error.go`) and
the mapping of lower layers' operating errors to them (`v3rpc/util.go`).

Each error is a subclass of the wire layer's `GrpcError` with etcd's code and
text fixed, so `raise ErrGRPCEmptyKey()` fails the call exactly like etcd and
tests can `pytest.raises(ErrGRPCEmptyKey)`.
"""

from __future__ import annotations

from typing import ClassVar

from trietcd import mvcc
from trietcd.server import errors as server_errors
from trietcd.wire.grpc_call import GrpcError, Status


class EtcdGrpcError(GrpcError):
    CODE: ClassVar[Status]
    MESSAGE: ClassVar[str]

    def __init__(self) -> None:
        super().__init__(self.CODE, self.MESSAGE)


ALL: dict[str, type[EtcdGrpcError]] = {}  # name -> error class, in etcd's order
BY_MESSAGE: dict[str, type[EtcdGrpcError]] = {}  # etcd's errStringToError


def _error(name: str, code: Status, message: str) -> type[EtcdGrpcError]:
    cls = type(name, (EtcdGrpcError,), {"CODE": code, "MESSAGE": message, "__module__": __name__})
    ALL[name] = cls
    BY_MESSAGE.setdefault(message, cls)
    return cls


_I, _O, _N, _F = Status.INVALID_ARGUMENT, Status.OUT_OF_RANGE, Status.NOT_FOUND, Status.FAILED_PRECONDITION
_U, _R = Status.UNAVAILABLE, Status.RESOURCE_EXHAUSTED

ErrGRPCEmptyKey = _error("ErrGRPCEmptyKey", _I, "etcdserver: key is not provided")
ErrGRPCKeyNotFound = _error("ErrGRPCKeyNotFound", _I, "etcdserver: key not found")
ErrGRPCValueProvided = _error("ErrGRPCValueProvided", _I, "etcdserver: value is provided")
ErrGRPCLeaseProvided = _error("ErrGRPCLeaseProvided", _I, "etcdserver: lease is provided")
ErrGRPCTooManyOps = _error("ErrGRPCTooManyOps", _I, "etcdserver: too many operations in txn request")
ErrGRPCDuplicateKey = _error("ErrGRPCDuplicateKey", _I, "etcdserver: duplicate key given in txn request")
ErrGRPCCompacted = _error("ErrGRPCCompacted", _O, "etcdserver: mvcc: required revision has been compacted")
ErrGRPCFutureRev = _error("ErrGRPCFutureRev", _O, "etcdserver: mvcc: required revision is a future revision")
ErrGRPCNoSpace = _error("ErrGRPCNoSpace", _R, "etcdserver: mvcc: database space exceeded")

ErrGRPCLeaseNotFound = _error("ErrGRPCLeaseNotFound", _N, "etcdserver: requested lease not found")
ErrGRPCLeaseExist = _error("ErrGRPCLeaseExist", _F, "etcdserver: lease already exists")
ErrGRPCLeaseTTLTooLarge = _error("ErrGRPCLeaseTTLTooLarge", _O, "etcdserver: too large lease TTL")

ErrGRPCWatchCanceled = _error("ErrGRPCWatchCanceled", Status.CANCELLED, "etcdserver: watch canceled")

ErrGRPCMemberExist = _error("ErrGRPCMemberExist", _F, "etcdserver: member ID already exist")
ErrGRPCPeerURLExist = _error("ErrGRPCPeerURLExist", _F, "etcdserver: Peer URLs already exists")
ErrGRPCMemberNotEnoughStarted = _error(
    "ErrGRPCMemberNotEnoughStarted", _F, "etcdserver: re-configuration failed due to not enough started members"
)
ErrGRPCMemberBadURLs = _error("ErrGRPCMemberBadURLs", _I, "etcdserver: given member URLs are invalid")
ErrGRPCMemberNotFound = _error("ErrGRPCMemberNotFound", _N, "etcdserver: member not found")
ErrGRPCMemberNotLearner = _error("ErrGRPCMemberNotLearner", _F, "etcdserver: can only promote a learner member")
ErrGRPCLearnerNotReady = _error(
    "ErrGRPCLearnerNotReady", _F, "etcdserver: can only promote a learner member which is in sync with leader"
)
ErrGRPCTooManyLearners = _error("ErrGRPCTooManyLearners", _F, "etcdserver: too many learner members in cluster")

ErrGRPCRequestTooLarge = _error("ErrGRPCRequestTooLarge", _I, "etcdserver: request is too large")
ErrGRPCRequestTooManyRequests = _error("ErrGRPCRequestTooManyRequests", _R, "etcdserver: too many requests")

ErrGRPCRootUserNotExist = _error("ErrGRPCRootUserNotExist", _F, "etcdserver: root user does not exist")
ErrGRPCRootRoleNotExist = _error("ErrGRPCRootRoleNotExist", _F, "etcdserver: root user does not have root role")
ErrGRPCUserAlreadyExist = _error("ErrGRPCUserAlreadyExist", _F, "etcdserver: user name already exists")
ErrGRPCUserEmpty = _error("ErrGRPCUserEmpty", _I, "etcdserver: user name is empty")
ErrGRPCUserNotFound = _error("ErrGRPCUserNotFound", _F, "etcdserver: user name not found")
ErrGRPCRoleAlreadyExist = _error("ErrGRPCRoleAlreadyExist", _F, "etcdserver: role name already exists")
ErrGRPCRoleNotFound = _error("ErrGRPCRoleNotFound", _F, "etcdserver: role name not found")
ErrGRPCRoleEmpty = _error("ErrGRPCRoleEmpty", _I, "etcdserver: role name is empty")
ErrGRPCAuthFailed = _error(
    "ErrGRPCAuthFailed", _I, "etcdserver: authentication failed, invalid user ID or password"
)
ErrGRPCPermissionNotGiven = _error("ErrGRPCPermissionNotGiven", _I, "etcdserver: permission not given")
ErrGRPCPermissionDenied = _error("ErrGRPCPermissionDenied", Status.PERMISSION_DENIED, "etcdserver: permission denied")
ErrGRPCRoleNotGranted = _error("ErrGRPCRoleNotGranted", _F, "etcdserver: role is not granted to the user")
ErrGRPCPermissionNotGranted = _error(
    "ErrGRPCPermissionNotGranted", _F, "etcdserver: permission is not granted to the role"
)
ErrGRPCAuthNotEnabled = _error("ErrGRPCAuthNotEnabled", _F, "etcdserver: authentication is not enabled")
ErrGRPCInvalidAuthToken = _error("ErrGRPCInvalidAuthToken", Status.UNAUTHENTICATED, "etcdserver: invalid auth token")
ErrGRPCInvalidAuthMgmt = _error("ErrGRPCInvalidAuthMgmt", _I, "etcdserver: invalid auth management")

ErrGRPCNoLeader = _error("ErrGRPCNoLeader", _U, "etcdserver: no leader")
ErrGRPCNotLeader = _error("ErrGRPCNotLeader", _F, "etcdserver: not leader")
ErrGRPCLeaderChanged = _error("ErrGRPCLeaderChanged", _U, "etcdserver: leader changed")
ErrGRPCNotCapable = _error("ErrGRPCNotCapable", _U, "etcdserver: not capable")
ErrGRPCStopped = _error("ErrGRPCStopped", _U, "etcdserver: server stopped")
ErrGRPCTimeout = _error("ErrGRPCTimeout", _U, "etcdserver: request timed out")
ErrGRPCTimeoutDueToLeaderFail = _error(
    "ErrGRPCTimeoutDueToLeaderFail", _U, "etcdserver: request timed out, possibly due to previous leader failure"
)
ErrGRPCTimeoutDueToConnectionLost = _error(
    "ErrGRPCTimeoutDueToConnectionLost", _U, "etcdserver: request timed out, possibly due to connection lost"
)
ErrGRPCUnhealthy = _error("ErrGRPCUnhealthy", _U, "etcdserver: unhealthy cluster")
ErrGRPCCorrupt = _error("ErrGRPCCorrupt", Status.DATA_LOSS, "etcdserver: corrupt cluster")
# (etcd's own identifier has this spelling.)
ErrGPRCNotSupportedForLearner = _error("ErrGPRCNotSupportedForLearner", _U, "etcdserver: rpc not supported for learner")
ErrGRPCBadLeaderTransferee = _error("ErrGRPCBadLeaderTransferee", _F, "etcdserver: bad leader transferee")

ErrGRPCClusterVersionUnavailable = _error(
    "ErrGRPCClusterVersionUnavailable", _U, "etcdserver: cluster version not found during downgrade"
)
ErrGRPCWrongDowngradeVersionFormat = _error(
    "ErrGRPCWrongDowngradeVersionFormat", _I, "etcdserver: wrong downgrade target version format"
)
ErrGRPCInvalidDowngradeTargetVersion = _error(
    "ErrGRPCInvalidDowngradeTargetVersion", _I, "etcdserver: invalid downgrade target version"
)
ErrGRPCDowngradeInProcess = _error("ErrGRPCDowngradeInProcess", _F, "etcdserver: cluster has a downgrade job in progress")
ErrGRPCNoInflightDowngrade = _error("ErrGRPCNoInflightDowngrade", _F, "etcdserver: no inflight downgrade job")

ErrGRPCCanceled = _error("ErrGRPCCanceled", Status.CANCELLED, "etcdserver: request canceled")
ErrGRPCDeadlineExceeded = _error("ErrGRPCDeadlineExceeded", Status.DEADLINE_EXCEEDED, "etcdserver: context deadline exceeded")


# Operating errors of the layers below -> etcd's gRPC error (v3rpc togRPCError).
_FROM_LAYER: dict[type[Exception], type[EtcdGrpcError]] = {
    mvcc.CompactedError: ErrGRPCCompacted,
    mvcc.FutureRevError: ErrGRPCFutureRev,
    mvcc.KeyNotFoundError: ErrGRPCKeyNotFound,
    mvcc.LeaseNotFoundError: ErrGRPCLeaseNotFound,
    server_errors.RequestTooLargeError: ErrGRPCRequestTooLarge,
    server_errors.RequestTimeoutError: ErrGRPCTimeout,
    server_errors.StoppedError: ErrGRPCStopped,
    server_errors.NoSpaceError: ErrGRPCNoSpace,
    server_errors.CorruptError: ErrGRPCCorrupt,
}


def register(layer_error: type[Exception], grpc_error: type[EtcdGrpcError]) -> None:
    """Lets other layers' errors (lease, auth, membership, server) join the map."""
    _FROM_LAYER[layer_error] = grpc_error


def to_grpc_error(exc: BaseException) -> GrpcError:
    """The gRPC error etcd answers for exc; unknown errors become UNKNOWN with
    their text, as etcd's togRPCError does."""
    if isinstance(exc, GrpcError):
        return exc
    for cls in type(exc).__mro__:
        mapped = _FROM_LAYER.get(cls)
        if mapped is not None:
            return mapped()
    return GrpcError(Status.UNKNOWN, str(exc))
