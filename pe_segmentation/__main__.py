"""``python -m pe_segmentation`` is the same as the ``pe-seg`` console command."""

from pe_segmentation.cli import main

if __name__ == "__main__":
    raise SystemExit(main())
