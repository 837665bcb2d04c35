import os

# Tests never need the network, and must not pick up a user's W&B settings.
os.environ.setdefault("WANDB_MODE", "disabled")
os.environ.setdefault("WANDB_SILENT", "true")
os.environ.setdefault("WANDB_DISABLE_WEAVE", "true")
# Each test compiles from scratch: no persistent compilation cache unless a test asks.
os.environ.setdefault("IQFLOW_COMPILATION_CACHE", "0")
