"""`python -m trustdiff`: the same command line as the `trustdiff` script."""

from trustdiff.cli import main

raise SystemExit(main())
