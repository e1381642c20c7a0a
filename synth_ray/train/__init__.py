"""LoRA fine-tuning of a target per condition: data, LoRA, the per-worker loop (no Ray),
DeepSpeed config, batching (padding_free.py, loss.py), and the Ray Train / Ray Tune driver
(driver.py) that the train stage and the toy pre-training call."""
