"""Rendered Kubernetes objects checked against Kubernetes' own schemas (kubernetes-validate)."""

import kubernetes_validate
import pytest


def assert_valid(objects, oldest_version, custom_kinds):
    """Every object valid, strictly (no field the API would drop), for Kubernetes `oldest_version`
    and the newest kubernetes-validate knows; `custom_kinds` (custom resources, whose schemas ship
    with their operators) must have no schema there."""
    for version in (oldest_version, kubernetes_validate.latest_version()):
        for obj in objects:
            if obj["kind"] in custom_kinds:
                with pytest.raises(kubernetes_validate.SchemaNotFoundError):
                    kubernetes_validate.validate(obj, version, strict=True)
                continue
            try:
                kubernetes_validate.validate(obj, version, strict=True)
            except kubernetes_validate.ValidationError as error:
                pytest.fail(f"{obj['kind']}/{obj['metadata']['name']} against {version}: {error.message}")
