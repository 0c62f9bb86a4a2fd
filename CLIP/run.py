"""Upstream-style entry point: ``python CLIP/run.py with data_root=DIR clip_path=ViT-B-16.pt peft_coop seed=1``
(``print_config`` lists every key). Unknown config keys are errors."""
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from clip_apt.config import ex  # noqa: E402

if __name__ == "__main__":
    ex.run_commandline()
