"""`python -m engine.cli.cluster`: the ``ops/cluster`` command."""

import sys

from engine.cli.cluster.main import main

sys.exit(main())
