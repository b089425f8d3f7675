"""Time the GPU path: 500 sentence pairs × 2 BERT-base-sized models, LIME + SHAP + noise floor.

The workload of a realistic audit on an accelerator: every pair predicted by both models,
then each pair explained for both models with LIME (1,000 samples) and Partition SHAP (500
evaluations), the reference explained again for the noise floor. The models are BERT-base
sized (12 layers, 768 hidden, 12 heads, 3,072 FFN), built from a config with random weights
and a WordPiece vocabulary this script writes (no model hub); the candidate is the reference
with weight noise, so both models cost full forward passes and share one tokenizer. The
sentence pairs are synthetic, with premise/hypothesis lengths like NLI data.

Prints seconds per stage, the evaluator's counters (forward passes, real and padded tokens),
the achieved TFLOP/s on real tokens and the ratio to the FLOP limit (useful FLOPs ÷ the
device's dense bf16 peak). Without CUDA it runs a tiny smoke variant whose figures mean
nothing (`--smoke` forces it on a GPU too).
"""

from __future__ import annotations

import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench.conditions import set_conditions_before_torch  # noqa: E402

# Before anything imports torch (see bench/conditions.py).
set_conditions_before_torch()

import argparse  # noqa: E402
import json  # noqa: E402
import os  # noqa: E402
import tempfile  # noqa: E402
import threading  # noqa: E402
import time  # noqa: E402
from concurrent.futures import ProcessPoolExecutor, as_completed  # noqa: E402
from datetime import UTC, datetime  # noqa: E402
from typing import Any  # noqa: E402

import numpy as np  # noqa: E402
import torch  # noqa: E402

from trustdiff.config import ExplainSettings  # noqa: E402
from trustdiff.datasets import TextInput  # noqa: E402
from trustdiff.explain import explain_and_align  # noqa: E402
from trustdiff.explain.runner import DEFAULT_WORKERS  # noqa: E402
from trustdiff.inference import BatchingEvaluator, ModelRunner, load_model_runner  # noqa: E402
from trustdiff.plan import DEFAULT_BLOCK_INSTANCES  # noqa: E402
from trustdiff.threads import available_cores, configure_cpu_threads  # noqa: E402

SPECIAL_TOKENS = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
BERT_BASE = {"hidden_size": 768, "num_hidden_layers": 12, "num_attention_heads": 12,
             "intermediate_size": 3072}  # fmt: skip
SMOKE_MODEL = {"hidden_size": 64, "num_hidden_layers": 2, "num_attention_heads": 2,
               "intermediate_size": 128}  # fmt: skip
# Dense bf16 tensor-core peaks (no sparsity), from the vendors' data sheets.
PEAK_BF16_FLOPS = {"H200": 989e12, "H100": 989e12, "A100": 312e12, "L40S": 362e12,
                   "L4": 121e12, "A10": 125e12}  # fmt: skip
RESULTS = ROOT / "bench" / "results"


def synthetic_vocabulary(size: int, *, seed: int) -> list[str]:
    """`size` distinct lower-case pseudo-words of 1–3 syllables (whole WordPiece tokens)."""
    rng = np.random.default_rng(seed)
    onsets = [*"bcdfghjklmnprstvwz", "ch", "sh", "th", "st", "br", "tr", "pl"]
    vowels = ["a", "e", "i", "o", "u", "ai", "ea", "ou"]
    codas = ["", "", "n", "r", "s", "t", "l", "nd", "st"]
    words: dict[str, None] = {}
    while len(words) < size:
        syllables = int(rng.integers(1, 4))
        words[
            "".join(
                rng.choice(onsets) + rng.choice(vowels) + rng.choice(codas)
                for _ in range(syllables)
            )
        ] = None
    return list(words)


def sentence_pairs(words: list[str], count: int, *, seed: int) -> list[tuple[str, str]]:
    """Premise ~ 8–40 words (mean ≈ 20), hypothesis ~ 4–20 (mean ≈ 10), as in NLI sets."""
    rng = np.random.default_rng(seed)

    def sentence(mean: float, low: int, high: int) -> str:
        length = int(np.clip(rng.gamma(4.0, mean / 4.0), low, high))
        return " ".join(rng.choice(words, size=length))

    return [(sentence(20, 8, 40), sentence(10, 4, 20)) for _ in range(count)]


def build_models(folder: Path, words: list[str], model: dict[str, int]) -> tuple[Path, Path]:
    """Reference and candidate (reference + weight noise) checkpoints sharing one tokenizer."""
    from transformers import BertConfig, BertForSequenceClassification, BertTokenizerFast

    vocabulary = SPECIAL_TOKENS + words
    tokenizer = BertTokenizerFast(vocab={word: i for i, word in enumerate(vocabulary)})
    config = BertConfig(vocab_size=len(vocabulary), num_labels=3, **model)
    torch.manual_seed(0)
    reference = BertForSequenceClassification(config).eval()
    candidate = BertForSequenceClassification(config).eval()
    candidate.load_state_dict(reference.state_dict())
    with torch.no_grad():
        for parameter in candidate.parameters():
            parameter.add_(torch.randn_like(parameter) * 0.002)
    paths = folder / "reference", folder / "candidate"
    for path, network in zip(paths, (reference, candidate), strict=True):
        network.save_pretrained(path)
        tokenizer.save_pretrained(path)
    return paths


def forward_flops(runner: ModelRunner, tokens: int, mean_length: float) -> float:
    """Forward FLOPs of `tokens` real tokens: 2 × non-embedding weights per token, plus
    attention's QKᵀ and AV (4 × layers × hidden × sequence length per token)."""
    config: Any = runner.model.config
    embeddings = sum(
        parameter.numel()
        for name, parameter in runner.model.named_parameters()
        if "embeddings" in name
    )
    weights = runner.num_parameters - embeddings
    attention = 4 * config.num_hidden_layers * config.hidden_size * mean_length
    return float(tokens) * (2 * weights + attention)


def device_peak(device: torch.device, override: float | None) -> tuple[str, float | None]:
    if device.type != "cuda":
        return "cpu", override
    name = torch.cuda.get_device_name(device)
    if override is not None:
        return name, override
    return name, next((peak for key, peak in PEAK_BF16_FLOPS.items() if key in name), None)


class BusySampler:
    """The device's utilisation (percent of time a kernel ran, read through NVML every
    `interval` seconds) while the `with` block runs; `None` without CUDA or NVML."""

    def __init__(self, device: torch.device, interval: float = 0.1) -> None:
        self.device = device
        self.interval = interval
        self.samples: list[int] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._sample, name="busy-sampler", daemon=True)

    def __enter__(self) -> BusySampler:
        if self.device.type == "cuda":
            try:
                torch.cuda.utilization(self.device)
            except Exception as error:  # no NVML bindings: report no figure, not a failure
                print(f"GPU busy not sampled: {error}", file=sys.stderr)
            else:
                self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join()

    def _sample(self) -> None:
        while not self._stop.wait(self.interval):
            self.samples.append(int(torch.cuda.utilization(self.device)))

    @property
    def mean_percent(self) -> float | None:
        return float(np.mean(self.samples)) if self.samples else None


def progress_printer(started: float) -> Any:
    """Prints the explained count to stderr at every tenth of the work, with the time."""
    shown: set[int] = set()

    def progress(stage: str, done: int, total: int) -> None:
        tenth = 10 * done // max(total, 1)
        if tenth not in shown:
            shown.add(tenth)
            print(f"  {stage} {done}/{total} at {time.perf_counter() - started:.1f} s",
                  file=sys.stderr, flush=True)  # fmt: skip

    return progress


LABELS = ["a", "b", "c"]


def warm_up(evaluator: BatchingEvaluator, pair: TextInput, settings: ExplainSettings) -> None:
    """One instance explained, not timed: CUDA context and kernels, the allocator, shap's
    numba kernels. The evaluator's cache is emptied afterwards."""
    explain_and_align(
        evaluator,
        _Pairs([pair]),
        reference_proba=np.full((1, len(LABELS)), 1 / len(LABELS)),
        candidate_proba=np.full((1, len(LABELS)), 1 / len(LABELS)),
        settings=settings.model_copy(update={"instances": 1}),
        labels=LABELS,
        seed=1,
        progress=None,
        should_cancel=None,
    )
    if evaluator.runners[0].device.type == "cuda":
        torch.cuda.synchronize(evaluator.runners[0].device)
    evaluator.clear_cache()


class ExplainerProcesses:
    """`processes` explaining processes sharing the device, as a GPU worker host with that
    many worker processes runs an audit: each loads both models on the device once and is
    warmed up before any timing; an audit's instances are cut into blocks of
    `block_instances` (the service's `block_instances` setting), each explained by the
    next free process with `explain_rows`, as a worker explains a block; the parent aligns.
    Each process gets cores ÷ `processes` intra-op threads unless OMP_NUM_THREADS is set.
    `batching` goes to each process's `BatchingEvaluator`.
    """

    def __init__(
        self,
        processes: int,
        paths: tuple[Path, Path],
        placement: dict[str, Any],
        batching: dict[str, int],
        inputs: list[TextInput],
        settings: ExplainSettings,
    ) -> None:
        import multiprocessing

        context = multiprocessing.get_context("spawn")
        ready = context.Barrier(processes)
        self.inputs = inputs
        self.settings = settings
        self.executor = ProcessPoolExecutor(
            processes,
            mp_context=context,
            initializer=_start_explainer,
            initargs=(paths, placement, batching, inputs, settings, ready, processes),
        )
        # One task per process, held at the barrier until every process is loaded and warm.
        list(self.executor.map(_explainer_ready, range(processes)))
        self.stats: dict[str, float] = {}

    def explain_and_align(
        self,
        reference_proba: np.ndarray,
        candidate_proba: np.ndarray,
        *,
        block_instances: int,
        workers: int,
        progress: Any,
    ) -> None:
        from trustdiff.explain.runner import align_explained, select_instances, targets_by_row

        settings = self.settings
        selection = select_instances(
            self.inputs, count=settings.instances, seed=0, top_k=settings.top_k
        )
        indices = selection.indices
        targets = targets_by_row(
            indices, reference_proba, candidate_proba, None, [0] * len(self.inputs), settings
        )
        blocks = [
            indices[start : start + block_instances]
            for start in range(0, len(indices), block_instances)
        ]
        futures = [
            self.executor.submit(
                _explain_block, block, {index: targets[index] for index in block}, workers
            )
            for block in blocks
        ]
        results: dict[int, Any] = {}
        for future in as_completed(futures):
            explained, stats = future.result()
            results.update(explained)
            for name, value in stats.items():
                self.stats[name] = self.stats.get(name, 0.0) + value
            progress("explain", len(results), len(indices))
        align_explained(
            self.inputs,
            results,
            targets=targets,
            settings=settings,
            labels=LABELS,
            seed=0,
            selection=selection,
        )

    def close(self) -> dict[str, float]:
        self.executor.shutdown()
        return self.stats


_EXPLAINER: dict[str, Any] = {}


def _start_explainer(
    paths: tuple[Path, Path],
    placement: dict[str, Any],
    batching: dict[str, int],
    inputs: list[TextInput],
    settings: ExplainSettings,
    ready: Any,
    processes: int,
) -> None:
    configure_cpu_threads(processes)  # cores ÷ processes, as `trustdiff.block_processes`
    runners = [load_model_runner(path, transform=None, **placement) for path in paths]
    evaluator = BatchingEvaluator(runners, **batching)
    warm_up(evaluator, inputs[0], settings)
    _EXPLAINER.update(evaluator=evaluator, inputs=inputs, settings=settings, ready=ready)


def _explainer_ready(_: int) -> int:
    _EXPLAINER["ready"].wait(timeout=900)
    return os.getpid()


def _explain_block(
    block: list[int], targets: dict[int, tuple[int, int, int | None]], workers: int
) -> tuple[dict[int, Any], dict[str, float]]:
    from trustdiff.explain.runner import explain_rows

    evaluator: BatchingEvaluator = _EXPLAINER["evaluator"]
    before = evaluator.stats.as_dict()
    explained = explain_rows(
        evaluator,
        _EXPLAINER["inputs"],
        block,
        targets=targets,
        settings=_EXPLAINER["settings"],
        n_classes=len(LABELS),
        seed=0,
        progress=None,
        should_cancel=None,
        workers=workers,
    )
    after = evaluator.stats.as_dict()
    return explained, {name: after[name] - before[name] for name in before}


# Token budgets the forward ceiling tries, and how many real tokens it forwards per budget.
CEILING_BUDGETS = (8192, 16384, 32768, 65536, 131072)
CEILING_TOKENS = 4_000_000


def lime_samples(pairs: list[TextInput], count: int, *, seed: int) -> list[TextInput]:
    """About `count` of the inputs LIME sends for `pairs`: each pair's own samples
    (`lime_inputs`), an equal share per pair, each pair with its own seed."""
    from trustdiff.explain.lime_explainer import lime_inputs
    from trustdiff.explain.words import WordFeatures

    per_pair = max(2, count // len(pairs))
    return [
        value
        for index, pair in enumerate(pairs)
        for value in lime_inputs(
            WordFeatures.from_input(pair), num_samples=per_pair, seed=seed + index
        )
    ]


def forward_ceiling(
    runner: ModelRunner,
    inputs: list[TextInput],
    *,
    budgets: tuple[int, ...],
    repeats: int,
    batch_overhead_tokens: int | None = None,
) -> list[dict[str, Any]]:
    """What the device does with this workload's kind of inputs and nothing else to do: the
    inputs tokenized, length-sorted and padded into batches at each token budget and copied
    to the device beforehand (untimed), then only the forward passes timed, `repeats` times
    after one warm-up pass, median. The gap between this and an audit is what feeding the
    device costs; the gap between this and the FLOP limit is what the kernels leave.
    `batch_overhead_tokens` is the planner's price of a forward pass (the evaluator's
    default for the device when None)."""
    from trustdiff.batching import BATCH_OVERHEAD_TOKENS, pad_batch, plan_batches

    if batch_overhead_tokens is None:
        batch_overhead_tokens = BATCH_OVERHEAD_TOKENS[runner.device.type]

    encodings = runner.tokenize(inputs)
    lengths = [len(ids) for ids in encodings["input_ids"]]
    real = sum(lengths)
    flops = forward_flops(runner, real, real / len(lengths))
    rows: list[dict[str, Any]] = []
    for budget in budgets:
        batches = plan_batches(
            lengths,
            token_budget=budget,
            max_rows=budget,
            batch_overhead_tokens=batch_overhead_tokens,
        )
        padded = [
            pad_batch(
                encodings,
                rows_of_batch.tolist(),
                pad_token_id=runner.pad_token_id,
                padding_side=runner.padding_side,
            )
            for rows_of_batch in batches
        ]
        tensors = [runner.to_device(batch) for batch in padded]
        seconds = []
        with torch.inference_mode():
            for repeat in range(repeats + 1):
                if runner.device.type == "cuda":
                    torch.cuda.synchronize(runner.device)
                started = time.perf_counter()
                for batch_tensors in tensors:
                    runner.forward_tensors(batch_tensors)
                if runner.device.type == "cuda":
                    torch.cuda.synchronize(runner.device)
                if repeat:  # the first pass warms kernels and the allocator
                    seconds.append(time.perf_counter() - started)
        median = float(np.median(seconds))
        padded_tokens = sum(int(batch["input_ids"].size) for batch in padded)
        rows.append(
            {
                "token_budget": budget,
                "batch_overhead_tokens": batch_overhead_tokens,
                "forward_passes": len(batches),
                "real_tokens": real,
                "padding": padded_tokens / real - 1,
                "seconds": median,
                "seconds_per_repeat": seconds,
                "achieved_tflops": flops / median / 1e12,
            }
        )
        del tensors
    return rows


def batching_options(arguments: argparse.Namespace) -> dict[str, int]:
    """The `BatchingEvaluator` options given on the command line (the rest: its defaults)."""
    names = ("token_budget", "batch_overhead_tokens", "gpu_batch_size", "batch_size")
    return {
        name: getattr(arguments, name) for name in names if getattr(arguments, name) is not None
    }


class _Pairs:
    """The dataset as the explainers read it (gold labels are not used here)."""

    def __init__(self, inputs: list[TextInput]) -> None:
        self.inputs = inputs
        self.labels = [0] * len(inputs)


def run(arguments: argparse.Namespace) -> dict[str, Any]:
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    smoke = arguments.smoke or (device.type != "cuda" and not arguments.tiny_model)
    pairs = 4 if smoke else arguments.pairs
    settings = ExplainSettings(
        instances=pairs,
        lime_samples=50 if smoke else arguments.lime_samples,
        shap_max_evals=50 if smoke else arguments.shap_max_evals,
        noise_floor=True,
    )
    words = synthetic_vocabulary(8000, seed=0)
    dataset_inputs: list[TextInput] = list(sentence_pairs(words, pairs, seed=1))
    with tempfile.TemporaryDirectory(prefix="trustdiff-bench-gpu-") as folder:
        paths = build_models(
            Path(folder), words, SMOKE_MODEL if smoke or arguments.tiny_model else BERT_BASE
        )
        placement = {"device": str(device), "dtype": arguments.dtype, "compile": arguments.compile}
        runners = [load_model_runner(path, transform=None, **placement) for path in paths]
        if arguments.forward_ceiling:
            return ceiling_report(runners[0], dataset_inputs, arguments, device, smoke=smoke)
        batching = batching_options(arguments)
        evaluator = BatchingEvaluator(runners, **batching)
        pool = None
        if arguments.processes > 1:
            # This process only predicts: its warm-up is a prediction.
            evaluator.predict_proba(dataset_inputs[:64])
            evaluator.clear_cache()
            pool = ExplainerProcesses(
                arguments.processes, paths, placement, batching, dataset_inputs, settings
            )
        else:
            warm_up(evaluator, dataset_inputs[0], settings)
        warm = evaluator.stats.as_dict()

        started = time.perf_counter()
        reference_proba, candidate_proba = evaluator.predict_proba(dataset_inputs)
        predicted = time.perf_counter()
        with BusySampler(device) as busy:
            if pool is None:
                explain_and_align(
                    evaluator,
                    _Pairs(dataset_inputs),
                    reference_proba=reference_proba,
                    candidate_proba=candidate_proba,
                    settings=settings,
                    labels=LABELS,
                    seed=0,
                    progress=progress_printer(started),
                    should_cancel=None,
                    workers=arguments.workers,
                )
            else:
                pool.explain_and_align(
                    reference_proba,
                    candidate_proba,
                    block_instances=arguments.block_instances,
                    workers=arguments.workers,
                    progress=progress_printer(started),
                )
            if device.type == "cuda":
                torch.cuda.synchronize(device)
        finished = time.perf_counter()
        stats = {name: value - warm[name] for name, value in evaluator.stats.as_dict().items()}
        if pool is not None:
            for name, value in pool.close().items():
                stats[name] += value
    rows = max(stats["unique_inputs_forwarded"], 1)
    mean_length = stats["real_tokens"] / (2 * rows)
    flops = sum(
        forward_flops(runner, int(stats["real_tokens"] / 2), mean_length) for runner in runners
    )
    seconds = finished - started
    name, peak = device_peak(device, arguments.peak_tflops and arguments.peak_tflops * 1e12)
    return {
        "created_at": datetime.now(UTC).isoformat(),
        "smoke": smoke,
        "device": name,
        "dtype": str(runners[0].dtype).removeprefix("torch."),
        "compiled": runners[0].compiled,
        "torch": torch.__version__,
        "pairs": pairs,
        "model": "tiny" if smoke or arguments.tiny_model else "bert-base",
        "workers": arguments.workers,
        "processes": arguments.processes,
        "block_instances": arguments.block_instances if arguments.processes > 1 else None,
        "threads_per_process": (
            max(1, available_cores() // arguments.processes)
            if "OMP_NUM_THREADS" not in os.environ
            else os.environ["OMP_NUM_THREADS"]
        ),
        "tokenizers_parallelism": os.environ.get("TOKENIZERS_PARALLELISM"),
        "batching": batching,
        "lime_samples": settings.lime_samples,
        "shap_max_evals": settings.shap_max_evals,
        "seconds": {
            "total": seconds,
            "predict": predicted - started,
            "explain": finished - predicted,
            "forward": stats["forward_seconds"],
            "tokenize": stats["tokenize_seconds"],
        },
        "gpu_busy_percent_explain": busy.mean_percent,
        "evaluator": stats,
        "padding": stats["padded_tokens"] / max(stats["real_tokens"], 1) - 1,
        "useful_tflop": flops / 1e12,
        "achieved_tflops": flops / seconds / 1e12,
        "peak_tflops": None if peak is None else peak / 1e12,
        "flop_limit_seconds": None if peak is None else flops / peak,
        "ratio_to_flop_limit": None if peak is None else seconds / (flops / peak),
    }


def ceiling_report(
    runner: ModelRunner,
    pairs: list[TextInput],
    arguments: argparse.Namespace,
    device: torch.device,
    *,
    smoke: bool,
) -> dict[str, Any]:
    """`forward_ceiling` of the reference on LIME's own samples of `pairs`, about
    `CEILING_TOKENS` real tokens of them (a few thousand in a smoke run)."""
    sample = lime_samples(pairs, 1000, seed=2)
    mean_tokens = np.mean([len(ids) for ids in runner.tokenize(sample)["input_ids"]])
    tokens = 20_000 if smoke else CEILING_TOKENS
    inputs = lime_samples(pairs, int(tokens / mean_tokens), seed=3)
    budgets = CEILING_BUDGETS[:2] if smoke else CEILING_BUDGETS
    rows = forward_ceiling(
        runner,
        inputs,
        budgets=budgets,
        repeats=3,
        batch_overhead_tokens=arguments.batch_overhead_tokens,
    )
    name, peak = device_peak(device, arguments.peak_tflops and arguments.peak_tflops * 1e12)
    for row in rows:
        row["ratio_to_flop_limit"] = None if peak is None else peak / 1e12 / row["achieved_tflops"]
    return {
        "created_at": datetime.now(UTC).isoformat(),
        "mode": "forward_ceiling",
        "smoke": smoke,
        "device": name,
        "dtype": str(runner.dtype).removeprefix("torch."),
        "torch": torch.__version__,
        "compiled": runner.compiled,
        "model": "tiny" if smoke or arguments.tiny_model else "bert-base",
        "inputs": len(inputs),
        "peak_tflops": None if peak is None else peak / 1e12,
        "budgets": rows,
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--pairs", type=int, default=500)
    parser.add_argument("--lime-samples", type=int, default=1000)
    parser.add_argument("--shap-max-evals", type=int, default=500)
    parser.add_argument(
        "--workers", type=int, default=DEFAULT_WORKERS, help="instances explained at once"
    )
    parser.add_argument(
        "--processes",
        type=int,
        default=1,
        help="explaining processes sharing the device, as worker processes of a GPU host",
    )
    parser.add_argument(
        "--block-instances",
        type=int,
        default=DEFAULT_BLOCK_INSTANCES,
        help="instances per block handed to a process (with --processes)",
    )
    parser.add_argument("--dtype", default="auto", choices=["auto", "float32", "bfloat16"])
    batching = parser.add_argument_group(
        "batching", "the evaluator's batch plan (default: its own for the device)"
    )
    batching.add_argument(
        "--token-budget", type=int, help="at most this many padded tokens a forward pass"
    )
    batching.add_argument(
        "--batch-overhead-tokens",
        type=int,
        help="what one more forward pass costs, in tokens: a batch closes at a width jump "
        "whose padding would cost more",
    )
    batching.add_argument("--gpu-batch-size", type=int, help="rows per forward pass on CUDA")
    batching.add_argument(
        "--batch-size",
        type=int,
        help="rows per forward pass on the CPU (with the two above, a CPU run plans as CUDA)",
    )
    parser.add_argument(
        "--peak-tflops", type=float, help="the device's dense peak, when not in the table"
    )
    parser.add_argument("--smoke", action="store_true", help="tiny run, even on a GPU")
    parser.add_argument(
        "--tiny-model",
        action="store_true",
        help="the full workload on a 2-layer model: what the host's work alone costs",
    )
    parser.add_argument(
        "--forward-ceiling",
        action="store_true",
        help="instead of the audit: the reference's forward passes alone on LIME's samples, "
        "pre-batched on the device, at several token budgets",
    )
    parser.add_argument(
        "--compile",
        action="store_true",
        help="torch.compile the models (the audit's compile option); compiled in the warm-up",
    )
    arguments = parser.parse_args()
    if not torch.cuda.is_available() and not (arguments.smoke or arguments.tiny_model):
        print("no CUDA device: running the tiny smoke variant (its figures mean nothing)")
    result = run(arguments)
    RESULTS.mkdir(parents=True, exist_ok=True)
    out = RESULTS / f"bench_gpu-{datetime.now(UTC):%Y%m%dT%H%M%SZ}.json"
    out.write_text(json.dumps(result, indent=2) + "\n", encoding="utf-8")
    if result.get("mode") == "forward_ceiling":
        print(
            f"device {result['device']}  dtype {result['dtype']}  forward ceiling of "
            f"{result['inputs']} LIME samples{'  compiled' if result['compiled'] else ''}"
        )
        for row in result["budgets"]:
            ratio = row["ratio_to_flop_limit"]
            print(
                f"  budget {row['token_budget']:>7} tokens: {row['forward_passes']:>5} passes, "
                f"padding {row['padding']:.1%}, {row['seconds']:.2f} s, "
                f"{row['achieved_tflops']:.1f} TFLOP/s"
                + ("" if ratio is None else f", {ratio:.2f}x the FLOP limit")
            )
        print(f"written {out}")
        return 0
    seconds = result["seconds"]
    print(
        f"device {result['device']}  dtype {result['dtype']}"
        f"{'  compiled' if result['compiled'] else ''}  pairs {result['pairs']}  "
        f"LIME {result['lime_samples']}  SHAP {result['shap_max_evals']}  + noise floor"
    )
    print(
        f"seconds: total {seconds['total']:.1f}  predict {seconds['predict']:.1f}  "
        f"explain {seconds['explain']:.1f}  in the evaluator {seconds['forward']:.1f} "
        f"(tokenizing {seconds['tokenize']:.1f})"
    )
    if result["gpu_busy_percent_explain"] is not None:
        print(f"GPU busy during the explain stage: {result['gpu_busy_percent_explain']:.0f}%")
    stats = result["evaluator"]
    print(
        f"forward passes {stats['batches']:.0f}  unique inputs "
        f"{stats['unique_inputs_forwarded']:.0f}  real tokens {stats['real_tokens']:.0f}  "
        f"padding {result['padding']:.1%}"
    )
    print(
        f"achieved {result['achieved_tflops']:.1f} TFLOP/s on {result['useful_tflop']:.1f} "
        f"useful TFLOP"
    )
    if result["ratio_to_flop_limit"] is not None:
        print(
            f"FLOP limit {result['flop_limit_seconds']:.1f} s at {result['peak_tflops']:.0f} "
            f"TFLOP/s: ratio {result['ratio_to_flop_limit']:.1f}"
        )
    print(f"written {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
