"""Training: `latte.training.config.load_config` (YAML + overrides), `latte.training.train.train(cfg)`,
`latte.training.export.export_run(run_dir, output)`."""
