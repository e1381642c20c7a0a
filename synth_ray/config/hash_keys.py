"""The keys each section's stage input hash held when this list was frozen (dde2d6a): the
sections' fields then, less those added after runs were made and those that only say
where work runs. Never edited: a field that is not here, i.e. any field
added since, is left out of the hash while it holds its default (`Section.hashed`), so
upgrading synth-ray redoes no finished stage and a new field needs no list; set to anything
else, it counts. tests/unit/test_config.py pins the shipped configs' section hashes."""

HASHED_KEYS: dict[str, frozenset[str]] = {
    "ConditionsSection": frozenset({"exclude", "human", "multi_source", "single_source"}),
    "DatasetSection": frozenset({
        "drop_duplicate_instructions", "hub_split", "max_chars", "max_rows", "path", "revision",
    }),
    "EngineSection": frozenset({
        "engine_kwargs", "gpu_memory_utilization", "max_model_len", "params_b",
        "pipeline_parallel_size", "replicas", "tensor_parallel_size",
    }),
    "EvaluationSection": frozenset({
        "embedding_model", "max_loras", "perplexity", "sampling", "self_bleu",
    }),
    "ExperimentConfig": frozenset({
        "conditions", "dataset", "evaluation", "generation", "judge", "lora", "preset",
        "rehearsal", "resources", "run", "sources", "split", "targets", "tracking", "training",
    }),
    "GenerationSection": frozenset({
        "batch_size", "block_retries", "max_error_fraction", "max_model_len", "parallel_sources",
        "sampling", "shard_rows", "stall_timeout_s", "system_prompt",
    }),
    "GpuTypeSection": frozenset({
        "gpus_per_node", "memory_gib", "node_gbps", "price_basis", "usd_per_gpu_hour",
    }),
    "HttpSection": frozenset({
        "api_key_env", "base_retry_wait_s", "base_url", "batch_size", "concurrency",
        "max_retries", "qps", "timeout_s",
    }),
    "JudgeSection": frozenset({
        "articles", "backend", "engine_kwargs", "harm_threshold", "http", "jailbreak_templates",
        "jailbreaks_per_prompt", "max_articles", "max_reason_chars", "max_safety_prompts",
        "model", "quality_max", "quality_threshold", "repeat_fraction", "replicas", "revision",
        "safety_prompts", "sampling", "seed", "summary_max_tokens", "tensor_parallel_size",
        "trust_remote_code",
    }),
    "LoRASection": frozenset({"alpha", "bias", "dropout", "r", "target_modules"}),
    "PerplexitySection": frozenset({"iqr_k", "outlier_rule"}),
    "RehearsalSection": frozenset({"config", "swaps"}),
    "ResourcesSection": frozenset({
        "accelerator", "autoscaling", "dashboard_host", "gpu_memory_gib", "gpus_per_node",
        "node_env", "num_cpus", "num_gpus", "ray_address", "vllm_cpu_kvcache_gib",
    }),
    "RunSection": frozenset({"dir", "local_dir", "name", "push_every_s", "shared_mount"}),
    "SamplingSection": frozenset({"max_tokens", "min_tokens", "seed", "temperature", "top_p"}),
    "SelfBleuSection": frozenset({
        "aggregated_samples", "individual_samples", "max_order", "min_sentence_words", "seed",
    }),
    "SourceSection": frozenset({
        "backend", "bracket", "engine_kwargs", "http", "model", "name", "pipeline_parallel_size",
        "replicas", "revision", "system_turn", "tensor_parallel_size", "trust_remote_code",
    }),
    "SplitSection": frozenset({
        "num_parts", "seed", "stratify_by", "test_fraction", "validation_fraction",
    }),
    "SwapSection": frozenset({"key", "real", "stand_in", "why"}),
    "TargetSection": frozenset({
        "cpu_offload", "cpus_per_worker", "effective_batch_size", "gradient_checkpointing",
        "model", "name", "num_workers", "per_device_batch_size", "revision", "self_source",
        "strategy", "trust_remote_code", "use_gpu",
    }),
    "TrackingSection": frozenset({"backend", "experiment", "uri", "wandb_mode"}),
    "TrainingSection": frozenset({
        "adapters_per_run", "autocast", "dtype", "early_stopping_patience", "epochs",
        "eval_every_steps", "group_by_length", "learning_rate", "loss_chunk_tokens", "loss_on",
        "max_failures", "max_grad_norm", "max_length", "max_steps", "padding_free",
        "parallel_trials", "poll_interval_s", "report_every_steps", "scheduler", "seeds",
        "warmup_ratio", "weight_decay", "zero3_param_persistence_threshold",
    }),
}
