"""ViLT's Sacred configuration: upstream keys and named-config values (docs/backbones.md, ViLT), and the per-method configs."""
import importlib.util
import os

import pytest
from sacred.utils import ConfigAddedError

from vilt.config import ex

# ViLT/run.py registers the main function (it captures peft_options, so option keys may be added to it)
_spec = importlib.util.spec_from_file_location(
    "vilt_run", os.path.join(os.path.dirname(os.path.dirname(__file__)), "ViLT", "run.py"))
_spec.loader.exec_module(importlib.util.module_from_spec(_spec))


def resolved(*named, **updates):
    return ex._create_run(named_configs=list(named), config_updates=updates).config


def test_defaults_are_upstream():
    c = resolved()
    assert (c["hidden_size"], c["num_layers"], c["num_heads"], c["patch_size"], c["max_text_len"]) == (768, 12, 12, 32, 40)
    assert (c["learning_rate"], c["weight_decay"], c["max_steps"], c["warmup_steps"]) == (1e-4, 0.01, 25000, 2500)
    assert c["loss_names"] == {"itm": 1, "mlm": 1, "mpp": 0, "vqa": 0, "nlvr2": 0, "irtr": 0}
    assert c["peft"] == "full" and c["peft_lr_scale"] == 1


@pytest.mark.parametrize("name,expect", [
    ("task_finetune_vqa_randaug", dict(exp_name="finetune_vqa_randaug", datasets=["vqa"], batch_size=256, lr_mult=10,
                                       val_check_interval=0.1, draw_false_image=0,
                                       train_transform_keys=["pixelbert_randaug"])),
    ("task_finetune_nlvr2", dict(exp_name="finetune_nlvr2", batch_size=128, lr_mult=1, draw_false_image=0,
                                 train_transform_keys=["pixelbert"])),
    ("task_finetune_irtr_f30k", dict(batch_size=256, get_recall_metric=True, draw_false_text=15, draw_false_image=1)),
    ("task_mlm_itm", dict(max_image_len=200, batch_size=4096, max_epoch=10)),
])
def test_named_configs_carry_upstream_values(name, expect):
    c = resolved(name)
    for k, v in expect.items():
        assert c[k] == v, k
    if name.startswith("task_finetune"):
        assert (c["max_epoch"], c["max_steps"], c["warmup_steps"], c["learning_rate"]) == (10, None, 0.1, 1e-4)
    if "irtr" in name:
        assert c["loss_names"]["itm"] == 0.5 and c["loss_names"]["irtr"] == 1


@pytest.mark.parametrize("order", [("task_finetune_vqa", "peft_apt"), ("peft_apt", "task_finetune_vqa")])
def test_peft_configs_scale_the_task_learning_rate_in_any_order(order):
    c = resolved(*order)
    assert c["peft"] == "apt" and c["peft_options"] == {"num_prompts": 200, "apt_rank": 4}
    assert c["learning_rate"] * c["peft_lr_scale"] == pytest.approx(5e-4)
    assert resolved("task_finetune_vqa", "peft_full")["peft_lr_scale"] == 1


def test_method_options_as_top_level_keys():
    from vilt.modules import ViLTransformerSS
    from tiny import vilt_config
    import shared_apt

    from shared_apt.peft.registry import flat_option_keys; OPTION_KEYS = flat_option_keys()

    defaults = resolved()
    assert all(k in defaults and defaults[k] is None for k in OPTION_KEYS)
    c = resolved("peft_apt", num_prompts=7, apt_rank=2)
    assert (c["num_prompts"], c["apt_rank"], c["lora_rank"]) == (7, 2, None)
    model = ViLTransformerSS(vilt_config(peft="apt", peft_options={"num_prompts": 200, "apt_rank": 4},
                                         num_prompts=7, apt_rank=2))
    cfg = shared_apt.peft_config(model)
    assert (cfg.num_prompts, cfg.apt_rank) == (7, 2)
    from shared_apt.vl.training.run import UnknownConfigKeyError, check_cli_modifications

    with pytest.raises((ConfigAddedError, UnknownConfigKeyError), match="apt_rnk"):
        check_cli_modifications(ex._create_run(named_configs=["peft_apt"],
                                               config_updates={"apt_rnk": 2}).config_modifications)


@pytest.mark.parametrize("named", [[], ["task_finetune_vqa", "peft_lora"]])
def test_unknown_key_is_an_error(named):
    from shared_apt.vl.training.run import UnknownConfigKeyError, check_cli_modifications

    with pytest.raises((ConfigAddedError, UnknownConfigKeyError), match="learning_rat"):
        check_cli_modifications(ex._create_run(named_configs=named,
                                               config_updates={"learning_rat": 1e-3}).config_modifications)
