"""The command line every fuzz target shares.

    python fuzz/<target>.py FILE...                 each input once (CI's corpus run)
    python fuzz/<target>.py CORPUS_DIR -atheris_runs=N
    python fuzz/<target>.py CORPUS_DIR -max_total_time=N

Without atheris installed, the files in the given directories run once each.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Callable


def run_files(test_one_input: Callable[[bytes], None], paths: list[str]) -> None:
    for path in paths:
        with open(path, "rb") as fh:
            test_one_input(fh.read())
    print(f"ran {len(paths)} inputs")


def main(test_one_input: Callable[[bytes], None]) -> None:
    args = sys.argv[1:]
    if args and all(os.path.isfile(a) for a in args):
        run_files(test_one_input, args)
        return
    try:
        import atheris
    except ImportError:
        files = [os.path.join(d, n) for d in args if os.path.isdir(d) for n in sorted(os.listdir(d))]
        run_files(test_one_input, files)
        return
    atheris.instrument_all()
    atheris.Setup(sys.argv, test_one_input)
    atheris.Fuzz()
