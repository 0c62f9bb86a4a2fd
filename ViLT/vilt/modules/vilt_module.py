"""ViLTransformerSS: upstream ViLT (dandelin/ViLT, docs/backbones.md, ViLT) built from config dimensions, with every tuning method
of shared_apt attachable through the config key ``peft``.

State-dict keys, attribute names, batch keys, ``infer`` outputs and numerics are upstream's, so official checkpoints
(``{"state_dict": ...}`` written by Lightning) load unchanged (``load_path``)."""
from __future__ import annotations

import logging
import os

import torch
import torch.nn.functional as F
from torch import nn

from shared_apt.peft.sites import AttentionSite, BackboneSpec, LinearSlot, SequenceSite, attribute_setter
from shared_apt.vl import official
from shared_apt.vl.checkpoint import CheckpointError, load_checkpoint, load_state_dict_checked, state_dict_of
from shared_apt.vl.heads import ITMHead, MLMHead, MPPHead, Pooler, classifier, init_weights
from shared_apt.vl.training.module import VisionLanguageModule

from .vision_transformer import VisionTransformer

log = logging.getLogger(__name__)

# Keys this project adds to upstream's config; models built from an upstream config dict get these defaults.
PROJECT_DEFAULTS = {
    **VisionLanguageModule.project_defaults,
    "pos_embed_grid": None,       # None: image_size // patch_size (12 for ViT-B/32 at 384)
    "cls_token_id": 101,          # [CLS] id of the tokenizer (class-token initialisation)
}


class BertEmbeddings(nn.Module):
    """The text embedding of BERT (transformers 4.2.1 BertEmbeddings as ViLT uses it, docs/backbones.md, ViLT):
    Dropout(LN_1e-12(word[t] + segment[0] + position[0..L-1])); ``position_ids`` is a persistent buffer as in the
    official checkpoints."""

    def __init__(self, vocab_size: int, hidden_size: int, max_position: int, dropout: float, type_vocab: int = 2,
                 pad_token_id: int = 0, eps: float = 1e-12):
        super().__init__()
        self.word_embeddings = nn.Embedding(vocab_size, hidden_size, padding_idx=pad_token_id)
        self.position_embeddings = nn.Embedding(max_position, hidden_size)
        self.token_type_embeddings = nn.Embedding(type_vocab, hidden_size)
        self.LayerNorm = nn.LayerNorm(hidden_size, eps=eps)
        self.dropout = nn.Dropout(dropout)
        self.register_buffer("position_ids", torch.arange(max_position).expand((1, -1)), persistent=True)

    def forward(self, input_ids: torch.Tensor) -> torch.Tensor:
        L = input_ids.shape[1]
        if L > self.position_ids.shape[1]:
            raise ValueError(f"text of length {L} exceeds max_text_len {self.position_ids.shape[1]}")
        pos = self.position_ids[:, :L]
        emb = self.word_embeddings(input_ids) + self.token_type_embeddings(torch.zeros_like(input_ids))
        emb = emb + self.position_embeddings(pos)
        return self.dropout(self.LayerNorm(emb))


class ViLTransformerSS(VisionLanguageModule):
    """Upstream ``ViLTransformerSS(config)``; ``config`` is upstream's Sacred config dict (docs/backbones.md, ViLT) plus the
    project keys in ``PROJECT_DEFAULTS``."""

    backbone_name = "vilt"
    head_lr_names = ("vqa_classifier", "nlvr2_classifier")  # upstream: the heads at lr x lr_mult
    project_defaults = PROJECT_DEFAULTS

    def __init__(self, config: dict):
        super().__init__(config)
        cfg = lambda k: self.cfg(k, config)  # noqa: E731
        H = cfg("hidden_size")
        self.text_embeddings = BertEmbeddings(cfg("vocab_size"), H, cfg("max_text_len"), cfg("drop_rate"))
        self.text_embeddings.apply(init_weights)
        self.token_type_embeddings = nn.Embedding(2, H)
        self.token_type_embeddings.apply(init_weights)

        grid = cfg("pos_embed_grid") or cfg("image_size") // cfg("patch_size")
        self.transformer = VisionTransformer(
            patch_size=cfg("patch_size"), embed_dim=H, depth=cfg("num_layers"), num_heads=cfg("num_heads"),
            mlp_ratio=cfg("mlp_ratio"), grid=grid, drop_rate=cfg("drop_rate"),
        )
        self.pooler = Pooler(H)
        self.pooler.apply(init_weights)

        loss = cfg("loss_names")
        if loss.get("mlm", 0) > 0:
            self.mlm_score = MLMHead(H, cfg("vocab_size"))
            self.mlm_score.apply(init_weights)
        if loss.get("itm", 0) > 0:
            self.itm_score = ITMHead(H)
            self.itm_score.apply(init_weights)
        if loss.get("mpp", 0) > 0:
            self.mpp_score = MPPHead(H)
            self.mpp_score.apply(init_weights)

        self.finish_build(config)

    def init_without_checkpoint(self, config: dict) -> None:
        self._load_vit_init(self.cfg("vit", config))

    def speed_layers(self):
        return list(self.transformer.blocks)

    def build_heads_after_load(self, config: dict) -> None:
        """Upstream creates the task heads after ``load_path`` is read: they always start fresh."""
        cfg = lambda k: self.cfg(k, config)  # noqa: E731
        H, loss = cfg("hidden_size"), cfg("loss_names")
        if loss.get("vqa", 0) > 0:
            self.vqa_classifier = classifier(H, 2 * H, cfg("vqav2_label_size"))
            self.vqa_classifier.apply(init_weights)
        if loss.get("nlvr2", 0) > 0:
            self.nlvr2_classifier = classifier(2 * H, 2 * H, 2)
            self.nlvr2_classifier.apply(init_weights)
            self.expand_modality_rows()
        if loss.get("irtr", 0) > 0:
            self.rank_output = nn.Linear(H, 1)
            self.tie_rank_output()
            for p in self.itm_score.parameters():
                p.requires_grad = False

    # ------------------------------------------------------------------------------------------------------------
    # Loading (docs/backbones.md, ViLT)

    def load_upstream(self, path: str, ckpt: dict = None) -> None:
        """Upstream ``load_path`` semantics (strict=False) with every difference named; rank_output is re-tied to
        ITM row 1 when the checkpoint has no rank_output. Checkpoints of the authors' APT code are converted to this
        project's names first (shared_apt.vl.official). ``ckpt``: the file's content, when already read."""
        ckpt = ckpt if ckpt is not None else self.read_upstream(path)
        sd = dict(state_dict_of(ckpt, path))
        sd = official.to_project(self, sd, source=path)
        if hasattr(self, "nlvr2_classifier") and "token_type_embeddings.weight" in sd:
            rows = sd["token_type_embeddings.weight"]
            if rows.shape[0] == 2 and self.token_type_embeddings.weight.shape[0] == 3:
                raise CheckpointError(
                    f"{path}: token_type_embeddings has 2 rows but this NLVR2 model was built with 3 "
                    "(upstream loads a 2-row checkpoint only before the NLVR2 head exists: use test_only=False)"
                )
        load_state_dict_checked(self, sd, source=path, **self.load_checks(
            ckpt, strict=self.cfg("strict_load"),
            test_only=self.cfg("test_only"),
            method=self.applied_method()))
        if hasattr(self, "rank_output") and "rank_output.weight" not in sd:
            self.tie_rank_output()

    def _load_vit_init(self, vit: str) -> None:
        """``vit`` may name a local file with timm ViT weights (ImageNet init for pre-training); a plain variant name
        means random initialisation (nothing is ever downloaded)."""
        if not vit or not os.path.isfile(str(vit)):
            return
        sd = state_dict_of(load_checkpoint(vit), vit)
        sd = {k: v for k, v in sd.items() if not k.startswith("head")}
        pe = sd.get("pos_embed")
        if pe is not None and pe.shape != self.transformer.pos_embed.shape:
            g0, g1 = int((pe.shape[1] - 1) ** 0.5), self.transformer.grid
            grid = pe[:, 1:].reshape(1, g0, g0, -1).permute(0, 3, 1, 2)
            grid = F.interpolate(grid, size=(g1, g1), mode="bilinear", align_corners=False)
            sd["pos_embed"] = torch.cat([pe[:, :1], grid.permute(0, 2, 3, 1).reshape(1, g1 * g1, -1)], dim=1)
        load_state_dict_checked(self.transformer, sd, source=vit,
                                strict=self.cfg("strict_load"))

    # ------------------------------------------------------------------------------------------------------------
    # Tuning-method interface (shared_apt.peft.sites)

    def peft_spec(self) -> BackboneSpec:
        sites = []
        for i, blk in enumerate(self.transformer.blocks):
            a = blk.attn
            C = a.proj.in_features
            sites.append(AttentionSite(
                name=f"transformer.blocks.{i}.attn", dim=C, host=a, query_input=a, out_proj=a.proj, branch=a,
                q=LinearSlot(a.qkv, slice(0, C)), k=LinearSlot(a.qkv, slice(C, 2 * C)),
                v=LinearSlot(a.qkv, slice(2 * C, 3 * C)), install_extra_kv=attribute_setter(a),
                adapter_out=a, kv_norm=blk.norm1, ffn_out=blk.mlp, kind="self",
            ))
        t = self.transformer
        cfg = self.hparams.config
        return BackboneSpec(
            attention_sites=sites,
            sequence_site=SequenceSite("transformer", t.embed_dim, t, t.install_extra_tokens, "append"),
            # the authors' substring filter (classifier, pooler, token_type_embeddings, rank_output) on ViLT's names:
            # it also matches BERT's segment table text_embeddings.token_type_embeddings (trained in every method)
            common_trainable=["vqa_classifier", "nlvr2_classifier", "rank_output", "pooler",
                              "token_type_embeddings", "text_embeddings.token_type_embeddings", "class_token"],
            frozen=["itm_score"] if hasattr(self, "rank_output") else [],
            signature={
                "backbone": "vilt", "hidden_size": t.embed_dim, "num_layers": len(t.blocks),
                "num_heads": t.blocks[0].attn.num_heads if len(t.blocks) else 0,
                "mlp_ratio": self.cfg("mlp_ratio", cfg), "patch_size": t.patch_size, "pos_embed_grid": t.grid,
                "vocab_size": self.cfg("vocab_size", cfg), "max_text_len": self.cfg("max_text_len", cfg),
            },
            prepare=self._prepare_for_method,
        )

    def official_layout(self) -> official.OfficialLayout:
        """Key names of the authors' method files (DoubtedSteam/APT, ViLT/vilt/modules/vision_transformer_<m>.py)."""
        sites = {}
        for i in range(len(self.transformer.blocks)):
            n, b = f"transformer.blocks.{i}.attn", f"transformer.blocks.{i}"
            sites[n] = official.OfficialSite(apt=f"{n}.APT", scaled_pa=f"{n}.PA", lora=n, adapter=f"{b}.adapter0",
                                             adapter_ffn=f"{b}.adapter1")
        return official.OfficialLayout(
            sites=sites, deep_prompt={n: ("prompt", i) for i, n in enumerate(sites)},
            shallow_prompt={"transformer": ("prompt", 0)},
            variants={"shallow_prompt": {"prompt_placement": "append"}},
        )

    def _prepare_for_method(self, method: str) -> None:
        """Every method but full tuning trains a free class token that replaces the first text embedding, initialised
        from the embedding of [CLS] (word + position 0 + segment 0, LN; computed without dropout) (docs/methods.md, common trainable set)."""
        if method == "full":
            return
        emb = self.text_embeddings
        cls_value = self.cfg("cls_token_id")
        if not 0 <= cls_value < emb.word_embeddings.num_embeddings:
            raise ValueError(f"config cls_token_id={cls_value} is outside the vocabulary "
                             f"(vocab_size={emb.word_embeddings.num_embeddings}): set it to the tokenizer's [CLS] id")
        with torch.no_grad():
            cls_id = torch.tensor([[cls_value]], device=emb.word_embeddings.weight.device)
            init = emb.LayerNorm(emb.word_embeddings(cls_id) + emb.token_type_embeddings(torch.zeros_like(cls_id))
                                 + emb.position_embeddings(emb.position_ids[:, :1]))
        self.class_token = nn.Parameter(init.reshape(1, 1, -1).clone())

    # ------------------------------------------------------------------------------------------------------------
    # Retrieval evaluation: each image embedded once (upstream compute_irtr_recall, docs/backbones.md, ViLT)

    def retrieval_image_inputs(self, image):
        embeds, masks, _, _ = self.transformer.visual_embed(
            image, max_image_len=self.hparams.config["max_image_len"], mask_it=False)
        return {"image_embeds": embeds, "image_masks": masks}

    def retrieval_infer(self, image_inputs, text_batch):
        n = text_batch["text_ids"].shape[0]
        return self.infer(text_batch, image_embeds=image_inputs["image_embeds"].expand(n, -1, -1),
                          image_masks=image_inputs["image_masks"].expand(n, -1))

    # ------------------------------------------------------------------------------------------------------------
    # Forward (docs/backbones.md, ViLT)

    def infer(self, batch, mask_text=False, mask_image=False, image_token_type_idx=1, image_embeds=None,
              image_masks=None):
        imgkey = f"image_{image_token_type_idx - 1}" if f"image_{image_token_type_idx - 1}" in batch else "image"
        suffix = "_mlm" if mask_text else ""
        text_ids = batch[f"text_ids{suffix}"]
        text_labels = batch[f"text_labels{suffix}"]
        text_masks = batch["text_masks"]
        text_embeds = self.text_embeddings(text_ids)
        if self.class_token is not None:
            cls = self.class_token.to(text_embeds.dtype).expand(text_embeds.shape[0], -1, -1)
            text_embeds = torch.cat([cls, text_embeds[:, 1:]], dim=1)

        if image_embeds is None and image_masks is None:
            img = batch[imgkey][0]
            image_embeds, image_masks, patch_index, image_labels = self.transformer.visual_embed(
                img, max_image_len=self.hparams.config["max_image_len"], mask_it=mask_image)
        else:
            patch_index, image_labels = None, None

        text_embeds = text_embeds + self.token_type_embeddings(torch.zeros_like(text_masks))
        image_embeds = image_embeds + self.token_type_embeddings(torch.full_like(image_masks, image_token_type_idx))

        co_embeds = torch.cat([text_embeds, image_embeds], dim=1)
        co_masks = torch.cat([text_masks, image_masks], dim=1)
        x = self.transformer.forward_tokens(co_embeds, co_masks)
        L = text_embeds.shape[1]
        text_feats, image_feats = x[:, :L], x[:, L:]
        cls_feats = self.pooler(x)
        return {
            "text_feats": text_feats, "image_feats": image_feats, "cls_feats": cls_feats, "raw_cls_feats": x[:, 0],
            "image_labels": image_labels, "image_masks": image_masks, "text_labels": text_labels,
            "text_ids": text_ids, "text_masks": text_masks, "patch_index": patch_index,
        }
