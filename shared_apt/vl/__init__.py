"""Layer 2, the vision-language framework ViLT and METER train with: data (arrow datasets, transforms, collate,
writers, metrics), training (LightningModule, objectives, optimiser, Sacred glue, run), heads and checkpoints.
Imports ``shared_apt.peft`` only (never ``shared_apt.harness``)."""
