"""deploy/render.py reads compose and kustomize files the way their own tools do."""

from __future__ import annotations

from pathlib import Path

import pytest

from deploy.render import (
    InterpolationError,
    interpolate,
    read_env_file,
    render_kustomization,
    variables_used,
)


@pytest.mark.parametrize(
    ("text", "env", "expected"),
    [
        ("${A}", {"A": "x"}, "x"),
        ("$A-$B", {"A": "x", "B": "y"}, "x-y"),
        ("${A:-d}", {}, "d"),
        ("${A:-d}", {"A": ""}, "d"),
        ("${A-d}", {"A": ""}, ""),
        ("${A-d}", {}, "d"),
        ("${A}", {}, ""),
        ("$${A}", {"A": "x"}, "${A}"),
        ("pre-${A:?needed}-post", {"A": "v"}, "pre-v-post"),
    ],
)
def test_interpolation_follows_compose(text: str, env: dict[str, str], expected: str) -> None:
    assert interpolate({"k": [text]}, env) == {"k": [expected]}


def test_required_variables_name_themselves_when_missing() -> None:
    with pytest.raises(InterpolationError, match=r"SECRET: put it in \.env"):
        interpolate("${SECRET:?put it in .env}", {"SECRET": ""})
    with pytest.raises(InterpolationError, match="SECRET"):
        interpolate("${SECRET?}", {})
    assert interpolate("${SECRET?}", {"SECRET": ""}) == ""


def test_variables_used_lists_names_and_operators() -> None:
    found = set(variables_used({"a": ["${A:-x}", "$$B $C"], "b": {"c": "${D:?e}"}}))
    assert found == {("A", ":-"), ("C", None), ("D", ":?")}


def test_env_file_reading(tmp_path: Path) -> None:
    path = tmp_path / ".env"
    path.write_text("# comment\n\nA=1\nB = 'two words'\nC=\"x=y\"\nD=\n")
    assert read_env_file(path) == {"A": "1", "B": "two words", "C": "x=y", "D": ""}
    path.write_text("not a line\n")
    with pytest.raises(ValueError, match=":1:"):
        read_env_file(path)


def write_base(directory: Path, kustomization: str) -> None:
    directory.mkdir(parents=True, exist_ok=True)
    (directory / "kustomization.yaml").write_text(kustomization)
    (directory / "app.yaml").write_text(
        "apiVersion: apps/v1\nkind: Deployment\nmetadata: {name: app}\n"
        "spec:\n  selector: {matchLabels: {a: b}}\n  template:\n    metadata: {labels: {a: b}}\n"
        "    spec:\n      containers:\n        - {name: c, image: 'reg:5000/app:1'}\n"
        "        - {name: d, image: other}\n"
        "---\napiVersion: v1\nkind: Namespace\nmetadata: {name: ns}\n"
    )


def test_kustomize_namespace_and_images_are_applied(tmp_path: Path) -> None:
    write_base(
        tmp_path,
        "resources: [app.yaml]\nnamespace: prod\n"
        "images:\n  - {name: 'reg:5000/app', newName: example/app, newTag: '2'}\n",
    )
    deployment, namespace = render_kustomization(tmp_path)
    assert deployment["metadata"]["namespace"] == "prod"
    assert "namespace" not in namespace["metadata"]
    images = [c["image"] for c in deployment["spec"]["template"]["spec"]["containers"]]
    assert images == ["example/app:2", "other"]


def test_kustomize_fields_the_renderer_lacks_are_refused(tmp_path: Path) -> None:
    write_base(tmp_path, "resources: [app.yaml]\ncommonLabels: {team: x}\n")
    with pytest.raises(ValueError, match="commonLabels"):
        render_kustomization(tmp_path)
