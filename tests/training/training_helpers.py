"""Helpers shared by the training tests (a unique module name: importable next to the other test folders)."""


def demo_config(demo, log_dir, **overrides):
    """The full ViLT config (Sacred defaults + task_finetune_vqa + tiny_vilt) on the demo world, as a plain dict."""
    from shared_apt.vl.training.run import resolve_config
    from vilt.config import ex

    cfg = resolve_config(ex, overrides.pop("named", ["task_finetune_vqa", "tiny_vilt"]))
    cfg.update({
        "data_root": demo["data_root"], "tokenizer": demo["tokenizer"], "vocab_size": demo["vocab_size"],
        "vqav2_label_size": demo["vqa_labels"], "cls_token_id": demo["cls_token_id"], "log_dir": str(log_dir),
        "accelerator": "cpu", "num_workers": 0, "drop_rate": 0.0, "hidden_size": 32, "num_layers": 2,
        "num_heads": 2, "per_gpu_batchsize": 4, "batch_size": 4, "num_gpus": 1, "max_steps": 6,
        "val_check_interval": 2, "precision": 32,
    })
    cfg.update(overrides)
    return cfg
