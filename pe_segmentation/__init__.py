"""pe-seg: pulmonary-embolism segmentation on CT pulmonary angiography, built on MONAI."""

__version__ = "0.1.0"
