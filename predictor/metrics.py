"""Answer metrics live in the package (the bench scores with them too): re-exported here."""

from qroute_cli.evaluation.metrics import (  # noqa: F401  (names used by predictor modules and tests)
    bleu,
    gsm8k_em,
    gsm8k_extract,
    normalize_answer,
    nq_contains,
    nq_em,
    nq_f1,
    rouge_l,
    score,
    token_f1,
)
