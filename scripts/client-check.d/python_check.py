"""Checks the Python client openapi-python-client generates from the document.

Every branch of the claim's `oneOf` must be one model whose `kind` is a
Literal of its kind and whose `details` is that kind's details model, every
kind must have one, and every example claim of the document must go through
its model (from_dict, then to_dict) unchanged.

The claim schema is also checked with a JSON Schema 2020-12 validator
(`jsonschema`): every example is valid, and claims breaking the rules between
fields that the schema states (another kind's details, both or neither of a
veteran's codes, a craftsman award with both parties) are not.

Usage: python_check.py OPENAPI_JSON PACKAGE_PARENT PACKAGE_NAME
"""

import copy
import importlib
import json
import re
import sys
from pathlib import Path


def snake(name: str) -> str:
    return re.sub(r"(?<!^)(?=[A-Z])", "_", name).lower()


def main() -> int:
    doc_path, parent, package = sys.argv[1], Path(sys.argv[2]), sys.argv[3]
    doc = json.loads(Path(doc_path).read_text())
    schemas = doc["components"]["schemas"]
    sys.path.insert(0, str(parent))
    failures = []
    branches = {}
    for name, schema in schemas.items():
        kind = schema.get("properties", {}).get("kind", {}).get("const")
        if kind is None:
            continue
        county = schema["properties"]["county"].get("const")
        details = schema["properties"]["details"]["$ref"].rsplit("/", 1)[1]
        branches[(kind, county)] = name
        source = (parent / package / "models" / f"{snake(name)}.py").read_text()
        if f"kind: Literal['{kind}']" not in source:
            failures.append(f"{name}: `kind` is not Literal['{kind}']")
        if not re.search(rf"^    details: {details}$", source, re.M):
            failures.append(f"{name}: `details` is not {details}")
    kinds = set(schemas["Kind"]["enum"])
    missing = kinds - {kind for kind, _ in branches}
    if missing:
        failures.append(f"kinds without a model: {sorted(missing)}")

    examples = doc["paths"]["/v1/claims"]["post"]["requestBody"]["content"]["application/json"]["examples"]
    for example_name, example in examples.items():
        claim = example["value"]
        name = branches.get((claim["kind"], claim["county"])) or branches.get((claim["kind"], None))
        module = importlib.import_module(f"{package}.models.{snake(name)}")
        model = getattr(module, name)
        back = model.from_dict(claim).to_dict()
        if back != claim:
            failures.append(f"example {example_name}: {name} changed it to {back}")

    failures += schema_checks(doc, examples)
    for failure in failures:
        print(f"FAIL: {failure}")
    print(f"python client: {len(branches)} claim models for {len(kinds)} kinds, {len(examples)} examples round-tripped")
    return 1 if failures else 0


def schema_checks(doc, examples) -> list:
    import jsonschema

    text = json.dumps(doc).replace("#/components/schemas/", "#/$defs/")
    defs = json.loads(text)["components"]["schemas"]
    validator = jsonschema.Draft202012Validator({"$defs": defs, "$ref": "#/$defs/ClaimRequest"})
    failures = []
    for name, example in examples.items():
        for error in validator.iter_errors(example["value"]):
            failures.append(f"example {name} is not valid: {error.message[:200]}")

    def claim(name, change):
        value = copy.deepcopy(examples[name]["value"])
        change(value)
        return value

    def both_codes(c):
        c["details"]["project_code"] = "P-1"

    def no_code(c):
        del c["details"]["occupation_code"]

    def both_parties(c):
        c["organization"] = {"credit_code": "91330522MA0EXMP048", "name": "x"}

    def golden_cradle_by_person(c):
        c["details"]["title"] = "golden_cradle"

    def other_details(c):
        c["kind"] = "qualification_training"

    def started(c):
        c["details"]["training_start_date"] = "2020-05-01"

    def started_in_changxing(c):
        started(c)
        c["county"] = "changxing"

    invalid = {
        "a veteran claim with both codes": claim("cx_veteran_training", both_codes),
        "a veteran claim with neither code": claim("cx_veteran_training", no_code),
        "a craftsman award with both parties": claim("cx_craftsman_award", both_parties),
        "a golden-cradle award claimed by a person": claim("cx_craftsman_award", golden_cradle_by_person),
        "skill-upgrade details under another kind": claim("cx_skill_upgrade", other_details),
        "a Changxing claim with Wuyi's training_start_date": claim("wy_qualification_training", started_in_changxing),
    }
    for what, value in invalid.items():
        if validator.is_valid(value):
            failures.append(f"the schema accepts {what}")

    def other_party_null(c):
        c["organization"] = None

    def golden_cradle_by_organization(c):
        c["details"]["title"] = "golden_cradle"
        c["organization"] = {"credit_code": "91330522MA0EXMP048", "name": "x"}
        c["applicant"] = None

    def optional_null(c):
        c["department"] = None
        c["institution"] = None

    # `null` reads as absent, so the document allows it where a field may be absent.
    valid = {
        "a craftsman award whose organisation is null": claim("cx_craftsman_award", other_party_null),
        "a golden-cradle award whose applicant is null": claim("cx_craftsman_award", golden_cradle_by_organization),
        "a claim whose optional parties are null": claim("cx_veteran_training", optional_null),
        "a Wuyi claim with training_start_date": claim("wy_qualification_training", started),
    }
    for what, value in valid.items():
        for error in validator.iter_errors(value):
            failures.append(f"the schema refuses {what}: {error.message[:200]}")
    print(
        f"json schema: {len(examples)} examples and {len(valid)} variants valid, "
        f"{len(invalid)} broken claims refused"
    )
    return failures


if __name__ == "__main__":
    sys.exit(main())
