"""Reads KServe objects (YAML files) with the KServe SDK's own models of its API, as a child process:
the SDK's gRPC messages share the package `inference` with Triton's, so it cannot be imported beside
tritonclient. Refuses what a generated client would drop or coerce silently (unknown fields, wrong
types); the models' constructors refuse missing required fields. Core types come from the Kubernetes
client, as the SDK's models name them.

Usage: python -P kserve_reader.py FILE...  prints one JSON line per file: {"object": the object as the
SDK serializes what it read} or {"error": why it was refused}."""

import json
import re
import sys

import kserve.models
import kubernetes.client.models
import yaml
from kserve import ApiClient
from kserve.constants import constants

KINDS = {
    (constants.KSERVE_V1ALPHA1, "ClusterServingRuntime"): "V1alpha1ClusterServingRuntime",
    (constants.KSERVE_V1ALPHA1, "ServingRuntime"): "V1alpha1ServingRuntime",
    (constants.KSERVE_V1BETA1, constants.KSERVE_KIND_INFERENCESERVICE): "V1beta1InferenceService",
}
# Container types as the SDK's models spell them, and as the Kubernetes client's (pydantic) models do
LIST = re.compile(r"(?:list|List)\[(.+)\]")
MAP = re.compile(r"dict\(str, (.+)\)|Dict\[str, (.+)\]")
PRIMITIVES = {"str": str, "int": int, "bool": bool, "float": (int, float), "object": object}


class Refused(Exception):
    pass


def read(data, type_name, path="$"):
    """`data` as the SDK's model `type_name`."""
    if items := LIST.fullmatch(type_name):
        if not isinstance(data, list):
            raise Refused(f"{path}: a list expected")
        return [read(item, items[1], f"{path}[{i}]") for i, item in enumerate(data)]
    if values := MAP.fullmatch(type_name):
        if not isinstance(data, dict):
            raise Refused(f"{path}: a map expected")
        return {key: read(value, values[1] or values[2], f"{path}.{key}") for key, value in data.items()}
    if type_name in PRIMITIVES:
        boolean_as_number = isinstance(data, bool) and type_name not in ("bool", "object")
        if not isinstance(data, PRIMITIVES[type_name]) or boolean_as_number:
            raise Refused(f"{path}: {type_name} expected, not {data!r}")
        return data
    model = getattr(kserve.models, type_name, None) or getattr(kubernetes.client.models, type_name)
    if not isinstance(data, dict):
        raise Refused(f"{path}: an object ({type_name}) expected")
    attributes = {json_key: attribute for attribute, json_key in model.attribute_map.items()}
    unknown = sorted(set(data) - set(attributes))
    if unknown:
        raise Refused(f"{path}: {type_name} has no field {unknown}")
    fields = {
        attributes[key]: read(value, model.openapi_types[attributes[key]], f"{path}.{key}")
        for key, value in data.items()
    }
    try:
        return model(**fields)
    except ValueError as error:  # a required field missing or a value out of the model's range
        raise Refused(f"{path}: {error}") from error


def main(paths):
    for path in paths:
        with open(path) as file:
            data = yaml.safe_load(file)
        try:
            kind = KINDS[data.get("apiVersion"), data.get("kind")]
            print(json.dumps({"object": ApiClient().sanitize_for_serialization(read(data, kind))}))
        except (Refused, KeyError) as error:
            print(json.dumps({"error": str(error)}))


if __name__ == "__main__":
    main(sys.argv[1:])
