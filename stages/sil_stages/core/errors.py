"""The one error a stage reports as the user's to fix.

A stage exits 2 on a `StageInputError` (a bad config value, a missing input, a record without a field the
scorer needs) and 1 on anything else. The distinction matters to the runners: retrying a bad input wastes a
GPU Job, retrying a crash may not. The message is one line that names the field or URI and what to do.
"""

from __future__ import annotations

EXIT_INPUT_REJECTED = 2
"""The exit code of a stage that raised `StageInputError`: the stage CLI returns it, the runners read it as a
permanent failure (`sil run`'s processes, the Jobs' podFailurePolicy)."""


class StageInputError(ValueError):
    """A config value or an input the user must fix; the message names it and says what to do."""
