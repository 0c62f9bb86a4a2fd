"""Entry point kept for ``python -m shared_apt.profile`` (README, scripts); the code is :mod:`shared_apt.harness.profile`."""
import sys

from shared_apt.harness.profile import main

if __name__ == "__main__":
    sys.exit(main())
