"""``python -m tests.podrunner --kubeconfig ... --node-name ... --root ...``: run the pod runner."""

from __future__ import annotations

import argparse
import logging
import signal
import sys
from collections.abc import Sequence
from pathlib import Path
from types import FrameType

from kubernetes import config

from tests.podrunner.runner import PodRunner


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tests.podrunner", description=__doc__)
    parser.add_argument("--kubeconfig", type=Path, required=True)
    parser.add_argument("--node-name", default="pod-runner")
    parser.add_argument("--root", type=Path, required=True, help="folder for the pods' work dirs and logs")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(threadName)s %(message)s")

    api_client = config.new_client_from_config(config_file=str(args.kubeconfig))
    runner = PodRunner(api_client, args.node_name, args.root, kubeconfig=args.kubeconfig)

    def stop(signum: int, frame: FrameType | None) -> None:
        runner.stop_event.set()

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    runner.run()
    return 0


if __name__ == "__main__":
    sys.exit(main())
