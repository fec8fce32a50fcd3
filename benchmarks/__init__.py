"""Benchmarks of flask-m2m: ``python benchmarks/run.py`` (or ``tox -e bench``)."""
