"""A tiny OpenAI-format CLIP built with open_clip itself (the independent reference for loading and features)."""
import torch
from clip_apt.profiling import TINY  # noqa: F401  (the registered tiny geometry; re-exported for the tests)


def open_clip_reference(seed: int = 0):
    """open_clip's own CLIP (QuickGELU, fp32) at TINY shapes, randomly initialised, with non-trivial biases/LNs."""
    from open_clip.model import CLIP, CLIPTextCfg, CLIPVisionCfg

    torch.manual_seed(seed)
    t = TINY
    model = CLIP(t["embed_dim"],
                 vision_cfg=CLIPVisionCfg(layers=t["vision_layers"], width=t["vision_width"],
                                          patch_size=t["patch_size"], image_size=t["image_size"],
                                          head_width=t["vision_width"] // t["vision_heads"]),
                 text_cfg=CLIPTextCfg(context_length=t["context_length"], vocab_size=t["vocab_size"],
                                      width=t["text_width"], heads=t["text_heads"], layers=t["text_layers"]),
                 quick_gelu=True, cast_dtype=None)
    with torch.no_grad():
        for n, p in model.named_parameters():
            if n.endswith("bias") or ".ln" in n or n.startswith("ln_"):
                p.add_(0.1 * torch.randn_like(p))
    return model.eval()


def tiny_clip(seed: int = 0, towers=("text",)):
    """clip_apt's model loaded from the reference's state dict."""
    import clip_apt
    from clip_apt.modules.clip_model import load_clip

    ref = open_clip_reference(seed)
    return load_clip(ref.state_dict(), text_heads=TINY["text_heads"], vision_heads=TINY["vision_heads"],
                     towers=towers), ref
