"""Sacred configuration of CLIP prompt learning:
``python CLIP/run.py with dataset=oxford_pets data_root=$DATA clip_path=ViT-B-16.pt peft_coop protocol=base2new``.

Defaults are CoOp's recipe (Dassl): SGD momentum 0.9, weight decay 5e-4, lr 0.002, one warm-up epoch at constant
1e-5 then per-epoch cosine, batch 32, 16 shots, base-to-new, template "a photo of a {}.". Named configs
``peft_<method>`` set each method and its upstream settings (CoOp / CoCoOp / UPT release / APT paper)."""
from sacred import Experiment

ex = Experiment("CLIP", save_git_info=False)


@ex.config
def config():
    exp_name = "clip"
    seed = 1
    dataset = "folder"             # folder (a generic split_zhou folder) or a CoOp key: imagenet, caltech101,
    #                                oxford_pets, stanford_cars, oxford_flowers, food101, fgvc_aircraft, sun397, dtd,
    #                                eurosat, ucf101
    #                                (imagenetv2, imagenet_sketch, imagenet_a, imagenet_r: targets only)
    data_root = ""                 # dataset=folder: that folder; else CoOp's $DATA (the folder holding oxford_pets/...)
    image_dir = "images"           # dataset=folder only: image root inside the folder
    fewshot_cache_dir = ""         # few-shot subsets shot_{K}-seed_{S}.json; "" = <dataset folder>/split_fewshot
    clip_path = ""                 # OpenAI-format CLIP: TorchScript archive or state dict
    text_heads = None              # override width // 64 (models that do not follow it)
    vision_heads = None
    peft_towers = ["text"]         # where attention-site methods (apt, lora, adapter) attach: text and/or vision
    peft = "zeroshot"
    peft_options = {}
    method_label = ""              # results' method_label (tells option variants apart); "" = peft
    template = None                # hard prompt (zero-shot, VPT, APT, LoRA, adapters); None = each dataset's CoOp one
    num_shots = 16                 # K shots per class (< 1: all, protocols all and base2new only)
    protocol = "base2new"          # base2new | fewshot | xd (cross-dataset) | dg (ImageNet -> variants) | all
    target_datasets = None         # xd / dg targets; None = CoOp's (xd: the other ten datasets, dg: the 4 variants)
    test_only = False              # evaluate load_path's tuned weights (writes eval_results.json), no training
    load_path = ""                 # tuned weights of a run (<run>/tuned): evaluated (test_only) or trained further
    image_size = 224
    crop_min_scale = 0.08          # RandomResizedCrop scale (crop_min_scale, 1); CoOp: 0.08
    flip = True                    # random horizontal flip (CoOp: on)
    batch_size = 32
    test_batch_size = 100
    max_epochs = 10
    lr = 0.002
    momentum = 0.9
    weight_decay = 5e-4
    warmup_epochs = 1
    warmup_lr = 1e-5
    precision = "auto"             # auto: 16-mixed on GPU (autocast), 32 on CPU
    accelerator = "auto"
    num_workers = 0
    output_dir = "result/clip"
    max_steps = -1                 # > 0: stop after that many optimiser steps (tests, smoke runs)


@ex.named_config
def peft_zeroshot():
    peft = "zeroshot"
    max_epochs = 0


@ex.named_config
def peft_coop():  # CoOp base-to-new (configs vit_b16_ctxv1): n_ctx 4 from "a photo of a", 200 epochs
    peft = "coop"
    peft_options = {"ctx_init": "a photo of a"}
    max_epochs = 200


@ex.named_config
def peft_coop_fewshot():  # CoOp few-shot (vit_b16): 16 random context tokens, class at the end
    peft = "coop"
    peft_options = {"n_ctx": 16}
    max_epochs = 200


@ex.named_config
def peft_cocoop():  # vit_b16_c4_ep10_batch1_ctxv1
    peft = "cocoop"
    peft_options = {"ctx_init": "a photo of a"}
    batch_size = 1
    max_epochs = 10


@ex.named_config
def peft_vpt_shallow():  # UPT release VPT_shallow, n 4
    peft = "vpt_shallow"
    peft_options = {"num_prompts": 4}
    max_epochs = 200


@ex.named_config
def peft_vpt_deep():
    peft = "vpt_deep"
    peft_options = {"num_prompts": 4}
    max_epochs = 200


@ex.named_config
def peft_upt():  # UPT release (shallow); token_mixing=False reproduces it, True is the paper's attention
    peft = "upt"
    peft_options = {"token_mixing": False}
    max_epochs = 200


@ex.named_config
def peft_upt_deep():
    peft = "upt_deep"
    peft_options = {"token_mixing": True}
    max_epochs = 200


@ex.named_config
def peft_joint():
    peft = "joint"
    max_epochs = 200


@ex.named_config
def peft_shared_prompt():
    peft = "shared_prompt"
    max_epochs = 200


@ex.named_config
def peft_mlp_prompt():
    peft = "mlp_prompt"
    max_epochs = 200


@ex.named_config
def peft_apt():  # APT paper, CLIP: text self-attention, p 4, r 2, SGD lr 2e-4, weight decay 0.3, 10 epochs
    peft = "apt"
    peft_options = {"num_prompts": 4, "rank": 2}
    lr = 2e-4
    weight_decay = 0.3
    max_epochs = 10


@ex.named_config
def peft_lora():
    peft = "lora"
    peft_options = {"rank": 4}


@ex.named_config
def peft_adapter():
    peft = "adapter"
    peft_options = {"bottleneck": 96}


@ex.main
def main(_run, peft_options):
    """Run one method (``clip_apt.train.run``) and return its numeric results. ``peft_options`` is captured so that
    ``with peft_options.n_ctx=4`` may add option keys; any other new key is an error."""
    from types import SimpleNamespace

    from shared_apt.vl.training.run import check_cli_modifications, command_line_added_keys, plain

    from .train import run, summary

    check_cli_modifications(SimpleNamespace(added=command_line_added_keys(ex, _run)), ("peft_options",))
    result = run(plain(_run.config))
    print(f"[clip] {summary(result)}", flush=True)
    return {k: v for k, v in result.items() if isinstance(v, (int, float)) and not isinstance(v, bool)}
