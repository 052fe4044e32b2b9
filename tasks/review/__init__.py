"""The human review queue: the images that matter, decided by a person, become trusted labels.

* :mod:`tasks.review.candidates` — where serving keeps the bytes of review candidates (predictions near
  the threshold, a random audit share: serving's settings), so the monitor can delete the unqueued ones;
* :mod:`tasks.review.queue` — the queue in the object store (``review/queue/``), filled by the
  monitor, and the one decision function: real / fake / skip by a named reviewer, recorded as an
  audit trail (``review/decided/``, ``review/decisions/date=.../``);
* :mod:`tasks.review.labels` — the one way a decision becomes a trusted label: the image in the
  inbox under ``review/{0_real,1_fake}/``, which the folder collector imports with ``label_source``
  ``review`` and curation applies like any person's label;
* :mod:`tasks.review.claims` — reading serving's feedback claims (and closing them once reviewed).

The Review page and its JSON API (``plugins/vigil_ui.py``, :mod:`tasks.ui.review`) call
:func:`tasks.review.queue.decide`; docs/monitoring.md describes the whole loop.
"""
