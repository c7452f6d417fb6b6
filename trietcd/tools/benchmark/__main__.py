import sys

from trietcd.tools.benchmark.cli import main

sys.exit(main())
