"""The dashboard tests use the small real profiles of tests/conftest.py."""

from tests.conftest import N_BAD, N_CHAT, N_FAQ

__all__ = ["N_BAD", "N_CHAT", "N_FAQ"]
