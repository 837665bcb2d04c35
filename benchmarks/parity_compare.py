"""Compare the JSON of two `benchmarks/parity.sh` folders, figure by figure, ignoring
what differs between any two runs (timing, paths, the flags' echo). Prints each file
as identical or its differences; keys that only the new side has are listed apart as
additions (new figures, which change no old one). Exits with the number of files that
differ.

    python benchmarks/parity_compare.py OLD_FOLDER NEW_FOLDER
"""

from __future__ import annotations

import json
import os
import sys

SKIP = {"episodes_per_s", "env_steps_per_s", "compile_s", "wandb_dir", "train_s", "machine",
        "args", "plots", "out", "timing", "checkpoint_dir", "mechanism_from", "elapsed_s"}


def differences(old, new, path: str = "") -> list[str]:
    if isinstance(old, dict) and isinstance(new, dict):
        found = []
        for key in sorted(set(old) | set(new)):
            if key in SKIP:
                continue
            if key not in old or key not in new:
                found.append(f"{path}/{key}: only in {'new' if key in new else 'old'}")
            else:
                found += differences(old[key], new[key], f"{path}/{key}")
        return found
    if isinstance(old, list) and isinstance(new, list) and len(old) == len(new):
        return [d for i, (a, b) in enumerate(zip(old, new, strict=True))
                for d in differences(a, b, f"{path}[{i}]")]
    both_nan = old != old and new != new  # NaN == NaN here
    return [] if old == new or both_nan else [f"{path}: {str(old)[:80]} != {str(new)[:80]}"]


def main(old_dir: str, new_dir: str) -> int:
    bad = 0
    for name in sorted(f for f in os.listdir(old_dir) if f.endswith(".json")):
        if not os.path.exists(os.path.join(new_dir, name)):
            print("MISSING", name)
            bad += 1
            continue
        with open(os.path.join(old_dir, name)) as a, open(os.path.join(new_dir, name)) as b:
            found = differences(json.load(a), json.load(b))
        added = sorted({line.split(": only in new")[0].rsplit("/", 1)[1]
                        for line in found if line.endswith("only in new")})
        found = [line for line in found if not line.endswith("only in new")]
        extra = f" (new keys: {', '.join(added)})" if added else ""
        print(name, ("identical" if not found else f"{len(found)} differences") + extra)
        for line in found[:8]:
            print("   ", line)
        bad += bool(found)
    return bad


if __name__ == "__main__":
    sys.exit(main(*sys.argv[1:3]))
