"""Upstream entry point `python ViLT/vilt/utils/write_nlvr2.py ROOT DATASET_ROOT`; the writer is shared_apt.vl.data.writers.nlvr2."""
from shared_apt.vl.data.writers.nlvr2 import main, make_arrow  # noqa: F401

if __name__ == "__main__":
    raise SystemExit(main())
