"""Lexical diversity (100 - Self-BLEU-3) of a condition's outputs in its two forms, with the
individual form's items, drawn either per set of responses or as the authors' notebook draws
them (`evaluation.self_bleu.draw: eligible`): per bracket one numpy stream seeded once per
form, the bracket's files drawn from it one after another in the order single, multi,
human, vanilla (PAPER.md, "Self-BLEU"). In the notebook a file's draw therefore depends on
the files drawn before it: multi's on single's, and the human and vanilla files' on the
bracket they are drawn for, so those two have a value per bracket. `diversity_metrics`: a
set's whole diversity row (both forms, document-level Self-BLEU, semantic, Heaps' law).
"""

from __future__ import annotations

import random
from typing import Any

from synth_ray.metrics.self_bleu import (
    aggregated_of,
    draw,
    individual_of,
    self_bleu,
    stream_draws,
)


def _forms(drawn_ind: list[list[str]], drawn_agg: list[list[str]], max_order: int
           ) -> dict[str, Any]:
    items = individual_of(drawn_ind, max_order)
    ind = sum(items) / len(items) if items else float("nan")
    agg, sentences = aggregated_of(drawn_agg, max_order)
    return {"self_bleu_individual": ind, "individual_responses": len(items),
            "self_bleu_aggregated": agg, "aggregated_sentences": sentences,
            "lexical_diversity_individual": 100 - ind,
            "lexical_diversity_aggregated": 100 - agg, "individual_items": items}


def lexical_of_set(texts: list[str], sb: dict[str, Any]) -> dict[str, Any]:
    """Both forms of one set of responses, drawn on their own (`draw: all`, or one file)."""
    args = (sb["seed"], sb["draw"])
    return _forms(draw(texts, sb["individual_samples"], *args, 1, sb["min_sentence_words"],
                       sb["sentences"]),
                  draw(texts, sb["aggregated_samples"], *args, 2, sb["min_sentence_words"],
                       sb["sentences"]), sb["max_order"])


def diversity_metrics(texts: list[str], cfg_json: dict[str, Any]) -> dict[str, Any]:
    """Self-BLEU-3 in its three forms and semantic diversity of one set of responses
    (`cfg_json`: the evaluation section); the score stage runs it as one Ray task per
    (target, condition)."""
    from synth_ray.metrics.diversity import semantic_diversity

    sb = cfg_json["self_bleu"]
    lexical = lexical_of_set(texts, sb)
    docs = random.Random(sb["seed"]).sample(texts, min(sb["aggregated_samples"], len(texts)))
    doc = self_bleu(docs, sb["max_order"]) if len(docs) >= 2 else float("nan")
    sem = semantic_diversity(docs, cfg_json["embedding_model"]) if len(docs) >= 2 \
        else float("nan")
    from synth_ray.metrics.heaps import heaps_law

    heaps = heaps_law(texts)  # vocabulary growth over the condition's responses in order
    return {**lexical, "heaps_k": heaps["K"], "heaps_beta": heaps["beta"],
            "heaps_tokens": heaps["tokens"], "self_bleu_document": doc,
            "semantic_diversity": sem, "responses": len(texts)}


def lexical_stream(files: dict[str, list[str]], sb: dict[str, Any]) -> dict[str, dict]:
    """Both forms of each file, the files (in the dict's order) sharing one stream per form,
    as the notebook draws a bracket's four files."""
    kw = {"min_words": sb["min_sentence_words"], "method": sb["sentences"]}
    texts = list(files.values())
    ind = stream_draws(texts, sb["individual_samples"], sb["seed"], 1, **kw)
    agg = stream_draws(texts, sb["aggregated_samples"], sb["seed"], 2, **kw)
    return {name: _forms(i, a, sb["max_order"])
            for name, i, a in zip(files, ind, agg, strict=True)}



def notebook_stream(files: dict[str, list[str]], ev: dict[str, Any]) -> dict[str, dict]:
    """What the authors' notebooks draw from one bracket's files in order (`ev`: the
    evaluation section): both lexical forms with `self_bleu.draw: eligible`, and semantic
    diversity over their sentence sample with `semantic: authors` (metrics/diversity.py)."""
    out: dict[str, dict] = {name: {} for name in files}
    if ev["self_bleu"]["draw"] == "eligible":
        for name, lex in lexical_stream(files, ev["self_bleu"]).items():
            out[name].update(lex)
    if ev["semantic"] == "authors":
        from synth_ray.metrics.diversity import (
            embed,
            mean_pairwise_cosine_distance,
            sampled_distances,
            sentence_stream,
        )

        drawn = sentence_stream(list(files.values()), ev["semantic_sentences"], 42)
        for name, sentences in zip(files, drawn, strict=True):
            vectors = embed(sentences, ev["embedding_model"]) if len(sentences) >= 2 else None
            out[name].update(
                semantic_sentences=len(sentences),
                semantic_diversity=float("nan") if vectors is None
                else mean_pairwise_cosine_distance(vectors),
                # the items of the semantic tests (scoring/diversity.py: semantic_tests)
                semantic_distances=[] if vectors is None
                else sampled_distances(vectors).tolist())
    return out
