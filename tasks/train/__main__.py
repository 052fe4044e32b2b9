"""``python -m tasks.train``: the trainer container's entry point."""

import sys

from tasks.train.launch import main

if __name__ == "__main__":
    sys.exit(main())
