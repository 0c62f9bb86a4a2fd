"""METERTransformerSS: upstream METER (zdou0830/METER, docs/backbones.md, METER) built from config dimensions, with every tuning
method of shared_apt attachable through the config key ``peft``.

State-dict keys, attribute names, batch keys, ``infer`` outputs and numerics are upstream's, so official checkpoints
(``{"state_dict": ...}`` written by Lightning) load unchanged through ``load_path``. Nothing is ever downloaded: the
CLIP image tower and the RoBERTa text encoder are built from ``visual_encoder_config`` / ``text_encoder_config``
(random weights) and receive their values from a METER checkpoint; ``vit`` may name a local OpenAI CLIP file."""
from __future__ import annotations

import logging
import os

import torch
from torch import nn

from shared_apt.peft.sites import AttentionSite, BackboneSpec, LinearSlot, SequenceSite, attribute_setter
from shared_apt.vl import official
from shared_apt.vl.checkpoint import CheckpointError, load_state_dict_checked, state_dict_of
from shared_apt.vl.heads import ITMHead, MLMHead, Pooler, classifier, init_weights
from shared_apt.vl.speed import call_layer
from shared_apt.vl.training import module as _training_module
from shared_apt.vl.training import objectives as _shared_objectives
from shared_apt.vl.training.module import VisionLanguageModule

from . import objectives as _meter_objectives
from .bert_model import BertCrossLayer
from .clip_model import CLIP, CLIP_VISUAL, TEXT_LEFTOVER, adapt_position_encoding, clip_weights_for_meter, \
    read_clip_file

log = logging.getLogger(__name__)

# Keys this project adds to upstream's config; models built from an upstream config dict get these defaults.
PROJECT_DEFAULTS = {
    **VisionLanguageModule.project_defaults,
    "visual_encoder_config": None,  # {width, layers (blocks built), heads, patch_size}; None: from `vit` (ViT-B/16)
    "text_encoder_config": None,    # RobertaConfig (or BertConfig) kwargs over roberta-base (bert-base-uncased)
    "cls_token_id": None,           # class-token init id; None: the text config's bos id (<s> = 0) / [CLS] 101
    "peft_lr_scale": 1,             # the optimiser trains at learning_rate x peft_lr_scale (PETL configs: 5)
}

# transformers 4.6 roberta-base / bert-base-uncased configuration (docs/backbones.md, METER); never fetched from the hub.
ROBERTA_BASE = dict(vocab_size=50265, hidden_size=768, num_hidden_layers=12, num_attention_heads=12,
                    intermediate_size=3072, hidden_act="gelu", hidden_dropout_prob=0.1,
                    attention_probs_dropout_prob=0.1, max_position_embeddings=514, type_vocab_size=1,
                    initializer_range=0.02, layer_norm_eps=1e-5, pad_token_id=1, bos_token_id=0, eos_token_id=2)
BERT_BASE = dict(vocab_size=30522, hidden_size=768, num_hidden_layers=12, num_attention_heads=12,
                 intermediate_size=3072, hidden_act="gelu", hidden_dropout_prob=0.1, attention_probs_dropout_prob=0.1,
                 max_position_embeddings=512, type_vocab_size=2, initializer_range=0.02, layer_norm_eps=1e-12,
                 pad_token_id=0)
BERT_CLS_ID = 101

HEAD_NAMES = ("vqa_classifier", "nlvr2_classifier", "mlm_score", "itm_score", "snli_classifier")
# Upstream loss_names keys without an objective anywhere (upstream has no code for them either) or not supported by
# this project; they must be 0 and are not passed to the shared training module.
INACTIVE_TASKS = ("vcr", "vcr_qar", "contras", "snli")


def config_value(config: dict, key: str):
    if key in config:
        return config[key]
    if key in PROJECT_DEFAULTS:
        return PROJECT_DEFAULTS[key]
    raise KeyError(f"METER config has no key {key!r}")


def is_roberta(config: dict) -> bool:
    return "roberta" in str(config_value(config, "tokenizer")).lower()


def visual_geometry(config: dict) -> dict:
    """CLIP image-tower geometry: ``visual_encoder_config`` over the defaults of the ``vit`` name (ViT-B/16 when
    ``vit`` is a local weights file or absent)."""
    vit = str(config.get("vit", "ViT-B/16"))
    if vit in CLIP_VISUAL:
        geo = dict(CLIP_VISUAL[vit])
    elif os.path.isfile(vit):
        geo = dict(CLIP_VISUAL["ViT-B/16"])
    elif "swin" in vit.lower():
        raise ValueError(f"vit={vit!r}: METER's Swin variants are not implemented (only CLIP towers: "
                         f"{sorted(CLIP_VISUAL)})")
    else:
        raise ValueError(f"vit={vit!r} is neither a CLIP name ({sorted(CLIP_VISUAL)}) nor a local CLIP weights file")
    geo.update(TEXT_LEFTOVER)
    given = dict(config_value(config, "visual_encoder_config") or {})
    unknown = sorted(set(given) - set(geo))
    if unknown:
        raise ValueError(f"visual_encoder_config has unknown key(s) {unknown}; known: {sorted(geo)}")
    geo.update(given)
    if "patch_size" in config and config["patch_size"] != geo["patch_size"]:
        raise ValueError(
            f"patch_size={config['patch_size']} but the CLIP tower ({vit}, visual_encoder_config) has patch "
            f"{geo['patch_size']}: give the encoder named config (clip16 / clip32) AFTER the task config")
    return geo


def text_encoder_config(config: dict):
    """The transformers config object of the text encoder (eager attention, so additive masks act as upstream)."""
    from transformers import BertConfig, RobertaConfig

    base, cls = (dict(ROBERTA_BASE), RobertaConfig) if is_roberta(config) else (dict(BERT_BASE), BertConfig)
    given = dict(config_value(config, "text_encoder_config") or {})
    known = set(cls(**base).to_dict())
    unknown = sorted(set(given) - known)
    if unknown:
        # transformers configs accept any keyword silently; a misspelt key must not be ignored
        raise ValueError(f"text_encoder_config has unknown key(s) {unknown}; they are not {cls.__name__} fields "
                         f"(e.g. {sorted(k for k in base)})")
    base.update(given)
    cfg = cls(**base)
    cfg._attn_implementation = "eager"
    return cfg


def default_class_token_id(config: dict, text_cfg=None) -> int:
    """Token id whose text embedding initialises the class token of PETL methods: ``cls_token_id`` when given,
    else <s> (RoBERTa bos id) / BERT's [CLS] 101."""
    given = config_value(config, "cls_token_id")
    if given is not None:
        return int(given)
    if is_roberta(config):
        return int((text_cfg or text_encoder_config(config)).bos_token_id)
    return BERT_CLS_ID


def check_tokenizer(config: dict, tokenizer) -> None:
    """The text encoder built from ``config`` must agree with the tokenizer that feeds it (the ``tokenizer`` key
    names both upstream; here the tokenizer may be a local folder such as the demo's WordPiece tokenizer, which
    selects a BERT text encoder since its name lacks "roberta"):

    * pad id: RoBERTa derives position ids from the ids (every non-pad token counts), so the tokenizer's pad id must
      be the text config's ``pad_token_id`` (roberta-base 1, BERT 0; set ``text_encoder_config.pad_token_id``);
    * every token id must fit the text encoder's word embedding (``text_encoder_config.vocab_size``) and, with MLM,
      the MLM head (``vocab_size``);
    * ``max_text_len`` must fit the position table;
    * PETL methods initialise their class token from the embedding of ``cls_token_id``: it must be the id the
      tokenizer puts first (its [CLS] / <s>).
    Raises ValueError naming the config key to change."""
    text_cfg = text_encoder_config(config)
    kind = "RoBERTa" if is_roberta(config) else "BERT"
    problems = []
    pad = getattr(tokenizer, "pad_token_id", None)
    if pad is not None and pad != text_cfg.pad_token_id:
        problems.append(f"the tokenizer pads with id {pad} but the {kind} text encoder's pad_token_id is "
                        f"{text_cfg.pad_token_id} (set text_encoder_config.pad_token_id={pad})")
    n_tokens = len(tokenizer)
    if n_tokens > text_cfg.vocab_size:
        problems.append(f"the tokenizer has {n_tokens} tokens but the text encoder embeds only "
                        f"{text_cfg.vocab_size} (text_encoder_config.vocab_size)")
    if config_value(config, "loss_names").get("mlm", 0) > 0 and n_tokens > config_value(config, "vocab_size"):
        problems.append(f"the tokenizer has {n_tokens} tokens but vocab_size={config_value(config, 'vocab_size')} "
                        "sizes the MLM head")
    max_len = config_value(config, "max_text_len")
    positions = text_cfg.max_position_embeddings - (text_cfg.pad_token_id + 1 if is_roberta(config) else 0)
    if max_len > positions:
        problems.append(f"max_text_len={max_len} exceeds the {positions} positions of the {kind} text encoder "
                        "(text_encoder_config.max_position_embeddings)")
    if config_value(config, "peft") != "full":
        first = tokenizer.cls_token_id if getattr(tokenizer, "cls_token_id", None) is not None \
            else getattr(tokenizer, "bos_token_id", None)
        chosen = default_class_token_id(config, text_cfg)
        if first is not None and chosen != first:
            problems.append(f"the class token of peft={config_value(config, 'peft')!r} is initialised from token id "
                            f"{chosen} but the tokenizer starts every text with id {first} (set cls_token_id={first})")
    if problems:
        raise ValueError(f"tokenizer {config_value(config, 'tokenizer')!r} does not match the METER text encoder: "
                         + "; ".join(problems))


def extended_mask(mask: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    """transformers-4.6 ``get_extended_attention_mask`` for an encoder: [B, L] 1/0 -> [B, 1, 1, L] 0 / -10000."""
    return (1.0 - mask[:, None, None, :].to(dtype)) * -10000.0


class StreamInput(nn.Module):
    """Parameter-free holder for one fusion stream's input, where shallow prompts join that stream
    (shared_apt SequenceSite). Prompts are placed before ("prepend", official) or after ("append") the stream's
    tokens with mask 1 and are removed from the features ``infer`` returns."""

    def __init__(self, dim: int):
        super().__init__()
        self.dim = dim
        self.peft_extra_tokens = None

    def install_extra_tokens(self, provider, placement: str = "prepend") -> None:
        if placement not in ("append", "prepend"):
            raise ValueError(f"extra-token placement {placement!r}: expected 'append' or 'prepend'")
        self.peft_extra_tokens = None if provider is None else (provider, placement)

    def add(self, x: torch.Tensor, mask: torch.Tensor):
        """-> (x with prompts, mask with ones, slice of the real tokens)."""
        n = x.shape[1]
        if self.peft_extra_tokens is None:
            return x, mask, slice(0, n)
        provider, placement = self.peft_extra_tokens
        extra = provider(x.shape[0]).to(x.dtype)
        p = extra.shape[1]
        ones = mask.new_ones(mask.shape[0], p)
        if placement == "append":
            return torch.cat([x, extra], 1), torch.cat([mask, ones], 1), slice(0, n)
        return torch.cat([extra, x], 1), torch.cat([ones, mask], 1), slice(p, p + n)


class METERTransformerSS(VisionLanguageModule):
    """Upstream ``METERTransformerSS(config)`` (CLIP image tower + RoBERTa/BERT text encoder + co-attention fusion);
    ``config`` is upstream's Sacred config dict (docs/backbones.md, METER) plus the project keys in ``PROJECT_DEFAULTS``."""

    backbone_name = "meter"
    head_lr_names = HEAD_NAMES
    nlvr2_selection_split = "dev"  # METER's val/the_metric uses the NLVR2 dev accuracy (docs/backbones.md, METER)
    project_defaults = PROJECT_DEFAULTS

    def __init__(self, config: dict):
        config = dict(config)
        loss = dict(config_value(config, "loss_names"))
        active = [k for k in INACTIVE_TASKS if loss.get(k, 0) > 0]
        if active:
            raise ValueError(f"loss_names {active} > 0: these METER tasks are not supported by this project "
                             "(vcr, vcr_qar, contras have no code upstream either; SNLI-VE is out of scope)")
        config["loss_names"] = {k: v for k, v in loss.items() if k not in INACTIVE_TASKS}
        # learning_rate and peft_lr_scale are stored as given: the optimiser (shared_apt.vl.training.optim.set_schedule)
        # trains at learning_rate x peft_lr_scale (docs/methods.md, optimisation)
        super().__init__(config)
        cfg = lambda k: config_value(config, k)  # noqa: E731
        H = cfg("hidden_size")
        loss = cfg("loss_names")
        geo = visual_geometry(config)
        text_cfg = text_encoder_config(config)
        if cfg("input_image_embed_size") != geo["width"]:
            raise ValueError(f"input_image_embed_size={cfg('input_image_embed_size')} but the CLIP tower width is "
                             f"{geo['width']} (visual_encoder_config)")
        if cfg("input_text_embed_size") != text_cfg.hidden_size:
            raise ValueError(f"input_text_embed_size={cfg('input_text_embed_size')} but the text encoder width is "
                             f"{text_cfg.hidden_size} (text_encoder_config)")
        self.visual_geometry = geo

        # 1. projections and modality embedding (generic init)
        self.cross_modal_text_transform = nn.Linear(cfg("input_text_embed_size"), H)
        self.cross_modal_text_transform.apply(init_weights)
        self.cross_modal_image_transform = nn.Linear(cfg("input_image_embed_size"), H)
        self.cross_modal_image_transform.apply(init_weights)
        self.token_type_embeddings = nn.Embedding(2, H)
        self.token_type_embeddings.apply(init_weights)

        # 2. encoders (random weights; values come from a METER checkpoint or a local CLIP file)
        self.vit_model = CLIP(cfg("image_size"), geo["patch_size"], geo["width"], geo["layers"], geo["heads"],
                              geo["text_context_length"], geo["text_width"])
        from transformers import BertModel, RobertaModel

        self.text_transformer = (RobertaModel if is_roberta(config) else BertModel)(text_cfg)

        # 3. fusion layers, poolers, heads
        inter = int(H * cfg("mlp_ratio"))
        self.cross_modal_image_layers = nn.ModuleList(
            [BertCrossLayer(H, cfg("num_heads"), inter, cfg("drop_rate")) for _ in range(cfg("num_top_layer"))])
        self.cross_modal_image_layers.apply(init_weights)
        self.cross_modal_text_layers = nn.ModuleList(
            [BertCrossLayer(H, cfg("num_heads"), inter, cfg("drop_rate")) for _ in range(cfg("num_top_layer"))])
        self.cross_modal_text_layers.apply(init_weights)
        self.cross_modal_image_pooler = Pooler(H)
        self.cross_modal_image_pooler.apply(init_weights)
        self.cross_modal_text_pooler = Pooler(H)
        self.cross_modal_text_pooler.apply(init_weights)
        # parameter-free: where shallow prompts join each stream (no state_dict keys)
        self.cross_modal_text_input = StreamInput(H)
        self.cross_modal_image_input = StreamInput(H)

        if loss.get("mlm", 0) > 0:
            self.mlm_score = MLMHead(H, cfg("vocab_size"))
            self.mlm_score.apply(init_weights)
        if loss.get("itm", 0) > 0:
            self.itm_score = ITMHead(2 * H)
            self.itm_score.apply(init_weights)
        if loss.get("vqa", 0) > 0:
            self.vqa_classifier = classifier(2 * H, 2 * H, cfg("vqav2_label_size"))
            self.vqa_classifier.apply(init_weights)

        # 4. checkpoint, heads created after loading, method, evaluation checkpoint, tuned weights
        self.finish_build(config)

    def init_without_checkpoint(self, config: dict) -> None:
        self._load_clip_init(config.get("vit", ""))

    def build_heads_after_load(self, config: dict) -> None:
        cfg = lambda k: self.cfg(k, config)  # noqa: E731
        H, loss = cfg("hidden_size"), cfg("loss_names")
        if loss.get("nlvr2", 0) > 0:
            self.nlvr2_classifier = classifier(4 * H, 2 * H, 2)
            self.nlvr2_classifier.apply(init_weights)
            self.expand_modality_rows()
        if loss.get("irtr", 0) > 0:
            if not hasattr(self, "itm_score"):
                raise ValueError("loss_names.irtr > 0 needs loss_names.itm > 0 (rank_output is a view of the ITM head)")
            self.rank_output = nn.Linear(H, 1)
            self.tie_rank_output()
            for p in self.itm_score.parameters():
                p.requires_grad = False

    # ------------------------------------------------------------------------------------------------------------
    # Tasks (docs/backbones.md, METER)

    def executed_tasks(self):
        """METER runs every task whose loss_names value is > 0 (ViLT: >= 1): IR/TR trains itm (0.5) + irtr."""
        loss_names = self.config["loss_names"]
        return [k for k in _training_module.TASK_ORDER if loss_names.get(k, 0) > 0]

    def forward(self, batch):
        """No current task: ``infer(batch)``; else every current task's objective (METER's ITM has no WPA term)."""
        if not self.current_tasks:
            return self.infer(batch)
        ret = {}
        for task in self.current_tasks:
            fn = _meter_objectives.OBJECTIVES.get(task, _shared_objectives.OBJECTIVES.get(task))
            if fn is None:
                raise KeyError(f"no objective for task {task!r}")
            ret.update(fn(self, batch))
        return ret

    def lr_rules(self):
        """Heads (not rank_output) at lr x lr_mult_head, every "cross_modal" parameter at lr x lr_mult_cross_modal."""
        return [(HEAD_NAMES, float(self.config.get("lr_mult_head", 5))),
                (("cross_modal",), float(self.config.get("lr_mult_cross_modal", 5)))]

    # ------------------------------------------------------------------------------------------------------------
    # Loading (docs/backbones.md, METER)

    def load_upstream(self, path: str, ckpt: dict = None) -> None:
        """Upstream ``load_path`` semantics: positions resized to this image_size, strict=False with every difference
        named; the RoBERTa ``position_ids`` buffer (persistent in transformers 4.6) is accepted and ignored;
        rank_output is re-tied to ITM row 1 when the checkpoint has none. Checkpoints of the authors' APT code are
        converted to this project's names first (shared_apt.vl.official). ``ckpt``: the file's content, when already read."""
        ckpt = ckpt if ckpt is not None else self.read_upstream(path)
        sd = dict(state_dict_of(ckpt, path))
        sd = official.to_project(self, sd, source=path)
        sd = adapt_position_encoding(sd, self.vit_model.visual.input_resolution, self.vit_model.visual.patch_size,
                                     source=path)
        if hasattr(self, "nlvr2_classifier") and "token_type_embeddings.weight" in sd:
            rows = sd["token_type_embeddings.weight"]
            if rows.shape[0] == 2 and self.token_type_embeddings.weight.shape[0] == 3:
                raise CheckpointError(
                    f"{path}: token_type_embeddings has 2 rows but this NLVR2 model was built with 3 "
                    "(upstream loads a 2-row checkpoint only before the NLVR2 head exists: use test_only=False)")
        load_state_dict_checked(self, sd, source=path, **self.load_checks(
            ckpt, strict=self.cfg("strict_load"),
            test_only=self.cfg("test_only"),
            method=self.applied_method()))
        if hasattr(self, "rank_output") and "rank_output.weight" not in sd:
            self.tie_rank_output()

    def _load_clip_init(self, vit: str) -> None:
        """``vit`` may name a local OpenAI CLIP file (TorchScript archive or state dict): its image tower (blocks
        beyond the built ones and ``visual.proj`` dropped, positions resized) and the two leftovers are loaded. A
        plain CLIP name means random initialisation (nothing is downloaded)."""
        if not vit or not os.path.isfile(str(vit)):
            return
        v = self.vit_model.visual
        sd = clip_weights_for_meter(read_clip_file(vit), len(v.transformer.resblocks), v.input_resolution,
                                    v.patch_size, source=vit)
        load_state_dict_checked(self.vit_model, sd, source=vit, strict=True)

    # ------------------------------------------------------------------------------------------------------------
    # Tuning-method interface (shared_apt.peft.sites)

    def peft_spec(self) -> BackboneSpec:
        sites = []
        for stream in ("text", "image"):
            for i, layer in enumerate(getattr(self, f"cross_modal_{stream}_layers")):
                for kind, att in (("self", layer.attention), ("cross", layer.crossattention)):
                    s = att.self
                    sites.append(AttentionSite(
                        name=f"cross_modal_{stream}_layers.{i}.{'attention' if kind == 'self' else 'crossattention'}",
                        dim=s.query.in_features, host=att, query_input=att, out_proj=att.output.dense,
                        branch=att.output, adapter_out=att.output.dense, q=LinearSlot(s.query), k=LinearSlot(s.key), v=LinearSlot(s.value),
                        install_extra_kv=attribute_setter(s), kv_norm=None,
                        ffn_out=layer.output.dense if kind == "cross" else None, kind=kind,
                    ))
        cfg = self.hparams.config
        H = config_value(cfg, "hidden_size")
        seq = [SequenceSite(f"cross_modal_{s}_input", H, getattr(self, f"cross_modal_{s}_input"),
                            getattr(self, f"cross_modal_{s}_input").install_extra_tokens, "prepend")
               for s in ("text", "image")]
        return BackboneSpec(
            attention_sites=sites,
            sequence_site=None,
            sequence_sites=seq,
            common_trainable=["vqa_classifier", "nlvr2_classifier", "snli_classifier", "rank_output",
                              "cross_modal_text_pooler", "cross_modal_image_pooler", "token_type_embeddings",
                              "class_token"],
            frozen=["itm_score"] if hasattr(self, "rank_output") else [],
            # the authors' METER APT tag "mm" matches APT.mm_tokens / APT.mm.* but not APT.scale: s stays frozen
            option_defaults={"apt_train_scale": False},
            signature={
                "backbone": "meter", "hidden_size": H, "num_top_layer": len(self.cross_modal_text_layers),
                "num_heads": config_value(cfg, "num_heads"), "mlp_ratio": config_value(cfg, "mlp_ratio"),
                "input_text_embed_size": config_value(cfg, "input_text_embed_size"),
                "input_image_embed_size": config_value(cfg, "input_image_embed_size"),
            },
            prepare=self._prepare_for_method,
        )

    def official_layout(self) -> official.OfficialLayout:
        """Key names of the authors' method files (DoubtedSteam/APT, METER/meter/modules/bert_model_<m>.py and
        meter_module_prompt*.py). Their deep prompts sit in the cross-attentions only, ``prompts.1`` serving the text
        layers and ``prompts.0`` the image layers; their APT leaves its scale frozen."""
        sites, deep = {}, {}
        for stream, prompt_set in (("text", "prompts.1"), ("image", "prompts.0")):
            for i in range(len(getattr(self, f"cross_modal_{stream}_layers"))):
                layer = f"cross_modal_{stream}_layers.{i}"
                for att in ("attention", "crossattention"):
                    n = f"{layer}.{att}"
                    sites[n] = official.OfficialSite(
                        apt=f"{n}.output.APT", scaled_pa=f"{n}.output.PA", lora=f"{n}.self",
                        adapter=f"{n}.output.adapter",
                        adapter_ffn=f"{layer}.output.adapter" if att == "crossattention" else None)
                deep[f"{layer}.crossattention"] = (prompt_set, i)
        return official.OfficialLayout(
            sites=sites, deep_prompt=deep,
            shallow_prompt={"cross_modal_text_input": ("prompts.0", 0), "cross_modal_image_input": ("prompts.1", 0)},
            variants={"deep_prompt": {"deep_prompt_sites": "cross"}, "apt": {"apt_train_scale": False},
                      "shallow_prompt": {"prompt_placement": "prepend"}},
        )

    def class_token_id(self) -> int:
        return default_class_token_id(self.hparams.config, self.text_transformer.config)

    def _prepare_for_method(self, method: str) -> None:
        """Every method but full tuning trains a free class token that replaces the first text token at the fusion
        input (after the text encoder and cross_modal_text_transform, before the modality embedding), initialised
        from the text encoder's embedding of <s> (word + position + segment, LN; computed without dropout)
        (docs/methods.md, common trainable set). When the text width differs from hidden_size, that embedding is passed through
        cross_modal_text_transform first (only possible in non-paper geometries)."""
        if method == "full":
            return
        emb = self.text_transformer.embeddings
        was_training = emb.training
        emb.eval()
        try:
            with torch.no_grad():
                ids = torch.full((1, 1), self.class_token_id(), dtype=torch.long,
                                 device=emb.word_embeddings.weight.device)
                init = emb(input_ids=ids)
                if init.shape[-1] != self.cross_modal_text_transform.out_features:
                    init = self.cross_modal_text_transform(init)
        finally:
            emb.train(was_training)
        self.class_token = nn.Parameter(init.reshape(1, 1, -1).clone())

    # ------------------------------------------------------------------------------------------------------------
    # Forward (docs/backbones.md, METER)

    def encode_text(self, text_ids: torch.Tensor, text_masks: torch.Tensor) -> torch.Tensor:
        """The text encoder called in pieces as upstream: embeddings from the ids only (RoBERTa positions from the
        ids), additive -10000 mask, every layer with (hidden, mask); the pooler is never used."""
        tt = self.text_transformer
        x = tt.embeddings(input_ids=text_ids)
        mask = extended_mask(text_masks, x.dtype)
        for layer in tt.encoder.layer:
            out = layer(x, mask)
            x = out[0] if isinstance(out, (tuple, list)) else out
        return x

    def speed_layers(self):
        return list(self.cross_modal_text_layers) + list(self.cross_modal_image_layers)

    def fusion_layers(self, text_embeds, image_embeds, text_masks, image_masks):
        """The co-attention layers, both streams updated in parallel from the previous outputs. Shallow prompts
        (if installed) join both streams here. Returns (text stream, image stream, real-token slices)."""
        x, text_masks, tsl = self.cross_modal_text_input.add(text_embeds, text_masks)
        y, image_masks, isl = self.cross_modal_image_input.add(image_embeds, image_masks)
        tmask, imask = extended_mask(text_masks, x.dtype), extended_mask(image_masks, y.dtype)
        for text_layer, image_layer in zip(self.cross_modal_text_layers, self.cross_modal_image_layers):
            x1 = call_layer(text_layer, x, y, tmask, imask)
            y1 = call_layer(image_layer, y, x, imask, tmask)
            x, y = x1, y1
        return x, y, tsl, isl

    def infer(self, batch, mask_text=False, mask_image=False, image_token_type_idx=1, img=None):
        if img is None:
            imgkey = f"image_{image_token_type_idx - 1}"
            img = batch[imgkey][0] if imgkey in batch else batch["image"][0]
        suffix = "_mlm" if mask_text else ""
        text_ids = batch[f"text_ids{suffix}"]
        text_labels = batch[f"text_labels{suffix}"]
        text_masks = batch["text_masks"]

        text_embeds = self.cross_modal_text_transform(self.encode_text(text_ids, text_masks))
        if self.class_token is not None:
            cls = self.class_token.to(text_embeds.dtype).expand(text_embeds.shape[0], -1, -1)
            text_embeds = torch.cat([cls, text_embeds[:, 1:]], dim=1)
        text_embeds = text_embeds + self.token_type_embeddings(torch.zeros_like(text_masks))

        image_embeds = self.cross_modal_image_transform(self.vit_model(img))
        image_masks = torch.ones(image_embeds.shape[:2], dtype=torch.long, device=image_embeds.device)
        image_embeds = image_embeds + self.token_type_embeddings(torch.full_like(image_masks, image_token_type_idx))

        x, y, tsl, isl = self.fusion_layers(text_embeds, image_embeds, text_masks, image_masks)
        # token 0 of each stream as it runs (with prompts prepended: the first prompt, as the official code)
        cls_feats = torch.cat([self.cross_modal_text_pooler(x), self.cross_modal_image_pooler(y)], dim=-1)
        return {
            "text_feats": x[:, tsl], "image_feats": y[:, isl], "cls_feats": cls_feats, "text_labels": text_labels,
            "text_ids": text_ids, "text_masks": text_masks,
        }
