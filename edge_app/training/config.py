"""Presets are data. `edge-train ... --preset NAME` picks one; `--set key=value` overrides a field."""

from __future__ import annotations

from dataclasses import asdict, dataclass, fields, replace
from typing import Any

# `edge-train all` runs these in order (here, below the command and the card that both name them)
STEPS = ("split", "shortcuts", "tensors", "teacher", "teacher-compare", "student-ce", "student-kd", "ablation", "export",
         "evaluate", "card")
# run against an existing run folder, not part of `all`
EXTRA_STEPS = ("input-size", "loso")
# the dermoscopy sources staged under ../shared/data (pad_ufes20 is phone photos: the scope check's, never in-scope training data)
DERMOSCOPY_SOURCES = ("ham10000", "isic_archive", "isic2017", "isic2020")
PRECISIONS = ("auto", "float32", "mixed_float16", "mixed_bfloat16")


@dataclass(frozen=True)
class TrainConfig:
    preset: str = "cpu"
    model_version: str = "v3"  # the manifest's version prefix (`<model_version>-<preset>-<date>`)
    # data: one or more staged datasets under --data-root, each split on its own (grouped by lesion)
    datasets: tuple[str, ...] = ("ham10000", "isic_archive")
    exclude_datasets: tuple[str, ...] = ()  # left out of this run (e.g. `--set exclude_datasets=isic2020`)
    dataset_share: tuple[str, ...] = ("isic_archive:0.25",)  # share of the loss weight per dataset (rest: even)
    follow_up_share: float = 0.3  # HAM10000 follow-up nevi: this share of HAM's benign weight, whatever their count
    max_sample_weight: float = 0.0  # cap on one image's loss weight (mean 1; 0 = none): a source's few melanomas do not dominate
    augment_passes: int = 6  # device-augmented copies of the training split (before the pipeline); epochs cycle through them
    size: int = 128  # student input = preprocessor size
    split_seed: int = 0
    split_fractions: tuple[float, float, float] = (0.70, 0.15, 0.15)
    # teacher: each backbone fine-tuned (or frozen), its pooled features cached once; heads + fusion on top
    teacher_family: str = "lite"  # "lite" (../shared/weights) or "paper" (keras.applications)
    teacher_backbones: tuple[str, ...] = ("lite0", "lite1", "lite2")  # () = no teacher (teacher and KD steps skipped)
    teacher_size: int = 128  # backbone input: the cached student-size tensor resized to this
    teacher_tiny: bool = False  # paper family: reduced members (smoke tests)
    teacher_train: str = "finetune"  # "finetune" (Lite: late stages; paper family: whole net) or "frozen"
    teacher_freeze_stages: int = 3  # Lite fine-tuning: stem + this many of the 7 stages stay frozen (CPU time)
    teacher_epochs: int = 3
    teacher_lr: float = 5e-4
    head_epochs: int = 60
    # a second teacher measured on the same split (`teacher-compare` step); the better on validation distils the student
    compare_teacher: str = "paper-small"  # a preset name, or "" for none
    # student
    student_blocks: int = 7  # Lite0 blocks kept (7 = up to the first 80-channel block)
    student_head: int = 256
    student_init: str = "imagenet"  # "imagenet" (Lite0 trunk) or "random"
    init_from: str = ""  # a student .weights.h5 to continue from (same architecture), e.g. a shorter run's result
    student_freeze: int = 0  # stem + this many first blocks frozen (CPU time; 0 = train all)
    dx_weight: float = 0.5  # auxiliary 7-class diagnosis head: its loss weight (0 = no head)
    epochs: int = 24
    batch_size: int = 128
    lr: float = 2e-3
    # cheap levers, each off by default (issue 22 item 4: measure one at a time with `loso` on the same schedule)
    mixup_alpha: float = 0.0  # > 0: mixup of batch neighbours, lam ~ Beta(a, a)
    ema_momentum: float = 0.0  # > 0: validate and keep the exponential moving average of the weights (e.g. 0.99)
    tta_flips: bool = False  # the exported model averages the image and its mirror image inside the TFLite graph (2x inference)
    precision: str = "auto"  # student training: "auto" = mixed_bfloat16 on a GPU, float32 on a CPU; or one of PRECISIONS
    # distillation (alpha=1 would be plain CE). With kd_grid set, each (alpha, T) pair is trained for
    # kd_grid_epochs (0: the full schedule), the best on validation AUC is kept and, if the grid was
    # shortened, trained again for `epochs`. Without a grid, kd_alpha / kd_temperature are used.
    kd_alpha: float = 0.7
    kd_temperature: float = 2.0
    kd_grid: tuple[tuple[float, float], ...] = ((0.7, 2.0), (0.5, 4.0), (0.2, 4.0))
    kd_grid_epochs: int = 3
    # input-size study (`edge-train input-size`): each size trained briefly with CE, timed on the device path
    size_study: tuple[int, ...] = (96, 128, 160)
    size_study_epochs: int = 3
    size_study_images: int = 100
    # retrained preprocessing ablation (`edge-train ablation`): student retrained without each stage
    ablation_stages: tuple[str, ...] = ("crop", "dehair", "denoise", "contrast", "normalize")
    ablation_epochs: int = 6
    ablation_passes: int = 2
    # leave-one-source-out (`edge-train loso`): the student fitted without each source, scored on that source
    loso_sources: tuple[str, ...] = ()  # () = every source of the run
    loso_epochs: int = 0  # 0 = `epochs`
    # threshold: sensitivity >= min_sensitivity on each validation dataset separately; Platt calibration on validation
    min_sensitivity: float = 0.90
    calibration: str = "platt"  # "platt" | "none"
    n_boot: int = 1000
    seed: int = 0

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @property
    def sources(self) -> tuple[str, ...]:
        """The datasets this run trains on: `datasets` less `exclude_datasets`."""
        unknown = sorted(set(self.exclude_datasets) - set(self.datasets))
        if unknown:
            raise SystemExit(f"exclude_datasets {unknown} not among datasets {list(self.datasets)}")
        kept = tuple(d for d in self.datasets if d not in self.exclude_datasets)
        if not kept:
            raise SystemExit(f"every dataset excluded ({list(self.datasets)}): nothing to train on")
        return kept

    def share_of_sources(self) -> dict[str, float]:
        """`dataset_share` as {dataset: share of the total loss weight}."""
        out = {}
        for item in self.dataset_share:
            name, _, value = item.partition(":")
            try:
                out[name] = float(value)
            except ValueError:
                raise SystemExit(f"dataset_share {item!r}: expected NAME:SHARE, e.g. isic2020:0.1") from None
        if sum(out.values()) > 1.0 + 1e-9:
            raise SystemExit(f"dataset_share {list(self.dataset_share)}: shares add up to more than 1")
        return out

    def override(self, pairs: list[str]) -> TrainConfig:
        types = {f.name: f.type for f in fields(self)}
        changes = {}
        for pair in pairs:
            key, _, raw = pair.partition("=")
            if key not in types:
                raise SystemExit(f"--set {pair}: unknown field {key!r}; fields: {', '.join(types)}")
            cur = getattr(self, key)
            if isinstance(cur, bool):
                val: Any = raw.lower() in ("1", "true", "yes")
            elif isinstance(cur, int):
                val = int(raw)
            elif isinstance(cur, float):
                val = float(raw)
            elif key == "kd_grid":  # alpha:T pairs, e.g. 0.3:2,0.7:4
                val = tuple(tuple(float(v) for v in item.split(":")) for item in raw.split(",") if item)
            elif key == "split_fractions":
                val = tuple(float(v) for v in raw.split(","))
            elif isinstance(cur, tuple):
                val = tuple(v for v in raw.split(",") if v)
            else:
                val = raw
            changes[key] = val
        if changes.get("precision", self.precision) not in PRECISIONS:
            raise SystemExit(f"--set precision={changes['precision']}: choose from {', '.join(PRECISIONS)}")
        return replace(self, **changes)


PRESETS: dict[str, TrainConfig] = {
    # Model v3: HAM10000 + ISIC archive, device augmentation before the pipeline, whole trunk trained, 7-class aux head,
    # per-source threshold, Platt calibration. No teacher: the fused Lite teacher scored below the student (v2 card).
    "cpu": TrainConfig(compare_teacher="", teacher_backbones=()),
    # Model v4 (issue 22): every dermoscopy source, each split on its own by its group column, weighted per source (isic2020,
    # 98.6% benign, a small share and a cap per image so its few melanomas do not dominate); batch and LR for a GPU.
    "v4": TrainConfig(preset="v4", model_version="v4", compare_teacher="", teacher_backbones=(), datasets=DERMOSCOPY_SOURCES,
                      dataset_share=("isic_archive:0.2", "isic2017:0.2", "isic2020:0.1"), max_sample_weight=8.0,
                      batch_size=256, lr=3e-3),
    # v2's recipe: fused fine-tuned Lite teacher + paper-small comparison, distillation grid
    "kd": TrainConfig(preset="kd"),
    # The paper's families. No ImageNet weights reachable here: random init unless --weights DIR.
    "paper": TrainConfig(preset="paper", teacher_family="paper", compare_teacher="kd",
                         teacher_backbones=("resnet152v2", "convnextbase", "vitbase"), teacher_size=224),
    # The paper's families, reduced (ResNet50V2, ConvNeXtTiny, 2-layer ViT) at 64 px, trained from scratch: runnable on a CPU.
    "paper-small": TrainConfig(preset="paper-small", teacher_family="paper", compare_teacher="kd",
                               teacher_backbones=("resnet152v2", "convnextbase", "vitbase"),
                               teacher_size=64, teacher_tiny=True, teacher_epochs=2, teacher_lr=1e-3),
    # CI smoke test: a few dozen images, tiny sizes, one epoch.
    "tiny": TrainConfig(preset="tiny", size=32, compare_teacher="", augment_passes=2, ablation_stages=("dehair",),
                        ablation_epochs=1, ablation_passes=1, split_fractions=(0.5, 0.25, 0.25), teacher_backbones=("lite0",),
                        teacher_size=32, head_epochs=3,
                        teacher_epochs=1, student_blocks=3, student_head=16, student_freeze=1, epochs=1, batch_size=16,
                        kd_grid=((0.7, 2.0), (0.3, 4.0)), kd_grid_epochs=1, n_boot=20,
                        size_study=(24, 32), size_study_epochs=1, size_study_images=4, loso_epochs=1),
}


TEACHER_FIELDS = ("teacher_family", "teacher_backbones", "teacher_size", "teacher_tiny", "teacher_train", "teacher_freeze_stages",
                  "teacher_epochs", "teacher_lr", "head_epochs")


def teacher_of(cfg: TrainConfig, preset: str) -> TrainConfig:
    """`cfg` with the teacher of another preset (student, split and data settings unchanged)."""
    other = get_preset(preset)
    return replace(cfg, preset=other.preset, compare_teacher="", **{k: getattr(other, k) for k in TEACHER_FIELDS})


def get_preset(name: str) -> TrainConfig:
    if name not in PRESETS:
        raise SystemExit(f"unknown preset {name!r}; choose from {', '.join(PRESETS)}")
    return PRESETS[name]
