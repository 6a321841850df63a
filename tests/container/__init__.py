"""Smoke tests of the server container image (run by ``nox -s container``)."""
