"""Entry point of every stage Job and local stage process; see `sil_stages.cli`."""

from sil_stages.cli import main

raise SystemExit(main())
