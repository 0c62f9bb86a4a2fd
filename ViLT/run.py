"""Upstream-style entry point: ``python ViLT/run.py with data_root=... num_gpus=... task_finetune_vqa_randaug
per_gpu_batchsize=... load_path=... peft_apt`` (docs/backbones.md, ViLT). Unknown config keys are errors."""
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from vilt.config import ex  # noqa: E402

from shared_apt.vl.training.run import sacred_main  # noqa: E402


@ex.automain
def main(_run, peft_options):
    # `peft_options` is captured so that `with peft_options.num_prompts=4` may add option keys; any other new key is
    # an error (sacred_main)
    from shared_apt.vl.data.datamodules import MTDataModule
    from vilt.modules.vilt_module import ViLTransformerSS

    return sacred_main(ex, _run, ViLTransformerSS, lambda cfg: MTDataModule(cfg, dist=True))
