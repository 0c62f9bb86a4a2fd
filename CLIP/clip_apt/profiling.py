"""CLIP ViT-B/16 as ``python -m shared_apt.profile --backbone clip-vit-b16`` measures it: built on the meta device
(no weights), every method of the UPT and APT papers' CLIP experiments with its trainable parameters and its
additional FLOPs per image (image encoder, one 224 x 224 image) and per class prompt (text encoder, one prompt of 77
tokens), in the APT paper's FLOPs convention (multiply-accumulates, fvcore: LayerNorm 5 per element).

The backbone registers itself here (:func:`shared_apt.peft.registry.register_backbone`). Its profile table is its
own (``methods``; ``extras["profile"]``: rows with fixed options, two FLOPs columns); the generic hooks (``tokens`` /
``run_tokens`` / ``forward`` / ``truncate``, used by ``shared_apt.bench``) run the text encoder, where the attention
methods (APT, LoRA, adapters) attach by default (``peft_towers``)."""
from __future__ import annotations

import json
from dataclasses import asdict, dataclass

import torch

from shared_apt.peft.registry import Backbone, register_backbone

NAME = "clip-vit-b16"
DEFAULT_SEQ_LEN = 77
SEQ_LEN_NOTE = "n = {n} tokens (one class prompt of 77 tokens) through the text encoder's layers + ln_final"

# The geometry tests and benchmarks use (text width 32, 2 layers; heads given, as tiny models do not follow
# width // 64).
TINY = dict(embed_dim=16, image_size=32, patch_size=8, vision_width=32, vision_layers=2, vision_heads=4,
            context_length=77, vocab_size=49408, text_width=32, text_layers=2, text_heads=4)

# (row label, method, options, trainable parameters as computed from the papers' and upstream code's definitions)
ROWS = [
    ("zero-shot CLIP", "zeroshot", {}, 0),
    ("CoOp n_ctx 4", "coop", {"n_ctx": 4}, 2_048),
    ("CoOp n_ctx 16", "coop", {"n_ctx": 16}, 8_192),
    ("CoOp CSC n_ctx 16, 1000 classes", "coop", {"n_ctx": 16, "class_specific": True, "n_cls": 1000}, 8_192_000),
    ("CoCoOp n_ctx 4", "cocoop", {}, 35_360),
    ("VPT-shallow n 4", "vpt_shallow", {"num_prompts": 4}, 3_072),
    ("VPT-deep n 4", "vpt_deep", {"num_prompts": 4}, 36_864),
    ("joint CoOp 4 + VPT-deep 4", "joint", {}, 38_912),
    ("UPT (released, per-token)", "upt", {"token_mixing": False}, 1_976_064),
    ("UPT (token mixing)", "upt", {"token_mixing": True}, 1_976_064),
    ("UPT deep (12 layers)", "upt_deep", {}, None),
    ("shared prompts", "shared_prompt", {}, None),
    ("MLP prompts", "mlp_prompt", {}, None),
    ("APT text p 4 r 2", "apt", {"num_prompts": 4, "rank": 2}, 49_164),
    ("LoRA text r 4 (q, v)", "lora", {"rank": 4}, None),
    ("adapter text b 96", "adapter", {"bottleneck": 96}, None),
]
METHODS = tuple(dict.fromkeys(r[1] for r in ROWS))
NOTES = {
    "upt": "theta and the visual Linear run once per forward (input-independent); counted in both columns",
    "upt_deep": "this project's multi-layer reading (sizes are not upstream's)",
    "shared_prompt": "reading: U as text context, Linear(512->768)(U) as shallow visual prompts",
    "mlp_prompt": "reading: token-wise Linear-ReLU-Linear (hidden 512) instead of theta",
    "cocoop": "the meta-net runs per image and the text encoder per (image, class) pair",
    "lora": "merged into the frozen weights for inference: no extra FLOPs",
}


@dataclass
class Row:
    label: str
    method: str
    options: dict
    trainable: int
    reference: int | None
    macs_per_image: int
    macs_per_prompt: int
    note: str = ""


def build(method: str, device="meta", size: str = "base", **options):
    """CLIP (ViT-B/16 geometry, or ``TINY``) with ``method`` applied; on the meta device by default (profiling), or
    a real device (benchmarks: open_clip's random initialisation, no weights needed)."""
    import shared_apt
    from clip_apt import VIT_B16, build_clip

    geometry = {"base": VIT_B16, "tiny": TINY}.get(size)
    if geometry is None:
        raise ValueError(f"size {size!r}: expected 'base' or 'tiny'")
    with torch.device(device):
        model = build_clip(geometry)
    shared_apt.apply(model, method, **options)
    return model.eval()


def image_macs(model) -> int:
    from shared_apt.peft.accounting import count_macs

    g = model.geometry
    images = torch.zeros(1, 3, g["image_size"], g["image_size"], device="meta")
    with torch.no_grad():
        return count_macs(model.encode_image, images)


def prompt_macs(model, classes: int = 1) -> int:
    """MACs of one class prompt: ``classes`` identical prompts (class-specific context needs all of its classes),
    divided by their number."""
    from shared_apt.peft.accounting import count_macs

    feats = torch.zeros(1, model.geometry["embed_dim"], device="meta")

    def prompts():
        model._text_cache = None
        model.class_text_features(["dog"] * classes, "a photo of a {}.", feats)

    with torch.no_grad():
        total = count_macs(prompts)
    if total % classes:
        raise ArithmeticError(f"{total} MACs for {classes} identical prompts is not a multiple of {classes}")
    return total // classes


def profile(rows=ROWS) -> tuple[list, dict]:
    import shared_apt

    frozen = build("zeroshot")
    base_img, base_txt = image_macs(frozen), prompt_macs(frozen)
    out = []
    for label, method, opts, ref in rows:
        model = build(method, **opts)
        trainable = shared_apt.updated_parameter_count(model)
        shared_apt.merge(model)
        for p in model.parameters():  # counting only (torch's module tracker trips on leaf inputs under no_grad)
            p.requires_grad_(False)
        out.append(Row(label, method, opts, trainable, ref,
                       image_macs(model) - base_img, prompt_macs(model, opts.get("n_cls") or 1) - base_txt, NOTES.get(method, "")))
    info = {"backbone": NAME, "image_macs": base_img, "prompt_macs": base_txt}
    return out, info


def render(rows: list, info: dict) -> str:
    out = [f"### {info['backbone']}: trainable parameters and additional FLOPs", "",
           "| method | trainable params | reference count | additional GFLOPs / image | additional GFLOPs / class prompt |",
           "|---|---|---|---|---|"]
    notes = []
    for r in rows:
        mark = ""
        if r.note:
            if r.note not in notes:
                notes.append(r.note)
            mark = f" [{notes.index(r.note) + 1}]"
        ref = "-" if r.reference is None else f"{r.reference:,}"
        out.append(f"| {r.label}{mark} | {r.trainable:,} | {ref} | {r.macs_per_image / 1e9:.4f} | "
                   f"{r.macs_per_prompt / 1e9:.4f} |")
    out += ["", f"FLOPs: multiply-accumulates (fvcore convention, LayerNorm 5/element) at batch 1: one 224 x 224 image "
                f"through the image encoder (frozen: {info['image_macs'] / 1e9:.2f} GFLOPs), one class prompt of 77 "
                f"tokens through the text encoder (frozen: {info['prompt_macs'] / 1e9:.2f} GFLOPs). Reference counts: "
                "CoOp, CoCoOp, UPT release, UPT paper (joint = CoOp 4 + VPT-deep 4), APT paper (12 x 4,097)."]
    out += [f"[{i + 1}] {n}" for i, n in enumerate(notes)]
    return "\n".join(out)


def profile_main(methods: list, json_path: str | None = None) -> int:
    """The table of ``python -m shared_apt.profile --backbone clip-vit-b16 --method ...`` (the rows of ``methods``);
    exit status 1 when a count differs from its reference."""
    rows = [r for r in ROWS if r[1] in methods]
    result, info = profile(rows)
    print(render(result, info))
    bad = [r.label for r in result if r.reference is not None and r.reference != r.trainable]
    if json_path:
        with open(json_path, "w") as f:
            json.dump({"info": info, "rows": [asdict(r) for r in result]}, f, indent=2)
    if bad:
        print(f"error: trainable counts differ from the reference for {bad}")
        return 1
    return 0


# ---------------------------------------------------------------------------------------------------------------
# The generic backbone hooks (shared_apt.bench): the text encoder on a token sequence.


def tokens(model, seq_len: int, batch: int = 1, device="meta", dtype=torch.float32):
    """Text token embeddings with positions [B, n, d] (n <= context length) and an all-valid mask (the encoder's
    causal mask is its own)."""
    limit = model.context_length
    if seq_len > limit:
        raise ValueError(f"seq_len={seq_len}: the CLIP text encoder takes at most {limit} tokens")
    d = model.transformer.width
    shape = (batch, seq_len, d)
    x = torch.randn(shape, device=device, dtype=dtype) if device != "meta" else torch.zeros(shape, device=device,
                                                                                           dtype=dtype)
    return x, torch.ones(batch, seq_len, dtype=torch.long, device=device)


def run_tokens(model, x, mask):
    """The part the attention methods change: the text transformer (causal) + ln_final on ``x``."""
    n = x.shape[1]
    return model.ln_final(model.transformer(x, attn_mask=model.attn_mask[:n, :n]))


def forward(model, seq_len: int, text_len: int | None = None) -> None:
    with torch.no_grad():
        run_tokens(model, *tokens(model, seq_len))


def truncate(model, layers: int):
    """Keep the first ``layers`` text layers (benchmarks per layer)."""
    model.transformer.resblocks = model.transformer.resblocks[:layers]
    return model


def backbone_parameters(model) -> int:
    """Every CLIP parameter (both encoders, projections, logit scale), without the method's."""
    return sum(p.numel() for name, p in model.named_parameters() if ".peft_" not in name
               and not name.startswith("peft_"))


def head_parameters(model) -> int:
    """CLIP classifies with class prompts: no task head."""
    return 0


register_backbone(Backbone(
    name=NAME, build=build, tokens=tokens, run_tokens=run_tokens, forward=forward, truncate=truncate,
    backbone_parameters=backbone_parameters, head_parameters=head_parameters, default_seq_len=DEFAULT_SEQ_LEN,
    seq_len_note=SEQ_LEN_NOTE, notes=NOTES, tiny=TINY, methods=METHODS, extras={"profile": {"main": profile_main}}))
