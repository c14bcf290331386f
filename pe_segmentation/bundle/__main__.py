"""``python -m pe_segmentation.bundle``: see :mod:`pe_segmentation.bundle.cli`."""

from pe_segmentation.bundle.cli import main

raise SystemExit(main())
