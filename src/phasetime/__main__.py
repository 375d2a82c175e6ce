"""``python -m phasetime``: the same command line as ``phasetime``."""

from phasetime.cli import main

if __name__ == "__main__":
    main()
