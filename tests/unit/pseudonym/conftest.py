"""Fixtures for the pseudonymisation tests (synthetic data only)."""

from __future__ import annotations

from typing import Any

import pytest


@pytest.fixture
def patient() -> dict[str, Any]:
    """A synthetic R4/R5 Patient."""
    return {
        "resourceType": "Patient",
        "id": "pat-1",
        "text": {"status": "generated", "div": "<div>Alice Martin</div>"},
        "identifier": [{"system": "urn:oid:1.2.250.1.213.1.4.8", "value": "290017512345678"}],
        "name": [{"use": "official", "family": "Martin", "given": ["Alice", "Jeanne"]}],
        "telecom": [{"system": "phone", "value": "0102030405"}],
        "gender": "female",
        "birthDate": "1975-06-15",
        "address": [{"line": ["3 rue des Lilas"], "city": "Lyon", "postalCode": "69007"}],
        "contact": [{"name": {"family": "Martin", "given": ["Paul"]}}],
        "managingOrganization": {"reference": "Organization/org-1", "display": "Clinique"},
    }
