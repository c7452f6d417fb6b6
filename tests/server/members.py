"""Members on temporary data dirs, run with their real nursery (no listeners), for tests of the layers above."""

import trio

from trietcd.config import parse
from trietcd.server import Member


def make_member(data_dir, *argv: str) -> Member:
    return Member(parse(["--data-dir", str(data_dir), *argv], {}))


async def no_connections(grace_s: float) -> None:
    pass


async def run_member(member: Member, body) -> None:
    """Runs the member until it serves, runs `await body(member)`, stops it gracefully."""
    async with trio.open_nursery() as nursery:
        await nursery.start(member.run, [])
        try:
            return await body(member)
        finally:
            await member.stop(no_connections, 0.1)
