"""``python -m calinode.node.cli``: the ``calinode`` command without its console script."""

import sys

from calinode.node.cli.main import main

if __name__ == "__main__":
    sys.exit(main())
