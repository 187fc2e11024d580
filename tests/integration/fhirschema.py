# fhirschema: HL7's FHIR R4 (4.0.1) JSON schema, shipped in tests/fhir/, with python3-jsonschema.
import functools
import json
import os

import jsonschema

HERE = os.path.dirname(os.path.abspath(__file__))
SCHEMA = os.path.join(os.path.dirname(HERE), 'fhir', 'fhir.schema.json')


@functools.lru_cache(maxsize=1)
def validator():
    with open(SCHEMA, encoding='utf-8') as f:
        schema = json.load(f)
    assert schema['id'] == 'http://hl7.org/fhir/json-schema/4.0', 'not the R4 schema'
    return jsonschema.Draft6Validator(schema)


def errors(doc):
    """Every schema error, each with the deepest cause (FHIR's schema is one big oneOf)."""
    out = []
    for e in validator().iter_errors(doc):
        best = jsonschema.exceptions.best_match(e.context) if e.context else e
        out.append(f'{"/".join(map(str, best.absolute_path))}: {best.message[:300]}')
    return out


def check(doc):
    errs = errors(doc)
    assert not errs, 'not valid FHIR R4:\n' + '\n'.join(errs[:10])
