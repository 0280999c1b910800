"""The promotion tests of `tests/unit/operator/test_promotion.py`, on a real S3 server (SeaweedFS).

The same test functions run with `storage` an `s3://` bucket: evaluate's check downloads the candidate through
the stage's model cache, and promotion reads only the two manifests and HEADs each checkpoint file.
"""

from __future__ import annotations

import pytest

from sil_stages.core.store import join
from tests.integration.test_s3_store import bucket, s3_env, s3_server  # noqa: F401  (fixtures)
from tests.unit.operator.test_promotion import (  # noqa: F401  (collected here with the s3 `storage`)
    test_a_missing_or_resized_checkpoint_file_is_refused,
    test_a_tampered_optimize_manifest_is_refused_and_nothing_is_promoted,
    test_a_verified_candidate_is_promoted_without_reading_any_checkpoint_byte,
    test_an_evaluate_manifest_without_a_digest_falls_back_to_hashing_every_file,
    test_bytes_changed_after_evaluate_at_the_same_size_pass_promotion_by_design,
    test_evaluate_refuses_a_candidate_whose_bytes_do_not_match_its_manifest,
)

pytestmark = [pytest.mark.integration, pytest.mark.timeout(120)]


@pytest.fixture
def storage(bucket: str) -> str:  # noqa: F811
    return join(bucket, "loops", "demo")
