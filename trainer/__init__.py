"""The ASD distillation trainer: `asd-train CONFIG.yaml [key=value ...]` (see trainer/cli.py)."""
