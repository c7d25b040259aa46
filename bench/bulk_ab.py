"""The batch route of two checkouts in one run (issue 22): a server of each, the same kind of
items, turn by turn, against ``/v1/embed`` in the same turns (the baseline).

    python -m bench.bulk_ab --server-code ../before [--databases sqlite,postgres]
        [--kind images] [--rounds 2] [--label "e687857 vs 74cd31f"] [--out FILE]

A shared VM's speed drifts by 10-20% within a minute, and the bulk bench's write/embed ratio
of one tree moves by as much from run to run: a change to the write path is told apart only
when both trees write in the same minutes. Two ``mmr serve`` processes run side by side (the
"before" one from ``--server-code``, the "after" one from this checkout), each on a data dir
and (Postgres) a schema of its own; each turn sends 8 batches of 64 to ``/v1/embed`` of the
"after" server (the items that server then writes: ``/v1/embed`` stores nothing), then 8
batches to each server's batch route, each side its own items, the two writes in
alternating order from turn to turn. Both sides' ratios divide by that one baseline. Items
are distinct between the sides and the rounds: an original already stored is not written
again. A database that does not answer (Postgres) is skipped. Nothing timed is asserted.
"""

from __future__ import annotations

import argparse
import subprocess
import tempfile
from contextlib import ExitStack
from pathlib import Path
from typing import Any

from bench.bulk import (
    _batch_path,
    _create,
    _embed_body,
    _nothing,
    _postgres_schema,
    _send,
    _write_body,
)
from bench.config import BulkConfig
from bench.data import sentences, small_jpegs
from bench.machine import describe_machine
from bench.server import ROOT, Server

SIDES = ("before", "after")
__all__ = ["ROOT", "compare", "main", "table"]


def items_for(kind: str, n: int, seed: int) -> list[Any]:
    """``n`` distinct items of a kind: texts, or small JPEGs (256x224, ~28 KB)."""
    return sentences(n, seed=seed) if kind == "texts" else small_jpegs(n, seed=seed)


def compare(
    before: Path,
    database: str,
    kind: str,
    rounds: int,
    work: Path,
    b: BulkConfig,
    seed: int = 0,
) -> dict[str, Any] | None:
    """One database: items/s of ``/v1/embed`` and of each side's batch route, over the same
    turns; None when the database does not answer."""
    per_round = 4 * b.turn * b.batch  # four turns a round
    made = items_for(kind, per_round * rounds * 2 + b.batch, seed)
    warm, made = made[-b.batch :], made[: -b.batch]
    seconds = {"embed": 0.0, "before": 0.0, "after": 0.0}
    failed = 0
    with ExitStack() as stack:
        servers = {}
        for side in SIDES:
            env = _nothing() if database == "sqlite" else _postgres_schema(b.postgres_url, print)
            if env is None:
                return None
            extra = dict(stack.enter_context(env))
            if side == "before":
                extra["PYTHONPATH"] = str(before.resolve())
            servers[side] = stack.enter_context(
                Server(
                    work / side / "data",
                    model=b.model,
                    precision="fp32",
                    ready_timeout_s=600,
                    env=extra,
                )
            )
        for srv in servers.values():  # untimed: the first forward, the write path's first batch
            _send(srv.url, "/v1/embed", [_embed_body(kind, warm)], 1)
            _send(srv.url, _batch_path(_create(srv, "warm")), [_write_body(kind, warm, 0)], 1)
        turn = 0
        for r in range(rounds):
            paths = {side: _batch_path(_create(srv, f"ab_{r}")) for side, srv in servers.items()}
            own = {
                side: made[(2 * r + n) * per_round : (2 * r + n + 1) * per_round]
                for n, side in enumerate(SIDES)
            }
            for t in range(0, per_round, b.turn * b.batch):
                batches = {
                    side: [
                        own[side][i : i + b.batch] for i in range(t, t + b.turn * b.batch, b.batch)
                    ]
                    for side in SIDES
                }
                after = servers["after"].url
                embed = [_embed_body(kind, batch) for batch in batches["after"]]
                e_s, e_failed = _send(after, "/v1/embed", embed, b.clients)
                seconds["embed"] += e_s
                failed += e_failed
                order = SIDES if turn % 2 == 0 else SIDES[::-1]
                for side in order:
                    bodies = [
                        _write_body(kind, batch, t + n * b.batch)
                        for n, batch in enumerate(batches[side])
                    ]
                    w_s, w_failed = _send(servers[side].url, paths[side], bodies, b.clients)
                    seconds[side] += w_s
                    failed += w_failed
                turn += 1
    items = per_round * rounds
    return {
        "database": database,
        "kind": kind,
        "items": items,
        "turns": turn,
        "embed_per_s": items / seconds["embed"],
        **{f"{side}_per_s": items / seconds[side] for side in SIDES},
        **{f"{side}_ratio": seconds["embed"] / seconds[side] for side in SIDES},
        "failed": failed,
    }


def _commit(checkout: Path) -> str:
    done = subprocess.run(
        ["git", "-C", str(checkout), "rev-parse", "--short", "HEAD"],
        capture_output=True,
        text=True,
        check=False,
    )
    return done.stdout.strip() or "?"


def table(rows: list[dict[str, Any]], label: str, before: Path, b: BulkConfig) -> str:
    """The rows as markdown, with the machine and what ran."""
    m = describe_machine()
    dirty = " (with changes)" if m["dirty"] else ""
    lines = [
        f"### {label or 'bulk A/B'}",
        "",
        f"{m['date']} · {m['cpu']}, {m['cores']} cores · after: commit {m['commit']}{dirty}, "
        f"before: commit {_commit(before)} (`{before}`) · {b.model} fp32, batches of "
        f"{b.batch} from {b.clients} clients, turns of {b.turn} batches",
        "",
        "| database | items | embed items/s | before: write items/s | write / embed "
        "| after: write items/s | write / embed | failed |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        lines.append(
            f"| {r['database']} | {r['items']} {r['kind']} | {r['embed_per_s']:.0f} "
            f"| {r['before_per_s']:.0f} | {r['before_ratio']:.2f} "
            f"| {r['after_per_s']:.0f} | {r['after_ratio']:.2f} | {r['failed']} |"
        )
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--server-code", type=Path, required=True, help="the 'before' checkout")
    p.add_argument("--databases", default="sqlite,postgres")
    p.add_argument("--kind", choices=["images", "texts"], default="images")
    p.add_argument("--rounds", type=int, default=2, help="rounds of four turns")
    p.add_argument("--model", default=BulkConfig.model)
    p.add_argument("--label", default="")
    p.add_argument("--out", type=Path, help="append the table here (markdown)")
    args = p.parse_args(argv)
    b = BulkConfig(model=args.model)
    rows = []
    for database in args.databases.split(","):
        with tempfile.TemporaryDirectory(prefix="bulk-ab-") as work:
            row = compare(args.server_code, database, args.kind, args.rounds, Path(work), b)
        if row is None:
            print(f"{database} does not answer at {b.postgres_url}: skipped")
        else:
            rows.append(row)
    text = table(rows, args.label, args.server_code, b)
    print(text)
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        with args.out.open("a") as f:
            f.write(text + "\n")
    return 0 if all(r["failed"] == 0 for r in rows) else 1


if __name__ == "__main__":
    raise SystemExit(main())
