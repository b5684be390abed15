"""docs/schema/*.json are generated from the code (make schema) and must not drift; records validate."""

from __future__ import annotations

import json
from pathlib import Path

import jsonschema
import pytest

from tests.conftest import make_record
from xlam_hpc.schema import json_schema

DOCS = Path(__file__).parents[3] / "docs" / "schema"


@pytest.mark.parametrize("kind", ["trajectory", "preference"])
def test_published_schema_matches_code(kind):
    published = json.loads((DOCS / f"{kind}.schema.json").read_text())
    assert published == json_schema(kind), "run `make schema` and commit docs/schema"


def test_records_validate_against_published_schema():
    schema = json.loads((DOCS / "trajectory.schema.json").read_text())
    jsonschema.validate(make_record(1), schema)
    bad = make_record(1)
    bad["conversation"][0]["role"] = "robot"
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate(bad, schema)
