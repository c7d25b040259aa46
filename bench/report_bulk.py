"""The bulk phase in the report: batch writes against the encoder's ceiling over HTTP."""

from __future__ import annotations

from typing import Any

RATIO = 0.8  # the target: batch writes at 80 % of /v1/embed or more


def bulk_targets(bulk: dict[str, Any]) -> list[dict[str, Any]]:
    """One target per (database, kind): batch write items/s over embed items/s (the folder
    ingest has no target of its own: its figures are in the section)."""
    return [
        {
            "name": f"bulk: {row['database']} {row['kind']}, batch write / embed",
            "target": f">= {RATIO}",
            "value": row["ratio"],
            "pass": row["ratio"] >= RATIO and not row["failed"],
        }
        for row in bulk["rows"]
    ]


def bulk_md(bulk: dict[str, Any], machine: dict[str, Any]) -> list[str]:
    lines = [
        "## Bulk writes against the encoder",
        "",
        f"One server (model {bulk['model']}, {bulk['precision']}) per database; every item "
        f"sent in batches of {bulk['batch']} by {bulk['clients']} concurrent clients, "
        "first to `/v1/embed` (decode and encode, nothing stored: the encoder's ceiling over "
        "HTTP, the baseline), then to the batch route (the same, then the originals stored, "
        "the batch committed in one transaction and added to the index), in "
        f"{bulk.get('rounds', 1)} rounds (a fresh collection each; one batch of each route "
        "sent first, untimed), each in turns of "
        f"{bulk.get('turn', 'all')} batches: the turn's batches embedded, then written. "
        "Items/s over all rounds; the ratio is of the totals, each round's in brackets, and "
        "the turns' median and range after them. "
        f"On {machine['cpu']} ({machine['usable_cores']} usable cores, "
        "shared with the clients).",
        "",
        "| database | items | embed items/s | batch write items/s | write / embed | failed |",
        "|---|---|---|---|---|---|",
    ]
    for row in bulk["rows"]:
        each = ", ".join(f"{r:.2f}" for r in row.get("round_ratios", []))
        turns = sorted(row.get("turn_ratios", []))
        spread = (
            f"; turns {turns[len(turns) // 2]:.2f}, {turns[0]:.2f}-{turns[-1]:.2f}" if turns else ""
        )
        lines.append(
            f"| {row['database']} | {row['items']} {row['kind']} | {row['embed_per_s']:.0f} | "
            f"{row['write_per_s']:.0f} | {row['ratio']:.2f}{f' ({each}{spread})' if each else ''} "
            f"| {row['failed']} |"
        )
    ingest = bulk.get("ingest")
    if ingest:
        lines += [
            "",
            f"`mmr ingest` on a folder of {ingest['files']} files, the same texts as `.txt` "
            "files and as many JPEGs of their own (no original of them stored yet), in "
            f"subfolders of 100, on SQLite: {ingest['seconds']:.1f} s, "
            f"**{ingest['files_per_s']:.0f} files/s**, {ingest['ratio']:.2f}x the encoder's "
            f"ceiling (the {ingest['ceiling_s']:.1f} s a round of `/v1/embed` took for as many "
            "items); "
            f"`{ingest['summary']}`. Run again: **{ingest['resume_s']:.1f} s** to list the "
            f"collection, hash every file and skip it (`{ingest['resume_summary']}`).",
        ]
    if ingest and "ray_s" in ingest:
        lines += [
            "",
            f"The same folder with `--engine ray` (a Ray cluster started on this machine; its "
            f"actors decode and encode the images, the server the texts): "
            f"{ingest['ray_s']:.1f} s against {ingest['seconds']:.1f} s locally "
            f"(`{ingest['ray_summary']}`).",
        ]
    migration = bulk.get("migration")
    if migration:
        lines += [
            "",
            f"A migrate job (the server's in-process worker) moving a collection of the same "
            f"{migration['items']} items from {migration['source']} to {migration['target']}, "
            f"on SQLite: {migration['seconds']:.1f} s from the request to the switch, "
            f"**{migration['items_per_s']:.0f} items/s**, {migration['ratio']:.2f}x the "
            f"encoder's ceiling (the {migration['ceiling_s']:.1f} s `/v1/embed` of "
            f"{migration['target']} took for the same items). Rolled back to the kept space: "
            f"{migration['rollback_s']:.1f} s, {migration['rollback_encoded']} items encoded.",
        ]
    if bulk["skipped"]:
        lines += ["", f"Not measured: {', '.join(bulk['skipped'])} (the server did not answer)."]
    return [*lines, ""]
