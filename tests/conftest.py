import os

import pytest

# Tests never need the network, and must not pick up a user's W&B settings.
os.environ.setdefault("WANDB_MODE", "disabled")
os.environ.setdefault("WANDB_SILENT", "true")
os.environ.setdefault("WANDB_DISABLE_WEAVE", "true")
# The suite compiles far more than it runs (tiny configs): LLVM at -O0 compiles its
# programs about 40% faster (tests/test_engine.py + test_iqflow.py from a cold cache:
# 173 s -> 99 s on 2 cores). Tests compare numbers only between programs compiled
# alike (child processes inherit these flags). A level the user sets is kept.
if "xla_backend_optimization_level" not in os.environ.get("XLA_FLAGS", ""):
    os.environ["XLA_FLAGS"] = (os.environ.get("XLA_FLAGS", "")
                               + " --xla_backend_optimization_level=0").strip()
# Many tests run the same tiny configs: a persistent compilation cache (in the
# checkout, ignored by git, shared by pytest-xdist's workers) compiles each program
# once per machine. IQFLOW_COMPILATION_CACHE=0 makes every test compile afresh.
os.environ.setdefault("IQFLOW_COMPILATION_CACHE", os.path.join(
    os.path.dirname(os.path.dirname(os.path.abspath(__file__))), ".pytest_xla_cache"))

from jaxsim.runner import enable_compilation_cache  # noqa: E402

enable_compilation_cache()


def pytest_collection_modifyitems(config, items):
    """Heavy tests first, the heaviest (`heavy(minutes)`) first of all; otherwise in
    file order (a stable sort)."""
    def minutes(item) -> float:
        mark = item.get_closest_marker("heavy")
        return 0.0 if mark is None else float(mark.args[0]) if mark.args else 1.0

    items.sort(key=lambda item: -minutes(item))


@pytest.fixture
def signals_before_training(monkeypatch):
    """`send(signum, times)`: the runner's next run receives `times` signals just before
    its first chunk (where a signal sent during compilation is handled, since
    compilation cannot be cut short). Undone after the test."""
    import signal

    import jaxsim.runner

    real_tqdm = jaxsim.runner.tqdm

    def send(signum: int = signal.SIGINT, times: int = 1):
        def progress_bar_after_signals(*args, **kwargs):
            for _ in range(times):  # a second signal raises KeyboardInterrupt here
                os.kill(os.getpid(), signum)
            return real_tqdm(*args, **kwargs)

        monkeypatch.setattr(jaxsim.runner, "tqdm", progress_bar_after_signals)

    return send
