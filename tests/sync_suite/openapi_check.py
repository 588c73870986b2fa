"""Validates JSON instances against components.schemas of an OpenAPI 3.1 document.

usage: openapi_check.py OPENAPI.yaml INSTANCES.json
INSTANCES.json: [{"schema": "EventsRequest", "instance": {...}}, ...]
Exit 0: all valid; 1: some invalid (printed); 3: jsonschema or pyyaml is not installed.
"""
import json
import sys

try:
    import yaml
    from jsonschema import Draft202012Validator, FormatChecker
except ImportError as err:  # pragma: no cover
    print(f"missing Python module: {err}", file=sys.stderr)
    sys.exit(3)


def main():
    with open(sys.argv[1], encoding="utf-8") as f:
        doc = yaml.safe_load(f)
    with open(sys.argv[2], encoding="utf-8") as f:
        instances = json.load(f)
    if doc.get("openapi", "").split(".")[:2] != ["3", "1"]:
        print("not an OpenAPI 3.1 document")
        return 1
    failures = 0
    for item in instances:
        name = item["schema"]
        if name not in doc["components"]["schemas"]:
            print(f"{name}: no such schema in components.schemas")
            failures += 1
            continue
        root = dict(doc)
        root["$schema"] = "https://json-schema.org/draft/2020-12/schema"
        root["$ref"] = f"#/components/schemas/{name}"
        validator = Draft202012Validator(root, format_checker=FormatChecker())
        for error in validator.iter_errors(item["instance"]):
            path = "/".join(str(p) for p in error.absolute_path)
            print(f"{name}: at /{path}: {error.message}")
            failures += 1
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
