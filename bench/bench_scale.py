"""Scale benchmark: one large synthetic audit through the CLI engine, stage by stage.

    make bench-scale                                   # 1,000,000 rows
    python bench/bench_scale.py --rows 100000          # what a small machine affords

Builds tiny BERT checkpoints with the test suite's builder (`tests/tiny_models.py`: a
reference and noisy "compressed" copies, untrained: this measures the machinery, not the
models), writes a synthetic JSONL dataset of that model's words,
then runs `trustdiff audit` as a child process three times:

1. cold: `--no-cache`; the reference is predicted, both checkpoints are hashed;
2. the same audit with an empty `--cache-dir`: fills the cache;
3. another candidate against the same reference and dataset with that cache: the reference
   predictions and the reference's fingerprint come from the cache.

For each it records the wall time, the engine's per-stage timings, the child's peak RSS
(`ru_maxrss` of the waited-for child), the result document's and the rows file's size, and
the time to the first page of the rows file (`read_rows_page`, what `GET /rows` serves), in
a fresh process (pyarrow import included) and again warm, and of a page of flipped rows
from the middle of the file. Results go to `out/bench-scale/`. The same audit through the
service, sharded over workers: `bench/bench_scale_service.py`.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import random
import subprocess
import sys
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
# The benchmark runs from a checkout, as the tests do; neither is part of the package.
sys.path.insert(0, str(ROOT))

from tests.tiny_models import (  # noqa: E402
    BINARY_LABELS,
    NEGATIVE_WORDS,
    NEUTRAL_WORDS,
    POSITIVE_WORDS,
    build_tiny_bert,
)

WORDS = NEUTRAL_WORDS + POSITIVE_WORDS + NEGATIVE_WORDS
PAGE_PROBE = """
import sys, time
started = time.perf_counter()
from trustdiff.rows import read_rows_page
page = read_rows_page(sys.argv[1], limit=100)
first = time.perf_counter() - started
started = time.perf_counter()
read_rows_page(sys.argv[1], limit=100)
warm = time.perf_counter() - started
started = time.perf_counter()
read_rows_page(sys.argv[1], position=int(sys.argv[2]), limit=100, flipped_only=True)
print(first, warm, time.perf_counter() - started, len(page.items))
"""


def build_checkpoint(path: Path, *, seed: int, weight_noise: float = 0.0) -> Path:
    """`build_tiny_bert` left untrained, built once: a folder that has one is reused."""
    if (path / "config.json").is_file():
        return path
    return build_tiny_bert(path, seed=seed, train_steps=0, weight_noise=weight_noise)


def write_dataset(path: Path, rows: int, *, seed: int) -> Path:
    if path.is_file() and sum(1 for _ in path.open()) == rows:
        return path
    rng = random.Random(seed)
    with path.open("w", encoding="utf-8") as handle:
        for _ in range(rows):
            words = rng.choices(WORDS, k=rng.randint(4, 12))
            handle.write(
                json.dumps({"text": " ".join(words), "label": rng.choice(BINARY_LABELS)}) + "\n"
            )
    return path


def run_audit(
    work: Path, name: str, candidate: Path, arguments: argparse.Namespace, *, cache: Path | None
) -> dict[str, Any]:
    out = work / f"{name}.json"
    rows = work / f"{name}.rows.parquet"
    command = [
        str(Path(sys.executable).parent / "trustdiff"), "audit",
        "--reference", str(work / "reference"),
        "--candidate", str(candidate),
        "--dataset", str(work / "dataset.jsonl"),
        "--bootstrap", str(arguments.bootstrap),
        "--explain-instances", "0",
        "--device", "cpu",
        "--batch-size", str(arguments.batch_size),
        "--out", str(out),
        "--rows", str(rows),
        "--quiet",
    ]  # fmt: skip
    command += ["--no-cache"] if cache is None else ["--cache-dir", str(cache)]
    started = time.perf_counter()
    child = subprocess.Popen(command, cwd=ROOT, stdout=subprocess.DEVNULL)
    _, status, usage = os.wait4(child.pid, 0)
    wall = time.perf_counter() - started
    exit_code = os.waitstatus_to_exitcode(status)
    if exit_code not in (0, 1):  # 0 and 1 are the gate's verdicts; anything else failed
        raise SystemExit(f"{name}: `trustdiff audit` exited with {exit_code}: {' '.join(command)}")
    document = json.loads(out.read_text())
    probe = subprocess.run(
        [sys.executable, "-c", PAGE_PROBE, str(rows), str(arguments.rows // 2)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=True,
    )
    first_page_cold, first_page_warm, flipped_page_warm, items = probe.stdout.split()
    return {
        "wall_s": round(wall, 2),
        "stages_s": {
            key: round(value, 3) for key, value in document["manifest"]["timings"].items()
        },
        # Linux reports ru_maxrss in KiB.
        "peak_rss_mib": round(usage.ru_maxrss / 1024, 1),
        "document_bytes": out.stat().st_size,
        "rows_file_bytes": rows.stat().st_size,
        "rows_in_file": document["rows"]["count"],
        "first_rows_page_ms_cold_process": round(float(first_page_cold) * 1000, 1),
        "first_rows_page_ms_warm": round(float(first_page_warm) * 1000, 1),
        "flipped_page_mid_file_ms": round(float(flipped_page_warm) * 1000, 1),
        "first_page_items": int(items),
        "gate_passed": document["gate"]["passed"],
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--bootstrap", type=int, default=1000, help="resamples (the default)")
    parser.add_argument("--batch-size", type=int, default=256)
    parser.add_argument("--out-dir", type=Path, default=ROOT / "out" / "bench-scale")
    arguments = parser.parse_args()
    work = arguments.out_dir
    work.mkdir(parents=True, exist_ok=True)
    build_checkpoint(work / "reference", seed=0)
    build_checkpoint(work / "candidate", seed=0, weight_noise=0.02)
    build_checkpoint(work / "candidate-b", seed=0, weight_noise=0.05)
    write_dataset(work / "dataset.jsonl", arguments.rows, seed=1)
    cache = work / "cache"
    if cache.exists():
        import shutil

        shutil.rmtree(cache)
    runs = {
        "cold_no_cache": run_audit(work, "cold", work / "candidate", arguments, cache=None),
        "fills_cache": run_audit(work, "fill", work / "candidate", arguments, cache=cache),
        "second_candidate_cached_reference": run_audit(
            work, "second", work / "candidate-b", arguments, cache=cache
        ),
    }
    report = {
        "rows": arguments.rows,
        "bootstrap": arguments.bootstrap,
        "batch_size": arguments.batch_size,
        "dataset_bytes": (work / "dataset.jsonl").stat().st_size,
        "runs": runs,
        "conditions": {
            "python": platform.python_version(),
            "machine": platform.machine(),
            "cpus": os.cpu_count(),
            "load_average_at_end": os.getloadavg(),
            "omp_wait_policy": os.environ.get("OMP_WAIT_POLICY"),
            "recorded_at": datetime.now(UTC).isoformat(),
        },
    }
    (work / "bench_scale.json").write_text(json.dumps(report, indent=2) + "\n")
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
