"""The Stable Diffusion demo (``MODEL=sd bash script/demo.sh``): DreamBooth of an unseen subject with APT and LoRA on
a tiny latent diffusion model, on the CPU in minutes.

1. Pre-training (once, cached): a tiny VAE, UNet and CLIP text encoder (the diffusers / transformers classes of SD) are
   trained briefly on the shapes world (``shared_apt.vl.data.demo_world``'s renderer: one large red / green / blue /
   yellow circle, square or triangle per 32 px image, captioned "a photo of a <colour> <shape>"; 10 % empty captions
   for classifier-free guidance). The VAE first (reconstruction + small KL), then UNet and text encoder together on
   its latents (epsilon MSE, DDPM schedule of SD). Saved as a diffusers pipeline folder.
2. The subject: a circle painted with red and yellow horizontal stripes, a pattern the world never uses; 4 images,
   identifier "sks", class noun "circle".
3. DreamBooth with APT on the UNet (p, r = 22, 4: 15,368 parameters, budget-matched to LoRA r 4's 15,360 at these
   widths), with APT on the UNet's cross-attention and the text encoder ("apt_text", p 40: 15,366 parameters), with
   the LoRA baseline, and (``--control 1``) with the project's LoRA on self-attention only ("lora_attn1"); same data,
   steps and seeds (``sd_apt.dreambooth``). Learning rates: ``--lr`` (1e-3) for LoRA, ``--apt-lr`` for APT, by
   default 5 x ``--lr`` (the APT paper's rule, ``weights.APT_LR_FACTOR``; script/sd_dreambooth.sh uses it too).
   Recipe choices of the demo (both options of ``sd_apt.dreambooth``, the same for every method): no prior
   preservation by default, as the LoRA example's README runs it (``--prior-loss-weight 1`` turns it on: with this
   tiny text encoder the tuned models' unconditional prediction, which prior preservation does not hold, drifts
   toward the subject, and classifier-free guidance then subtracts that drift from the samples); offset noise 0.3
   (``--noise-offset``): SD's schedule leaves signal at the last timestep, the base model learned to read a sample's
   colour from the per-channel mean of its starting noise, and without offset noise neither method changes the
   colour that noise picks. Why apt_text: APT's side path reads only the query-side hidden states (the latent
   tokens), so on the UNet alone it reads the prompt only through what the frozen cross-attention layers wrote into
   them; on the text encoder the identifier is one of the tokens it reads. The identifier gap
   (``identifier_gap``) measures whether a model keys on "sks".
4. Samples of the untuned model and of each tuned model, ``--num-images`` (32) seeds per prompt, the same seeds for
   every model; a grid (prompts x methods, the first ``--grid-images`` seeds); DINO / CLIP-I / CLIP-T with tiny
   random encoders (they only exercise the metric code), the identifier gap, and two image-space fidelity measures
   against the subject images: colour-histogram distance of the foreground (pixels assigned to the nearest of the
   world's four colours; total variation, 0 = same colours, 1 = disjoint; mean and standard error over the samples)
   and shape-mask IoU, averaged over the samples of the subject prompt. Reference row: the subject images encoded
   and decoded by the VAE (what a model reproducing the training latents would draw).

    python -m sd_apt.demo --cache ~/.cache/apt_vl_demo/sd [--out DIR] [--fresh]
    python -m sd_apt.demo --cache DIR --prepare     # only step 1-2; prints DEMO_MODEL_DIR=... for the scripts
"""
from __future__ import annotations

import argparse
import json
import os
import random
import shlex
import shutil
import sys
import time

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

from shared_apt.vl.data.demo_world import BACKGROUND, COLORS, SHAPES, SceneObject, render_scene

from . import tiny
from .weights import APT_LR_FACTOR

IMAGE = 32
TEXT_LEN = 16
IDENTIFIER, CLASS_NOUN = "sks", "circle"
STRIPES = ((215, 40, 40), (235, 200, 30))  # the world's red and yellow, in bands: a pattern the world never draws
PROMPTS = ["a photo of a sks circle", "a photo of a sks square", "a photo of a blue circle"]
DONE = "PRETRAINED.json"


# ---------------------------------------------------------------------------------------------------------------
# World and subject


def render_object(shape: str, color: str, cx: float, cy: float) -> Image.Image:
    """One large shape of the demo world, rendered at 64 px and cropped to the central 32 px."""
    obj = SceneObject(shape=shape, color=color, size="large", position="top left", cx=cx, cy=cy)
    return render_scene((obj,), 2 * IMAGE).crop((IMAGE // 2, IMAGE // 2, 3 * IMAGE // 2, 3 * IMAGE // 2))


def world(n: int, seed: int) -> list:
    rng = random.Random(seed)
    out = []
    for _ in range(n):
        shape, color = rng.choice(SHAPES), rng.choice(list(COLORS))
        im = render_object(shape, color, 0.5 + rng.uniform(-0.04, 0.04), 0.5 + rng.uniform(-0.04, 0.04))
        out.append((im, f"a photo of a {color} {shape}"))
    return out


def subject_images(n: int = 4, seed: int = 1) -> list:
    rng = random.Random(seed)
    out = []
    for _ in range(n):
        im = render_object("circle", "red", 0.5 + rng.uniform(-0.04, 0.04), 0.5 + rng.uniform(-0.04, 0.04))
        a = np.asarray(im).copy()
        mask = foreground(a)
        band = (np.arange(IMAGE) // 3) % 2  # 3-pixel horizontal stripes
        for row in range(IMAGE):
            a[row][mask[row]] = STRIPES[band[row]]
        out.append(Image.fromarray(a))
    return out


def vocabulary() -> list:
    return ["a", "photo", "of", IDENTIFIER] + list(COLORS) + list(SHAPES)


# ---------------------------------------------------------------------------------------------------------------
# Image-space fidelity


def foreground(a: np.ndarray, threshold: float = 60.0) -> np.ndarray:
    """Pixels farther than ``threshold`` (RGB L2) from the world's background colour."""
    return np.linalg.norm(a.astype(np.float32) - np.array(BACKGROUND, np.float32), axis=-1) > threshold


def colour_histogram(a: np.ndarray) -> np.ndarray:
    """Share of the foreground pixels nearest (RGB L2) to each of the world's colours (zeros if no foreground): a
    histogram over the world's palette, robust to the tints a small decoder produces."""
    px = a[foreground(a)].reshape(-1, 3).astype(np.float32)
    palette = np.array(list(COLORS.values()), np.float32)
    if len(px) == 0:
        return np.zeros(len(palette))
    nearest = np.linalg.norm(px[:, None, :] - palette[None], axis=-1).argmin(axis=1)
    h = np.bincount(nearest, minlength=len(palette)).astype(np.float64)
    return h / h.sum()


def histogram_distance(a: np.ndarray, b: np.ndarray) -> float:
    """Total variation 0.5 * L1 between two palette histograms; 1.0 when either has no foreground."""
    ha, hb = colour_histogram(a), colour_histogram(b)
    if ha.sum() == 0 or hb.sum() == 0:
        return 1.0
    return float(0.5 * np.abs(ha - hb).sum())


def mask_iou(a: np.ndarray, b: np.ndarray) -> float:
    ma, mb = foreground(a), foreground(b)
    union = (ma | mb).sum()
    return float((ma & mb).sum() / union) if union else 1.0


@torch.no_grad()
def identifier_gap(pipe, subject: list, instance_prompt: str, class_prompt: str, repeats: int = 16,
                   t_min: int = 500, seed: int = 123) -> float:
    """Does the model key on the identifier? The denoising loss (epsilon MSE) of the subject images, each noised at
    ``repeats`` fixed (timestep, noise) draws with timesteps in [t_min, T) (the noise levels at which the colours and
    the layout of a sample are decided), with the class prompt divided by the same loss with the instance prompt,
    minus 1 (in %). About 0 when the identifier makes no difference to how the model denoises the subject; > 0
    when the model denoises the subject better when told "sks"."""
    from .dreambooth import image_tensor, tokenize

    g = torch.Generator().manual_seed(seed)
    pixels = torch.stack([image_tensor(im, IMAGE, True) for im in subject])
    latents = pipe.vae.encode(pixels).latent_dist.mean.repeat(repeats, 1, 1, 1) * pipe.vae.config.scaling_factor
    noise = torch.randn(latents.shape, generator=g)
    steps = torch.randint(t_min, pipe.scheduler.config.num_train_timesteps, (len(latents),), generator=g)
    noisy = tiny.scheduler().add_noise(latents, noise, steps)

    def loss(prompt: str) -> float:
        states = pipe.text_encoder(tokenize(pipe.tokenizer, prompt)[None].repeat(len(latents), 1))[0]
        return F.mse_loss(pipe.unet(noisy, steps, states).sample, noise).item()

    return 100.0 * (loss(class_prompt) / loss(instance_prompt) - 1.0)


def image_fidelity(generated: list, subject: list) -> dict:
    """Means over (generated, subject) pairs of the colour-histogram distance and the shape-mask IoU, and the
    standard error of the colour distance's mean over the generated images (each image's mean over the subject
    images is one observation; 0 for a single image)."""
    gs = [np.asarray(g.convert("RGB")) for g in generated]
    ss = [np.asarray(s.convert("RGB")) for s in subject]
    per_image = np.array([np.mean([histogram_distance(g, s) for s in ss]) for g in gs])
    se = float(per_image.std(ddof=1) / np.sqrt(len(per_image))) if len(per_image) > 1 else 0.0
    return {"colour_hist_distance": float(per_image.mean()), "colour_hist_distance_se": se,
            "mask_iou": float(np.mean([mask_iou(g, s) for g in gs for s in ss]))}


@torch.no_grad()
def vae_reconstructions(pipe, subject: list) -> list:
    """The subject images encoded (posterior mean) and decoded by the pipeline's VAE: what a model that reproduced the
    training latents exactly would draw (a reference for the image-space distances, not a bound: samples vary)."""
    from .dreambooth import image_tensor

    pixels = torch.stack([image_tensor(im, IMAGE, True) for im in subject])
    out = pipe.vae.decode(pipe.vae.encode(pixels).latent_dist.mean).sample
    return pipe.image_processor.postprocess(out, output_type="pil")


# ---------------------------------------------------------------------------------------------------------------
# Pre-training


def _pixels(images: list) -> torch.Tensor:
    return torch.stack([torch.from_numpy(np.asarray(im, np.float32) / 127.5 - 1.0).permute(2, 0, 1) for im in images])


def pretrain(out_dir: str, vae_steps: int, unet_steps: int, seed: int = 0, log=print,
             transformer_layers: int = 1) -> str:
    from diffusers import DDIMScheduler, StableDiffusionPipeline

    torch.manual_seed(seed)
    tok = tiny.word_tokenizer(vocabulary(), max_length=TEXT_LEN)
    vae = tiny.vae(sample_size=IMAGE)
    unet = tiny.unet(sample_size=IMAGE // 2, transformer_layers=transformer_layers)
    text_encoder = tiny.text_encoder(len(tok))
    data = world(1024, seed)
    x_all = _pixels([im for im, _ in data])
    ids_all = tok([c for _, c in data], padding="max_length", max_length=TEXT_LEN, return_tensors="pt").input_ids
    empty = tok([""], padding="max_length", max_length=TEXT_LEN, return_tensors="pt").input_ids[0]
    g = torch.Generator().manual_seed(seed)

    opt = torch.optim.AdamW(vae.parameters(), lr=2e-3, weight_decay=0.0)
    t0 = time.time()
    for step in range(vae_steps):
        x = x_all[torch.randint(0, len(x_all), (16,), generator=g)]
        post = vae.encode(x).latent_dist
        rec = vae.decode(post.sample(generator=g)).sample
        loss = F.mse_loss(rec, x) + 1e-6 * post.kl().mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
        if (step + 1) % 50 == 0 or step + 1 == vae_steps:
            log(f"[demo] VAE step {step + 1}/{vae_steps} reconstruction MSE {loss.item():.4f} ({time.time() - t0:.0f}s)")
    vae.eval().requires_grad_(False)
    with torch.no_grad():
        post = vae.encode(x_all).latent_dist
        scaling = float(1.0 / post.mean.std())
    vae.register_to_config(scaling_factor=scaling)  # as SD's 0.18215: unit-variance latents

    sched = tiny.scheduler()
    params = list(unet.parameters()) + list(text_encoder.parameters())
    opt = torch.optim.AdamW(params, lr=1e-3, weight_decay=0.0)
    t0 = time.time()
    for step in range(unet_steps):
        idx = torch.randint(0, len(x_all), (32,), generator=g)
        lat = (post.mean[idx] + post.std[idx] * torch.randn(post.mean[idx].shape, generator=g)) * scaling
        ids = ids_all[idx].clone()
        ids[torch.rand(len(idx), generator=g) < 0.1] = empty  # caption dropout: classifier-free guidance
        noise = torch.randn(lat.shape, generator=g)
        t = torch.randint(0, sched.config.num_train_timesteps, (len(idx),), generator=g)
        pred = unet(sched.add_noise(lat, noise, t), t, text_encoder(ids)[0]).sample
        loss = F.mse_loss(pred, noise)
        opt.zero_grad()
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        opt.step()
        if (step + 1) % 50 == 0 or step + 1 == unet_steps:
            log(f"[demo] UNet step {step + 1}/{unet_steps} loss {loss.item():.4f} ({time.time() - t0:.0f}s)")
    pipe = StableDiffusionPipeline(vae=vae, text_encoder=text_encoder.eval(), tokenizer=tok, unet=unet.eval(),
                                   scheduler=DDIMScheduler.from_config(sched.config), safety_checker=None,
                                   feature_extractor=None, requires_safety_checker=False)
    return tiny.save_pipeline(pipe, out_dir)


def prepare(cache: str, vae_steps: int, unet_steps: int, seed: int = 0, fresh: bool = False, log=print,
            transformer_layers: int = 1) -> dict:
    """Pre-train (once) and write the subject images; returns the paths."""
    root = os.path.abspath(os.path.expanduser(cache))
    tag = f"v{vae_steps}_u{unet_steps}_s{seed}_t{transformer_layers}"
    model_dir = os.path.join(root, f"tiny_sd_{tag}")
    subject_dir = os.path.join(root, "subject")
    marker = os.path.join(model_dir, DONE)
    if fresh and os.path.isdir(model_dir):
        shutil.rmtree(model_dir)
    if not os.path.isfile(marker):
        t0, c0 = time.time(), time.process_time()
        pretrain(model_dir, vae_steps, unet_steps, seed, log, transformer_layers)
        with open(marker, "w") as f:
            json.dump({"seconds": time.time() - t0, "cpu_seconds": time.process_time() - c0, "vae_steps": vae_steps,
                       "unet_steps": unet_steps, "transformer_layers": transformer_layers}, f)
    os.makedirs(subject_dir, exist_ok=True)
    for i, im in enumerate(subject_images()):
        im.save(os.path.join(subject_dir, f"{i}.png"))
    return {"model_dir": model_dir, "instance_dir": subject_dir, "class_noun": CLASS_NOUN, "identifier": IDENTIFIER,
            "resolution": IMAGE}


# ---------------------------------------------------------------------------------------------------------------
# The comparison


def apt_lr(args) -> float:
    return args.apt_lr if args.apt_lr is not None else APT_LR_FACTOR * args.lr


def run(args) -> dict:
    from .dreambooth import DreamBoothConfig, load_pipeline, train
    from .evaluate import ClipEncoder, DinoEncoder, dreambooth_metrics, read_samples
    from .sample import make_grid, sample
    from .weights import MethodConfig, load_into_pipeline

    torch.set_num_threads(args.threads)
    t_start = time.time()
    paths = prepare(args.cache, args.vae_steps, args.unet_steps, args.seed, args.fresh,
                    transformer_layers=args.transformer_layers)
    out = os.path.abspath(args.out or os.path.join(args.cache, "sd_compare"))
    if os.path.isdir(out):
        shutil.rmtree(out)
    os.makedirs(out)
    timings = {"pretrain_s": round(time.time() - t_start, 1)}
    methods = {
        "apt": MethodConfig("apt", num_prompts=args.apt_prompts, rank=args.rank, gate=args.gate),
        "apt_text": MethodConfig("apt", num_prompts=args.apt_text_prompts, rank=args.rank, gate=args.gate,
                                 attention=args.apt_text_attention, text_encoder=True),
        "lora": MethodConfig("lora", rank=args.rank),
    }
    if args.control:  # LoRA restricted to what APT on the UNet reads: self-attention only, no text-side projection
        methods["lora_attn1"] = MethodConfig("project_lora", rank=args.rank, attention="attn1")
    if args.methods:
        keep = args.methods.split(",")
        unknown = sorted(set(keep) - set(methods))
        if unknown:
            raise ValueError(f"--methods {args.methods!r}: unknown {unknown}; expected names from {sorted(methods)}")
        methods = {k: v for k, v in methods.items() if k in keep}
    runs = {"untuned": ""}
    for name, method in methods.items():
        t0 = time.time()
        cfg = DreamBoothConfig(
            model_dir=paths["model_dir"], instance_dir=paths["instance_dir"], class_noun=CLASS_NOUN,
            identifier=IDENTIFIER, instance_prompt=f"a photo of a {IDENTIFIER} {CLASS_NOUN}",
            class_prompt=f"a photo of a {CLASS_NOUN}", output_dir=os.path.join(out, name),
            class_dir=os.path.join(out, "class_images"), num_class_images=args.class_images,
            class_inference_steps=args.sample_steps, class_guidance_scale=args.guidance, resolution=IMAGE,
            center_crop=True, max_steps=args.steps, checkpoint_every=args.steps,
            with_prior_preservation=args.prior_loss_weight > 0, prior_loss_weight=args.prior_loss_weight,
            noise_offset=args.noise_offset, learning_rate=apt_lr(args) if method.method == "apt" else args.lr,
            progress_bar=args.progress, seed=args.seed, method=method)
        runs[name] = train(cfg)
        timings[f"dreambooth_{name}_s"] = round(time.time() - t0, 1)
    dino = DinoEncoder(tiny.save_dino(os.path.join(out, "encoders", "dino")))
    clip = ClipEncoder(tiny.save_clip(os.path.join(out, "encoders", "clip"), vocabulary()))
    subject = [Image.open(os.path.join(paths["instance_dir"], f)).convert("RGB")
               for f in sorted(os.listdir(paths["instance_dir"]))]
    results, reference = {}, None
    for name, weights in runs.items():
        pipe = load_pipeline(paths["model_dir"])
        trainable = 0
        if not weights:  # the untuned pipeline: its VAE gives the reference row
            reference = image_fidelity(vae_reconstructions(pipe, subject), subject)
        else:
            load_into_pipeline(pipe, weights)
            trainable = sum(p.numel() for part in (pipe.unet, pipe.text_encoder) for n, p in part.named_parameters()
                            if "peft_apt" in n or "lora" in n)
        folder = os.path.join(out, "samples", name)
        sample(pipe, PROMPTS, args.num_images, args.seed, args.sample_steps, args.guidance, IMAGE, folder)
        generated, prompts = read_samples(folder)
        metrics = dreambooth_metrics(generated, prompts, subject, dino, clip, IDENTIFIER, True)
        subject_samples = [g for g, p in zip(generated, prompts) if p == PROMPTS[0]]
        other = image_fidelity([g for g, p in zip(generated, prompts) if p == PROMPTS[1]], subject)  # sks square
        blue = image_fidelity([g for g, p in zip(generated, prompts) if p == PROMPTS[2]], subject)  # drift check
        metrics.update(image_fidelity(subject_samples, subject), tuned_params=trainable,
                       colour_hist_distance_other=other["colour_hist_distance"],
                       colour_hist_distance_other_se=other["colour_hist_distance_se"],
                       colour_hist_distance_blue=blue["colour_hist_distance"],
                       identifier_gap=identifier_gap(pipe, subject, f"a photo of a {IDENTIFIER} {CLASS_NOUN}",
                                                     f"a photo of a {CLASS_NOUN}"))
        results[name] = metrics
    results["vae_reference"] = reference
    shown = min(args.grid_images, args.num_images)
    rows = [[os.path.join(out, "samples", name, f"p{i:02d}_{j}.png") for name in runs for j in range(shown)]
            for i in range(len(PROMPTS))]
    make_grid(rows, os.path.join(out, "grid.png"), cell=64,
              col_labels=[f"{name}" if j == 0 else "" for name in runs for j in range(shown)])
    timings["total_s"] = round(time.time() - t_start, 1)
    report = {"results": results, "prompts": PROMPTS, "timings": timings,
              "settings": {**vars(args), "apt_lr": apt_lr(args)}}
    with open(os.path.join(out, "results.json"), "w") as f:
        json.dump(report, f, indent=2)
    table = render(results)
    with open(os.path.join(out, "results.md"), "w") as f:
        f.write(table + "\n")
    print(table)
    print(f"[demo] grid: {os.path.join(out, 'grid.png')} (rows: {'; '.join(PROMPTS)}; columns: "
          f"{', '.join(runs)} x the first {shown} of {args.num_images} seeds); timings {timings}")
    return report


def render(results: dict) -> str:
    lines = ["| model | tuned params | colour-hist distance (lower = closer) | shape-mask IoU | colour distance, "
             "\"" + PROMPTS[1] + "\" | colour distance, \"" + PROMPTS[2] + "\" | identifier gap % | DINO* | "
             "CLIP-I* | CLIP-T* |",
             "|---|---|---|---|---|---|---|---|---|---|"]
    for name, m in results.items():
        if name == "vae_reference":
            lines.append(f"| subject through the VAE (reference) | - | {m['colour_hist_distance']:.3f} | "
                         f"{m['mask_iou']:.3f} | - | - | - | - | - | - |")
            continue
        lines.append(f"| {name} | {m['tuned_params']:,} | {m['colour_hist_distance']:.3f} "
                     f"± {m['colour_hist_distance_se']:.3f} | {m['mask_iou']:.3f} | "
                     f"{m['colour_hist_distance_other']:.3f} ± {m['colour_hist_distance_other_se']:.3f} | "
                     f"{m['colour_hist_distance_blue']:.3f} | "
                     f"{m['identifier_gap']:+.1f} | {m['dino']:.3f} | {m['clip_i']:.3f} | {m['clip_t']:.3f} |")
    lines.append("")
    lines.append("Image-space columns: samples of \"" + PROMPTS[0] + "\" (and, for the other colour distances, of "
                 "\"" + PROMPTS[1] + "\" and \"" + PROMPTS[2] + "\") against the 4 subject images; ± one standard "
                 "error over the samples. Identifier "
                 "gap: the subject images' denoising loss (timesteps 500-999) with \"a photo of a " + CLASS_NOUN + "\" "
                 "over the loss with the instance prompt, minus 1 (~0 = the model ignores \"" + IDENTIFIER + "\"). *tiny random encoders "
                 "(no DINO / CLIP weights offline): they exercise the metric code only.")
    return "\n".join(lines)


def parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(prog="python -m sd_apt.demo", description=__doc__.split("\n\n")[0])
    ap.add_argument("--cache", default=os.path.join(os.path.expanduser("~"), ".cache", "apt_vl_demo", "sd"))
    ap.add_argument("--out", default="")
    ap.add_argument("--prepare", action="store_true", help="only pre-train / write the subject; print shell vars")
    ap.add_argument("--fresh", action="store_true", help="pre-train again even if cached")
    ap.add_argument("--vae-steps", type=int, default=200)
    ap.add_argument("--unet-steps", type=int, default=600)
    ap.add_argument("--transformer-layers", type=int, default=1,
                    help="tiny UNet: transformer blocks per attention (diffusers' transformer_layers_per_block)")
    ap.add_argument("--methods", default="", help="comma list: run only these (apt, apt_text, lora, lora_attn1)")
    ap.add_argument("--threads", type=int, default=1, help="torch intra-op threads (1 is fastest at this size)")
    ap.add_argument("--steps", type=int, default=800, help="DreamBooth steps per method")
    ap.add_argument("--lr", type=float, default=1e-3, help="DreamBooth learning rate of LoRA")
    ap.add_argument("--apt-lr", type=float, default=None,
                    help=f"DreamBooth learning rate of APT (default: {APT_LR_FACTOR} x --lr, the APT paper's rule: "
                         "the baseline recipe's learning rate times five)")
    ap.add_argument("--apt-prompts", type=int, default=22, help="APT p on the UNet (22: budget-matched to LoRA r 4 "
                    "here)")
    ap.add_argument("--apt-text-prompts", type=int, default=40,
                    help="APT p of the apt_text run (40: attn2 + text encoder budget-matched to LoRA r 4 here)")
    ap.add_argument("--apt-text-attention", default="attn2", choices=["attn1", "attn2", "both"],
                    help="UNet attention sites of the apt_text run")
    ap.add_argument("--control", type=int, default=1, choices=[0, 1],
                    help="1: also run the control lora_attn1 (the project's LoRA on self-attention only)")
    ap.add_argument("--rank", type=int, default=4)
    ap.add_argument("--gate", action="store_true", help="APT zero-start gate")
    ap.add_argument("--class-images", type=int, default=16)
    ap.add_argument("--prior-loss-weight", type=float, default=0.0,
                    help="DreamBooth prior-preservation weight (0, the default: no prior preservation and no class "
                         "images, as the LoRA example's README runs it; 1: the example's --with_prior_preservation)")
    ap.add_argument("--noise-offset", type=float, default=0.3,
                    help="offset noise in DreamBooth training (sd_apt.dreambooth.training_noise; 0 = off)")
    ap.add_argument("--num-images", type=int, default=32, help="samples per prompt and model (the metrics' sample)")
    ap.add_argument("--grid-images", type=int, default=4, help="samples per prompt and model shown in the grid")
    ap.add_argument("--sample-steps", type=int, default=20)
    ap.add_argument("--guidance", type=float, default=3.0)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--progress", action="store_true")
    return ap


def main(argv=None) -> int:
    args = parser().parse_args(argv)
    if args.prepare:
        torch.set_num_threads(args.threads)
        paths = prepare(args.cache, args.vae_steps, args.unet_steps, args.seed, args.fresh,
                        log=lambda m: print(m, file=sys.stderr), transformer_layers=args.transformer_layers)
        for k, v in paths.items():
            print(f"DEMO_{k.upper()}={shlex.quote(str(v))}")
        return 0
    run(args)
    return 0


if __name__ == "__main__":
    sys.exit(main())
