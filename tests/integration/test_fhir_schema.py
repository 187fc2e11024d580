# The FHIR R4 mapping (src/report/fhir.c) against HL7's R4 JSON schema: every case the
# mapping has (test-fhir --print builds one bundle of them), and that the check bites.
import copy
import json
import os
import subprocess

from fhirschema import check, errors
from kwtestutil import BUILDDIR


def sample_bundle():
    out = subprocess.run([os.path.join(BUILDDIR, 'tests', 'unit', 'test-fhir'), '--print'],
                         check=True, capture_output=True, env=dict(os.environ, TZ='Europe/Berlin'))
    return json.loads(out.stdout)


def test_every_case_is_valid_r4():
    b = sample_bundle()
    kinds = [e['resource']['resourceType'] for e in b['entry']]
    assert b['type'] == 'collection'
    assert {'Patient', 'Device', 'Procedure', 'Observation', 'Flag'} <= set(kinds)
    assert kinds.count('Procedure') == 14 and kinds.count('Flag') == 6
    runs = [e['resource'] for e in b['entry'] if e['resource']['resourceType'] == 'Observation'
            and e['resource']['code']['coding'][0]['code'] == '73985-4']
    assert len(runs) == 4 and {'effectivePeriod' in r for r in runs} == {True, False}
    assert any('component' not in r for r in runs) and any(len(r.get('component', [])) == 2 for r in runs)
    details = [x for e in b['entry'] for x in e['resource'].get('extension', [])
               if x['url'] == 'http://hl7.org/fhir/StructureDefinition/flag-detail']
    assert len(details) == 2 and all(d['valueReference']['type'] == 'Procedure' for d in details)
    check(b)


def test_the_schema_bites():
    b = sample_bundle()
    proc = next(e for e in b['entry'] if e['resource']['resourceType'] == 'Procedure')

    # R4's schema has no enum for Procedure.status (test-fhir checks those); it has
    # patterns for dateTime, closed objects, and enums for some codes such as Bundle.type.
    bad = copy.deepcopy(b)
    next(e for e in bad['entry'] if e['fullUrl'] == proc['fullUrl'])['resource']['performedPeriod']['start'] = \
        '2026-11-18 11:06'
    assert errors(bad)

    bad = copy.deepcopy(b)
    next(e for e in bad['entry'] if e['fullUrl'] == proc['fullUrl'])['resource']['performed'] = 'x'
    assert errors(bad)

    bad = copy.deepcopy(b)
    bad['type'] = 'pile'
    assert errors(bad)

    # A run's Quantity and a Flag's extension are checked too.
    bad = copy.deepcopy(b)
    run = next(e['resource'] for e in bad['entry'] if e['resource'].get('component') and
               e['resource']['code']['coding'][0]['code'] == '73985-4')
    run['component'][0]['valueQuantity']['value'] = '30 min'
    assert errors(bad)
    bad = copy.deepcopy(b)
    flag = next(e['resource'] for e in bad['entry'] if e['resource'].get('extension'))
    flag['extension'][0]['valueReference']['identifier']['sytem'] = 'a misspelt key'
    assert errors(bad)
