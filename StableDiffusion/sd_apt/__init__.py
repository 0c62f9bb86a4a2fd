"""APT and LoRA for subject-driven generation (DreamBooth) on diffusers' Stable Diffusion v1.x.

The UNet (and optionally the text encoder) declares its attention sites through :class:`sd_apt.backbone.SDBackbone`
(``peft_spec()``); the methods themselves live in ``shared_apt.peft.methods``. The LoRA baseline is peft's ``LoraConfig``
exactly as diffusers' ``train_dreambooth_lora.py`` configures it (``sd_apt.lora_baseline``)."""
