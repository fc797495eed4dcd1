"""Which stored objects the database names, for the retention sweep and the orphan scan.

Every column that holds a storage key is listed in `key_columns`; a style training's files live in its
job's folder (`training_folder`), named by the job's row. An object named neither way is an orphan,
deleted by the scan once older than its grace period: a table that starts naming storage keys must be
added here, or the scan deletes its objects.
"""

from __future__ import annotations

import re

from sqlalchemy import select
from sqlalchemy.orm import Session

from vidfactory.db.models import Asset, Job, Style, Template

__all__ = ["expiring_keys", "key_columns", "referenced_keys", "training_folder"]

# A job's clip, previews and reference copy expire with it; templates' images and styles' adapters never
# expire (a style's file goes when the style is deleted).
key_columns = (Asset.storage_key, Job.reference_key, Template.reference_key, Style.storage_key)
keys_per_query_max = 500  # bound on an IN (...) list
training_key_pattern = re.compile(r"^tenants/[^/]+/trainings/([^/]+)/")


def training_folder(tenant_id: str, job_id: str) -> str:
    """Where a training keeps its dataset and checkpoints (jobs/training.py): they expire with its job."""
    return f"tenants/{tenant_id}/trainings/{job_id}/"


def referenced_keys(session: Session, keys: list[str]) -> set[str]:
    """Those of `keys` that some row names."""
    found: set[str] = set()
    for start in range(0, len(keys), keys_per_query_max):
        chunk = keys[start:start + keys_per_query_max]
        for column in key_columns:
            found.update(session.scalars(select(column).where(column.in_(chunk))))
        found.update(_training_files(session, chunk))
    return found


def _training_files(session: Session, keys: list[str]) -> set[str]:
    """Those of `keys` in the folder of a training whose files are not expired."""
    owners = {key: match.group(1) for key in keys if (match := training_key_pattern.match(key))}
    if not owners:
        return set()
    kept = set(session.scalars(select(Job.id).where(Job.id.in_(set(owners.values())),
                                                    Job.content_status.is_distinct_from("expired"))))
    return {key for key, job_id in owners.items() if job_id in kept}


def expiring_keys(session: Session, job_id: str) -> tuple[list[str], str | None]:
    """The objects to delete as the job's content expires: its files and its reference copy, and the
    folder whose every object goes too (a training's; None for a video). A file that another job still
    delivers (a cache hit made before hits were re-labelled names its source's files) stays until that
    job's content goes too."""
    job = session.get(Job, job_id)
    assert job is not None, f"no job {job_id}"
    own = list(session.scalars(select(Asset.storage_key).where(Asset.job_id == job_id).order_by(Asset.id)))
    shared = set(session.scalars(select(Asset.storage_key).join(Job, Job.id == Asset.job_id).where(
        Asset.storage_key.in_(own), Asset.job_id != job_id, Job.deleted_at.is_(None),
        Job.content_status.is_(None)))) if own else set()
    reference = [] if job.reference_key is None else [job.reference_key]
    folder = training_folder(job.tenant_id, job.id) if job.job_type == "training" else None
    return [key for key in own if key not in shared] + reference, folder
