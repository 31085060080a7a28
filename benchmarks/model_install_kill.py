"""Model updates under kill -9: SIGKILL `edge-app model install` N times at every step, and check
that `models/current` always names the old or the new model, complete and usable, never neither.

    .venv/bin/python benchmarks/model_install_kill.py              # 50 kills (about two minutes)
    .venv/bin/python benchmarks/model_install_kill.py --kills 5 --seed 1

Two signed bundles are made from the shipped model (A as shipped, B the same weights with a
site threshold, a different model folder), A is installed, then each round runs
`python -m edge_app model install` with the bundle that is not current and kills it with
SIGKILL: either at a random moment of the whole run (imports and runtime load included; the
range is the duration of an install measured first), or right after the install reported one of
its steps (archive, signature, sha256, preprocessing, golden self-test, smoke screening,
unpacked, current), after a random delay of up to a few milliseconds, which puts kills between
unpacking and the link switch and between the switch and the audit line. After each kill the parent checks, as the app
would at start:

- `models/current` points to the model that was current before (old) or to the bundle's (new);
- that folder is complete: every member, sha256 of the .tflite as its manifest says;
- `ModelStore.load_for_serving` serves it with no fallback (sha256, preprocessing, golden self-test);
- when the new model is current, audit.log's last `model_install` line names it (the line is
  written before the switch, so no model becomes current unrecorded);
- a final install without a kill removes every leftover `.incoming-*` folder and temporary link.

Exit status 0 only when every check passed after every kill. The last line is a JSON summary.
"""

from __future__ import annotations

import argparse
import collections
import json
import os
import random
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

STEPS = ("archive", "signature", "sha256", "preprocessing", "golden self-test", "smoke screening", "unpacked", "current")


def make_bundles(work: Path, model: Path) -> tuple[Path, Path, Path]:
    """(bundle A, bundle B, trusted keys folder)."""
    import shutil

    from edge_app.bundle import CARD_NAME, generate_key, model_files_for, write_bundle
    from edge_app.manifest import aux_path_for, scope_model_path_for

    private, public = generate_key(work / "signing", "kill-test")
    trusted = work / "trusted_keys"
    trusted.mkdir()
    shutil.copyfile(public, trusted / public.name)
    out = []
    for tag, bump in (("a", 0.0), ("b", 0.05)):
        folder = work / tag
        folder.mkdir()
        shutil.copyfile(model, folder / model.name)
        for part in (aux_path_for(model), scope_model_path_for(model)):
            if part.is_file():  # the sidecar and scope network the manifest names travel with the model
                shutil.copyfile(part, folder / part.name)
        manifest = json.loads(model.with_suffix(".json").read_text())
        if bump:
            manifest["version"] += "-site"
            manifest["threshold"] = round(min(0.95, manifest["threshold"] + bump), 4)
        (folder / model.with_suffix(".json").name).write_text(json.dumps(manifest, indent=2) + "\n")
        card = model.parent / CARD_NAME
        (folder / CARD_NAME).write_text(card.read_text() if card.is_file() else "# Model card\n")
        write_bundle(model_files_for(folder / model.name), work / f"{tag}.zip", private)
        out.append(work / f"{tag}.zip")
    return out[0], out[1], trusted


def folder_of(bundle: Path) -> str:
    from edge_app.bundle import read_bundle, sha256_bytes

    return sha256_bytes(read_bundle(bundle).manifest_bytes)


def check(data_dir: Path, model: Path, old: str, new: str) -> tuple[str, list[str]]:
    """('old' | 'new' | 'neither', problems) for the state a kill left."""
    from edge_app.bundle import BundleError, read_model_dir, verify_model_sha256
    from edge_app.fileio import AUDIT_LOG
    from edge_app.model_store import CURRENT, ModelStore
    from edge_app.runtime import ModelError

    store = ModelStore(data_dir, model)
    target = store.target(CURRENT)
    which = "old" if target == old else "new" if target == new else "neither"
    problems = [] if which != "neither" else [f"current -> {target!r}, neither the old nor the new model"]
    installs = [json.loads(line) for line in (data_dir / AUDIT_LOG).read_text().splitlines()
                if '"model_install"' in line] if (data_dir / AUDIT_LOG).exists() else []
    if which == "new" and (not installs or installs[-1]["folder"] != new):
        problems.append("the new model is current but audit.log has no model_install line for it")
    if target is not None:
        try:
            files = read_model_dir(store.dir / target)
            verify_model_sha256(files, files.manifest())
        except (BundleError, OSError) as exc:
            problems.append(f"current model folder incomplete: {exc}")
        try:
            classifier, in_force = store.load_for_serving(num_threads=1)
            if in_force.fallback or in_force.model_sha256 != classifier.sha256 or in_force.source != "installed":
                problems.append(f"the app would not serve current: {in_force.fallback or in_force.source}")
        except ModelError as exc:
            problems.append(f"the app would not start: {exc}")
    return which, problems


def debris(data_dir: Path) -> list[str]:
    from edge_app.model_store import DEBRIS_PREFIXES

    models = data_dir / "models"
    return sorted(p.name for p in models.iterdir() if p.name.startswith(DEBRIS_PREFIXES)) if models.is_dir() else []


def install_cmd(bundle: Path, data_dir: Path, trusted: Path, model: Path) -> list[str]:
    return [sys.executable, "-m", "edge_app", "model", "install", str(bundle), "--data-dir", str(data_dir),
            "--trusted-keys", str(trusted), "--threads", "1"]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--kills", type=int, default=50)
    parser.add_argument("--seed", type=int, default=2026)
    parser.add_argument("--model", default=None, help="default: models/student_fp16.tflite, else the tiny test model")
    parser.add_argument("--work-dir", default=None, help="default: a fresh temporary directory")
    args = parser.parse_args()
    model = Path(args.model or next(p for p in (ROOT / "models" / "student_fp16.tflite",
                                                ROOT / "tests" / "fixtures" / "tiny_fp16.tflite") if p.is_file()))
    work = Path(args.work_dir or tempfile.mkdtemp(prefix="dermaedge-install-kill-"))
    work.mkdir(parents=True, exist_ok=True)
    data_dir = work / "data"
    env = os.environ | {"PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))}
    bundle_a, bundle_b, trusted = make_bundles(work, model)
    folders = {bundle_a: folder_of(bundle_a), bundle_b: folder_of(bundle_b)}
    started = time.monotonic()
    first = subprocess.run(install_cmd(bundle_a, data_dir, trusted, model), env=env, capture_output=True, text=True, check=False)
    install_s = time.monotonic() - started
    if first.returncode != 0:
        print(f"the first install failed:\n{first.stdout}{first.stderr}", file=sys.stderr)
        return 2

    rng = random.Random(args.seed)
    outcomes: collections.Counter[str] = collections.Counter()
    killed_at: collections.Counter[str] = collections.Counter()
    problems: list[str] = []
    debris_after_kills = 0
    t0 = time.monotonic()
    current = bundle_a
    for k in range(args.kills):
        bundle = bundle_b if current == bundle_a else bundle_a
        old, new = folders[current], folders[bundle]
        point = rng.choice(("any moment",) + STEPS)
        proc = subprocess.Popen(install_cmd(bundle, data_dir, trusted, model), env=env, stdout=subprocess.PIPE,
                                stderr=subprocess.DEVNULL, text=True)
        if point == "any moment":
            time.sleep(rng.uniform(0.0, install_s))
        else:
            for line in proc.stdout:
                if line.strip().startswith(point + " ") or line.strip().startswith(point + "\t"):
                    break
            time.sleep(rng.uniform(0.0, 0.004))
        exited_first = proc.poll() is not None
        if not exited_first:
            os.kill(proc.pid, signal.SIGKILL)
        proc.wait()
        proc.stdout.close()
        where = "finished before the kill" if exited_first else point
        killed_at[where] += 1
        which, found = check(data_dir, model, old, new)
        outcomes[which] += 1
        left = debris(data_dir)
        debris_after_kills += bool(left)
        if found:
            problems += [f"kill {k + 1} ({where}): {p}" for p in found]
        if which == "new":
            current = bundle
        print(f"kill {k + 1:3d}/{args.kills}: at {where:<24} -> {which} model current"
              f"{'  debris ' + ','.join(x.split('-')[0] for x in left) if left else ''}"
              f"{'  PROBLEMS ' + str(found) if found else ''}", flush=True)

    # One more install without a kill: it must succeed and clear what the kills left.
    bundle = bundle_b if current == bundle_a else bundle_a
    final = subprocess.run(install_cmd(bundle, data_dir, trusted, model), env=env, capture_output=True, text=True, check=False)
    if final.returncode != 0:
        problems.append(f"install after the kills failed: {final.stderr.strip()}")
    if debris(data_dir):
        problems.append(f"debris after a clean install: {debris(data_dir)}")
    which, found = check(data_dir, model, folders[current], folders[bundle])
    problems += [f"after the final install: {p}" for p in found]
    if which != "new":
        problems.append("the final install did not make its model current")

    summary = {"kills": args.kills, "old_current": outcomes["old"], "new_current": outcomes["new"],
               "neither_current": outcomes["neither"], "killed_at": dict(sorted(killed_at.items())),
               "kills_leaving_debris": debris_after_kills, "problems": len(problems),
               "one_install_s": round(install_s, 2), "seconds": round(time.monotonic() - t0, 1),
               "work_dir": str(work)}
    for p in problems:
        print(f"PROBLEM: {p}", file=sys.stderr)
    print(json.dumps(summary), flush=True)
    if killed_at["finished before the kill"] == sum(killed_at.values()):
        print("PROBLEM no work done: no install was interrupted by a kill", file=sys.stderr)
        return 1
    return 0 if not problems else 1


if __name__ == "__main__":
    sys.exit(main())
