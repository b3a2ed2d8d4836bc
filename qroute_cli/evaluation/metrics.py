"""Automatic quality of one answer: GSM8K exact match, NQ normalised EM / token F1,
WritingPrompts ROUGE-L / BLEU against the human story; and agreement between answers.

Each `*_scores(text, reference)["quality"]` is the number in [0, 1] the predictor learns:
GSM8K exact match (0/1); NQ max(token F1, gold answer contained in the answer's first line);
WritingPrompts ROUGE-L F1. `tasks.TASKS` says which function scores which data set, and
where an answer counts as correct.
"""

from __future__ import annotations

import math
import re
import string
from collections import Counter
from typing import Callable, Mapping

_NUM = re.compile(r"-?\d[\d,]*(?:\.\d+)?")
_NO_PUNCT = str.maketrans("", "", string.punctuation)
_ARTICLES = re.compile(r"\b(a|an|the)\b")
_BOXED = re.compile(r"\\boxed\{\s*\$?(-?\d[\d,]*(?:\.\d+)?)")
_ANSWER_IS = re.compile(r"answer is[^\d\-]*(-?\d[\d,]*(?:\.\d+)?)", re.IGNORECASE)


def _num(s: str) -> str:
    s = s.replace(",", "").rstrip(".")
    try:
        v = float(s)
    except ValueError:
        return s
    if not math.isfinite(v):  # a runaway digit string: compare it as written
        return s
    return str(int(v)) if v == int(v) else repr(v)


def gsm8k_extract(text: str) -> str | None:
    """The final number: after the last 'answer is', else in the last \\boxed{}, else the last number."""
    m = _ANSWER_IS.findall(text)
    if m:
        return _num(m[-1])
    boxed = _BOXED.findall(text)
    if boxed:
        return _num(boxed[-1])
    nums = _NUM.findall(text)
    return _num(nums[-1]) if nums else None


def gsm8k_em(text: str, reference: str) -> float:
    got = gsm8k_extract(text)
    return float(got is not None and got == _num(reference))


def normalize_answer(s: str) -> str:
    """ORQA/SQuAD normalisation: lowercase, no punctuation, no articles, single spaces."""
    s = s.lower().translate(_NO_PUNCT)
    s = _ARTICLES.sub(" ", s)
    return " ".join(s.split())


def _nq_candidates(text: str) -> list[str]:
    """The answer line: small models often add an explanation after the first line."""
    first = text.strip().split("\n")[0] if text.strip() else ""
    first = re.sub(r"^(answer|a)\s*:\s*", "", first, flags=re.IGNORECASE)
    return [first]


def nq_em(text: str, answers: list[str]) -> float:
    pred = normalize_answer(_nq_candidates(text)[0])
    return float(any(pred == normalize_answer(a) for a in answers))


def token_f1(pred: str, gold: str) -> float:
    p, g = normalize_answer(pred).split(), normalize_answer(gold).split()
    common = Counter(p) & Counter(g)
    same = sum(common.values())
    if not p or not g or same == 0:
        return 0.0
    precision, recall = same / len(p), same / len(g)
    return 2 * precision * recall / (precision + recall)


def nq_f1(text: str, answers: list[str]) -> float:
    pred = _nq_candidates(text)[0]
    return max((token_f1(pred, a) for a in answers), default=0.0)


def nq_contains(text: str, answers: list[str]) -> float:
    """1.0 when the answer's first line contains a gold answer (normalised, on word boundaries)."""
    pred = f" {normalize_answer(_nq_candidates(text)[0])} "
    return float(any(normalize_answer(a) and f" {normalize_answer(a)} " in pred for a in answers))


_rouge = None


def rouge_l(text: str, reference: str) -> float:
    global _rouge
    if _rouge is None:
        from rouge_score import rouge_scorer

        _rouge = rouge_scorer.RougeScorer(["rougeL"], use_stemmer=True)
    return float(_rouge.score(reference, text)["rougeL"].fmeasure)


def bleu(text: str, reference: str) -> float:
    import sacrebleu

    return float(sacrebleu.sentence_bleu(text, [reference]).score) / 100.0


def gsm8k_scores(text: str, reference: str) -> dict[str, float]:
    em = gsm8k_em(text, reference)
    return {"em": em, "quality": em}


def nq_scores(text: str, answers: list[str]) -> dict[str, float]:
    em, f1, has = nq_em(text, answers), nq_f1(text, answers), nq_contains(text, answers)
    # EVOUNA's human labels agree far better with containment than with EM or F1 alone
    # (see REPORT.md), so a first line that contains a gold answer counts as correct.
    return {"em": em, "f1": f1, "contains": has, "quality": max(f1, has)}


def wp_scores(text: str, reference: str) -> dict[str, float]:
    rl = rouge_l(text, reference)
    return {"rouge_l": rl, "bleu": bleu(text, reference), "quality": rl}


# -- agreement between answers (the ensemble's unsupervised ranker) -----------------


def majority_final_number(texts: Mapping[str, str]) -> str:
    """The first answer whose final number most answers share (else the first answer)."""
    names = list(texts)
    votes = Counter(gsm8k_extract(texts[n]) for n in names)
    votes.pop(None, None)
    if votes:
        top = votes.most_common(1)[0][0]
        return next(n for n in names if gsm8k_extract(texts[n]) == top)
    return names[0]


def most_agreed(similarity: Callable[[str, str], float]) -> Callable[[Mapping[str, str]], str]:
    """A ranker keeping the answer most similar to all the others (minimum Bayes risk)."""
    def pick(texts: Mapping[str, str]) -> str:
        names = list(texts)
        return max(names, key=lambda n: sum(similarity(texts[n], texts[o]) for o in names if o != n))

    return pick
