import os

# Tests never need the network, and must not pick up a user's W&B settings.
os.environ.setdefault("WANDB_MODE", "disabled")
os.environ.setdefault("WANDB_SILENT", "true")
os.environ.setdefault("WANDB_DISABLE_WEAVE", "true")
# Many tests run the same tiny configs: a persistent compilation cache (in the
# checkout, ignored by git, shared by pytest-xdist's workers) compiles each program
# once per machine. IQFLOW_COMPILATION_CACHE=0 makes every test compile afresh.
os.environ.setdefault("IQFLOW_COMPILATION_CACHE", os.path.join(
    os.path.dirname(os.path.dirname(os.path.abspath(__file__))), ".pytest_xla_cache"))

from jaxsim.runner import enable_compilation_cache  # noqa: E402

enable_compilation_cache()
