"""The finetune phase in the report: teaching mmr-mini a vocabulary from its pairs alone."""

from __future__ import annotations

from typing import Any

import numpy as np

GAIN = 0.30  # the targets: the new vocabulary's precision@3 up by this much or more,
DROP = -0.05  # the old one's down by no more than this, with every default of the job


def _mean(jobs: list[dict[str, Any]], side: str, which: str) -> float:
    return float(np.mean([j[side][which] for j in jobs]))


def _languages(finetune: dict[str, Any]) -> dict[str, list[dict[str, Any]]]:
    out: dict[str, list[dict[str, Any]]] = {}
    for job in finetune["jobs"]:
        out.setdefault(job["language"], []).append(job)
    return out


def finetune_targets(finetune: dict[str, Any]) -> list[dict[str, Any]]:
    """Per language, over its seeds: the new vocabulary's gain and the old one's change."""
    out = []
    for language, jobs in _languages(finetune).items():
        gain = _mean(jobs, "after", "new") - _mean(jobs, "before", "new")
        kept = min(j["after"]["english"] - j["before"]["english"] for j in jobs)
        out += [
            {
                "name": f"finetune {language}: new vocabulary precision@3 gain (mean of seeds)",
                "target": f">= +{GAIN}",
                "value": round(gain, 3),
                "pass": gain >= GAIN,
            },
            {
                "name": f"finetune {language}: English precision@3 change (worst seed)",
                "target": f">= {DROP}",
                "value": round(kept, 3),
                "pass": kept >= DROP,
            },
        ]
    return out


def finetune_md(finetune: dict[str, Any], machine: dict[str, Any]) -> list[str]:
    lines = [
        "## Teaching a vocabulary",
        "",
        f"A collection of {finetune['pictures']} renders of {finetune['model']}'s world (every "
        f"colour and shape, {finetune['variants_per_object']} of each), each paired by a "
        "`group` key with one caption in a language the model never saw (French, or invented "
        "words, a new language for every seed), nothing else stored. Precision@3 of text -> "
        'image for every colour and shape ("a red circle"), asked in the new language and in '
        f"English, before and after. Seeds {finetune['seeds']}; on {machine['cpu']}.",
        "",
        "The job with every default, through a server (`POST /v1/jobs` with `pair_key`):",
        "",
        "| language | seed | new before | new after | English before | English after | "
        "anchors recall@5 before / after | activated | s |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for job in finetune["jobs"]:
        anchors = ""
        if job.get("anchors_before"):
            (name, before), *_ = job["anchors_before"].items()
            anchors = f"{before:.3f} / {job['anchors_after'][name]:.3f}"
        lines.append(
            f"| {job['language']} | {job['seed']} | {job['before']['new']:.2f} | "
            f"{job['after']['new']:.2f} | {job['before']['english']:.2f} | "
            f"{job['after']['english']:.2f} | {anchors} | {job['activated']} | "
            f"{job['seconds']:.1f} |"
        )
    lines += [
        "",
        "What each choice is worth, in the bench process (`finetune()` on the stored raw "
        "features, the job's anchors and check; mean over seeds; new and English precision@3 "
        "changes):",
        "",
        "| variant | "
        + " | ".join(f"{lang} new | {lang} English" for lang in _study_languages(finetune))
        + " |",
        "|---|" + "---|---|" * len(_study_languages(finetune)),
    ]
    for row in finetune["study"]:
        cells = []
        for lang in _study_languages(finetune):
            v = row[lang]
            cells.append(f"{v['new_after'] - v['new_before']:+.2f}")
            cells.append(f"{v['english_after'] - v['english_before']:+.2f}")
        lines.append(f"| {row['name']} | " + " | ".join(cells) + " |")
    counts = finetune.get("pair_counts") or []
    if counts:
        langs = [k for k in counts[0] if k != "pairs"]
        lines += [
            "",
            "How many pairs: 16 pictures of every colour and shape stored (384), 1 to 16 of each "
            "captioned; the default fine-tune (new and English precision@3 changes, mean over "
            "seeds):",
            "",
            "| pairs | " + " | ".join(f"{lang} new | {lang} English" for lang in langs) + " |",
            "|---|" + "---|---|" * len(langs),
        ]
        for row in counts:
            cells = [f"{row[lang][k]:+.2f}" for lang in langs for k in ("new", "english")]
            lines.append(f"| {row['pairs']} | " + " | ".join(cells) + " |")
    return [*lines, ""]


def _study_languages(finetune: dict[str, Any]) -> list[str]:
    rows = finetune["study"]
    return [k for k in rows[0] if k != "name"] if rows else []
