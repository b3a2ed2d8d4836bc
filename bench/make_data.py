"""Build the bench subsets shipped in qroute_cli/data/bench from ../shared/data.

    .venv/bin/python -m bench.make_data [--data-dir ../shared/data]

Rows come from qroute_cli.evaluation.splits.bench_rows (never a training question), in the split's fixed
shuffled order. WritingPrompts ships HANNA's 96 prompts and human stories (MIT): the
WritingPrompts test sample in shared/data states no license, and none of HANNA's prompts is
in the predictor's training sample (checked below).
"""

from __future__ import annotations

import argparse
import gzip
import json
from pathlib import Path

from qroute_cli.evaluation import splits

ROOT = Path(__file__).resolve().parent.parent

LIMITS = {"gsm8k": 300, "nq": 400}


def write(path: Path, rows: list[dict]) -> None:
    with gzip.open(path, "wt", encoding="utf-8", compresslevel=9) as fh:
        for r in rows:
            fh.write(json.dumps(r, ensure_ascii=False) + "\n")
    print(f"{path.relative_to(ROOT)}: {len(rows)} rows, {path.stat().st_size / 1024:.0f} KiB")


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--data-dir", type=Path, default=None)
    args = ap.parse_args()
    root = args.data_dir or splits.data_root()
    out = ROOT / "qroute_cli" / "data" / "bench"
    out.mkdir(parents=True, exist_ok=True)
    for task, n in LIMITS.items():
        rows = splits.sample(splits.bench_rows(task, root), n, seed=0)
        write(out / f"{task}.jsonl.gz", [{"id": r.id, "question": r.question, "reference": r.reference} for r in rows])
    hanna = [json.loads(line) for line in open(root / "writingprompts" / "hanna_prompts_human_stories96.jsonl")]
    trained = {splits.normalize_question(r.question) for r in splits.train_rows("wp", root)}
    rows = []
    for r in hanna:
        prompt = splits.clean_wp_prompt(r["prompt"])
        assert splits.normalize_question(prompt) not in trained, "a HANNA prompt is in the training sample"
        rows.append({"id": f"hanna-{r['hanna_story_id']}", "question": prompt, "reference": r["story"]})
    rows = splits.sample([splits.Row("wp", x["id"], x["question"], x["reference"]) for x in rows], 96, seed=0)
    write(out / "wp.jsonl.gz", [{"id": r.id, "question": r.question, "reference": r.reference} for r in rows])
    (out / "README.md").write_text(
        "# Bench data shipped with qroute\n\n"
        "Made by `bench/make_data.py` from the public data sets below; rows are the bench side of\n"
        "`qroute_cli/evaluation/splits.py`, so none was used to train the predictor.\n\n"
        "| file | rows | source | license |\n|---|---|---|---|\n"
        f"| gsm8k.jsonl.gz | {LIMITS['gsm8k']} | GSM8K test (openai/grade-school-math) | MIT, Copyright (c) 2021 OpenAI |\n"
        f"| nq.jsonl.gz | {LIMITS['nq']} | NQ-open dev, bench-side questions (google-research-datasets/natural-questions) | CC BY-SA 3.0 |\n"
        "| wp.jsonl.gz | 96 | HANNA's WritingPrompts prompts and human stories (dig-team/hanna-benchmark-asg) | MIT, Copyright (c) 2022 dig-team |\n\n"
        "Fields: `id`, `question`, `reference` (GSM8K: the final number; NQ: the list of accepted\n"
        "answers; WritingPrompts: the human story).\n"
    )


if __name__ == "__main__":
    main()
