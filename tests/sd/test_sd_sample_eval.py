"""Sampling (seeded, N per prompt, grid) and the DreamBooth metrics with tiny encoders."""
import json
import os

import numpy as np
import pytest
import torch
from PIL import Image

from sd_apt import tiny
from sd_apt.evaluate import (ClipEncoder, DinoEncoder, dreambooth_metrics, matched_mean_cosine,
                             pairwise_mean_cosine, read_samples)
from sd_apt.prompts import dreambooth_prompts, drop_identifier
from sd_apt.sample import sample

WORDS = ["a", "photo", "of", "sks", "dog", "red", "in", "the", "snow"]


def test_pairwise_and_matched_means_by_hand():
    a = torch.tensor([[1.0, 0.0], [0.0, 2.0]])
    b = torch.tensor([[3.0, 0.0], [1.0, 1.0]])
    # cos: a0.b0 = 1, a0.b1 = 1/sqrt2, a1.b0 = 0, a1.b1 = 1/sqrt2 -> mean (1 + 2/sqrt2) / 4
    assert pairwise_mean_cosine(a, b) == pytest.approx((1 + 2 / 2 ** 0.5) / 4)
    assert matched_mean_cosine(a, b) == pytest.approx((1 + 1 / 2 ** 0.5) / 2)
    assert pairwise_mean_cosine(a, b) == pytest.approx(pairwise_mean_cosine(b, a))  # symmetric
    assert pairwise_mean_cosine(-a[:1], a[:1]) == pytest.approx(-1.0)


def test_prompts():
    live = dreambooth_prompts("sks", "dog")
    obj = dreambooth_prompts("sks", "backpack")
    assert len(live) == len(obj) == 25 and len(set(live)) == 25
    assert live[0] == "a sks dog in the jungle" and obj[-1] == "a cube shaped sks backpack"
    assert "a sks dog wearing a santa hat" in live and "a sks dog wearing a santa hat".replace("dog", "backpack") not in obj
    assert drop_identifier("a red sks dog", "sks") == "a red dog"


@pytest.fixture(scope="module")
def encoders(tmp_path_factory):
    root = tmp_path_factory.mktemp("sd_encoders")
    return DinoEncoder(tiny.save_dino(str(root / "dino"))), ClipEncoder(tiny.save_clip(str(root / "clip"), WORDS))


def _images(n, seed):
    rng = np.random.default_rng(seed)
    return [Image.fromarray(rng.integers(0, 255, (32, 32, 3), dtype=np.uint8)) for _ in range(n)]


def test_identical_images_score_one_and_different_ones_less(encoders):
    dino, clip = encoders
    im = _images(1, 0)
    m = dreambooth_metrics(im, ["a sks dog"], im, dino, clip)
    assert m["dino"] == pytest.approx(1.0, abs=1e-6) and m["clip_i"] == pytest.approx(1.0, abs=1e-6)
    other = _images(2, 1)
    m2 = dreambooth_metrics(other, ["a sks dog", "a red sks dog"], im, dino, clip, clip_t_drop_identifier=True)
    assert m2["dino"] < 1.0 - 1e-4 and m2["clip_i"] < 1.0 - 1e-4
    # CLIP-T: mean of matched cosines, prompts without the identifier when asked
    expect = matched_mean_cosine(clip.texts(["a dog", "a red dog"]), clip.images(other))
    assert m2["clip_t"] == pytest.approx(expect) and m2["clip_t_drop_identifier"] is True
    # pairwise arithmetic: the mean over generated of the per-image means
    per = [dreambooth_metrics([g], ["a dog"], im, dino, None)["dino"] for g in other]
    assert m2["dino"] == pytest.approx(sum(per) / 2)


def test_sample_is_seeded_and_writes_grid(tmp_path):
    torch.manual_seed(0)
    pipe = tiny.pipeline(WORDS)
    pipe.set_progress_bar_config(disable=True)
    prompts = ["a sks dog", "a red sks dog"]
    index = sample(pipe, prompts, 2, seed=5, steps=2, guidance=6.0, resolution=32, out_dir=str(tmp_path / "a"))
    sample(pipe, prompts, 2, seed=5, steps=2, guidance=6.0, resolution=32, out_dir=str(tmp_path / "b"), batch_size=1)
    assert [e["file"] for e in index] == ["p00_0.png", "p00_1.png", "p01_0.png", "p01_1.png"]
    for e in index:  # same seed -> same image, whatever the batching
        a = np.asarray(Image.open(tmp_path / "a" / e["file"]), dtype=np.int16)
        b = np.asarray(Image.open(tmp_path / "b" / e["file"]), dtype=np.int16)
        assert np.abs(a - b).max() <= 1
    first = np.asarray(Image.open(tmp_path / "a" / "p00_0.png"))
    assert not np.array_equal(first, np.asarray(Image.open(tmp_path / "a" / "p00_1.png")))
    assert Image.open(tmp_path / "a" / "grid.png").size == (64, 64)
    images, ps = read_samples(str(tmp_path / "a"))
    assert len(images) == 4 and ps == [prompts[0]] * 2 + [prompts[1]] * 2
    assert json.load(open(tmp_path / "a" / "samples.json"))["seed"] == 5


def test_image_space_fidelity_by_hand():
    from sd_apt.demo import BACKGROUND, histogram_distance, image_fidelity, mask_iou

    bg = np.zeros((4, 4, 3), np.uint8) + np.array(BACKGROUND, np.uint8)
    red, blue = bg.copy(), bg.copy()
    red[:2, :2] = (215, 40, 40)       # 4 foreground pixels, top left
    blue[:2, :] = (40, 80, 215)       # 8 foreground pixels, top rows
    assert histogram_distance(red, red) == 0.0
    assert histogram_distance(red, blue) == 1.0  # disjoint colours
    assert histogram_distance(bg, red) == 1.0     # no foreground at all
    assert mask_iou(red, blue) == pytest.approx(4 / 8)
    half = red.copy()
    half[0, :2] = (40, 80, 215)       # foreground half red, half blue
    assert histogram_distance(half, red) == pytest.approx(0.5)
    m = image_fidelity([Image.fromarray(red), Image.fromarray(blue)], [Image.fromarray(red)])
    assert m["mask_iou"] == pytest.approx((1 + 0.5) / 2) and m["colour_hist_distance"] == pytest.approx(0.5)
    # per-image distances 0 and 1: sample standard deviation sqrt(0.5), standard error sqrt(0.5) / sqrt(2) = 0.5
    assert m["colour_hist_distance_se"] == pytest.approx(0.5)
    # three images at distances 0, 0.5, 1 (against one subject): sd 0.5, se 0.5 / sqrt(3)
    m = image_fidelity([Image.fromarray(x) for x in (red, half, blue)], [Image.fromarray(red)])
    assert m["colour_hist_distance"] == pytest.approx(0.5)
    assert m["colour_hist_distance_se"] == pytest.approx(0.5 / 3 ** 0.5)
    assert image_fidelity([Image.fromarray(red)], [Image.fromarray(red)])["colour_hist_distance_se"] == 0.0


def test_sd_scripts_parse_under_dash():
    import shutil
    import subprocess

    root = os.path.join(os.path.dirname(__file__), "..", "..")
    shell = shutil.which("dash") or shutil.which("sh")
    for name in ("sd_dreambooth.sh", "sd_sample.sh", "sd_eval.sh"):
        p = subprocess.run([shell, "-n", os.path.join(root, "script", name)], capture_output=True, text=True)
        assert p.returncode == 0, f"{name}: {p.stderr}"


def test_demo_subject_is_a_pattern_the_world_never_draws():
    from sd_apt.demo import COLORS, foreground, subject_images, world

    def colours(im):
        a = np.asarray(im)
        return {tuple(int(v) for v in c) for c in a[foreground(a)]}

    palette = {tuple(c) for c in COLORS.values()}
    for im, caption in world(24, seed=0):
        fg = colours(im) & palette  # anti-aliased edges aside, one world colour per image
        assert len(fg) == 1 and caption.split()[-1] in ("circle", "square", "triangle")
    for im in subject_images():
        assert colours(im) & palette == {COLORS["red"], COLORS["yellow"]}


def test_identifier_gap_zero_for_same_prompt_and_reciprocal_when_swapped():
    """The gap is loss(class prompt) / loss(instance prompt) - 1 on fixed noise: 0 for one prompt twice, and swapping
    the prompts gives the reciprocal ratio (same noise and timesteps on both sides)."""
    from sd_apt import tiny
    from sd_apt.demo import IMAGE, identifier_gap, subject_images, vocabulary

    pipe = tiny.pipeline(vocabulary(), image_size=IMAGE)
    subject = subject_images(2)
    a, b = "a photo of a sks circle", "a photo of a red square"
    assert identifier_gap(pipe, subject, a, a, repeats=2) == 0.0
    g_ab = identifier_gap(pipe, subject, a, b, repeats=2)
    g_ba = identifier_gap(pipe, subject, b, a, repeats=2)
    assert g_ab != 0.0
    assert (1 + g_ab / 100) * (1 + g_ba / 100) == pytest.approx(1.0, rel=1e-6)


def test_vae_reference_is_the_subject_encoded_and_decoded():
    """The demo's reference row: each subject image through the VAE (posterior mean), back to 8-bit RGB by hand:
    [-1, 1] -> [0, 255], rounded."""
    from sd_apt import tiny
    from sd_apt.demo import IMAGE, subject_images, vae_reconstructions, vocabulary
    from sd_apt.dreambooth import image_tensor

    torch.manual_seed(0)
    pipe = tiny.pipeline(vocabulary(), image_size=IMAGE)
    subject = subject_images(2)
    got = vae_reconstructions(pipe, subject)
    assert [im.size for im in got] == [(IMAGE, IMAGE)] * 2 and all(im.mode == "RGB" for im in got)
    with torch.no_grad():
        for im, out in zip(subject, got):
            x = pipe.vae.decode(pipe.vae.encode(image_tensor(im, IMAGE, True)[None]).latent_dist.mean).sample[0]
            want = ((x.clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8).permute(1, 2, 0).numpy()
            assert np.abs(np.asarray(out).astype(int) - want.astype(int)).max() <= 1



def test_demo_end_to_end_at_toy_size(tmp_path):
    """The demo's whole run (pre-training, DreamBooth, sampling, metrics, grid, table) at toy settings: every model
    and the reference row reported, the reference being the base model's VAE applied to the subject images."""
    from sd_apt.demo import image_fidelity, parser, prepare, run, vae_reconstructions
    from sd_apt.dreambooth import load_pipeline

    args = parser().parse_args(["--cache", str(tmp_path), "--vae-steps", "2", "--unet-steps", "2", "--steps", "2",
                                "--num-images", "2", "--grid-images", "1", "--methods", "lora", "--control", "0",
                                "--sample-steps", "2"])
    res = run(args)["results"]
    assert list(res) == ["untuned", "lora", "vae_reference"]
    assert res["untuned"]["tuned_params"] == 0 and res["lora"]["tuned_params"] == 15360  # r 4 on the tiny UNet
    paths = prepare(str(tmp_path), 2, 2, log=lambda *a: None)  # cached: the same base model and subject
    subject = [Image.open(os.path.join(paths["instance_dir"], f)).convert("RGB")
               for f in sorted(os.listdir(paths["instance_dir"]))]
    assert res["vae_reference"] == image_fidelity(
        vae_reconstructions(load_pipeline(paths["model_dir"]), subject), subject)
    out = os.path.join(tmp_path, "sd_compare")
    with open(os.path.join(out, "grid.png"), "rb") as f:
        assert f.read(8) == b"\x89PNG\r\n\x1a\n"
    assert "| subject through the VAE (reference) |" in open(os.path.join(out, "results.md")).read()
    assert len(os.listdir(os.path.join(out, "samples", "lora"))) >= 3 * 2
