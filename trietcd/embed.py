"""A trietcd member inside a trio program: `async with trietcd.serve(...) as member:`.

The member is composed exactly as the `trietcd` command composes it (trietcd.cli.open_member); what the
command adds around it, signals and the process's logging setup, stays with the command.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable, Mapping
from typing import Any

import attrs

from trietcd import config as config_mod

__all__ = ["Embedded", "config_from_flags", "flags_to_argv", "serve"]


@attrs.frozen
class Embedded:
    """A running member. URLs carry the bound ports, so a listen URL with port 0 reads back as the real one."""

    member: Any
    client_urls: tuple[str, ...]
    peer_urls: tuple[str, ...]
    metrics_urls: tuple[str, ...]
    _stop: Callable[[], Awaitable[None]]

    @property
    def endpoints(self) -> tuple[str, ...]:
        """host:port of each TCP client URL, as clients such as etcdctl --endpoints take them."""
        return tuple(url.split("://", 1)[1] for url in self.client_urls if not url.startswith("unix"))

    async def stop(self) -> None:
        """etcd's graceful stop: listeners closed, in-flight calls given their grace, backend closed."""
        await self._stop()


@contextlib.asynccontextmanager
async def serve(config: config_mod.Config | None = None, /, **flags: Any) -> AsyncIterator[Embedded]:
    """Runs a member with its listeners while the block runs; leaving the block stops it gracefully.

    Either a Config (from trietcd.config.parse, as the command builds one) or etcd's flags as keywords:
    `serve(name="n1", data_dir="/tmp/n1", listen_client_urls=["http://127.0.0.1:0"])`, names with '_' for
    '-', lists joined with ',', booleans as true/false. Keywords never read ETCD_* variables.
    """
    from trietcd.cli import open_member

    if config is None:
        config = config_from_flags(**flags)
    elif flags:
        raise TypeError("serve() takes a Config or flags, not both")
    body_error: BaseException | None = None
    try:
        async with open_member(config) as (member, addresses, stop):
            stopped = False

            async def stop_once() -> None:
                nonlocal stopped
                if not stopped:
                    stopped = True
                    await stop()

            try:
                yield _embedded(config, member, addresses, stop_once)
            except BaseException as exc:
                body_error = exc
                raise
            await stop_once()
    except BaseExceptionGroup as group:
        # The member's nursery wraps what the block raised, or the one reason the member could not start
        # (a ListenError, a BootstrapError); the caller gets it as raised.
        leaves = _leaves(group)
        if len(leaves) == 1 and (body_error is None or leaves[0] is body_error):
            raise leaves[0] from None
        raise


def _embedded(config, member, addresses, stop) -> Embedded:
    n_client, n_peer = len(config.listen_client_urls), len(config.listen_peer_urls)
    return Embedded(
        member,
        _bound(config.listen_client_urls, addresses[:n_client]),
        _bound(config.listen_peer_urls, addresses[n_client:n_client + n_peer]),
        _bound(config.listen_metrics_urls, addresses[n_client + n_peer:]),
        stop,
    )


def _leaves(group: BaseExceptionGroup) -> list[BaseException]:
    out = []
    for exc in group.exceptions:
        out.extend(_leaves(exc) if isinstance(exc, BaseExceptionGroup) else [exc])
    return out


def config_from_flags(*, environ: Mapping[str, str] | None = None, **flags: Any) -> config_mod.Config:
    """etcd's flags given as keywords -> Config, through the command's own parser (same defaults, checks
    and error texts; a ConfigError says what is wrong). `environ` is {} unless given."""
    return config_mod.parse(flags_to_argv(flags), dict(environ or {}), default_host=config_mod.detect_default_host())


def flags_to_argv(flags: Mapping[str, Any]) -> list[str]:
    """{"data_dir": "/d", "listen_client_urls": [a, b]} -> ["--data-dir=/d", "--listen-client-urls=a,b"]."""
    return [f"--{name.replace('_', '-')}={_flag_value(value)}" for name, value in flags.items()]


def _flag_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (str, bytes, os.PathLike)):
        return os.fsdecode(value)
    if isinstance(value, Iterable):
        return ",".join(_flag_value(v) for v in value)
    return str(value)


def _bound(urls: Iterable[str], addresses: Iterable[Any]) -> tuple[str, ...]:
    out = []
    for url, address in zip(urls, addresses):
        scheme = url.split("://", 1)[0]
        if isinstance(address, tuple):
            host, port = address[0], address[1]
            host = f"[{host}]" if ":" in host else host
            out.append(f"{scheme}://{host}:{port}")
        else:
            out.append(url)
    return tuple(out)
