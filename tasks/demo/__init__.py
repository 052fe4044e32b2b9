"""``make demo``: the synthetic labeled demo data (:mod:`tasks.demo.data`) and the whole loop driven
through Airflow, round after round (:mod:`tasks.demo.run`)."""
