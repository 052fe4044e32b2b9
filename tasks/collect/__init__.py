"""Collection: sources from ``include/sources.yaml`` become raw batches in the object store.

``sources`` validates the file, ``base`` is the interface each kind implements (``x``,
``mastodon``, ``folder``; registered in ``kinds``), ``provenance`` gives weak labels, and
``run.collect`` is what the DAG task and ``vigil collect SOURCE`` both call.
"""
