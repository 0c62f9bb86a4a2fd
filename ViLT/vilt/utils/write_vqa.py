"""Upstream entry point `python ViLT/vilt/utils/write_vqa.py ROOT DATASET_ROOT`; the writer is shared_apt.vl.data.writers.vqa."""
from shared_apt.vl.data.writers.vqa import main, make_arrow  # noqa: F401

if __name__ == "__main__":
    raise SystemExit(main())
