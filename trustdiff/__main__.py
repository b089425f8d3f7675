"""`python -m trustdiff`: the same command line as the `trustdiff` script."""

from trustdiff.cli import main

if __name__ == "__main__":  # not when a spawned process (--explain-processes) imports it
    raise SystemExit(main())
