"""trietcd.api.errors: etcd 3.5.1's rpctypes table and the layer error mapping."""

import pytest

from trietcd import mvcc
from trietcd.api import errors
from trietcd.wire.grpc_call import GrpcError, Status

# A sample of etcd 3.5.1 api/v3rpc/rpctypes/error.go; the KV ones were also
# seen from a real etcd 3.5.1 over gRPC.
ETCD = {
    "ErrGRPCEmptyKey": (Status.INVALID_ARGUMENT, "etcdserver: key is not provided"),
    "ErrGRPCKeyNotFound": (Status.INVALID_ARGUMENT, "etcdserver: key not found"),
    "ErrGRPCValueProvided": (Status.INVALID_ARGUMENT, "etcdserver: value is provided"),
    "ErrGRPCLeaseProvided": (Status.INVALID_ARGUMENT, "etcdserver: lease is provided"),
    "ErrGRPCTooManyOps": (Status.INVALID_ARGUMENT, "etcdserver: too many operations in txn request"),
    "ErrGRPCDuplicateKey": (Status.INVALID_ARGUMENT, "etcdserver: duplicate key given in txn request"),
    "ErrGRPCCompacted": (Status.OUT_OF_RANGE, "etcdserver: mvcc: required revision has been compacted"),
    "ErrGRPCFutureRev": (Status.OUT_OF_RANGE, "etcdserver: mvcc: required revision is a future revision"),
    "ErrGRPCNoSpace": (Status.RESOURCE_EXHAUSTED, "etcdserver: mvcc: database space exceeded"),
    "ErrGRPCLeaseNotFound": (Status.NOT_FOUND, "etcdserver: requested lease not found"),
    "ErrGRPCRequestTooLarge": (Status.INVALID_ARGUMENT, "etcdserver: request is too large"),
    "ErrGRPCNotCapable": (Status.UNAVAILABLE, "etcdserver: not capable"),
    "ErrGRPCPermissionDenied": (Status.PERMISSION_DENIED, "etcdserver: permission denied"),
    "ErrGRPCInvalidAuthToken": (Status.UNAUTHENTICATED, "etcdserver: invalid auth token"),
    "ErrGRPCCorrupt": (Status.DATA_LOSS, "etcdserver: corrupt cluster"),
    "ErrGRPCWatchCanceled": (Status.CANCELLED, "etcdserver: watch canceled"),
    "ErrGRPCDeadlineExceeded": (Status.DEADLINE_EXCEEDED, "etcdserver: context deadline exceeded"),
    "ErrGPRCNotSupportedForLearner": (Status.UNAVAILABLE, "etcdserver: rpc not supported for learner"),
}


@pytest.mark.parametrize("name", sorted(ETCD))
def test_codes_and_texts(name):
    cls = getattr(errors, name)
    err = cls()
    assert isinstance(err, GrpcError)
    assert (err.code, err.message) == ETCD[name]
    assert errors.ALL[name] is cls


def test_table_is_complete_and_well_formed():
    assert len(errors.ALL) == 58  # every server-side error of etcd 3.5.1 rpctypes
    for name, cls in errors.ALL.items():
        assert name.startswith(("ErrGRPC", "ErrGPRC"))
        assert cls.MESSAGE.startswith("etcdserver: ")
        assert isinstance(cls.CODE, Status) and cls.CODE != Status.OK
    assert errors.BY_MESSAGE["etcdserver: key not found"] is errors.ErrGRPCKeyNotFound


def test_each_raise_is_a_fresh_exception():
    assert errors.ErrGRPCEmptyKey() is not errors.ErrGRPCEmptyKey()


@pytest.mark.parametrize(
    "exc, want",
    [
        (mvcc.CompactedError(), errors.ErrGRPCCompacted),
        (mvcc.FutureRevError(), errors.ErrGRPCFutureRev),
        (mvcc.KeyNotFoundError(), errors.ErrGRPCKeyNotFound),
        (mvcc.LeaseNotFoundError(), errors.ErrGRPCLeaseNotFound),
    ],
)
def test_layer_errors_map_to_etcd_errors(exc, want):
    assert type(errors.to_grpc_error(exc)) is want


def test_unknown_errors_become_unknown_with_their_text():
    err = errors.to_grpc_error(ValueError("boom"))
    assert (err.code, err.message) == (Status.UNKNOWN, "boom")
    same = GrpcError(Status.ABORTED, "x")
    assert errors.to_grpc_error(same) is same


def test_register_adds_a_layer_error():
    class QuotaError(Exception):
        pass

    errors.register(QuotaError, errors.ErrGRPCNoSpace)
    assert type(errors.to_grpc_error(QuotaError())) is errors.ErrGRPCNoSpace
