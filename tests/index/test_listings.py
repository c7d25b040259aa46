"""Stored duplicates listings on SQLite and Postgres: which one answers a request."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from index.listings import ListingInfo
from index.stores import Stores
from index.tables import DuplicateListingRow
from tests.factories import new_collection


def test_the_newest_listing_is_the_one_of_the_latest_collection_state(stores: Stores) -> None:
    """Jobs run on several hosts whose clocks may disagree: the listing that reflects the
    later change-log position answers, whatever time each host wrote on it."""
    row = new_collection(stores)
    now = datetime.now(UTC)
    with stores.sessions.begin() as session:
        for job_id, seq, at in (("later", 9, now - timedelta(hours=1)), ("earlier", 5, now)):
            session.add(
                DuplicateListingRow(
                    job_id=job_id,
                    collection_id=row.id,
                    modality=None,
                    threshold=0.9,
                    change_seq=seq,
                    aligner_version=0,
                    index_epoch=0,
                    model="m",
                    count=0,
                    pairs=b"",
                    computed_at=at,
                )
            )
    found = stores.listings.newest(collection_id=row.id, modality=None, threshold=0.95)
    assert isinstance(found, ListingInfo) and found.job_id == "later"
