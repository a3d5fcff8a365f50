"""Schemathesis hooks for scripts/fuzz: `schema_valid_requests_accepted`, the
service's own form of schemathesis' `positive_data_acceptance`.

A request that the OpenAPI document allows must not be refused for its shape.
It may still be refused for a value rule that JSON Schema cannot state: a
check digit, the birth date inside an ID number, a department outside the
county's plan. `positive_data_acceptance` cannot tell these apart (every 422
to generated data fails it), and its generator does not always honour
`if`/`then`/`else`, so some of the data it calls valid is not. This check

1. looks only at requests generated as valid that got 400 or 422;
2. validates the request again (body, query and path parameters) against the
   document with a JSON Schema 2020-12 validator, formats included, and
   passes requests the document does not allow;
3. fails unless every field the problem names is refused by one of the value
   rules in VALUE_RULES.

The document is read from $SUBSIDY_OPENAPI (fuzz.py saves the served one).
"""

import json
import os
import re

import schemathesis
from jsonschema import Draft202012Validator
from schemathesis.core import NotSet

# (field pointer pattern, error code): the refusals no schema can state.
VALUE_RULES = [
    (r"(^|/)id_number$", "invalid_checksum"),  # GB 11643-1999 check digit
    (r"(^|/)id_number$", "invalid_date"),  # the birth date inside the number
    (r"^(/claims/\d+)?/applicant/id_number$", "invalid_value"),  # born after the claim's event_date
    (r"^(/claims/\d+)?/claim_id$", "invalid_value"),  # a claim id holding a resident ID number
    (r"(^|/)credit_code$", "invalid_checksum"),  # GB 32100-2015 check character
    (r"^(/claims/\d+)?/department$", "invalid_value"),  # a department outside the county's plan
    (r"^(/claims/\d+)?/details/repeated_hours$", "out_of_range"),  # more than the period's hours
    (r"^/enterprises/\d+/credit_code$", "duplicate"),  # a directory lists each enterprise once
    (r"^(/claims/\d+)?/details/days/\d+/date$", "duplicate"),  # an online training day is claimed once
    # Hours in at most 2 decimal places (the schema's description says so):
    # `multipleOf: 0.01` cannot state it over binary floats, where 1.1 / 0.01
    # is not a whole number and validators would refuse valid hours.
    (r"^(/claims/\d+)?/details/(days/\d+/class_hours|repeated_hours)$", "invalid_format"),
    # A simulation's change must name a parameter of the served policy and give
    # a value of its shape; its window must fall in the county's policy period.
    (r"^/changes/\d+/(parameter|value)$", "invalid_value"),
    (r"^/(from|to)$", "out_of_range"),
]

_SPEC = None


def _spec():
    global _SPEC
    if _SPEC is None:
        with open(os.environ["SUBSIDY_OPENAPI"]) as f:
            _SPEC = json.load(f)
    return _SPEC


def _valid(schema, value):
    spec = _spec()
    root = {**schema, "components": spec.get("components", {})}
    validator = Draft202012Validator(root, format_checker=Draft202012Validator.FORMAT_CHECKER)
    return validator.is_valid(value)


def _query_value(schema, raw):
    """A query or path value as the schema reads it (they arrive as text)."""
    kind = schema.get("type")
    kinds = kind if isinstance(kind, list) else [kind]
    if isinstance(raw, str) and ("integer" in kinds or "number" in kinds):
        try:
            return int(raw) if "integer" in kinds else float(raw)
        except ValueError:
            return raw
    return raw


def _request_allowed(case):
    """Whether the document allows the request as sent."""
    operation = _spec()["paths"].get(case.operation.path, {}).get(case.method.lower(), {})
    request_body = operation.get("requestBody", {})
    body = request_body.get("content", {}).get("application/json")
    if body is not None:
        if isinstance(case.body, NotSet):
            if request_body.get("required"):
                return False
        elif not _valid(body.get("schema", {}), case.body):
            return False
    for param in operation.get("parameters", []):
        where = {"query": case.query, "path": case.path_parameters, "header": case.headers}
        values = where.get(param.get("in")) or {}
        if param["name"] not in values:
            if param.get("required"):
                return False
            continue
        schema = param.get("schema", {})
        if not _valid(schema, _query_value(schema, values[param["name"]])):
            return False
    return True


def _unexplained(problem):
    """The refused fields no value rule explains."""
    errors = problem.get("errors") if isinstance(problem, dict) else None
    if not errors:
        return [problem]
    return [
        e
        for e in errors
        if not any(re.search(pattern, e.get("field", "")) and e.get("code") == code for pattern, code in VALUE_RULES)
    ]


@schemathesis.check
def schema_valid_requests_accepted(ctx, response, case):
    meta = case.meta
    if meta is None or not meta.generation.mode.is_positive:
        return None
    if response.status_code not in (400, 422):
        return None
    if not _request_allowed(case):
        return None
    try:
        problem = response.json()
    except ValueError:
        problem = {"detail": response.text[:500]}
    unexplained = _unexplained(problem)
    if unexplained:
        raise AssertionError(
            f"A request the document allows was refused ({response.status_code}) for its shape, "
            f"not for a value rule: {json.dumps(unexplained, ensure_ascii=False)[:1000]}"
        )
    return True
