"""trietcd.serve (a member inside a trio program) and trietcd.testing (a server child process for tests).

These run real members on loopback port 0 and talk to them through the JSON gateway."""

from __future__ import annotations

import base64
import json
import os
import subprocess
import sys
import textwrap
import urllib.request
from pathlib import Path

import pytest
import trio

import trietcd
from trietcd import config as config_mod
from trietcd.embed import Embedded, config_from_flags, flags_to_argv
from trietcd.log import logger
from trietcd.testing import run_server
from trietcd.wire.listener import ListenError

ROOT = Path(__file__).resolve().parents[1]
_NO_PROXY = urllib.request.build_opener(urllib.request.ProxyHandler({}))


@pytest.fixture(autouse=True)
def quiet_member_log():
    # The member logs through the process's logger; these tests only need its warnings.
    logger.set_level("warn")
    yield
    logger.set_level("info")


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def post(url: str, path: str, body: dict) -> dict:
    request = urllib.request.Request(url + path, data=json.dumps(body).encode(), method="POST")
    with _NO_PROXY.open(request, timeout=10) as response:
        return json.loads(response.read())


async def apost(url: str, path: str, body: dict) -> dict:
    return await trio.to_thread.run_sync(post, url, path, body)


async def put(url: str, key: bytes, value: bytes) -> None:
    await apost(url, "/v3/kv/put", {"key": _b64(key), "value": _b64(value)})


async def get(url: str, key: bytes) -> bytes | None:
    kvs = (await apost(url, "/v3/kv/range", {"key": _b64(key)})).get("kvs", [])
    return base64.b64decode(kvs[0]["value"]) if kvs else None


def loopback_flags(data_dir: Path, **flags) -> dict:
    return {
        "name": "embedded",
        "data_dir": data_dir,
        "listen_client_urls": ["http://127.0.0.1:0"],
        # etcd requires advertised URLs with explicit listen URLs; with port 0 they say :0.
        "advertise_client_urls": "http://127.0.0.1:0",
        "listen_peer_urls": "http://127.0.0.1:0",
        **flags,
    }


def test_flags_to_argv_uses_etcds_flag_names():
    assert flags_to_argv({
        "data_dir": Path("/d"), "listen_client_urls": ["http://a:1", "http://b:2"], "snapshot_count": 5,
        "strict_reconfig_check": False, "enable_v2": True,
    }) == [
        "--data-dir=/d", "--listen-client-urls=http://a:1,http://b:2", "--snapshot-count=5",
        "--strict-reconfig-check=false", "--enable-v2=true",
    ]


def test_config_from_flags_is_the_commands_parser():
    config = config_from_flags(name="n1", data_dir="/tmp/x", quota_backend_bytes=1 << 30)
    assert config == config_mod.parse(
        ["--name=n1", "--data-dir=/tmp/x", f"--quota-backend-bytes={1 << 30}"], {},
        default_host=config_mod.detect_default_host(),
    )
    # The environment is not read unless given.
    assert config_from_flags(environ={"ETCD_NAME": "from-env"}).name == "from-env"
    with pytest.raises(config_mod.ConfigError) as raised:
        config_from_flags(no_such_flag=1)
    assert "no-such-flag" in str(raised.value)


async def test_serve_with_flags_then_again_with_a_config(tmp_path):
    data_dir = tmp_path / "member"
    async with trietcd.serve(**loopback_flags(data_dir)) as member:
        assert isinstance(member, Embedded)
        [url] = member.client_urls
        assert url.startswith("http://127.0.0.1:") and not url.endswith(":0")
        assert member.endpoints == (url.removeprefix("http://"),)
        [peer] = member.peer_urls
        assert not peer.endswith(":0") and peer != url
        assert member.member.config.data_dir == str(data_dir)
        await put(url, b"k", b"v1")
        assert await get(url, b"k") == b"v1"
        health = await trio.to_thread.run_sync(lambda: _NO_PROXY.open(url + "/health", timeout=10).read())
        assert json.loads(health)["health"] == "true"

    # Stopped gracefully: the same data dir serves again, from a Config built as the command builds it.
    config = config_mod.parse(flags_to_argv(loopback_flags(data_dir)), {})
    async with trietcd.serve(config) as member:
        assert await get(member.client_urls[0], b"k") == b"v1"


async def test_stop_inside_the_block(tmp_path):
    async with trietcd.serve(**loopback_flags(tmp_path / "m")) as member:
        url = member.client_urls[0]
        await put(url, b"k", b"v")
        await member.stop()
        with pytest.raises(OSError):
            await get(url, b"k")
    # Leaving the block after stop() does not stop twice; the member can start again.
    async with trietcd.serve(**loopback_flags(tmp_path / "m")) as member:
        assert await get(member.client_urls[0], b"k") == b"v"


async def test_an_error_in_the_block_stops_the_member_and_propagates(tmp_path):
    class Boom(Exception):
        pass

    with pytest.raises(Boom):
        async with trietcd.serve(**loopback_flags(tmp_path / "m")) as member:
            await put(member.client_urls[0], b"k", b"v")
            raise Boom()
    async with trietcd.serve(**loopback_flags(tmp_path / "m")) as member:
        assert await get(member.client_urls[0], b"k") == b"v"


async def test_cancelled_from_outside(tmp_path):
    with trio.CancelScope() as scope:
        async with trietcd.serve(**loopback_flags(tmp_path / "m")) as member:
            await put(member.client_urls[0], b"k", b"v")
            scope.cancel()
            await trio.sleep_forever()
    assert scope.cancelled_caught
    async with trietcd.serve(**loopback_flags(tmp_path / "m")) as member:
        assert await get(member.client_urls[0], b"k") == b"v"


async def test_a_taken_port_is_etcds_listen_error(tmp_path):
    async with trietcd.serve(**loopback_flags(tmp_path / "a")) as member:
        taken = member.client_urls[0]
        with pytest.raises(ListenError, match="bind: address already in use"):
            async with trietcd.serve(**loopback_flags(tmp_path / "b", listen_client_urls=taken)):
                pass


async def test_serve_takes_a_config_or_flags_not_both(tmp_path):
    config = config_from_flags(**loopback_flags(tmp_path / "m"))
    with pytest.raises(TypeError):
        async with trietcd.serve(config, name="other"):
            pass


def test_run_server_is_a_child_process_on_free_ports(tmp_path):
    with run_server(auto_compaction_retention="1h") as server:
        assert server.process.poll() is None
        assert server.url == f"http://127.0.0.1:{server.port}" and server.endpoint == f"127.0.0.1:{server.port}"
        post(server.url, "/v3/kv/put", {"key": _b64(b"k"), "value": _b64(b"v")})
        kvs = post(server.url, "/v3/kv/range", {"key": _b64(b"k")})["kvs"]
        assert base64.b64decode(kvs[0]["value"]) == b"v"
        assert server.data_dir.is_dir()
        temporary = server.data_dir.parent
    assert server.process.returncode is not None
    assert not temporary.exists()

    with run_server(tmp_path / "kept") as server:
        post(server.url, "/v3/kv/put", {"key": _b64(b"k"), "value": _b64(b"v")})
    assert (tmp_path / "kept" / "member" / "wal").is_dir()


def test_run_server_reports_a_bad_flag():
    with pytest.raises(RuntimeError, match="unknown flag|not a valid flag|flag provided but not defined"):
        with run_server(no_such_flag=1):
            pass


def test_pytest_plugin_from_a_plain_sync_test(tmp_path):
    (tmp_path / "conftest.py").write_text('pytest_plugins = ["trietcd.testing"]\n')
    (tmp_path / "test_uses_trietcd.py").write_text(textwrap.dedent('''
        import json, urllib.request

        def test_server(trietcd_server):
            opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
            with opener.open(trietcd_server.url + "/version", timeout=10) as response:
                assert json.loads(response.read())["etcdserver"] == "3.5.1"
            assert trietcd_server.endpoint == f"{trietcd_server.host}:{trietcd_server.port}"

        def test_same_server(trietcd_server):
            assert trietcd_server.process.poll() is None
    '''))
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    result = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", str(tmp_path)],
        cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "2 passed" in result.stdout
