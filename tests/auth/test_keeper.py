"""The auth shell: who a call comes from (token metadata, its two names, the client certificate's CommonName),
password hashes as Go's bcrypt writes them, --auth-token and --bcrypt-cost handling."""

from __future__ import annotations

import base64

import bcrypt
import pytest
import trio

from proto.etcdserverpb import rpc_pb2
from trietcd import auth
from trietcd.auth import AuthInfo, AuthKeeper
from trietcd.auth.keeper import BCRYPT_DEFAULT_COST
from trietcd.backend import Backend


class Call:
    def __init__(self, metadata=None, cn=None) -> None:
        self.metadata = metadata or {}
        self.tls_common_name = cn


async def applied(index: int) -> None:
    await trio.lowlevel.checkpoint()


async def enabled_keeper(**kwargs) -> tuple[AuthKeeper, str]:
    k = AuthKeeper(Backend.open_memory(), bcrypt_cost=4, wait_applied=applied, **kwargs)
    hashed = await k.hash_password("rootpw")
    k.store.user_add(rpc_pb2.AuthUserAddRequest(name="root", hashedPassword=hashed))
    k.store.user_grant_role(rpc_pb2.AuthUserGrantRoleRequest(user="root", role="root"))
    k.store.auth_enable()
    token = k.store.authenticate("root", k.gen_token_prefix(), 9, trio.current_time())
    return k, token


async def test_token_then_authorization_then_certificate():
    k, token = await enabled_keeper(client_cert_auth=True)
    rev = k.store.revision
    assert await k.auth_info(Call({"token": token})) == AuthInfo("root", rev)
    assert await k.auth_info(Call({"authorization": token})) == AuthInfo("root", rev)
    with pytest.raises(auth.InvalidAuthTokenError):
        await k.auth_info(Call({"token": "x.1", "authorization": token}))  # "token" is looked at first
    with pytest.raises(auth.InvalidAuthTokenError):
        await k.auth_info(Call({"token": ""}))
    assert await k.auth_info(Call(cn="alice")) == AuthInfo("alice", rev)
    assert await k.auth_info(Call({"token": token}, cn="alice")) == AuthInfo("root", rev)
    assert await k.auth_info(Call({"grpcgateway-accept": "*/*"}, cn="alice")) is None  # not via the gateway
    assert await k.auth_info(Call()) is None
    assert await k.auth_info(None) is None


async def test_certificate_ignored_without_client_cert_auth():
    k, _ = await enabled_keeper()
    assert await k.auth_info(Call(cn="alice")) is None


async def test_passwords_hash_like_go_and_check():
    k, _ = await enabled_keeper()
    hashed = base64.b64decode(await k.hash_password("secret"))
    assert hashed.startswith(b"$2a$04$") and bcrypt.checkpw(b"secret", hashed)
    assert await k.check_password("root", "rootpw") == k.store.revision
    with pytest.raises(auth.AuthFailedError):
        await k.check_password("root", "nope")
    k.store.user_add(rpc_pb2.AuthUserAddRequest(name="empty"))  # no hash at all: never matches
    with pytest.raises(auth.AuthFailedError):
        await k.check_password("empty", "")


async def test_tasks_acting_as_root_propose_as_root():
    k, _ = await enabled_keeper()
    seen = []

    async def lessor_loop():
        seen.append(k.proposer_info(None))

    await k.as_root(lessor_loop)
    assert seen == [AuthInfo("root", k.store.revision)]
    assert k.proposer_info(None) is None  # elsewhere: nobody
    assert k.proposer_info(AuthInfo("u", 3)) == AuthInfo("u", 3)


@pytest.mark.parametrize("opts", ["bogus", "simple,x", "simple,a=1,a=2", "jwt,sign-method=RS256",
                                  "jwt,sign-method=XX1,priv-key=/nonexistent"])
def test_bad_auth_token_options(opts):
    with pytest.raises(auth.AuthError):
        AuthKeeper(Backend.open_memory(), token_opts=opts)


async def test_no_tokens_at_all():
    k = AuthKeeper(Backend.open_memory(), token_opts="", bcrypt_cost=4, wait_applied=applied)
    k.store.user_add(rpc_pb2.AuthUserAddRequest(name="root", hashedPassword=await k.hash_password("pw")))
    k.store.user_grant_role(rpc_pb2.AuthUserGrantRoleRequest(user="root", role="root"))
    k.store.auth_enable()
    with pytest.raises(auth.AuthFailedError):
        k.store.authenticate("root", k.gen_token_prefix(), 5, 0.0)


def test_bcrypt_cost_out_of_range_is_the_default():
    assert AuthKeeper(Backend.open_memory(), bcrypt_cost=3).bcrypt_cost == BCRYPT_DEFAULT_COST
    assert AuthKeeper(Backend.open_memory(), bcrypt_cost=32).bcrypt_cost == BCRYPT_DEFAULT_COST
    assert AuthKeeper(Backend.open_memory(), bcrypt_cost=4).bcrypt_cost == 4
