"""Entry point kept for ``python -m shared_apt.bench`` (README, scripts); the code is :mod:`shared_apt.harness.bench`."""
import sys

from shared_apt.harness.bench import main

if __name__ == "__main__":
    sys.exit(main())
