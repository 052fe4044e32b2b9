"""``python -m tasks.serve [--host H] [--port P] [--model URI_OR_PATH]`` (the serving image's CMD)."""

import argparse
import sys

from tasks.serve.cli import add_arguments, run

parser = argparse.ArgumentParser(prog="python -m tasks.serve", description=__doc__)
add_arguments(parser)
sys.exit(run(parser.parse_args()))
