"""LoRA fine-tuning of a target per condition: data, LoRA, the per-worker loop (no Ray),
DeepSpeed config, and the Ray Train / Ray Tune driver (trainer.py)."""
