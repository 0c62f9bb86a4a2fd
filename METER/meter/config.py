"""Sacred configuration of METER: upstream's keys, defaults and named configs (docs/backbones.md, METER), plus this project's keys
(tuning method and its options, encoder geometry, tiny geometry). ``python run.py with <named configs> key=value``.

As upstream, named configs apply left to right: give the encoder configs (``clip16``, ``text_roberta``) AFTER the
task config. The ``peft_*`` configs choose a tuning method with the APT paper's settings; PETL methods train at 5x the
task's upstream learning rate (docs/methods.md, optimisation): they set ``peft_lr_scale = 5``, ``learning_rate`` stays the
task's upstream value, and the shared optimiser (``shared_apt.vl.training.optim.set_schedule``) trains at
learning_rate x peft_lr_scale (VQA 2.5e-5, NLVR2 5e-5, IR/TR 2.5e-5), with the upstream multipliers (lr_mult_head,
lr_mult_cross_modal) unchanged; the config (and the checkpoint's hparams) keep both values as given.

``dataset_split_names`` holds METER's split tables where they differ from the shared (ViLT) defaults (docs/backbones.md, METER:
VQA trains on vqav2_train + vqav2_val and validates on vqav2_val; GCC has no validation shard)."""
import copy

from sacred import Experiment

from shared_apt.vl.training.sacred_keys import add_peft_config

# METER's VQA split (a backbone fact, given to the shared VQA dataset through dataset_split_names): it trains on
# vqav2_train + vqav2_val and validates on vqav2_val (ViLT: the shared default, VILT_VQA_SPLITS).
METER_VQA_SPLITS = {"train": ["vqav2_train", "vqav2_val"], "val": ["vqav2_val"], "test": ["vqav2_test"]}

ex = Experiment("METER", save_git_info=False)


def _loss_names(d):
    ret = {"itm": 0, "mlm": 0, "mpp": 0, "vqa": 0, "vcr": 0, "vcr_qar": 0, "nlvr2": 0, "irtr": 0, "contras": 0,
           "snli": 0}
    ret.update(d)
    return ret


@ex.config
def config():
    exp_name = "meter"
    seed = 0
    datasets = ["coco", "vg", "sbu", "gcc"]
    loss_names = _loss_names({"itm": 1, "mlm": 1})
    batch_size = 4096  # desired global batch; gradient accumulation fills the gap

    # Image setting
    train_transform_keys = ["clip"]
    val_transform_keys = ["clip"]
    image_size = 224
    patch_size = 32
    draw_false_image = 1
    image_only = False
    resolution_before = 224
    vqav2_label_size = 3129

    # Text Setting
    max_text_len = 40
    tokenizer = "bert-base-uncased"
    vocab_size = 30522
    whole_word_masking = False  # note that whole_word_masking does not work for RoBERTa
    mlm_prob = 0.15
    draw_false_text = 0

    # Transformer Setting
    num_top_layer = 6
    input_image_embed_size = 768
    input_text_embed_size = 768
    vit = "ViT-B/32"
    hidden_size = 768
    num_heads = 12
    num_layers = 6
    mlp_ratio = 4
    drop_rate = 0.1

    # Optimizer Setting
    optim_type = "adamw"
    learning_rate = 1e-5
    weight_decay = 0.01
    decay_power = 1
    max_epoch = 100
    max_steps = 100000
    warmup_steps = 10000
    end_lr = 0
    lr_mult_head = 5  # multiply lr for downstream heads
    lr_mult_cross_modal = 5  # multiply lr for the cross-modal module

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
    num_gpus = 8
    num_nodes = 1
    load_path = ""
    num_workers = 8
    precision = 32

    # ---- project keys (not in upstream) ----
    visual_encoder_config = None  # {width, layers (blocks built), heads, patch_size}; None: from `vit`
    text_encoder_config = None    # RobertaConfig / BertConfig kwargs over roberta-base / bert-base-uncased
    cls_token_id = None           # class-token init id; None: <s> (RoBERTa) / [CLS] 101 (BERT)
    peft = "full"                 # a registered method: full, classifier, ..., apt (method_names())
    peft_options = {}             # the method's options (own names or flat keys), e.g. {"num_prompts": 200, "rank": 4}
    peft_lr_scale = 1             # the model trains at learning_rate x peft_lr_scale; PETL configs set 5
    trust_checkpoint = False      # allow full unpickling of load_path (only for files you trust)
    strict_load = True          # False: load a checkpoint that does not fit, reporting what was skipped
    on_nonfinite = "stop"       # non-finite loss/gradient: "stop" (names the step) or "skip" the optimiser step
    max_nonfinite_skips = 0     # on_nonfinite="skip": at most this many skipped steps, then stop
    accelerator = "auto"          # "cpu" forces CPU processes
    max_bad_image_fraction = 0.01
    save_tuned_weights = True     # also write the tuned tensors alone (shared_apt.save_tuned) next to checkpoints
    tuned_path = ""               # a shared_apt.save_tuned folder loaded after the method is applied (evaluation)
    attention_impl = "sdpa"     # "sdpa" (F.scaled_dot_product_attention) or "explicit" (upstream's math)
    recompute_layers = False    # True: recompute transformer-layer activations in backward (less memory, more time)
    compile_layers = False      # True (inductor) or a torch.compile backend name: compile each transformer layer
    dataset_split_names = {"vqa": copy.deepcopy(METER_VQA_SPLITS), "gcc": {"val": [], "test": []}}  # docs/backbones.md, METER
    dataset_class_overrides = {}  # {dataset key: "module:Class"} (shared_apt.vl.data.datamodules)


# ---------------------------------------------------------------------------------------------------------------
# Task configs (upstream values, docs/backbones.md, METER)


add_peft_config(ex)  # method options as top-level keys (`with peft=apt apt_rank=4`) + named configs peft_<method>


@ex.named_config
def task_mlm_itm_clip_bert():
    exp_name = "mlm_itm"
    datasets = ["coco", "vg", "sbu", "gcc"]
    loss_names = _loss_names({"itm": 1, "mlm": 1})
    batch_size = 4096
    max_epoch = 10
    max_steps = 100000
    warmup_steps = 0.1
    whole_word_masking = True

    vocab_size = 30522
    max_text_len = 50
    image_size = 224
    tokenizer = "bert-base-uncased"
    train_transform_keys = ["clip"]
    val_transform_keys = ["clip"]
    learning_rate = 1e-5
    val_check_interval = 1.0
    lr_mult_head = 5
    lr_mult_cross_modal = 5
    num_top_layer = 6
    hidden_size = 768
    num_heads = 12


# Fine-tuning task configs with upstream values (docs/backbones.md, METER); what they all share first.
_FINETUNE_COMMON = dict(max_epoch=10, max_steps=None, warmup_steps=0.1, lr_mult_cross_modal=5,
                        tokenizer="bert-base-uncased", input_text_embed_size=768, vit="ViT-B/32",
                        train_transform_keys=["clip"], val_transform_keys=["clip"], input_image_embed_size=768)
_IRTR = dict(loss_names=_loss_names({"itm": 0.5, "irtr": 1}), batch_size=512, get_recall_metric=True,
             draw_false_text=15, learning_rate=5e-6, lr_mult_head=5, image_size=384)
_FINETUNE = {
    "nlvr2": dict(exp_name="finetune_nlvr2", datasets=["nlvr2"], loss_names=_loss_names({"nlvr2": 1}),
                  batch_size=256, draw_false_image=0, learning_rate=1e-5, lr_mult_head=10, max_text_len=50,
                  image_size=288),
    "vqa": dict(exp_name="finetune_vqa", datasets=["vqa"], loss_names=_loss_names({"vqa": 1}), batch_size=512,
                draw_false_image=0, learning_rate=5e-6, val_check_interval=0.1, lr_mult_head=50, max_text_len=50,
                image_size=576),
    "irtr_coco": dict(exp_name="finetune_irtr_coco", datasets=["coco"], **_IRTR),
    "irtr_f30k": dict(exp_name="finetune_irtr_f30k", datasets=["f30k"], **_IRTR),
}
for _task, _values in _FINETUNE.items():
    ex.add_named_config(f"task_finetune_{_task}_clip_bert", dict(_FINETUNE_COMMON, **_values))


@ex.named_config
def task_finetune_snli_clip_bert():
    exp_name = "finetune_snli"
    datasets = ["snli"]
    loss_names = _loss_names({"snli": 1})
    batch_size = 64
    max_epoch = 5
    max_steps = None
    warmup_steps = 0.1
    draw_false_image = 0
    learning_rate = 2e-6
    lr_mult_head = 10
    lr_mult_cross_modal = 5
    tokenizer = "bert-base-uncased"
    max_text_len = 50
    input_text_embed_size = 768
    vit = "ViT-B/32"
    train_transform_keys = ["clip"]
    val_transform_keys = ["clip"]
    input_image_embed_size = 768
    image_size = 384


# ---------------------------------------------------------------------------------------------------------------
# Encoder configs ("etc"; give them after the task config)


@ex.named_config
def clip32():
    vit = "ViT-B/32"
    image_size = 224
    patch_size = 32
    train_transform_keys = ["clip"]
    val_transform_keys = ["clip"]
    input_image_embed_size = 768


@ex.named_config
def clip16():
    vit = "ViT-B/16"
    image_size = 224
    patch_size = 16
    train_transform_keys = ["clip"]
    val_transform_keys = ["clip"]
    input_image_embed_size = 768


@ex.named_config
def text_roberta():
    tokenizer = "roberta-base"
    vocab_size = 50265
    input_text_embed_size = 768


@ex.named_config
def text_roberta_large():
    tokenizer = "roberta-large"
    vocab_size = 50265
    input_text_embed_size = 1024
    text_encoder_config = {"hidden_size": 1024, "num_hidden_layers": 24, "num_attention_heads": 16,
                           "intermediate_size": 4096}


@ex.named_config
def clip_randaug():
    train_transform_keys = ["clip_randaug"]


@ex.named_config
def imagenet_randaug():
    train_transform_keys = ["imagenet_randaug"]


# ---------------------------------------------------------------------------------------------------------------
# Tuning methods with the APT paper's settings: peft_full, peft_apt, ... (shared_apt.vl.training.sacred_keys).


@ex.named_config
def peft_apt_paper():
    """APT with the scale s trained, as the paper describes it. The default (peft_apt) follows the authors' METER
    code, whose name filter leaves s frozen."""
    peft = "apt"
    peft_options = {"num_prompts": 200, "apt_rank": 4, "apt_train_scale": True}
    peft_lr_scale = 5


# ---------------------------------------------------------------------------------------------------------------
# A tiny METER for the demo world and tests: same code, small dimensions (CLIP width 64 x 2 blocks, text encoder
# width 64 x 2 layers, fusion width 64 x 2 layers).


@ex.named_config
def tiny_meter():
    vit = "ViT-B/16"
    patch_size = 16
    image_size = 64
    visual_encoder_config = {"width": 64, "layers": 2, "heads": 4, "patch_size": 16}
    input_image_embed_size = 64
    tokenizer = "roberta-base"
    text_encoder_config = {"hidden_size": 64, "num_hidden_layers": 2, "num_attention_heads": 4,
                           "intermediate_size": 256}
    input_text_embed_size = 64
    vocab_size = 50265
    hidden_size = 64
    num_heads = 4
    num_top_layer = 2
    mlp_ratio = 4
    max_text_len = 24
    precision = 32
    num_workers = 0


@ex.command(unobserved=True)
def resolved_config(_config, peft_options, visual_encoder_config, text_encoder_config, dataset_split_names,
                    dataset_class_overrides):
    """``... with <named configs> resolved_config``: the final Sacred config (a dict). Captures the dict-valued
    project keys so keys added by named configs / updates count as used (run.py's main captures them too)."""
    return dict(_config)


# Dict-valued keys whose sub-keys named configs and command-line updates may add (run.py rejects any other new key).
OPEN_KEYS = ("peft_options", "visual_encoder_config", "text_encoder_config", "dataset_split_names",
             "dataset_class_overrides")
