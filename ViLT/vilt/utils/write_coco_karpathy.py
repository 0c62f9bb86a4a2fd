"""Upstream entry point `python ViLT/vilt/utils/write_coco_karpathy.py ROOT DATASET_ROOT`; the writer is shared_apt.vl.data.writers.coco_karpathy."""
from shared_apt.vl.data.writers.coco_karpathy import main, make_arrow  # noqa: F401

if __name__ == "__main__":
    raise SystemExit(main())
