"""``python -m insitem.cli``: the `insitem` command."""

import sys

from insitem.acquisition.signal_gate import GATE

# stop signals are held from here on, so one that comes during the imports below is acted on
# where stopping is clean (acquisition/signal_gate.py)
GATE.hold()

from insitem.cli.main import main  # noqa: E402

sys.exit(main())
