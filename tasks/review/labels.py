"""The one way a review decision becomes a trusted label: the image in the inbox, by its label.

``<inbox>/review/1_fake/<item_id>.<ext>`` (fake) or ``<inbox>/review/0_real/<item_id>.<ext>`` (real):
the inbox folder source imports files under the top-level ``review/`` folder with ``label_source``
``review`` (:mod:`tasks.collect.folder`), and curation treats it as a person's label: it labels a new
image, and corrects the stored label of bytes already in the dataset (:mod:`tasks.curate.pipeline`).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from tasks.collect.folder import REVIEW_DIR

if TYPE_CHECKING:
    from tasks.storage import ObjectStore

LABEL_DIRS = {"real": "0_real", "fake": "1_fake"}


def write_trusted_label(inbox: ObjectStore, item_id: str, label: str, data: bytes, ext: str) -> str:
    """Put ``data`` in the inbox as a trusted ``label`` (real/fake); returns its key in the inbox.

    A label for the other class of the same item is withdrawn (only the latest decision stays), and an
    identical file is left alone: a new modification time would make the collector take it again.
    """
    if label not in LABEL_DIRS:
        raise ValueError(f"label {label!r}: real or fake")
    key = f"{REVIEW_DIR}/{LABEL_DIRS[label]}/{item_id}.{ext}"
    for other in LABEL_DIRS.values():
        if other != LABEL_DIRS[label]:
            inbox.delete(f"{REVIEW_DIR}/{other}/{item_id}.{ext}")
    if not (inbox.exists(key) and inbox.read_bytes(key) == data):
        inbox.write_bytes(key, data)
    return key
