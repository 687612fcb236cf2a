"""`python -m cnnserve` is the `cnnserve` command."""

import sys

from cnnserve.cli import main

sys.exit(main())
