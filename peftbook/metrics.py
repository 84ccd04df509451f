"""Text-overlap metrics for generation: corpus BLEU (sacrebleu) and ROUGE-L (rouge-score).

Task-specific metrics (slot accuracy) live with their task in ``peftbook.tasks``.
"""
from __future__ import annotations


def text_metrics(predictions: list[str], references: list[str]) -> dict[str, float]:
    """Corpus BLEU (sacrebleu, 0-100) and mean ROUGE-L F1 (rouge-score, 0-1)."""
    import sacrebleu  # imported here: ``import peftbook`` stays fast
    from rouge_score import rouge_scorer

    bleu = sacrebleu.corpus_bleu(predictions, [references]).score
    scorer = rouge_scorer.RougeScorer(["rougeL"])
    rouge = [scorer.score(ref, pred)["rougeL"].fmeasure for pred, ref in zip(predictions, references)]
    return {"bleu": float(bleu), "rougeL": float(sum(rouge) / max(len(rouge), 1))}
