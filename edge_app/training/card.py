"""models/MODEL_CARD.md, rendered from the run's metrics.json (no number typed by hand) with `templates/model_card.md.j2`.

The layout and prose live in the template; this module gathers the figures (and computes the few derived ones). The scope
check's section is made here (`scope_section`) because `edge-train scope` also puts it back into an existing card.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import jinja2

from .config import STEPS
from .shortcuts import markdown as shortcut_markdown

TARGETS = {  # issue "Model v3": on the lesion-grouped test splits, at the shipped threshold
    "HAM10000 AUC": 0.93, "HAM10000 AUC without follow_up": 0.88, "isic_archive AUC": 0.90,
    "HAM10000 sensitivity": 0.90, "isic_archive sensitivity": 0.90, "HAM10000 specificity": 0.70, "ECE (test, all)": -0.05,
}


def _ci(d: dict) -> str:
    return f"{d['value']:.3f} [{d['ci95'][0]:.3f}, {d['ci95'][1]:.3f}]"


def _f(v: Any, nd: int = 3) -> str:
    return "n/a" if v is None else f"{v:.{nd}f}"


def _targets(m: dict[str, Any]) -> list[tuple[str, float | None, float]]:
    src = m.get("test", {}).get("breakdown", {}).get("sources", {})
    ham, isic = src.get("ham10000", {}), src.get("isic_archive", {})
    got = {
        "HAM10000 AUC": ham.get("auc", {}).get("value"),
        "HAM10000 AUC without follow_up": ham.get("auc_no_follow_up"),
        "isic_archive AUC": isic.get("auc", {}).get("value"),
        "HAM10000 sensitivity": ham.get("sensitivity", {}).get("value"),
        "isic_archive sensitivity": isic.get("sensitivity", {}).get("value"),
        "HAM10000 specificity": ham.get("specificity", {}).get("value"),
        "ECE (test, all)": m.get("calibration", {}).get("test_ece_after"),
    }
    return [(k, got[k], t) for k, t in TARGETS.items()]


def _step_config(run_dir: Path, step: str, cfg: dict[str, Any]) -> dict[str, Any]:
    """The config a step actually ran with (`config.<step>.<preset>.json` in the run folder), else this one's."""
    path = run_dir / f"config.{step}.{cfg['preset']}.json"
    return json.loads(path.read_text())["config"] if path.is_file() else cfg


SCOPE_START, SCOPE_END = "<!-- scope-check -->", "<!-- /scope-check -->"


def scope_section(block: dict[str, Any]) -> str:
    """The card's scope-check section from the manifest's `scope` block (written by the exporter or by
    `edge-train scope`, which puts it back into an existing card with `replace_scope_section`)."""
    if not block:
        return (f"{SCOPE_START}\n## Scope check\n\nThis model has no scope check (exported without a features output).\n"
                f"{SCOPE_END}")
    L = [SCOPE_START, "## Scope check (no verdict on what is not dermoscopy)\n"]
    a = L.append
    negatives = block.get("negatives", {})
    if "net_threshold" in block:  # with the scope network (edge-train scope)
        from .card_scope import scope_net_section

        L += scope_net_section(block)
    elif "head_threshold" not in block:  # novelty distance only (a sidecar from before the head)
        a(f"Method: {block.get('method')} on the {block.get('descriptor')}; {block.get('n_train')} training images; "
          f"validation dermoscopy flagged: {block.get('val_flagged', 0):.1%} of {block.get('n_val')}.")
    else:
        by_ds = ", ".join(f"{k} {v:.1%}" for k, v in block.get("val_flagged_by_dataset", {}).items())
        a(f"An image gets no verdict (`out_of_scope`) when either part flags it (`edge_app/scope.py`, NumPy on the device): "
          f"a **novelty** distance of the {block['descriptor']} to {block['n_train']} training images (PCA-Mahalanobis + "
          f"residual, {block['components']} components), or a **not-dermoscopy head** (logistic regression on the same "
          f"features) fitted on those images plus {block['n_augmented']} copies as other devices would take them, against "
          + ", ".join(f"{n} {k.replace('_', ' ')}" for k, n in negatives.items())
          + " images (generated; `lesion on skin` = real training lesions put into skin photos without a dermatoscope). "
          f"Thresholds on validation dermoscopy only: {block['rule']}. **{block['val_flagged']:.1%} of {block['n_val']} "
          f"validation images flagged** ({by_ds}).\n")
        loko = block.get("leave_one_kind_out_flagged", {})
        if loko:
            a("How the check fares on a kind of picture its head never saw (the head refitted without that kind; share of "
              "that kind flagged):\n")
            a("| kind left out | flagged |\n| --- | --- |")
            for kind, share in loko.items():
                a(f"| {kind.replace('_', ' ')} | {share:.1%} |")
        loso = block.get("leave_one_source_out_flagged", {})
        if loso:
            a("\nHow the check fares on a dermoscopy source it never saw (fitted and thresholded without it; share of that "
              "source's images flagged, i.e. refused although they are dermoscopy):\n")
            a("| source left out | flagged | images |\n| --- | --- | --- |")
            for source, r in loso.items():
                a(f"| {source} | {r['flagged']:.1%} | {r['n']} |")
            a("\nA check fitted on one small source (a few hundred images) refuses much of another: the in-scope side needs "
              "several dermatoscopes; a site with a new one sees its refusal rate on its own labelled images in `edge-app "
              "calibrate` (the count left out of scope) or `edge-app evaluate --json` (`out_of_scope_rate`).")
        a("\nHeld-out figures (generated images of other seeds, test lesions in skin photos, test dermoscopy as is and under "
          "each robustness shift): `python benchmarks/scope_check.py --shifts`, in the README. The negatives are generated or "
          "composited (sample photos of objects, real lesions in synthetic skin): real clinical photos and dermoscopy from "
          "other dermatoscopes have not been measured here.")
    if block.get("fitted_by"):
        a(f"\nThis scope check was fitted by `{block['fitted_by']}` (device runtime; the `.tflite` and every other number "
          "in this card are unchanged by it).")
    a(SCOPE_END)
    return "\n".join(L)


def replace_scope_section(card_path: Path, block: dict[str, Any]) -> bool:
    """Put `scope_section(block)` into an existing card: in place of the old one, else where `write_card` puts it."""
    if not card_path.is_file():
        return False
    text, section = card_path.read_text(), scope_section(block)
    if SCOPE_START in text and SCOPE_END in text:
        head, rest = text.split(SCOPE_START, 1)
        text = head + section + rest.split(SCOPE_END, 1)[1]
    elif "\n## Where each step ran" in text:  # where write_card puts it
        text = text.replace("\n## Where each step ran", "\n" + section + "\n\n## Where each step ran", 1)
    else:
        text = text.rstrip("\n") + "\n\n" + section + "\n"
    card_path.write_text(text)
    return True


DATASET_NOTES = {
    "ham10000": "`{data}/ham10000`: HAM10000 staged copy (200x150 JPEG, CC BY-NC 4.0).",
    "isic_archive": "`{data}/isic_archive`: ISIC archive UDA-1 nevi and melanomas from other clinics "
                    "and dermatoscopes (480-640 px, CC0; see its README).",
    "isic2017": "`{data}/isic2017`: ISIC 2017 challenge images, mostly other clinics than HAM10000 "
                "(256x256 squares squashed by an earlier uploader, once JPEG ~q75; see its README).",
    "isic2020": "`{data}/isic2020`: SIIM-ISIC 2020 subset, 130 patients, 98.6% benign (256x256 squashed squares, CC BY-NC 4.0; "
                "`lesion_id` = patient).",
}
GROUP_CAVEATS = {
    "isic_archive": "isic_archive publishes no lesion ids (`lesion_id` = image id), so two photos of one lesion "
                    "could sit on both sides there.",
    "isic2017": "isic2017 publishes none either (`lesion_id` = image id; exact copies removed, "
                "other photos of one lesion may remain).",
    "isic2020": "isic2020 is grouped by patient (its `lesion_id` column), a stricter grouping than by lesion.",
}
TEMPLATE = "model_card.md.j2"


def _environment() -> jinja2.Environment:
    env = jinja2.Environment(loader=jinja2.PackageLoader("edge_app.training", "templates"), trim_blocks=True, lstrip_blocks=True,
                             keep_trailing_newline=True, undefined=jinja2.StrictUndefined, autoescape=False)
    env.filters.update(ci=_ci, num=_f, pct=lambda v: f"{v:.1%}", basename=lambda p: Path(p).name)
    return env


def card_context(m: dict[str, Any], cfg: dict[str, Any], run_dir: Path, data: str, manifest_path: Path) -> dict[str, Any]:
    """Everything the card template shows, from the run's metrics and config (derived figures computed here)."""
    cfg = {"model_version": "v3", "max_sample_weight": 0.0, **cfg}
    ex, test = m.get("export", {}), m.get("test", {})
    bd, split = test.get("breakdown", {}), m.get("split", {})
    shipped_name = ex.get("shipped", "student_ce")
    sources = split.get("datasets") or [s for s in cfg["datasets"] if s not in cfg.get("exclude_datasets", ())]
    ctx: dict[str, Any] = {
        "m": m, "cfg": cfg, "ex": ex, "test": test, "shipped": test.get("shipped"), "bd": bd, "split": split,
        "cal": ex.get("calibration", {}), "st": m.get(shipped_name, {}), "data": data, "run_name": run_dir.name,
        "nan": float("nan"),
        "scfg": _step_config(run_dir, shipped_name.replace("_", "-"), cfg),
        "per_source_thresholds": ", ".join(f"{k} {v:.4f}" for k, v in ex.get("val_source_thresholds", {}).items()),
        "dataset_notes": " ".join([DATASET_NOTES.get(s, "`{data}/" + s + "`: see its README.").format(data=data) for s in sources]
                                  + ["Binary mapping: malignant = mel, bcc, akiec."]),
        "group_caveat": " ".join(GROUP_CAVEATS[s] for s in sources if s in GROUP_CAVEATS),
        "fractions": "/".join(str(round(100 * f)) for f in cfg["split_fractions"]),
        "shares": ", ".join(cfg.get("dataset_share", ())),
        "loss_weights": split.get("loss_weights"),
        "shortcuts": shortcut_markdown(m["shortcuts"]) if m.get("shortcuts") else None,
        "calib": m.get("calibration", {}), "loso": m.get("loso"), "dehair": m.get("dehair"), "shifts": m.get("shifts"),
        "cross": m.get("cross_dataset"), "study": m.get("input_size"),
        "timings": ", ".join(f"{k} {v}" for k, v in m.get("timings_s", {}).items()),
        "source_limitation": ("Two dermoscopy sources only" if len(sources) <= 2 else f"{len(sources)} dermoscopy sources"),
        "reproduce": m.get("reproduce") or f"edge-train all --preset {cfg['preset']} --data {data}",
        "steps": STEPS, "commands": "; ".join(f"`{c}`" for c in dict.fromkeys(m.get("commands", []))),
        "scope": scope_section(json.loads(manifest_path.read_text()).get("scope", {})) if manifest_path.is_file() else None,
    }
    if ctx["shipped"]:
        nfu = bd.get("all_no_follow_up", {})
        ctx["result_rows"] = [(name, r, r.get("auc_no_follow_up")) for name, r in bd.get("sources", {}).items()]
        ctx["result_rows"].append(("all", ctx["shipped"], nfu.get("auc")))
        ctx["targets"], ctx["missed"] = _target_rows(m, ex)
    ctx.update(_ablation(m, cfg, run_dir))
    sh = ctx["shifts"]
    moved = {k: r["sensitivity"] - sh["none"]["sensitivity"] for k, r in sh.items() if k != "none"} if sh else {}
    ctx["worst_shift"] = min(moved.items(), key=lambda kv: kv[1]) if moved else None
    ctx.update(_input_size(m))
    return ctx


def _target_rows(m: dict[str, Any], ex: dict[str, Any]) -> tuple[list[dict[str, Any]], list[str]]:
    rows, missed = [], []
    for name, v, t in _targets(m) + [("fp16 file KiB", ex.get("size_bytes", 0) / 1024, -500.0)]:
        ok = None if v is None else (v <= -t if t < 0 else v >= t)
        rows.append({"name": name, "op": "<=" if t < 0 else ">=", "bound": f"{abs(t):g}", "value": v,
                     "met": "n/a" if ok is None else ("yes" if ok else "**no**"),
                     "gap": "" if ok or v is None else f"{abs(v - abs(t)):.3f}"})
        if ok is False and name != "fp16 file KiB":
            missed.append(name)
    return rows, missed


def _ablation(m: dict[str, Any], cfg: dict[str, Any], run_dir: Path) -> dict[str, Any]:
    ab = m.get("ablation_retrained")
    if not ab:
        return {"ablation": None}
    full = ab.get("full pipeline", {})

    def delta(r: dict, key: str) -> str:
        return f"{full.get(key, 0) - r.get(key, 0):+.3f}" if key in r and key in full else "n/a"

    deltas = [f"`{k[8:]}` isic_archive {delta(r, 'test_auc_isic_archive')}, HAM10000 {delta(r, 'test_auc_ham10000')}, "
              f"HAM without follow_up {delta(r, 'test_auc_no_follow_up')}" for k, r in ab.items() if k.startswith("without ")]
    return {"ablation": ab, "acfg": _step_config(run_dir, "ablation", cfg), "ablation_deltas": deltas}


def _input_size(m: dict[str, Any]) -> dict[str, Any]:
    study = m.get("input_size")
    if not study:
        return {"study_epochs": None, "size_verdict": None}
    aucs = [r["val_auc"] for r in study["sizes"].values()]
    val_auc = m.get("export", {}).get("val_fp16", {}).get("auc")
    verdict = None
    if val_auc:
        half = (val_auc["ci95"][1] - val_auc["ci95"][0]) / 2
        fastest = min(study["sizes"], key=lambda k: study["sizes"][k]["latency_p50_ms"]["end_to_end"])
        ratio = study["sizes"][fastest]["end_to_end_ratio_to_shipped_size"]
        if max(aucs) - min(aucs) < half:
            why = (f"smaller than the shipped model's validation AUC 95% CI half-width ({half:.3f}): this data does not tell the "
                   f"sizes apart by accuracy. The preset's {study['shipped_size']} px is kept; {fastest} px would take x{ratio} "
                   f"of its end-to-end time with no measurable loss here, an option for a slower Pi (`--set size={fastest}`)")
        else:
            why = f"larger than the shipped model's validation AUC 95% CI half-width ({half:.3f})"
        verdict = f"Spread of validation AUC across sizes: {max(aucs) - min(aucs):.4f}, {why}."
    return {"study_epochs": next(iter(study["sizes"].values()))["epochs"], "size_verdict": verdict}


def write_card(path: Path, m: dict[str, Any], cfg: dict[str, Any], run_dir: Path, data: str) -> None:
    """Render the card template with the run's figures into `path`."""
    ctx = card_context(m, cfg, run_dir, data, path.parent / "student_fp16.json")
    path.write_text(_environment().get_template(TEMPLATE).render(**ctx))
