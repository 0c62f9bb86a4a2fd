"""Upstream-style entry point: ``python ViLT/run.py with data_root=... num_gpus=... task_finetune_vqa_randaug
per_gpu_batchsize=... load_path=... peft_apt`` (vilt.md §3.4). Unknown config keys are errors."""
import copy
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from vilt.config import ex  # noqa: E402

from shared_apt.training.run import check_cli_modifications, run  # noqa: E402


@ex.automain
def main(_config, _run, peft_options):
    # `peft_options` is captured so that `with peft_options.num_prompts=4` may add option keys; any other new key is
    # rejected (Sacred raises ConfigAddedError before main for keys no captured function uses; this catches the rest)
    check_cli_modifications(_run.config_modifications)
    from shared_apt.data.datamodules import MTDataModule
    from vilt.modules.vilt_module import ViLTransformerSS

    config = copy.deepcopy(_config)
    result = run(config, ViLTransformerSS, lambda cfg: MTDataModule(cfg, dist=True))
    return {k: v for k, v in result["metrics"].items() if isinstance(v, (int, float))}
