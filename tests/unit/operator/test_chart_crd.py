"""The Helm chart ships the CRD in charts/selfimprove/crds/: it must be byte for byte the generated top-level file."""

from __future__ import annotations

from pathlib import Path

REPO = Path(__file__).resolve().parents[3]
NAME = "selfimprove.dev_selfimprovementloops.yaml"
TOP_LEVEL = REPO / "crds" / NAME
IN_CHART = REPO / "charts" / "selfimprove" / "crds" / NAME


def test_the_chart_crd_is_the_top_level_crd() -> None:
    fix = f"copy it: `cp crds/{NAME} charts/selfimprove/crds/{NAME}`"
    assert IN_CHART.is_file(), f"{IN_CHART.relative_to(REPO)} is missing: {fix}"
    assert IN_CHART.read_bytes() == TOP_LEVEL.read_bytes(), (
        f"charts/selfimprove/crds/{NAME} differs from crds/{NAME} (regenerated with `sil crd`?): {fix}"
    )


def test_the_chart_has_no_other_crd() -> None:
    top_level = sorted(path.name for path in (REPO / "crds").glob("*.yaml"))
    in_chart = sorted(path.name for path in IN_CHART.parent.iterdir())
    assert in_chart == top_level, "charts/selfimprove/crds/ must hold exactly the files of crds/"
