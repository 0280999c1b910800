"""`python -m tests.fakestages --kubeconfig K [--namespace NS ...] [--seed N]`: run the writer until SIGTERM."""

from __future__ import annotations

import argparse
import logging
import signal
import sys
from pathlib import Path
from types import FrameType

from tests.fakestages.writer import FakeStageWriter


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m tests.fakestages", description=__doc__)
    parser.add_argument("--kubeconfig", type=Path, required=True)
    parser.add_argument("--namespace", action="append", default=[], help="watch this namespace (repeat); none: all")
    parser.add_argument("--seed", type=int, default=0, help="the scores' seed (tests.fakestages.scores)")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s", stream=sys.stdout)
    for noisy in ("kubernetes", "urllib3", "botocore", "boto3", "s3transfer"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    writer = FakeStageWriter(args.kubeconfig, args.namespace or None, args.seed)

    def stop(signum: int, frame: FrameType | None) -> None:
        writer.stop()

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    writer.run_forever()
    logging.getLogger("fakestages").info(
        "stopped: %d stages written, %d failed attempts", writer.written, writer.errors
    )


if __name__ == "__main__":
    main()
