"""Upstream-named entry point `vilt/utils/write_f30k_karpathy.py`: Flickr30K Karpathy raw files -> arrow tables.

All logic lives in :mod:`shared_apt.data.writers.f30k_karpathy`; this file only keeps upstream's name and its
``make_arrow(root, dataset_root)`` function. Usage::

    python ViLT/vilt/utils/write_f30k_karpathy.py ROOT DATASET_ROOT [options]   (--help lists them)
"""
import os
import sys

try:
    import shared_apt  # noqa: F401
except ImportError:  # run as a plain script from a source checkout: make the repository root importable
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))))

from shared_apt.data.writers.f30k_karpathy import main, make_arrow  # noqa: E402

__all__ = ["make_arrow", "main"]

if __name__ == "__main__":
    raise SystemExit(main())
