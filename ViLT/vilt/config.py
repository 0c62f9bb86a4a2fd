"""Sacred configuration of ViLT: upstream's keys, defaults and named configs (docs/backbones.md, ViLT), plus this project's keys
(tuning method and its options, demo/tiny geometry). ``python run.py with <named configs> key=value``."""
from sacred import Experiment

from shared_apt.vl.training.sacred_keys import add_peft_config

ex = Experiment("ViLT", save_git_info=False)


def _loss_names(d):
    ret = {"itm": 0, "mlm": 0, "mpp": 0, "vqa": 0, "nlvr2": 0, "irtr": 0}
    ret.update(d)
    return ret


@ex.config
def config():
    exp_name = "vilt"
    seed = 0
    datasets = ["coco", "vg", "sbu", "gcc"]
    loss_names = _loss_names({"itm": 1, "mlm": 1})
    batch_size = 4096  # desired global batch; gradient accumulation fills the gap

    # Image setting
    train_transform_keys = ["pixelbert"]
    val_transform_keys = ["pixelbert"]
    image_size = 384
    max_image_len = -1
    patch_size = 32
    draw_false_image = 1
    image_only = False

    # Text Setting
    vqav2_label_size = 3129
    max_text_len = 40
    tokenizer = "bert-base-uncased"
    vocab_size = 30522
    whole_word_masking = False
    mlm_prob = 0.15
    draw_false_text = 0

    # Transformer Setting
    vit = "vit_base_patch32_384"
    hidden_size = 768
    num_heads = 12
    num_layers = 12
    mlp_ratio = 4
    drop_rate = 0.1

    # Optimizer Setting
    optim_type = "adamw"
    learning_rate = 1e-4
    weight_decay = 0.01
    decay_power = 1
    max_epoch = 100
    max_steps = 25000
    warmup_steps = 2500
    end_lr = 0
    lr_mult = 1  # multiply lr for downstream heads

    # Downstream Setting
    get_recall_metric = False

    # PL Trainer Setting
    resume_from = None
    fast_dev_run = False
    val_check_interval = 1.0
    test_only = False

    # below params varies with the environment
    data_root = ""
    log_dir = "result"
    per_gpu_batchsize = 0  # you should define this value
    num_gpus = 1
    num_nodes = 1
    load_path = ""
    num_workers = 8
    precision = 16

    # ---- project keys (not in upstream) ----
    pos_embed_grid = None       # position grid side; None = image_size // patch_size
    cls_token_id = 101          # [CLS] id of the tokenizer, for the class token of PETL methods
    peft = "full"               # a registered method: full, classifier, shallow_prompt, ..., apt (method_names())
    peft_options = {}           # the method's options (own names or flat keys), e.g. {"num_prompts": 200, "rank": 4}
    peft_lr_scale = 1           # the optimiser uses learning_rate x peft_lr_scale (PETL named configs: 5)
    trust_checkpoint = False    # allow full unpickling of load_path (only for files you trust)
    strict_load = True          # False: load a checkpoint that does not fit, reporting what was skipped
    on_nonfinite = "stop"       # non-finite loss/gradient: "stop" (names the step) or "skip" the optimiser step
    max_nonfinite_skips = 0     # on_nonfinite="skip": at most this many skipped steps, then stop
    accelerator = "auto"        # "cpu" forces CPU processes (num_gpus then means processes, gloo backend)
    max_bad_image_fraction = 0.01
    save_tuned_weights = True   # also write the tuned tensors alone (shared_apt.save_tuned) next to checkpoints
    tuned_path = ""             # a shared_apt.save_tuned folder loaded after the method is applied (evaluation)
    attention_impl = "sdpa"     # "sdpa" (F.scaled_dot_product_attention) or "explicit" (upstream's math)
    recompute_layers = False    # True: recompute transformer-layer activations in backward (less memory, more time)
    compile_layers = False      # True (inductor) or a torch.compile backend name: compile each transformer layer


add_peft_config(ex)  # method options as top-level keys (`with peft=apt apt_rank=4`) + named configs peft_<method>


# ---------------------------------------------------------------------------------------------------------------
# Named configs, upstream values


@ex.named_config
def env_dandelin():
    data_root = "/data2/dsets/dataset"
    log_dir = "/data2/vilt/result"
    num_gpus = 8
    num_nodes = 1


@ex.named_config
def task_mlm_itm():
    exp_name = "mlm_itm"
    datasets = ["coco", "vg", "sbu", "gcc"]
    loss_names = _loss_names({"itm": 1, "mlm": 1})
    batch_size = 4096
    max_epoch = 10
    max_image_len = 200


@ex.named_config
def task_mlm_itm_randaug():
    exp_name = "mlm_itm_randaug"
    datasets = ["coco", "vg", "sbu", "gcc"]
    train_transform_keys = ["pixelbert_randaug"]
    loss_names = _loss_names({"itm": 1, "mlm": 1})
    batch_size = 4096
    max_epoch = 10
    max_image_len = 200


@ex.named_config
def task_mlm_itm_mpp():
    exp_name = "mlm_itm_mpp"
    datasets = ["coco", "vg", "sbu", "gcc"]
    loss_names = _loss_names({"itm": 1, "mlm": 1, "mpp": 1})
    batch_size = 4096
    max_epoch = 10
    max_image_len = 200


# Fine-tuning task configs (docs/backbones.md, ViLT): every one sets max_epoch 10, max_steps None, warmup 0.1, lr 1e-4; each
# exists plain and with RandAugment ("_randaug").
_FINETUNE = {
    "nlvr2": dict(datasets=["nlvr2"], loss_names=_loss_names({"nlvr2": 1}), batch_size=128, draw_false_image=0),
    "vqa": dict(datasets=["vqa"], loss_names=_loss_names({"vqa": 1}), batch_size=256, draw_false_image=0,
                val_check_interval=0.1, lr_mult=10),
    "irtr_coco": dict(datasets=["coco"], loss_names=_loss_names({"itm": 0.5, "irtr": 1}), batch_size=256,
                      get_recall_metric=True, draw_false_text=15),
    "irtr_f30k": dict(datasets=["f30k"], loss_names=_loss_names({"itm": 0.5, "irtr": 1}), batch_size=256,
                      get_recall_metric=True, draw_false_text=15),
}
for _task, _values in _FINETUNE.items():
    for _suffix, _extra in (("", {}), ("_randaug", {"train_transform_keys": ["pixelbert_randaug"]})):
        ex.add_named_config(f"task_finetune_{_task}{_suffix}", dict(
            exp_name=f"finetune_{_task}{_suffix}", max_epoch=10, max_steps=None, warmup_steps=0.1,
            learning_rate=1e-4, **_values, **_extra))


@ex.named_config
def step25k():
    max_epoch = 100
    max_steps = 25000


@ex.named_config
def step50k():
    max_epoch = 100
    max_steps = 50000


@ex.named_config
def step100k():
    max_epoch = 100
    max_steps = 100000


@ex.named_config
def step200k():
    max_epoch = 200
    max_steps = 200000


@ex.named_config
def vit32_base():
    vit = "vit_base_patch32_384"
    patch_size = 32
    hidden_size = 768
    num_heads = 12
    num_layers = 12


# ---------------------------------------------------------------------------------------------------------------
# Tuning methods with the APT paper's settings: peft_full, peft_apt, ... (shared_apt.vl.training.sacred_keys).


# ---------------------------------------------------------------------------------------------------------------
# A tiny ViLT for the demo world and tests: same code, small dimensions.


@ex.named_config
def tiny_vilt():
    hidden_size = 64
    num_heads = 4
    num_layers = 2
    mlp_ratio = 4
    patch_size = 16
    image_size = 64
    max_text_len = 24
    precision = 32
    num_workers = 0
