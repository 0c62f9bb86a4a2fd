"""Upstream-style entry point: ``python METER/run.py with data_root=... num_gpus=... task_finetune_vqa_clip_bert
clip16 text_roberta image_size=576 clip_randaug per_gpu_batchsize=... load_path=... peft_apt`` (docs/backbones.md, METER; as
upstream, give the encoder configs clip16 / text_roberta AFTER the task config). Unknown config keys are errors.
Training, evaluation (``test_only=True``), checkpoints and resume are the shared driver's
(``shared_apt.vl.training.run``)."""
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from meter.config import OPEN_KEYS, ex  # noqa: E402

from shared_apt.vl.training.run import OPEN_DICT_KEYS, sacred_main  # noqa: E402


@ex.automain
def main(_run, peft_options, visual_encoder_config, text_encoder_config, dataset_split_names,
         dataset_class_overrides):
    # the dict-valued keys are captured so that named configs / `with peft_options.num_prompts=4` may add sub-keys
    # (any other new key is an error: Sacred's ConfigAddedError or sacred_main)
    from meter.datamodules import make_meter_datamodule
    from meter.modules import METERTransformerSS

    open_keys = tuple(dict.fromkeys(OPEN_DICT_KEYS + OPEN_KEYS))
    return sacred_main(ex, _run, METERTransformerSS,
                       lambda cfg: make_meter_datamodule(cfg, dist=True), open_keys=open_keys)
